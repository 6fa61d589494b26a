//! Byte moving shared by server and client: reading a head, running one
//! exchange's two pumps, and the raw copy after a protocol switch.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};

use aether_core::http::{Decoder, Frame, FrameError, Head};
use aether_core::relay::{self, BATCH, Batch, Drain, Ending, Pump, ReadSize, Step};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};

/// Read buffer size for heads: one read usually holds a whole head.
pub const READ_CHUNK: usize = relay::READ_FIRST;

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
    /// Until the first byte (idle keep-alive); `None`: wait forever.
    pub idle: Option<std::time::Duration>,
    /// From the first byte to the end of the head.
    pub head: Option<std::time::Duration>,
}

/// A connection's deadline, kept lazily: moving it later costs nothing.
///
/// A fresh timer for each keep-alive read went into tokio's wheel while the worker slept with no
/// timer armed (during the exchange), so tokio woke its own driver: an eventfd write and one more
/// `epoll_wait` per request. This one timer stays in the wheel at the earliest deadline set; when
/// it fires early it moves on to the deadline that holds by then.
#[derive(Default)]
pub struct Deadline {
    /// Created at the first deadline.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline that holds now.
    at: Option<Instant>,
}

impl Deadline {
    /// Sets the deadline (`None`: none); the timer moves only if it would otherwise fire late.
    pub fn set(&mut self, at: Option<Instant>) {
        self.at = at;
        let Some(at) = at else { return };
        match &mut self.sleep {
            Some(sleep) if sleep.deadline() > at => sleep.as_mut().reset(at),
            Some(_) => {}
            None => self.sleep = Some(Box::pin(sleep_until(at))),
        }
    }

    /// Completes once the deadline set last has passed.
    pub async fn passed(&mut self) {
        loop {
            let (Some(at), Some(sleep)) = (self.at, &mut self.sleep) else {
                return std::future::pending().await;
            };
            if Instant::now() >= at {
                return;
            }
            if sleep.is_elapsed() {
                sleep.as_mut().reset(at);
            }
            sleep.as_mut().await;
        }
    }
}

