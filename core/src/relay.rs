//! One proxied exchange, one direction at a time: what to write for the bytes
//! read, and how the exchange ends for each connection.
//!
//! A [`Pump`] moves one message from a source buffer to a sink: the request
//! body (visitor → tunnel on the server, tunnel → origin on the client) or
//! the response with its interim heads (the other way). The adapter runs the
//! two pumps of an exchange concurrently, so an origin that answers before it
//! has read the whole body (or echoes it as it reads) cannot deadlock the
//! proxy. [`settle`] then says what each connection may do next; a response
//! whose visitor left is read to its end within a [`Drain`]'s budget. A
//! [`Flow`] is one direction with its loop's bookkeeping (batch, read size, a
//! lost sink) as a machine too, and [`outcome`] ends an exchange from its two
//! flows; the driver (feature `drive`) runs the two flows of each exchange.
//!
//! ```text
//!  loop { match pump.step(&mut buf, eof)? {
//!      Step::Write(bytes) => sink.write_all(&bytes),
//!      Step::Read         => eof = source.read_buf(&mut buf) == 0,
//!      Step::Done(ending) => break ending,
//!  } }
//! ```
//!
//! It does not open connections, pick tunnel connections or decide routes.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::http::rewrite::{rewrite_response, visitor_keep_alive};
use crate::http::{BodyKind, Decoder, Frame, FrameError, Method, RequestInfo};
use crate::limits::Limits;

mod batch;
mod drain;
mod flow;
pub use batch::{BATCH, Batch};
pub use drain::{DRAIN_BUDGET, DRAIN_TIME, Drain};
pub use flow::{Flow, FlowError, Outcome, outcome};

/// Most body bytes validated while a request head is held back (see [`Pump::request`]).
pub const HOLD_LIMIT: usize = 64 * 1024;

/// Bytes a pump asks for per read at first: one read usually holds a whole head.
pub const READ_FIRST: usize = 16 * 1024;
/// Most bytes a pump asks for per read, reached while reads keep filling what was asked.
pub const READ_MOST: usize = 128 * 1024;

/// How much room a pump's next read gets: small for messages, growing for a body that streams.
///
/// A read that fills its room means more is waiting, so the next one asks for twice as much (up
/// to [`READ_MOST`]): a bulk body then costs a few large syscalls instead of many 16 KiB ones,
/// while a small exchange never holds more than [`READ_FIRST`]. A read that brings less than a
/// quarter of the current size (a trickle, or the end of the stream) halves it again, never below
/// [`READ_FIRST`]; reads in between keep it.
#[derive(Debug, Clone, Copy)]
pub struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> Self {
        Self(READ_FIRST)
    }
}

impl ReadSize {
    /// The room to reserve before the next read.
    pub fn next(self) -> usize {
        self.0
    }

    /// Records that a read given `room` bytes returned `n`.
    pub fn read(&mut self, room: usize, n: usize) {
        if n >= room && n > 0 {
            self.0 = (self.0 * 2).min(READ_MOST);
        } else if n < self.0 / 4 {
            self.0 = (self.0 / 2).max(READ_FIRST);
        }
    }
}

/// Frees a read buffer that grew past twice [`READ_FIRST`] once it is empty, so a connection that
/// carried a bulk body does not keep that room while it waits for the next message. Up to twice is
/// kept: that is what reserving [`READ_FIRST`] in a buffer still holding a few bytes can reach.
pub fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 2 * READ_FIRST {
        *buf = BytesMut::new();
    }
}

/// What the adapter does next for one pump.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Write these bytes to the sink, then step again.
    Write(Bytes),
    /// Read more from the source (or step with `eof` set if it has closed).
    Read,
    /// The message is over.
    Done(Ending),
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// By its framing; `keep_alive`: the connection it came on may carry another exchange.
    Message {
        /// The connection may be reused (framing and `Connection` rules).
        keep_alive: bool,
    },
    /// The protocol switched (101): both connections now carry raw bytes until one closes.
    Switched,
}

