//! Byte moving shared by server and client: reading a head against its deadlines, running an
//! exchange's two [`Flow`]s, one flow alone, and the raw copy after a protocol switch.
//!
//! The exchange is one `poll_fn` over both flows, no select and no extra task: each round steps
//! the request (visitor → tunnel) and then the response, one write if pieces are pending, else one
//! read, and asks [`outcome`] after every step, so the request's end counts first (today's
//! `biased` select as a rule). A response whose visitor left is drained on the connection's
//! [`Deadline`]. It decides nothing about reuse: the callers settle.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::time::Deadline;
use super::{Rt, Stream, Watch};
use crate::http::{Decoder, Frame, FrameError, Head};
use crate::relay::{self, BATCH, Ending, Flow, FlowError, Outcome, outcome};

/// Read buffer size for heads: one read usually holds a whole head.
pub const READ_CHUNK: usize = relay::READ_FIRST;

/// Rounds of an exchange per poll before it yields, for runtimes without a cooperative budget.
const BUDGET: usize = 32;

/// Room for each direction of a splice.
const SPLICE_CHUNK: usize = 16 * 1024;

/// Why a head was not read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer sent bytes that are not a valid head.
    Frame(FrameError),
    /// Part of a head came, then nothing until the deadline.
    TimedOut,
    /// The connection ended (cleanly between messages, or with an error).
    Closed,
}

/// Deadlines for reading one head: before any byte, and from the first byte.
#[derive(Debug, Clone, Copy)]
pub struct HeadDeadlines {
    /// Until the first byte (idle keep-alive); `None`: wait forever, with no timer.
    pub idle: Option<Duration>,
    /// From the first byte to the end of the head.
    pub head: Option<Duration>,
}

/// Reads once into `buf`, with `room` reserved; 0: the peer closed.
pub async fn read_some<S: Stream>(s: &mut S, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
    buf.reserve(room);
    poll_fn(|cx| s.poll_read(cx, buf)).await
}

