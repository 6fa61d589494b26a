//! The message decoder: one per connection direction, reused message after message.

use bytes::{Bytes, BytesMut};

use super::chunked::Chunked;
use super::head::{BodyKind, Head, Method, RequestInfo};
use super::scan::HeadScan;
use super::{FrameError, Role};
use crate::limits::Limits;

/// One unit of a decoded message, carrying the raw wire bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Frame {
    /// A request head, or a final response head.
    Head(Head),
    /// An interim (1xx, not 101) response head; the final head is still to come.
    Interim(Head),
    /// Body bytes exactly as on the wire (chunk framing included).
    Body(Bytes),
    /// The message is complete; `keep_alive`: the connection may carry another exchange.
    End {
        /// The connection may carry another exchange (framing and `Connection` rules of both messages).
        keep_alive: bool,
    },
    /// The connection switched protocols (101 to an Upgrade, 2xx to CONNECT): what follows is opaque.
    Switched,
}

#[derive(Debug, Clone)]
enum State {
    Head(HeadScan),
    Length {
        remaining: u64,
    },
    Chunked {
        chunked: Chunked,
        pending: usize,
    },
    UntilClose,
    SwitchPending,
    /// The message ended; waiting for `reset`.
    Done,
    Switched,
    Failed(FrameError),
}

/// Decodes a stream of HTTP/1.1 messages of one [`Role`] from a caller-owned buffer.
///
/// Each [`decode`](Decoder::decode) consumes a prefix of the buffer and returns at
/// most one [`Frame`]; `Ok(None)` means more bytes are needed and nothing was
/// consumed. After [`Frame::End`] the decoder waits (bytes of the next message
/// stay in the buffer) until [`reset`](Decoder::reset) or
/// [`expect_response`](Decoder::expect_response). Errors are sticky.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    state: State,
    limits: Limits,
    request: RequestInfo,
    keep_alive: bool,
}

impl Decoder {
    /// A decoder for visitor requests.
    pub fn request(limits: &Limits) -> Self {
        let any = RequestInfo { method: Method::Other, upgrade: false, keep_alive: true };
        Self::new(Role::Request, limits, any)
    }

    /// A decoder for the response to `request`.
    pub fn response(limits: &Limits, request: RequestInfo) -> Self {
        Self::new(Role::Response, limits, request)
    }

    fn new(role: Role, limits: &Limits, request: RequestInfo) -> Self {
        Self {
            role,
            state: State::Head(HeadScan::default()),
            limits: limits.clone(),
            request,
            keep_alive: false,
        }
    }

    /// The role this decoder reads.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Ready for the next request on the same connection.
    pub fn reset(&mut self) {
        debug_assert!(self.role == Role::Request, "reset() on a response decoder; use expect_response");
        self.state = State::Head(HeadScan::default());
    }

    /// Ready for the response to the next `request` on the same connection.
    pub fn expect_response(&mut self, request: RequestInfo) {
        self.request = request;
        self.state = State::Head(HeadScan::default());
    }

    /// Decodes the next frame from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let result = self.step(buf);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    /// Like [`decode`](Decoder::decode), for when the peer has closed: `buf` holds all that will ever come.
    ///
    /// A close-delimited body ends here; a close between messages is `Ok(None)`;
    /// a close inside a message is [`FrameError::UnexpectedEof`].
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        let result = match &self.state {
            // `decode` has just examined every byte, so an empty buffer here is a close between messages.
            State::Head(_) if buf.is_empty() => Ok(None),
            State::UntilClose => {
                self.state = State::Done;
                Ok(Some(Frame::End { keep_alive: false }))
            }
            State::Done | State::Switched => Ok(None),
            _ => Err(FrameError::UnexpectedEof),
        };
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match &mut self.state {
            State::Failed(e) => Err(*e),
            State::Done | State::Switched => Ok(None),
            State::SwitchPending => {
                self.state = State::Switched;
                Ok(Some(Frame::Switched))
            }
            State::Head(scan) => {
                let Some(len) = scan.scan(buf, self.role, &self.limits)? else {
                    return Ok(None);
                };
                let head = Head::parse(buf.split_to(len).freeze(), self.role, &self.limits)?;
                self.start_body(head).map(Some)
            }
            State::Length { remaining: 0 } => Ok(Some(self.end())),
            State::Length { remaining } => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = (*remaining).min(buf.len() as u64);
                *remaining -= take;
                Ok(Some(Frame::Body(buf.split_to(take as usize).freeze())))
            }
            State::Chunked { chunked, pending } => {
                let scan = chunked.scan(buf, *pending)?;
                *pending = scan.examined - scan.safe;
                if scan.safe > 0 {
                    Ok(Some(Frame::Body(buf.split_to(scan.safe).freeze())))
                } else if scan.done {
                    Ok(Some(self.end()))
                } else {
                    Ok(None)
                }
            }
            State::UntilClose if buf.is_empty() => Ok(None),
            State::UntilClose => Ok(Some(Frame::Body(buf.split().freeze()))),
        }
    }

    fn end(&mut self) -> Frame {
        self.state = State::Done;
        Frame::End { keep_alive: self.keep_alive }
    }

    /// Decides what follows a parsed head, and which frame announces it.
    fn start_body(&mut self, head: Head) -> Result<Frame, FrameError> {
        let mut body = head.body();
        let mut keep_alive = head.keep_alive();
        if self.role == Role::Response {
            let status = head.status();
            let req = self.request;
            if status == 101 {
                if !req.upgrade {
                    return Err(FrameError::UnsolicitedSwitch);
                }
                self.state = State::SwitchPending;
                return Ok(Frame::Head(head));
            }
            if (100..200).contains(&status) {
                self.state = State::Head(HeadScan::default());
                return Ok(Frame::Interim(head));
            }
            if req.method == Method::Connect && (200..300).contains(&status) {
                self.state = State::SwitchPending;
                return Ok(Frame::Head(head));
            }
            body = head.response_body(&req);
            keep_alive &= req.keep_alive && body != BodyKind::UntilClose;
        }
        self.keep_alive = keep_alive;
        self.state = match body {
            BodyKind::Empty => State::Length { remaining: 0 },
            BodyKind::Length(n) => State::Length { remaining: n },
            BodyKind::Chunked => State::Chunked {
                chunked: Chunked::new(
                    self.role == Role::Request,
                    self.limits.max_chunk_line,
                    self.limits.max_head,
                ),
                pending: 0,
            },
            BodyKind::UntilClose => State::UntilClose,
        };
        Ok(Frame::Head(head))
    }
}

#[cfg(test)]
#[path = "boundaries.rs"]
mod boundaries;