/// Reads until `dec` yields a head; bytes after it stay in `buf`. `clock` is the connection's timer.
pub async fn read_head<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    dec: &mut Decoder,
    limits: HeadDeadlines,
    clock: &mut Deadline,
) -> Result<Head, HeadError> {
    let mut started = (!buf.is_empty()).then(Instant::now);
    loop {
        match dec.decode(buf) {
            Ok(Some(Frame::Head(head))) => return Ok(head),
            Ok(Some(_)) => return Err(HeadError::Frame(FrameError::UnexpectedEof)),
            Ok(None) => {}
            Err(e) => return Err(HeadError::Frame(e)),
        }
        let deadline = match started {
            None => limits.idle.map(|d| Instant::now() + d),
            Some(t) => limits.head.map(|d| t + d),
        };
        buf.reserve(READ_CHUNK);
        let read = match deadline {
            Some(at) => {
                clock.set(Some(at));
                tokio::select! {
                    biased;
                    read = src.read_buf(buf) => Some(read),
                    () = clock.passed() => None,
                }
            }
            None => Some(src.read_buf(buf).await),
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
                started.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Why a pump stopped before its message ended.
#[derive(Debug)]
pub enum PumpError {
    /// The source sent bytes that break the message's framing (or closed inside it).
    Frame(FrameError),
    /// Reading the source failed.
    Read,
    /// Writing the sink failed.
    Write,
    /// Writing the sink failed, and the rest of the message was read past to this end (a drain).
    Drained(Ending),
}

/// Runs `pump` from `src` (with `buf` holding what was already read) to `dst` until the message ends.
///
/// `wrote` is set once a byte reached `dst`, so a caller that cancels the pump still knows. With a
/// `drain` budget a failed write stops the writing, not the reading: the rest of the message is
/// read past within a [`Drain`], and the pump ends with [`PumpError::Drained`].
pub async fn pump<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    pump: &mut Pump,
    wrote: &AtomicBool,
    drain: Option<usize>,
) -> Result<Ending, PumpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut eof = false;
    let mut size = ReadSize::default();
    // Pieces decoded from what was read, written together before the next read: one syscall for a
    // head and its body.
    let mut pending = Batch::default();
    // Set once a write failed and draining is on: from then on nothing is written.
    let mut lost = None;
    loop {
        match pump.step(buf, eof).map_err(PumpError::Frame)? {
            Step::Write(bytes) => {
                pending.push(bytes);
                if pending.is_full() {
                    write_or_drain(dst, &mut pending, wrote, drain, &mut lost).await?;
                }
            }
            Step::Read => {
                // Written before waiting, so a streamed event reaches the reader now.
                write_or_drain(dst, &mut pending, wrote, drain, &mut lost).await?;
                buf.reserve(size.next());
                let room = buf.capacity() - buf.len();
                let read = src.read_buf(buf);
                let n = match &lost {
                    None => read.await,
                    Some(d) => timeout_at(Instant::from_std(d.deadline()), read)
                        .await
                        .map_err(|_| PumpError::Write)?,
                };
                let n = n.map_err(|_| PumpError::Read)?;
                if let Some(d) = &mut lost
                    && !d.take(n, Instant::now().into_std())
                {
                    return Err(PumpError::Write);
                }
                size.read(room, n);
                eof = n == 0;
            }
            Step::Done(ending) => {
                write_or_drain(dst, &mut pending, wrote, drain, &mut lost).await?;
                relay::shrink(buf);
                return if lost.is_some() { Err(PumpError::Drained(ending)) } else { Ok(ending) };
            }
        }
    }
}

/// Writes out `pending`, or drops it once the sink is lost; a failed write loses the sink if `drain`
/// gives a budget, else it is the pump's error.
async fn write_or_drain<W: AsyncWrite + Unpin>(
    dst: &mut W,
    pending: &mut Batch,
    wrote: &AtomicBool,
    drain: Option<usize>,
    lost: &mut Option<Drain>,
) -> Result<(), PumpError> {
    if lost.is_none() && write_out(dst, pending, wrote).await.is_err() {
        let budget = drain.ok_or(PumpError::Write)?;
        *lost = Some(Drain::new(budget, Instant::now().into_std()));
    }
    pending.clear();
    Ok(())
}

/// Writes every pending piece with vectored writes, then flushes.
async fn write_out<W: AsyncWrite + Unpin>(
    dst: &mut W,
    pending: &mut Batch,
    wrote: &AtomicBool,
) -> io::Result<()> {
    if !pending.is_empty() {
        wrote.store(true, Ordering::Relaxed);
        let mut slices = [IoSlice::new(&[]); BATCH];
        let n = pending.slices(&mut slices);
        let mut rest = &mut slices[..n];
        while !rest.is_empty() {
            let n = dst.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    pending.clear();
    dst.flush().await
}

/// After a protocol switch: forwards what each side had buffered, then copies raw bytes both ways.
pub async fn splice<A, B>(a: &mut A, a_buf: &[u8], b: &mut B, b_buf: &[u8]) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    b.write_all(a_buf).await?;
    a.write_all(b_buf).await?;
    tokio::io::copy_bidirectional(a, b).await.map(|_| ())
}

/// How one exchange over two connections went.
#[derive(Debug)]
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
    /// The downstream left, and the response was read past to its end (see [`pump`]'s `drain`).
    Abandoned {
        /// How the request ended, if it did.
        request: Option<Ending>,
        /// How the response ended.
        response: Ending,
    },
}

/// Runs one exchange: the request body from `down` to `up` and the response back, concurrently;
/// `drain`: the response's budget for a downstream that leaves (see [`pump`]).
pub async fn exchange(
    down: &mut tokio::net::TcpStream,
    down_buf: &mut BytesMut,
    req: &mut Pump,
    up: &mut tokio::net::TcpStream,
    up_buf: &mut BytesMut,
    resp: &mut Pump,
    drain: Option<usize>,
) -> Outcome {
    let (mut dr, mut dw) = down.split();
    let (mut ur, mut uw) = up.split();
    let (req_wrote, resp_wrote) = (AtomicBool::new(false), AtomicBool::new(false));
    let req_fut = pump(&mut dr, down_buf, &mut uw, req, &req_wrote, None);
    let resp_fut = pump(&mut ur, up_buf, &mut dw, resp, &resp_wrote, drain);
    tokio::pin!(req_fut, resp_fut);
    let mut request = None;
    loop {
        tokio::select! {
            // The request first: a body-less request ends at once, and must not lose a race against a
            // response that is already buffered (which would make a clean exchange look cut short).
            biased;
            r = &mut req_fut, if request.is_none() => match r {
                Ok(end) => request = Some(end),
                Err(e) => {
                    let frame = if let PumpError::Frame(f) = e { Some(f) } else { None };
                    return Outcome::RequestFailed { frame, response_started: resp_wrote.load(Ordering::Relaxed) };
                }
            },
            r = &mut resp_fut => return match r {
                Ok(response) => Outcome::Done { request, response },
                Err(PumpError::Drained(response)) => Outcome::Abandoned { request, response },
                Err(_) => Outcome::ResponseFailed { response_started: resp_wrote.load(Ordering::Relaxed) },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aether_core::limits::Limits;
    use tokio::io::AsyncWriteExt;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_does_not_fire_at_the_earlier_one() {
        let start = Instant::now();
        let mut clock = Deadline::default();
        clock.set(Some(start + 30 * MS));
        clock.set(Some(start + 150 * MS));
        clock.passed().await;
        assert!(Instant::now() >= start + 150 * MS, "fired after {:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_earlier_fires_at_the_earlier_one() {
        let start = Instant::now();
        let mut clock = Deadline::default();
        clock.set(Some(start + 60_000 * MS));
        clock.set(Some(start + 20 * MS));
        clock.passed().await;
        assert!(start.elapsed() < 1000 * MS, "fired after {:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_set_again_after_firing_waits_anew() {
        let mut clock = Deadline::default();
        clock.set(Some(Instant::now() + 10 * MS));
        clock.passed().await;
        let again = Instant::now() + 80 * MS;
        clock.set(Some(again));
        clock.passed().await;
        assert!(Instant::now() >= again);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_cut_short_times_out_from_its_first_byte_on_a_reused_clock() {
        let limits = Limits::default();
        let deadlines = HeadDeadlines { idle: Some(60_000 * MS), head: Some(100 * MS) };
        let (mut peer, mut conn) = tokio::io::duplex(1024);
        let (mut buf, mut dec, mut clock) = (BytesMut::new(), Decoder::request(&limits), Deadline::default());
        peer.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        let head = read_head(&mut conn, &mut buf, &mut dec, deadlines, &mut clock).await;
        assert!(head.is_ok(), "{head:?}");
        dec.reset();
        // The idle deadline (60 s) stays armed; the head's (100 ms from its first byte) must still hold.
        peer.write_all(b"GET / HT").await.expect("write");
        let start = Instant::now();
        let cut = read_head(&mut conn, &mut buf, &mut dec, deadlines, &mut clock).await;
        assert!(matches!(cut, Err(HeadError::TimedOut)), "{cut:?}");
        assert!(start.elapsed() < 1000 * MS, "timed out after {:?}", start.elapsed());
    }
}
