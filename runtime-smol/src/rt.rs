//! The smol primitives behind `aether_core::drive`: executor threads, tasks, timers, TCP
//! listeners and streams. It models readiness and buffers, and decides nothing about HTTP or
//! tunnels (the driver does).
//!
//! Two choices are made here once, for every connection:
//!
//! - **Readiness hints.** async-io's own `AsyncRead`/`AsyncWrite` try the syscall before looking
//!   at readiness on every poll, so a task that polls both sides of an exchange on each wake-up
//!   pays an `EAGAIN` per idle side. [`SmolStream`] remembers, per direction, that the last
//!   attempt would have blocked, or came back short (the socket's queue is empty, or its send
//!   buffer full: tokio's rule), and then only asks the reactor (`poll_readable`/`poll_writable`,
//!   no syscall once interest is registered) until it reports readiness. Its interest is
//!   level-triggered, so bytes that came in between are reported at once.
//! - **Filling a `BytesMut` without unsafe code.** `std::io::Read` needs an initialised `&mut
//!   [u8]`, and a `BytesMut` can only grow its length safely by zero-filling (`resize`) or by
//!   copying in (`extend_from_slice`). Zero-filling the room before every read costs a memset of
//!   16–256 KiB whatever arrives; reading into a per-thread scratch buffer (zeroed once per
//!   thread) and copying what arrived costs a copy of the bytes read only: a 300-byte head
//!   copies 300 bytes instead of zeroing 16 KiB, a full read copies what the memset would have
//!   zeroed. The copy is taken, and keeps `#![forbid(unsafe_code)]`: reading into uninitialised
//!   spare capacity needs an unsafe cast to `&mut [u8]` (which `Read` does not promise to treat
//!   as write-only) and an unsafe `set_len`. An idle connection still owns no buffer.
//!
//! ```text
//!  poll_*  ──hint says ready──▶ syscall ──WouldBlock or short──▶ not ready ─┐
//!     ▲                                                                     │
//!     └─────────────── reactor reports readiness ◀── poll_readable/writable ┘
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::thread::JoinHandle;
use std::time::Instant;

use aether_core::drive::{self, Watch};
use async_io::{Async, Timer};
use bytes::BytesMut;
use smol::Executor;
use smol::channel::Sender;

/// The most one read takes: at least what a pump asks for at its largest, with the slack
/// `BytesMut::reserve` may add, so a read fills the room the driver saw.
const SCRATCH: usize = 2 * aether_core::relay::READ_MOST;

