//! The smol primitives on loopback: the readiness hint, reads into spare room, vectored writes,
//! watching, half-close, accept and connect with `TCP_NODELAY`, timers, and the runtime's tasks
//! across a panic and a shutdown. Every wait is bounded by [`within`].

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aether_core::drive::{Listener as _, Rt as _, Runtime as _, Stream as _, Timer as _, Watch};
use bytes::BytesMut;

use super::{Smol, SmolRuntime, SmolStream, poll_op};

/// Longest a test waits for anything before it fails.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` to its end on this thread, failing the test after [`LIMIT`].
fn within<F: Future>(f: F) -> F::Output {
    smol::block_on(smol::future::or(f, async {
        async_io::Timer::after(LIMIT).await;
        panic!("not done within {LIMIT:?}")
    }))
}

/// A handle that binds and dials without a runtime's threads (only `spawn` needs them).
fn handle() -> Smol {
    Smol(std::sync::Weak::new())
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// An accepted stream and the plain socket that dialled it.
fn pair() -> (SmolStream, std::net::TcpStream) {
    let mut listener = handle().bind(loopback()).expect("bind");
    let peer = std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("dial");
    let (s, from) = within(poll_fn(|cx| listener.poll_accept(cx))).expect("accept");
    assert_eq!(from, peer.local_addr().expect("peer address"), "accept reports the peer");
    peer.set_read_timeout(Some(LIMIT)).expect("read timeout");
    (s, peer)
}

/// Polls once without a waker: a probe.
fn probe<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    f(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn no_syscall_after_would_block_until_readiness() {
    let calls = std::cell::Cell::new(0);
    let mut results =
        vec![Ok(5), Err(io::ErrorKind::Interrupted.into()), Err(io::ErrorKind::WouldBlock.into())];
    let mut ready = true;
    let mut poll = |ready: &mut bool, reactor_ready: bool| {
        let wait = |_: &mut Context<'_>| if reactor_ready { Poll::Ready(Ok(())) } else { Poll::Pending };
        probe(|cx| {
            poll_op(ready, cx, wait, || {
                calls.set(calls.get() + 1);
                results.pop().expect("no more calls than results")
            })
        })
    };
    assert!(poll(&mut ready, false).is_pending(), "WouldBlock, reactor silent: pending");
    assert_eq!(calls.get(), 1);
    assert!(!ready, "the hint remembers the WouldBlock");
    for _ in 0..3 {
        assert!(poll(&mut ready, false).is_pending());
    }
    assert_eq!(calls.get(), 1, "no syscall while the reactor reports nothing");
    assert!(matches!(poll(&mut ready, true), Poll::Ready(Ok(5))), "Interrupted is retried");
    assert_eq!((calls.get(), ready), (3, true));
}

#[test]
fn reads_append_into_spare_room_and_report_the_end() {
    let (mut s, mut peer) = pair();
    peer.write_all(b"hello world").expect("send");
    let mut buf = BytesMut::with_capacity(6);
    buf.extend_from_slice(b"ab");
    let room = buf.capacity() - buf.len();
    let n = within(poll_fn(|cx| s.poll_read(cx, &mut buf))).expect("read");
    assert!((1..=room).contains(&n), "a read stays within the spare room ({n} of {room})");
    assert_eq!(s.readable, n == room, "only a read that filled its room may leave more behind");
    assert_eq!(&buf[..], [b"ab".as_slice(), &b"hello world"[..n]].concat());
    while buf.len() < 13 {
        buf.reserve(64);
        assert!(within(poll_fn(|cx| s.poll_read(cx, &mut buf))).expect("read") > 0);
    }
    assert_eq!(&buf[..], b"abhello world");
    assert!(!s.readable, "the last read came back short: the queue is empty, ask the reactor");

    // A buffer with no room at all still reads (an empty read would look like an end).
    peer.write_all(b"more").expect("send");
    let mut full = BytesMut::new();
    assert!(within(poll_fn(|cx| s.poll_read(cx, &mut full))).expect("read") > 0);
    assert!(b"more".starts_with(&full));

    peer.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut rest = BytesMut::with_capacity(64);
    while within(poll_fn(|cx| s.poll_read(cx, &mut rest))).expect("read") > 0 {}
    assert_eq!([&full[..], &rest[..]].concat(), b"more", "then 0: the peer closed");
}

#[test]
fn watch_sees_data_an_end_and_a_reset_and_consumes_nothing() {
    let (mut s, mut peer) = pair();
    assert!(probe(|cx| s.poll_watch(cx)).is_pending(), "open and silent");
    peer.write_all(b"x").expect("send");
    assert_eq!(within(poll_fn(|cx| s.poll_watch(cx))), Watch::Data);
    assert_eq!(within(poll_fn(|cx| s.poll_watch(cx))), Watch::Data, "watching consumed nothing");
    let mut buf = BytesMut::with_capacity(16);
    assert_eq!(within(poll_fn(|cx| s.poll_read(cx, &mut buf))).expect("read"), 1);
    assert_eq!(&buf[..], b"x");
    peer.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_eq!(within(poll_fn(|cx| s.poll_watch(cx))), Watch::Eof);

    // Closing a socket with unread bytes resets the connection.
    let (mut s, peer) = pair();
    within(poll_fn(|cx| s.poll_write(cx, &[IoSlice::new(b"never read")]))).expect("send");
    let mut probe_buf = [0u8; 1];
    while peer.peek(&mut probe_buf).expect("peek") == 0 {}
    drop(peer);
    assert_eq!(within(poll_fn(|cx| s.poll_watch(cx))), Watch::Failed);
}

#[test]
fn writes_are_vectored_in_order_and_wait_when_the_peer_is_full() {
    let (mut s, mut peer) = pair();
    let pieces = [IoSlice::new(b"one "), IoSlice::new(b""), IoSlice::new(b"two "), IoSlice::new(b"three")];
    let n = within(poll_fn(|cx| s.poll_write(cx, &pieces))).expect("write");
    assert_eq!(n, 13, "one vectored write takes every piece on an empty socket");
    let mut got = [0u8; 13];
    peer.read_exact(&mut got).expect("receive");
    assert_eq!(&got, b"one two three");

    // Fill the socket's buffers until a write would block (bounded: loopback holds a few MiB).
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    for _ in 0..4096 {
        match probe(|cx| s.poll_write(cx, &[IoSlice::new(&chunk)])) {
            Poll::Ready(n) => sent += n.expect("write"),
            Poll::Pending => break,
        }
    }
    assert!(!s.writable, "a write would block after {sent} bytes, and the hint says so");
    assert!(probe(|cx| s.poll_write(cx, &[IoSlice::new(&chunk)])).is_pending(), "still full");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).map(|_| all.len())
    });
    let more = within(poll_fn(|cx| s.poll_write(cx, &[IoSlice::new(&chunk)]))).expect("write");
    assert!(more > 0, "the write went out once the peer read");
    within(poll_fn(|cx| s.poll_shutdown(cx))).expect("shutdown");
    assert_eq!(reader.join().expect("reader").expect("read"), sent + more, "every byte, in order");
}

