//! Byte moving shared by server and client: reading a head, running one
//! exchange's two pumps, and the raw copy after a protocol switch.
//!
//! The smol twin of the tokio adapter's `io.rs`: same functions, same
//! outcomes; `Timer`s and `future::or` stand in for tokio's `select!`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use aether_core::http::{Decoder, Frame, FrameError, Head};
use aether_core::relay::{self, BATCH, Batch, Drain, Ending, Pump, ReadSize, Step};
use async_io::Timer;
use async_net::TcpStream;
use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read buffer size for heads: one read usually holds a whole head.
pub const READ_CHUNK: usize = relay::READ_FIRST;

/// Runs `fut` until `deadline`; `None` if the deadline came first.
pub async fn timeout_at<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// Reads at most `room` bytes from `src` onto the end of `buf`; returns the count (0: the source closed).
///
/// `buf` only ever holds bytes that were read, even if this future is dropped mid-read.
pub async fn read_buf<R: AsyncRead + Unpin + ?Sized>(
    src: &mut R,
    buf: &mut BytesMut,
    room: usize,
) -> io::Result<usize> {
    /// Trims the zeroed, unfilled tail on every way out.
    struct Filling<'a> {
        buf: &'a mut BytesMut,
        len: usize,
    }
    impl Drop for Filling<'_> {
        fn drop(&mut self) {
            self.buf.truncate(self.len);
        }
    }
    let len = buf.len();
    buf.resize(len + room, 0);
    let mut fill = Filling { buf, len };
    let n = src.read(&mut fill.buf[len..]).await?;
    fill.len += n;
    Ok(n)
}

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
    pub idle: Option<Duration>,
    /// From the first byte to the end of the head.
    pub head: Option<Duration>,
}

/// Reads until `dec` yields a head; bytes after it stay in `buf`.
pub async fn read_head<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    dec: &mut Decoder,
    limits: HeadDeadlines,
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
        // No deadline, no timer: arming one costs the reactor a wake-up.
        let read = match deadline {
            Some(at) => timeout_at(at, read_buf(src, buf, READ_CHUNK)).await,
            None => Some(read_buf(src, buf, READ_CHUNK).await),
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
                let read = read_buf(src, buf, size.next());
                let n = match &lost {
                    None => read.await,
                    Some(d) => timeout_at(d.deadline(), read).await.ok_or(PumpError::Write)?,
                };
                let n = n.map_err(|_| PumpError::Read)?;
                if let Some(d) = &mut lost
                    && !d.take(n, Instant::now())
                {
                    return Err(PumpError::Write);
                }
                size.read(size.next(), n);
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
        *lost = Some(Drain::new(budget, Instant::now()));
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
///
/// Each direction shuts down its sink's write side when its source ends; done when both ended or
/// either failed.
pub async fn splice(a: &mut TcpStream, a_buf: &[u8], b: &mut TcpStream, b_buf: &[u8]) -> io::Result<()> {
    b.write_all(a_buf).await?;
    a.write_all(b_buf).await?;
    let one_way = |from: TcpStream, mut to: TcpStream| async move {
        futures_lite::io::copy(from, &mut to).await?;
        to.shutdown(Shutdown::Write)
    };
    future::try_zip(one_way(a.clone(), b.clone()), one_way(b.clone(), a.clone())).await.map(|_| ())
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
    down: &mut TcpStream,
    down_buf: &mut BytesMut,
    req: &mut Pump,
    up: &mut TcpStream,
    up_buf: &mut BytesMut,
    resp: &mut Pump,
    drain: Option<usize>,
) -> Outcome {
    // Handles to the same sockets: each pump reads one and writes the other's clone.
    let (mut down_w, mut up_w) = (down.clone(), up.clone());
    let (req_wrote, resp_wrote) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut req_fut = pin!(pump(down, down_buf, &mut up_w, req, &req_wrote, None));
    let mut resp_fut = pin!(pump(up, up_buf, &mut down_w, resp, &resp_wrote, drain));
    let mut request = None;
    future::poll_fn(|cx| {
        // The request first: a body-less request ends at once, and must not lose a race against a
        // response that is already buffered (which would make a clean exchange look cut short).
        if request.is_none() {
            if let Poll::Ready(r) = req_fut.as_mut().poll(cx) {
                match r {
                    Ok(end) => request = Some(end),
                    Err(e) => {
                        let frame = if let PumpError::Frame(f) = e { Some(f) } else { None };
                        let response_started = resp_wrote.load(Ordering::Relaxed);
                        return Poll::Ready(Outcome::RequestFailed { frame, response_started });
                    }
                }
            }
        }
        resp_fut.as_mut().poll(cx).map(|r| match r {
            Ok(response) => Outcome::Done { request, response },
            Err(PumpError::Drained(response)) => Outcome::Abandoned { request, response },
            Err(_) => Outcome::ResponseFailed { response_started: resp_wrote.load(Ordering::Relaxed) },
        })
    })
    .await
}
