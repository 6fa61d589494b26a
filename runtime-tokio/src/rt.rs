//! tokio's primitives behind aether-core's runtime boundary (`aether_core::drive`): a
//! multi-thread runtime, TCP streams and listeners, timers, spawning and OS entropy.
//!
//! Nothing here sequences anything; the driver in core does. Reads go through tokio's own
//! `read_buf` into a `BytesMut`'s uninitialised spare capacity (no zero-filling), which also
//! drops the socket's readiness after a short read, so the next wait costs no `EAGAIN` read.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aether_core::drive::{Listener, Rt, Runtime, Stream, Timer, Watch};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::time::Sleep;

/// A multi-thread tokio runtime owned by a running server or client.
pub struct TokioRuntime {
    rt: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl Runtime for TokioRuntime {
    type Rt = Tokio;

    fn start(threads: usize) -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
        Ok(Self { handle: rt.handle().clone(), rt: Some(rt) })
    }

    fn rt(&self) -> Tokio {
        Tokio(self.handle.clone())
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A handle on a running tokio runtime.
#[derive(Clone)]
pub struct Tokio(Handle);

impl Rt for Tokio {
    type Stream = TokioStream;
    type Listener = TokioListener;
    type Timer = TokioTimer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        drop(self.0.spawn(task));
    }

    fn timer(&self, at: Instant) -> TokioTimer {
        let _in = self.0.enter();
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<TokioListener> {
        let _in = self.0.enter();
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // As tokio's own `TcpListener::bind`: a restarted server gets its port back at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024).map(TokioListener)
    }

    // Not an `async fn`: that would borrow `self`, and the dial must outlive it.
    #[allow(clippy::manual_async_fn)]
    fn connect(&self, addr: String) -> impl Future<Output = io::Result<TokioStream>> + Send + 'static {
        async move {
            let stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioStream(stream))
        }
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

/// A tokio TCP stream.
pub struct TokioStream(TcpStream);

impl Stream for TokioStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        // A fresh `read_buf` per poll: it reads only when it completes, so dropping it loses nothing.
        pin!(self.0.read_buf(buf)).poll(cx)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Watch> {
        let mut probe = [0u8; 1];
        self.0.poll_peek(cx, &mut ReadBuf::new(&mut probe)).map(|peeked| match peeked {
            Ok(0) => Watch::Eof,
            Ok(_) => Watch::Data,
            Err(_) => Watch::Failed,
        })
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A tokio TCP listener.
pub struct TokioListener(TcpListener);

impl Listener for TokioListener {
    type Stream = TokioStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TokioStream, SocketAddr)>> {
        self.0.poll_accept(cx).map_ok(|(stream, addr)| {
            let _ = stream.set_nodelay(true);
            (TokioStream(stream), addr)
        })
    }
}

/// A tokio timer; `Sleep` is `!Unpin`, so it is boxed once per connection.
pub struct TokioTimer(Pin<Box<Sleep>>);

impl Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}