#[test]
fn shutdown_closes_the_sending_side_only() {
    let (mut s, mut peer) = pair();
    within(poll_fn(|cx| s.poll_write(cx, &[IoSlice::new(b"bye")]))).expect("write");
    within(poll_fn(|cx| s.poll_shutdown(cx))).expect("shutdown");
    let mut got = Vec::new();
    peer.read_to_end(&mut got).expect("the peer reads to the end");
    assert_eq!(got, b"bye");
    peer.write_all(b"still here").expect("the other way still flows");
    let mut buf = BytesMut::with_capacity(64);
    while buf.len() < 10 {
        assert!(within(poll_fn(|cx| s.poll_read(cx, &mut buf))).expect("read") > 0);
    }
    assert_eq!(&buf[..], b"still here");
}

#[test]
fn accepted_and_dialled_streams_have_nodelay() {
    let (s, _peer) = pair();
    assert!(s.io.get_ref().nodelay().expect("option"), "accepted");

    let listener = std::net::TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut dialled = within(handle().connect(addr.to_string())).expect("connect");
    assert!(dialled.io.get_ref().nodelay().expect("option"), "dialled");
    let (mut far, from) = listener.accept().expect("accept");
    assert_eq!(from, dialled.io.get_ref().local_addr().expect("address"));
    within(poll_fn(|cx| dialled.poll_write(cx, &[IoSlice::new(b"hi")]))).expect("write");
    let mut got = [0u8; 2];
    far.read_exact(&mut got).expect("receive");
    assert_eq!(&got, b"hi");

    let bad = within(handle().connect("no port here".into()));
    assert!(bad.is_err(), "an address without a port is refused before any dial");
}

#[test]
fn a_timer_fires_after_its_instant_and_can_be_moved_and_rearmed() {
    let rt = handle();
    let start = Instant::now();
    let mut t = rt.timer(start + Duration::from_secs(3600));
    assert!(probe(|cx| t.poll_fired(cx)).is_pending());
    t.reset(start + Duration::from_millis(60));
    within(poll_fn(|cx| t.poll_fired(cx)));
    assert!(start.elapsed() >= Duration::from_millis(60), "not before its instant");

    let again = Instant::now() + Duration::from_millis(40);
    t.reset(again);
    within(poll_fn(|cx| t.poll_fired(cx)));
    assert!(Instant::now() >= again, "re-armed after firing, it fires again, not before");

    t.reset(Instant::now() + Duration::from_secs(3600));
    assert!(probe(|cx| t.poll_fired(cx)).is_pending(), "moved later: not fired");
}

/// Sends on `tx` when dropped: tells whether a task's future was dropped.
struct Dropped(mpsc::Sender<&'static str>);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[test]
fn tasks_run_survive_a_panic_and_end_with_the_runtime() {
    let mut runtime = SmolRuntime::start(1).expect("start");
    let rt = runtime.rt();
    let (tx, rx) = mpsc::channel();
    rt.spawn(async { panic!("a task panics (expected in this test)") });
    let sent = tx.clone();
    rt.spawn(async move {
        let _ = sent.send("ran");
    });
    assert_eq!(rx.recv_timeout(LIMIT), Ok("ran"), "the thread serves on after a panic");

    let guard = Dropped(tx.clone());
    rt.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    runtime.shutdown();
    assert_eq!(rx.try_recv(), Ok("dropped"), "shutdown drops a pending task");
    runtime.shutdown();

    let (guard, sent) = (Dropped(tx.clone()), tx);
    rt.spawn(async move {
        let _guard = guard;
        let _ = sent.send("ran after shutdown");
    });
    assert_eq!(rx.try_recv(), Ok("dropped"), "a task spawned after shutdown is dropped unrun");
    assert!(rx.try_recv().is_err());
}

#[test]
fn entropy_differs_between_calls() {
    let rt = handle();
    assert_ne!(rt.entropy(), rt.entropy());
}
