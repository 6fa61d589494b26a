//! A one-thread runtime for the driver's unit tests: a virtual clock, timers that fire when it
//! reaches them, in-memory duplex streams, and [`block_on`], which moves the clock to the next
//! timer whenever nothing else can make progress. No sockets, no threads, no real time.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::sync::lock;
use super::{Listener, Rt, Stream, Timer, Watch};

#[derive(Debug)]
struct Clock {
    now: Instant,
    /// Wakers of timers polled before their instant.
    waiting: Vec<(Instant, Waker)>,
}

/// The test runtime: a handle on its virtual clock.
#[derive(Debug, Clone)]
pub struct TestRt(Arc<Mutex<Clock>>);

impl TestRt {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Clock { now: Instant::now(), waiting: Vec::new() })))
    }

    /// Moves the clock on by `d`, waking the timers it passes.
    pub fn advance(&self, d: Duration) {
        let now = lock(&self.0).now + d;
        self.advance_to(now);
    }

    fn advance_to(&self, at: Instant) {
        let due = {
            let mut c = lock(&self.0);
            c.now = c.now.max(at);
            let now = c.now;
            let (due, rest) = std::mem::take(&mut c.waiting).into_iter().partition(|(t, _)| *t <= now);
            c.waiting = rest;
            due
        };
        for (_, w) in due {
            w.wake();
        }
    }
}

/// A timer on the virtual clock.
#[derive(Debug)]
pub struct TestTimer {
    rt: TestRt,
    at: Instant,
}

impl Timer for TestTimer {
    fn reset(&mut self, at: Instant) {
        self.at = at;
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut c = lock(&self.rt.0);
        if c.now >= self.at {
            return Poll::Ready(());
        }
        c.waiting.push((self.at, cx.waker().clone()));
        Poll::Pending
    }
}

/// A listener that never accepts (the unit tests dial nothing).
#[derive(Debug)]
pub struct NoListener;

impl Listener for NoListener {
    type Stream = MemStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn poll_accept(&mut self, _: &mut Context<'_>) -> Poll<io::Result<(MemStream, SocketAddr)>> {
        Poll::Pending
    }
}

impl Rt for TestRt {
    type Stream = MemStream;
    type Listener = NoListener;
    type Timer = TestTimer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, _: F) {
        unimplemented!("the unit tests run one future")
    }

    fn timer(&self, at: Instant) -> TestTimer {
        TestTimer { rt: self.clone(), at }
    }

    fn bind(&self, _: SocketAddr) -> io::Result<NoListener> {
        Ok(NoListener)
    }

    fn connect(&self, _: String) -> impl Future<Output = io::Result<MemStream>> + Send + 'static {
        std::future::ready(Err(io::ErrorKind::ConnectionRefused.into()))
    }

    fn entropy(&self) -> [u8; 32] {
        [7; 32]
    }

    fn now(&self) -> Instant {
        lock(&self.0).now
    }
}

pub struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `fut` to its end; when it waits and nothing woke it, the clock jumps to the next timer.
pub fn block_on<F: Future>(rt: &TestRt, fut: F) -> F::Output {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        if flag.0.swap(false, Ordering::SeqCst) {
            continue;
        }
        let next = lock(&rt.0).waiting.iter().map(|(t, _)| *t).min();
        rt.advance_to(next.expect("the future waits for nothing: it would hang"));
    }
}

/// Polls `fut` once with a waker that records whether it was woken; returns the poll and the flag.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> (Poll<F::Output>, Arc<Flag>) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let poll = std::pin::Pin::new(fut).poll(&mut Context::from_waker(&waker));
    (poll, flag)
}

impl Flag {
    pub fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default)]
struct Half {
    bytes: Vec<u8>,
    eof: bool,
    failed: bool,
    /// The reading end stopped reading: writes into this half fail.
    refused: bool,
    waker: Option<Waker>,
}

/// One end of an in-memory duplex stream; dropping it ends the other end's reads.
#[derive(Debug)]
pub struct MemStream {
    inbound: Arc<Mutex<Half>>,
    outbound: Arc<Mutex<Half>>,
}

/// Two connected ends.
pub fn pair() -> (MemStream, MemStream) {
    let (a, b) = (Arc::new(Mutex::new(Half::default())), Arc::new(Mutex::new(Half::default())));
    (MemStream { inbound: a.clone(), outbound: b.clone() }, MemStream { inbound: b, outbound: a })
}

fn push(half: &Mutex<Half>, f: impl FnOnce(&mut Half)) {
    let waker = {
        let mut h = lock(half);
        f(&mut h);
        h.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

impl MemStream {
    /// Sends `bytes` to the other end.
    pub fn send(&self, bytes: &[u8]) {
        push(&self.outbound, |h| h.bytes.extend_from_slice(bytes));
    }

    /// Makes the other end's reads fail (a reset).
    pub fn reset(&self) {
        push(&self.outbound, |h| h.failed = true);
    }

    /// Stops reading: the other end's writes fail from now on.
    pub fn refuse(&self) {
        lock(&self.inbound).refused = true;
    }

    /// Everything the other end wrote and this end has not read.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.inbound).bytes)
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        push(&self.outbound, |h| h.eof = true);
    }
}

impl Stream for MemStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let mut h = lock(&self.inbound);
        if h.failed {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if h.bytes.is_empty() && !h.eof {
            h.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = h.bytes.len().min(buf.capacity() - buf.len());
        buf.extend_from_slice(&h.bytes[..n]);
        h.bytes.drain(..n);
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, _: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if lock(&self.outbound).refused {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut n = 0;
        push(&self.outbound, |h| {
            for b in bufs {
                h.bytes.extend_from_slice(b);
                n += b.len();
            }
        });
        Poll::Ready(Ok(n))
    }

    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Watch> {
        let mut h = lock(&self.inbound);
        match (h.failed, h.bytes.is_empty(), h.eof) {
            (true, ..) => Poll::Ready(Watch::Failed),
            (_, false, _) => Poll::Ready(Watch::Data),
            (_, true, true) => Poll::Ready(Watch::Eof),
            _ => {
                h.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        push(&self.outbound, |h| h.eof = true);
        Poll::Ready(Ok(()))
    }
}
