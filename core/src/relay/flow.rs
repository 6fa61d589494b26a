//! One direction of an exchange as a machine: a [`Pump`] plus the bookkeeping of the loop that
//! drives it (pending pieces, read size, end of stream, a lost sink), and [`outcome`], the rule
//! that ends an exchange from its two directions.
//!
//! The driver owns the source buffer and both streams; it asks the flow what to do, does it, and
//! says what happened, until [`Flow::finished`]:
//!
//! ```text
//!  loop {
//!      if let Some(end) = flow.finished()   { break end }
//!      if flow.pending()                    { write flow.slices(..): wrote(n) | write_failed(now) }
//!      else if let Some(room) = want_read() { read into buf: read(buf, room, n, now) | read_failed()
//!                                             (draining: handle_timeout(now) at drain_deadline()) }
//!      else                                 { flow.step(buf) }  // at the start, after a full batch
//!  }
//! ```
//!
//! The rules are today's loop's: the pieces decoded from one read go out in one vectored write (up
//! to [`BATCH`] of them; several calls when the sink takes part); pending pieces are written before the next read
//! and before the end counts; a framing error drops what is pending; the buffer is
//! [`shrink`]ed when the message ends. With a drain budget a failed write loses the sink instead
//! of failing: nothing more is written and the rest of the message is read past within a
//! [`Drain`]. It does not read, write, flush or keep time: the driver does, and passes `now`.

use std::io::IoSlice;
use std::time::Instant;

use bytes::BytesMut;

use super::{BATCH, Batch, Drain, Ending, Pump, ReadSize, Step, shrink};
use crate::http::FrameError;

#[cfg(test)]
mod cases;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

/// Why a flow stopped before its message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowError {
    /// The source sent bytes that break the message's framing (or closed inside it).
    Frame(FrameError),
    /// Reading the source failed.
    Read,
    /// Writing the sink failed (or, draining, the budget or its time ran out).
    Write,
    /// Writing the sink failed, and the rest of the message was read past to this end (a drain).
    Drained(Ending),
}

/// Where the pump stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// It can go on without a read: at the start (bytes may be buffered) and after a full batch.
    Step,
    /// It asked for more from the source.
    Read,
    /// Its message ended (the flow is finished once nothing is pending).
    Ended(Ending),
    /// The flow failed; nothing more happens.
    Failed(FlowError),
}

/// One direction of an exchange: see the module docs.
#[derive(Debug)]
pub struct Flow {
    pump: Pump,
    batch: Batch,
    size: ReadSize,
    eof: bool,
    started: bool,
    at: At,
    /// The budget for a lost sink; `None`: a failed write fails the flow.
    budget: Option<usize>,
    /// Set once a write failed with a budget: from then on nothing is written.
    lost: Option<Drain>,
}

impl Flow {
    /// A flow over `pump`, whose source buffer may already hold bytes: [`step`](Self::step) first.
    pub fn new(pump: Pump) -> Self {
        Self {
            pump,
            batch: Batch::default(),
            size: ReadSize::default(),
            eof: false,
            started: false,
            at: At::Step,
            budget: None,
            lost: None,
        }
    }

    /// A failed write then drains the rest of the message within `budget` bytes (see [`Drain`]).
    pub fn with_drain(self, budget: usize) -> Self {
        Self { budget: Some(budget), ..self }
    }

    /// Steps the pump if it can go on without a read (at the start, after a full batch was
    /// written); false, and nothing happens, otherwise.
    pub fn step(&mut self, buf: &mut BytesMut) -> bool {
        if self.at != At::Step || self.pending() {
            return false;
        }
        self.run(buf);
        true
    }

    /// Room to reserve for the next read: only when nothing is pending and the pump asked to read.
    pub fn want_read(&self) -> Option<usize> {
        (self.at == At::Read && !self.pending()).then(|| self.size.next())
    }

    /// A read given `room` bytes put `n` more into `buf` at `now` (`n` = 0: the source closed);
    /// steps the pump until it needs a read, the batch is full, or the message ends.
    pub fn read(&mut self, buf: &mut BytesMut, room: usize, n: usize, now: Instant) {
        debug_assert!(self.want_read().is_some(), "a read nobody asked for");
        if self.at != At::Read {
            return;
        }
        if let Some(drain) = &mut self.lost
            && !drain.take(n, now)
        {
            self.at = At::Failed(FlowError::Write);
            return;
        }
        self.size.read(room, n);
        self.eof = n == 0;
        self.run(buf);
    }

    /// Reading the source failed.
    pub fn read_failed(&mut self) {
        self.fail(FlowError::Read);
    }