/// Writes all of `bytes`.
pub async fn write_all<S: Stream>(s: &mut S, mut bytes: &[u8]) -> io::Result<()> {
    poll_fn(|cx| {
        while !bytes.is_empty() {
            let n = ready!(s.poll_write(cx, &[IoSlice::new(bytes)]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            bytes = &bytes[n..];
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// Writes the server's own reply, then shuts the sending side down.
pub async fn write_and_close<S: Stream>(s: &mut S, bytes: &[u8]) {
    if write_all(s, bytes).await.is_ok() {
        let _ = poll_fn(|cx| s.poll_shutdown(cx)).await;
    }
}

/// A look at `s` that does not wait: `None` when it is open and silent.
pub fn probe<S: Stream>(s: &mut S) -> Option<Watch> {
    match s.poll_watch(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(w) => Some(w),
        Poll::Pending => None,
    }
}

/// Completes when the peer is gone for reading (reset, or failed).
///
/// Neither the bytes of a pipelined request nor an end of stream count: a visitor that half-closes
/// after a complete request (`nc -N`, HTTP/1.0 tools) still reads the response, and on the wire its
/// FIN looks the same as a full close. Once bytes or an end were seen it stops looking.
pub async fn left<S: Stream>(s: &mut S) {
    let mut quiet = false;
    poll_fn(|cx| {
        if quiet {
            return Poll::Pending;
        }
        match ready!(s.poll_watch(cx)) {
            Watch::Failed => Poll::Ready(()),
            Watch::Data | Watch::Eof => {
                quiet = true;
                Poll::Pending
            }
        }
    })
    .await
}

/// Reads until `dec` yields a head; bytes after it stay in `buf`. `clock` is the connection's.
pub async fn read_head<R: Rt, S: Stream>(
    rt: &R,
    src: &mut S,
    buf: &mut BytesMut,
    dec: &mut Decoder,
    limits: HeadDeadlines,
    clock: &mut Deadline<R::Timer>,
) -> Result<Head, HeadError> {
    let mut started = (!buf.is_empty()).then(|| rt.now());
    loop {
        match dec.decode(buf) {
            Ok(Some(Frame::Head(head))) => return Ok(head),
            Ok(Some(_)) => return Err(HeadError::Frame(FrameError::UnexpectedEof)),
            Ok(None) => {}
            Err(e) => return Err(HeadError::Frame(e)),
        }
        let deadline = match started {
            None => limits.idle.map(|d| rt.now() + d),
            Some(t) => limits.head.map(|d| t + d),
        };
        buf.reserve(READ_CHUNK);
        let read = match deadline {
            Some(at) => {
                clock.set(rt, Some(at));
                poll_fn(|cx| match src.poll_read(cx, buf) {
                    Poll::Ready(read) => Poll::Ready(Some(read)),
                    Poll::Pending => clock.poll_passed(cx, rt.now()).map(|()| None),
                })
                .await
            }
            // No deadline, no timer (the client's idle tunnel connections).
            None => Some(poll_fn(|cx| src.poll_read(cx, buf)).await),
        };
        match read {
            None if started.is_some() => return Err(HeadError::TimedOut),
            None | Some(Err(_)) => return Err(HeadError::Closed),
            Some(Ok(0)) => {
                return match dec.decode_eof(buf) {
                    Ok(Some(Frame::Head(head))) => Ok(head),
                    Ok(_) => Err(HeadError::Closed),
                    Err(e) => Err(HeadError::Frame(e)),
                };
            }
            Some(Ok(_)) => {
                started.get_or_insert_with(|| rt.now());
            }
        }
    }
}

/// One step of `flow` from `src` (its bytes in `buf`) to `dst`: a write if pieces are pending,
/// else a read if it wants one, else a step of its pump. True if anything happened.
fn step<R: Rt, S: Stream, D: Stream>(
    cx: &mut Context<'_>,
    rt: &R,
    src: &mut S,
    buf: &mut BytesMut,
    dst: &mut D,
    flow: &mut Flow,
    start: Instant,
) -> bool {
    if flow.finished().is_some() {
        return false;
    }
    if flow.pending() {
        let mut slices = [IoSlice::new(&[]); BATCH];
        let n = flow.slices(&mut slices);
        match dst.poll_write(cx, &slices[..n]) {
            Poll::Pending => return false,
            Poll::Ready(Ok(n)) if n > 0 => flow.wrote(n),
            Poll::Ready(_) => flow.write_failed(rt.now()),
        }
        return true;
    }
    let Some(room) = flow.want_read() else { return flow.step(buf) };
    buf.reserve(room);
    let room = buf.capacity() - buf.len();
    match src.poll_read(cx, buf) {
        Poll::Pending => false,
        Poll::Ready(Ok(n)) => {
            // The time matters only to a drain: the clock is read then, not per read.
            let now = if flow.drain_deadline().is_some() { rt.now() } else { start };
            flow.read(buf, room, n, now);
            true
        }
        Poll::Ready(Err(_)) => {
            flow.read_failed();
            true
        }
    }
}

/// A drain waiting for a read gives up at its deadline, kept on the connection's `clock`; true if
/// it just did.
fn drain_timed_out<R: Rt>(
    cx: &mut Context<'_>,
    rt: &R,
    flow: &mut Flow,
    clock: &mut Deadline<R::Timer>,
) -> bool {
    let Some(at) = flow.drain_deadline() else { return false };
    if clock.at() != Some(at) {
        clock.set(rt, Some(at));
    }
    let now = rt.now();
    if clock.poll_passed(cx, now).is_pending() {
        return false;
    }
    flow.handle_timeout(now.max(at));
    true
}

/// Runs one exchange: the request from `down` to `up` and the response back, concurrently, until
/// [`outcome`] says how it went.
#[allow(clippy::too_many_arguments)]
pub async fn exchange<R: Rt, D: Stream, U: Stream>(
    rt: &R,
    down: &mut D,
    down_buf: &mut BytesMut,
    up: &mut U,
    up_buf: &mut BytesMut,
    req: &mut Flow,
    resp: &mut Flow,
    clock: &mut Deadline<R::Timer>,
) -> Outcome {
    let start = rt.now();
    poll_fn(|cx| {
        for _ in 0..BUDGET {
            let a = step(cx, rt, down, down_buf, up, req, start);
            if let Some(o) = outcome(req, resp) {
                return Poll::Ready(o);
            }
            let b = step(cx, rt, up, up_buf, down, resp, start);
            if let Some(o) = outcome(req, resp) {
                return Poll::Ready(o);
            }
            if !a && !b && !drain_timed_out(cx, rt, resp, clock) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Runs `flow` alone from `src` to `dst` until it finishes.
pub async fn one_way<R: Rt, S: Stream, D: Stream>(
    rt: &R,
    src: &mut S,
    buf: &mut BytesMut,
    dst: &mut D,
    flow: &mut Flow,
    clock: &mut Deadline<R::Timer>,
) -> Result<Ending, FlowError> {
    let start = rt.now();
    poll_fn(|cx| {
        for _ in 0..BUDGET {
            let moved = step(cx, rt, src, buf, dst, flow, start);
            if let Some(end) = flow.finished() {
                return Poll::Ready(end);
            }
            if !moved && !drain_timed_out(cx, rt, flow, clock) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// A sink that takes every byte and keeps none (a request body read past before a 502).
#[derive(Debug, Default)]
pub struct Discard;

impl Stream for Discard {
    fn poll_read(&mut self, _: &mut Context<'_>, _: &mut BytesMut) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }

    fn poll_write(&mut self, _: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn poll_watch(&mut self, _: &mut Context<'_>) -> Poll<Watch> {
        Poll::Pending
    }

    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One direction of a splice: bytes read and not yet written, and whether its source ended.
#[derive(Default)]
struct Copy {
    buf: BytesMut,
    eof: bool,
    done: bool,
}

impl Copy {
    /// Copies until `from` ends, then shuts `to`'s sending side down.
    fn poll<A: Stream, B: Stream>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut A,
        to: &mut B,
    ) -> Poll<io::Result<()>> {
        for _ in 0..BUDGET {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if !self.buf.is_empty() {
                let n = ready!(to.poll_write(cx, &[IoSlice::new(&self.buf)]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.buf.advance(n);
            } else if self.eof {
                ready!(to.poll_shutdown(cx))?;
                self.done = true;
            } else {
                self.buf.reserve(SPLICE_CHUNK);
                self.eof = ready!(from.poll_read(cx, &mut self.buf))? == 0;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// After a protocol switch: forwards what each side had buffered, then copies raw bytes both
/// ways. Each direction passes its source's end on as a shutdown of its sink's sending side; done
/// when both ended, or at the first failure.
pub async fn splice<A: Stream, B: Stream>(
    a: &mut A,
    a_buf: &[u8],
    b: &mut B,
    b_buf: &[u8],
) -> io::Result<()> {
    write_all(b, a_buf).await?;
    write_all(a, b_buf).await?;
    let (mut ab, mut ba) = (Copy::default(), Copy::default());
    poll_fn(|cx| {
        let there = ab.poll(cx, a, b)?;
        let back = ba.poll(cx, b, a)?;
        if there.is_ready() && back.is_ready() { Poll::Ready(Ok(())) } else { Poll::Pending }
    })
    .await
}

#[cfg(test)]
mod tests;