/// Where a response's head goes, which decides whether it is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Down the tunnel or to the origin: forwarded as received.
    Peer,
    /// To the visitor: hop-by-hop fields replaced by the server's own `Connection`.
    Visitor,
}

/// Relays one message from a source buffer; see the module docs.
#[derive(Debug)]
pub struct Pump {
    dec: Decoder,
    sink: Sink,
    request: Option<RequestInfo>,
    visitor_keep_alive: Option<bool>,
    status: Option<u16>,
    wrote: bool,
    /// A request head not yet written; with `hold`, it waits for the body's first valid element.
    head: Option<Bytes>,
    hold: bool,
    queued: VecDeque<Step>,
    /// The end, once reached while a head was held: after `queued` (kept apart so a body-less
    /// message queues nothing, and allocates nothing).
    finished: Option<Ending>,
}

impl Pump {
    /// Relays the body of a request whose head `dec` has just returned (and was written already).
    pub fn request_body(dec: Decoder) -> Self {
        Self {
            dec,
            sink: Sink::Peer,
            request: None,
            visitor_keep_alive: None,
            status: None,
            wrote: false,
            head: None,
            hold: false,
            queued: VecDeque::new(),
            finished: None,
        }
    }

    /// Writes `head` (a rewritten request head) and relays the body `dec` is at.
    ///
    /// The head is held back until all of the body already received (up to [`HOLD_LIMIT`] bytes,
    /// and at least its first element) has been validated, so a malformed body that arrived with its
    /// head sends nothing upstream. It is written at once when the visitor waits for `100 Continue`
    /// (`expects_continue`) before sending a body.
    pub fn request(dec: Decoder, head: Bytes, expects_continue: bool) -> Self {
        Self { head: Some(head), hold: !expects_continue, ..Self::request_body(dec) }
    }

    /// Relays the response to `request`, interim heads included.
    pub fn response(limits: &Limits, request: RequestInfo, sink: Sink) -> Self {
        let dec = Decoder::response(limits, request);
        Self { sink, request: Some(request), ..Self::request_body(dec) }
    }

    /// Decodes from the front of `buf` and says what to do; `eof`: the source has closed.
    pub fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, FrameError> {
        let step = self.step_inner(buf, eof);
        if let Ok(Step::Write(_)) = step {
            self.wrote = true;
        }
        step
    }