thread_local! {
    /// Where reads land before they are copied into the caller's buffer; zeroed once per thread.
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// An executor on its own threads; [`shutdown`](drive::Runtime::shutdown) ends it and every task.
///
/// Tasks reach the executor only through [`Smol`], which holds it weakly, so this is its one
/// strong owner: shutting down joins the threads, then drops the executor, which drops every task
/// and so closes every socket.
pub struct SmolRuntime {
    executor: Option<Arc<Executor<'static>>>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl drive::Runtime for SmolRuntime {
    type Rt = Smol;

    fn start(threads: usize) -> io::Result<Self> {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let mut runtime = Self { executor: Some(executor.clone()), stop: Some(stop), threads: Vec::new() };
        for i in 0..threads.max(1) {
            let (ex, stopped) = (executor.clone(), stopped.clone());
            let thread = std::thread::Builder::new().name(format!("aether-smol-{i}")).spawn(move || {
                // A panicking task unwinds out of `run`; keep serving the other tasks.
                while catch_unwind(AssertUnwindSafe(|| {
                    smol::block_on(ex.run(async {
                        let _ = stopped.recv().await;
                    }))
                }))
                .is_err()
                {}
            })?;
            runtime.threads.push(thread);
        }
        Ok(runtime)
    }

    fn rt(&self) -> Smol {
        Smol(self.executor.as_ref().map_or_else(Weak::new, Arc::downgrade))
    }

    fn shutdown(&mut self) {
        // Closing the channel ends every thread's run loop.
        drop(self.stop.take());
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
        // The last strong reference: dropping the executor drops every task, and their sockets.
        drop(self.executor.take());
    }
}

impl Drop for SmolRuntime {
    fn drop(&mut self) {
        drive::Runtime::shutdown(self);
    }
}

/// A handle to a [`SmolRuntime`] that does not keep it alive.
#[derive(Clone)]
pub struct Smol(Weak<Executor<'static>>);

impl drive::Rt for Smol {
    type Stream = SmolStream;
    type Listener = SmolListener;
    type Timer = SmolTimer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        // Once the runtime is stopped `task` is dropped, as its task would have been.
        if let Some(ex) = self.0.upgrade() {
            ex.spawn(task).detach();
        }
    }

    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer(Timer::at(at))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<SmolListener> {
        Ok(SmolListener { io: Async::<TcpListener>::bind(addr)?, ready: true })
    }

    fn connect(&self, addr: String) -> impl Future<Output = io::Result<SmolStream>> + Send + 'static {
        connect(addr)
    }

    fn entropy(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        // Without OS entropy, tokens would be guessable: better to stop than to serve.
        getrandom::fill(&mut bytes).expect("the OS entropy source failed");
        bytes
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Resolves `addr` and dials each address in turn; the first that answers wins.
async fn connect(addr: String) -> io::Result<SmolStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
    for a in async_net::resolve(addr).await? {
        match Async::<TcpStream>::connect(a).await {
            Ok(io) => return Ok(SmolStream::new(io)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs `op` unless `ready` says the last try would have blocked; then waits for `wait` (the
/// reactor's readiness) first. A `WouldBlock` clears `ready`, so no syscall is made again until
/// the reactor reports readiness.
fn poll_op<T>(
    ready: &mut bool,
    cx: &mut Context<'_>,
    wait: impl Fn(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        if !*ready {
            ready!(wait(cx))?;
            *ready = true;
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return Poll::Ready(done),
        }
    }
}

/// Reads once from `s` into `buf`'s spare capacity, through the thread's scratch buffer; returns
/// the count and the room it had.
fn read_into(mut s: &TcpStream, buf: &mut BytesMut) -> io::Result<(usize, usize)> {
    if buf.capacity() == buf.len() {
        // An empty room would read 0 bytes, which means an end of stream.
        buf.reserve(aether_core::relay::READ_FIRST);
    }
    let room = (buf.capacity() - buf.len()).min(SCRATCH);
    SCRATCH_BUF.with_borrow_mut(|scratch| {
        let n = s.read(&mut scratch[..room])?;
        buf.extend_from_slice(&scratch[..n]);
        Ok((n, room))
    })
}

/// A TCP stream with a readiness hint per direction (see the module docs).
pub struct SmolStream {
    io: Async<TcpStream>,
    readable: bool,
    writable: bool,
}

impl SmolStream {
    /// Wraps a registered stream and sets `TCP_NODELAY`; both directions start as ready, so the
    /// first read of an accepted connection (whose request is often already there) costs no
    /// reactor round.
    fn new(io: Async<TcpStream>) -> Self {
        // Only a socket that is already dead refuses it; its first read or write says so.
        let _ = io.get_ref().set_nodelay(true);
        Self { io, readable: true, writable: true }
    }
}

impl drive::Stream for SmolStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let io = &self.io;
        let (n, room) = ready!(poll_op(
            &mut self.readable,
            cx,
            |cx| io.poll_readable(cx),
            || read_into(io.get_ref(), buf)
        ))?;
        // A short read emptied the socket's queue: the next wait goes to the reactor at once.
        self.readable &= n == 0 || n == room;
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let io = &self.io;
        let n = ready!(poll_op(
            &mut self.writable,
            cx,
            |cx| io.poll_writable(cx),
            || io.get_ref().write_vectored(bufs)
        ))?;
        // A short write filled the socket's send buffer: likewise.
        self.writable &= n == bufs.iter().map(|b| b.len()).sum::<usize>();
        Poll::Ready(Ok(n))
    }

    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Watch> {
        let io = &self.io;
        let peek = ready!(poll_op(
            &mut self.readable,
            cx,
            |cx| io.poll_readable(cx),
            || io.get_ref().peek(&mut [0u8; 1])
        ));
        Poll::Ready(match peek {
            Ok(0) => Watch::Eof,
            Ok(_) => Watch::Data,
            Err(_) => Watch::Failed,
        })
    }

    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Never blocks: the kernel sends the FIN after what is queued.
        Poll::Ready(self.io.get_ref().shutdown(Shutdown::Write))
    }
}

/// A TCP listener with a readiness hint, as [`SmolStream`]'s.
pub struct SmolListener {
    io: Async<TcpListener>,
    ready: bool,
}

impl drive::Listener for SmolListener {
    type Stream = SmolStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(SmolStream, SocketAddr)>> {
        let io = &self.io;
        let (s, peer) =
            ready!(poll_op(&mut self.ready, cx, |cx| io.poll_readable(cx), || io.get_ref().accept()))?;
        Poll::Ready(Async::new(s).map(|s| (SmolStream::new(s), peer)))
    }
}

/// A movable one-shot timer over async-io's.
pub struct SmolTimer(Timer);

impl drive::Timer for SmolTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // After firing, async-io's timer stays pending until it is set again (the trait allows it).
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

#[cfg(test)]
mod tests;