    /// Pieces are waiting to be written.
    pub fn pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Points `out` at the pending pieces, in order, for one vectored write; returns how many.
    pub fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; BATCH]) -> usize {
        self.batch.slices(out)
    }

    /// The sink took `n` bytes of the pending pieces. A write that takes none is a failure
    /// ([`write_failed`](Self::write_failed)), as `WriteZero` is today.
    pub fn wrote(&mut self, n: usize) {
        debug_assert!(
            n > 0 && self.pending(),
            "a write that took nothing, or of nothing, is the caller's error"
        );
        self.started = true;
        self.batch.consume(n);
    }

    /// Writing the sink failed at `now`: with a budget the sink is lost and the message is drained
    /// from here, else the flow fails.
    pub fn write_failed(&mut self, now: Instant) {
        self.batch.clear();
        // A flow that failed already stays failed: a drain set now is never read (no read is wanted).
        match self.budget {
            Some(budget) => {
                self.lost.get_or_insert(Drain::new(budget, now));
            }
            None => self.fail(FlowError::Write),
        }
    }

    /// The drain's time is up by `now` while a read is still awaited (see [`drain_deadline`]).
    ///
    /// [`drain_deadline`]: Self::drain_deadline
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.drain_deadline().is_some_and(|at| now >= at) {
            self.at = At::Failed(FlowError::Write);
        }
    }

    /// When a drain gives up on the read it waits for; `None` unless draining and reading.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.lost.filter(|_| self.want_read().is_some()).map(|d| d.deadline())
    }

    /// How the flow ended: its message ended *and* was written out, or it failed.
    pub fn finished(&self) -> Option<Result<Ending, FlowError>> {
        match self.at {
            At::Failed(e) => Some(Err(e)),
            At::Ended(_) if self.pending() => None,
            At::Ended(ending) if self.lost.is_some() => Some(Err(FlowError::Drained(ending))),
            At::Ended(ending) => Some(Ok(ending)),
            At::Step | At::Read => None,
        }
    }

    /// A byte of this message reached the sink (a write took it). The runtimes' flag today is set
    /// when a write is first tried, so a first write that fails or is still waiting counts there.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The pump, for its status, its settling and its decoder.
    pub fn into_pump(self) -> Pump {
        self.pump
    }

    fn fail(&mut self, e: FlowError) {
        self.batch.clear();
        if !matches!(self.at, At::Failed(_)) {
            self.at = At::Failed(e);
        }
    }

    /// Steps the pump into the batch until it needs a read, the batch is full, or it ends.
    fn run(&mut self, buf: &mut BytesMut) {
        self.at = loop {
            match self.pump.step(buf, self.eof) {
                Err(e) => {
                    // As today: what this read decoded before the error is not written.
                    self.batch.clear();
                    break At::Failed(FlowError::Frame(e));
                }
                // A lost sink takes nothing: the piece is dropped as its batch would be.
                Ok(Step::Write(_)) if self.lost.is_some() => {}
                Ok(Step::Write(piece)) => {
                    self.batch.push(piece);
                    if self.batch.is_full() {
                        break At::Step;
                    }
                }
                Ok(Step::Read) => break At::Read,
                Ok(Step::Done(ending)) => {
                    shrink(buf);
                    break At::Ended(ending);
                }
            }
        };
    }
}

/// How one exchange over two connections went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response ended by its framing; `request` is `None` if its body was still flowing.
    Done {
        /// How the request ended, if it did.
        request: Option<Ending>,
        /// How the response ended.
        response: Ending,
    },
    /// The request could not be relayed (`frame`: the downstream broke its framing).
    RequestFailed {
        /// The framing error, if that was the cause.
        frame: Option<FrameError>,
        /// Some of the response already went downstream.
        response_started: bool,
    },
    /// The response could not be relayed.
    ResponseFailed {
        /// Some of the response already went downstream.
        response_started: bool,
    },
    /// The downstream left, and the response was read past to its end (a drain).
    Abandoned {
        /// How the request ended, if it did.
        request: Option<Ending>,
        /// How the response ended.
        response: Ending,
    },
}

/// Whether the exchange of `req` and `resp` is over, and how: today's `biased` select as a rule.
///
/// Call it after every step of either flow and stop at the first `Some`. The request counts first:
/// its end is registered even when the response has ended too (a body-less request must not look
/// cut short by a response that was already buffered), and its failure ends the exchange, unless
/// the response's end was seen at an earlier call. The response's end decides; `request` is then
/// `None` if the request had not ended (its body was still flowing).
pub fn outcome(req: &Flow, resp: &Flow) -> Option<Outcome> {
    let request = match req.finished() {
        Some(Err(e)) => {
            let frame = if let FlowError::Frame(f) = e { Some(f) } else { None };
            return Some(Outcome::RequestFailed { frame, response_started: resp.started() });
        }
        request => request.and_then(Result::ok),
    };
    Some(match resp.finished()? {
        Ok(response) => Outcome::Done { request, response },
        Err(FlowError::Drained(response)) => Outcome::Abandoned { request, response },
        Err(_) => Outcome::ResponseFailed { response_started: resp.started() },
    })
}