    fn step_inner(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, FrameError> {
        if let Some(step) = self.queued.pop_front() {
            return Ok(step);
        }
        if let Some(ending) = self.finished.take() {
            return Ok(Step::Done(ending));
        }
        let Some(head) = self.head.take() else { return self.next_step(buf, eof) };
        if !self.hold {
            return Ok(Step::Write(head));
        }
        // Validate all of the body that has arrived (up to HOLD_LIMIT) before the head goes upstream.
        let mut held = 0;
        loop {
            match self.next_step(buf, eof) {
                Err(e) => return Err(e),
                Ok(Step::Read) if self.queued.is_empty() => {
                    self.head = Some(head);
                    return Ok(Step::Read);
                }
                Ok(Step::Read) => break,
                Ok(Step::Write(bytes)) => {
                    held += bytes.len();
                    self.queued.push_back(Step::Write(bytes));
                    if held >= HOLD_LIMIT {
                        break;
                    }
                }
                Ok(Step::Done(ending)) => {
                    self.finished = Some(ending);
                    break;
                }
            }
        }
        Ok(Step::Write(head))
    }

    fn next_step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, FrameError> {
        let frame = if eof { self.dec.decode_eof(buf)? } else { self.dec.decode(buf)? };
        let Some(frame) = frame else {
            // A close before this message began (or after it ended) is still a close inside the exchange.
            return if eof { Err(FrameError::UnexpectedEof) } else { Ok(Step::Read) };
        };
        if let Frame::Head(head) = &frame {
            self.status = Some(head.status());
        }
        let step = match frame {
            Frame::Head(head) => match (self.sink, self.request) {
                (Sink::Visitor, Some(request)) => {
                    let keep = visitor_keep_alive(&request, &head);
                    self.visitor_keep_alive = Some(keep);
                    let mut out = BytesMut::with_capacity(head.raw().len() + 32);
                    rewrite_response(&head, keep, &mut out);
                    Step::Write(out.freeze())
                }
                _ => Step::Write(head.raw().clone()),
            },
            Frame::Interim(head) => Step::Write(head.raw().clone()),
            Frame::Body(bytes) => Step::Write(bytes),
            Frame::End { keep_alive } => Step::Done(Ending::Message { keep_alive }),
            Frame::Switched => Step::Done(Ending::Switched),
        };
        Ok(step)
    }

    /// Whether any byte of this message has been handed out to write.
    pub fn started(&self) -> bool {
        self.wrote
    }

    /// The final response's status, once its head passed (`None` for a request body).
    pub fn status(&self) -> Option<u16> {
        self.status.filter(|&s| s != 0)
    }

    /// How the exchange ends for both connections, this being its response's pump; `leftover`: the
    /// upstream sent bytes past the response, so it cannot carry another exchange.
    pub fn settle(&self, request: Option<Ending>, response: Ending, leftover: bool) -> Settled {
        let downstream_keep_alive = match self.sink {
            Sink::Visitor => self.visitor_keep_alive.unwrap_or(false),
            Sink::Peer => matches!(response, Ending::Message { keep_alive: true }),
        };
        let mut settled = settle(request, response, downstream_keep_alive);
        if leftover && settled.upstream == After::Reuse {
            settled.upstream = After::Close;
        }
        settled
    }

    /// The visitor may send another request after this response (known once its head passed).
    pub fn visitor_keep_alive(&self) -> Option<bool> {
        self.visitor_keep_alive
    }

    /// The decoder, to read the next message on the same connection.
    pub fn into_decoder(self) -> Decoder {
        self.dec
    }
}

/// What one side of an exchange does after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Carry the next exchange (visitor: read the next request; tunnel: back to the pool).
    Reuse,
    /// Close the connection.
    Close,
    /// Copy raw bytes both ways until either side closes (a switched protocol).
    Raw,
}

/// How an exchange ended for both connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The connection the request came on (visitor, or the tunnel connection on the client).
    pub downstream: After,
    /// The connection the request went to (tunnel connection, or the origin on the client).
    pub upstream: After,
}

/// Combines the two directions' endings: reuse needs both messages to end cleanly by their framing.
///
/// `request`'s `keep_alive` is the downstream request's own (`Connection: close` from a visitor closes
/// the visitor's connection, not the tunnel's, since the forwarded head drops it).
///
/// `request` is `None` when the response ended while the request body was still flowing (the origin
/// answered early): neither connection is in a known state then. `downstream_keep_alive` is what the
/// response told the visitor ([`Pump::visitor_keep_alive`]); on the client pass the response's own.
pub fn settle(request: Option<Ending>, response: Ending, downstream_keep_alive: bool) -> Settled {
    match (request, response) {
        (_, Ending::Switched) => Settled { downstream: After::Raw, upstream: After::Raw },
        (Some(Ending::Message { keep_alive: req }), Ending::Message { keep_alive: resp }) => {
            let reuse = |ok: bool| if ok { After::Reuse } else { After::Close };
            // The upstream hop's persistence is the response decoder's: it knows the forwarded request.
            Settled { downstream: reuse(req && downstream_keep_alive), upstream: reuse(resp) }
        }
        _ => Settled { downstream: After::Close, upstream: After::Close },
    }
}

/// Whether a request may be sent again on a fresh upstream connection after its first one failed.
///
/// Only when that connection was a kept one (it most likely closed while idle, just as the request
/// went out), no byte of a response came back, and the request is a body-less GET or HEAD, which is
/// safe to repeat.
pub fn may_retry(method: Option<Method>, body: BodyKind, reused: bool, response_started: bool) -> bool {
    reused
        && !response_started
        && body == BodyKind::Empty
        && matches!(method, Some(Method::Get | Method::Head))
}

#[cfg(test)]
mod tests;
