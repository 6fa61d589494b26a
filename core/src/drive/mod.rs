//! The one driver (feature `drive`): `serve` and `share` sequenced once, over a small runtime
//! boundary that each runtime crate implements.
//!
//! The machines of this crate decide; this module carries their decisions out: it reads heads,
//! admits them, checks tunnel connections out and in, runs the two [`Flow`](crate::relay::Flow)s of
//! an exchange, dials, says hello and redials. It reaches the world only through the traits below:
//! it never names a runtime crate, opens a socket itself, or reads the clock except through
//! [`Rt::now`]. Its wake-ups (bells, one-shot slots, a mailbox, abort handles) are std `Mutex` and
//! `Waker`, with no unsafe code.
//!
//! ```text
//!  Runtime ──rt()──▶ Rt ──spawn / timer / bind / connect / entropy / now
//!                     ├─ Listener ──poll_accept──▶ Stream (TCP_NODELAY set)
//!                     ├─ Stream: poll_read (into BytesMut spare room), poll_write (vectored),
//!                     │          poll_watch (peek, consumes nothing), poll_shutdown (write side)
//!                     └─ Timer: reset, poll_fired
//! ```
//!
//! The boundary is poll-style rather than `AsyncRead`/`AsyncWrite`: the two runtimes' I/O traits
//! differ, core's dependency guard bans `futures*`, and reading into a `BytesMut` lets each
//! runtime choose how to fill spare capacity (tokio reads into it uninitialised). It is generic,
//! not `dyn`: each runtime crate gets its own monomorphised copy of the driver, as it had its
//! own twin before. It does not model UDP, TLS or a runtime's blocking pool.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

/// A runtime's threads, owned by a running server or client.
pub trait Runtime: Send + 'static {
    /// The handle tasks use to reach the runtime.
    type Rt: Rt;

    /// Starts the runtime on `threads` worker threads.
    fn start(threads: usize) -> io::Result<Self>
    where
        Self: Sized;

    /// A handle to spawn onto it, bind, dial and keep time with.
    fn rt(&self) -> Self::Rt;

    /// Stops the threads and drops every task (so every socket closes); idempotent.
    fn shutdown(&mut self);
}

/// What the driver asks of a running runtime: tasks, timers, sockets, entropy and the clock.
pub trait Rt: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type Stream: Stream;
    /// A bound TCP listener.
    type Listener: Listener<Stream = Self::Stream>;
    /// A one-shot timer that can be moved.
    type Timer: Timer;

    /// Runs `task` detached until it ends or the runtime stops (the driver cancels with its own
    /// [`Abort`](sync::Abort)); after a shutdown `task` is dropped.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F);

    /// A timer that fires once `at` has passed.
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Binds a listener on `addr` (port 0: any free port), from any thread.
    fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener>;

    /// Dials `addr` (`host:port`, a name is resolved; an IPv6 host in brackets) with
    /// `TCP_NODELAY` set on the stream.
    fn connect(&self, addr: String) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static;

    /// 32 bytes from the OS entropy source (tokens, ids, jitter seeds).
    fn entropy(&self) -> [u8; 32];

    /// The current instant: the only clock the driver reads.
    fn now(&self) -> Instant;
}

/// What a non-consuming look at a stream found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Bytes wait to be read.
    Data,
    /// The peer closed its sending side: a read would return 0.
    Eof,
    /// The connection failed (reset, or another error).
    Failed,
}

/// A connected byte stream; every method is called from one task at a time.
pub trait Stream: Send + Unpin + 'static {
    /// Reads into `buf`'s spare capacity (the caller reserved some) and advances its length;
    /// `Ok(0)`: the peer closed its sending side.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;

    /// Writes from `bufs` in order, as one vectored write if it can; returns how many bytes
    /// went out (0 only for empty `bufs`).
    fn poll_write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;

    /// Looks without consuming: ready once bytes wait, the peer closed, or the connection failed.
    /// Polled with a no-op waker it is a probe: `Pending` means open and silent.
    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Watch>;

    /// Shuts the sending side down (the peer reads an end of stream).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A bound TCP listener.
pub trait Listener: Send + 'static {
    /// The streams it accepts.
    type Stream: Stream;

    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Accepts one connection, with `TCP_NODELAY` set, and its peer's address.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>>;
}

/// A one-shot timer; [`time::Deadline`] keeps one per connection and moves it lazily.
pub trait Timer: Send + Unpin + 'static {
    /// Re-arms the timer for `at` (earlier or later than before, or again after it fired).
    fn reset(&mut self, at: Instant);

    /// Ready once the instant it was armed for has passed. Polled again after that and before a
    /// [`reset`](Self::reset), it may return either.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

mod client;
mod handle;
mod server;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod sim;
pub mod sync;
#[cfg(test)]
mod testrt;
pub mod time;
pub mod wire;

pub use handle::{ReportFn, Server, Share};
