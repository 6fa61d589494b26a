//! `aether serve` on smol: the public HTTP listener, the tunnel listener, and
//! the loop that carries out the hub's outputs.
//!
//! Each tunnel connection has a task that owns its socket while it is idle
//! (and notices when it closes); a visitor granted that connection borrows
//! the socket and gives it back (check-in), retires it (still open: its client
//! replaces it) or drops it (failed).

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aether_core::front::{self, Admit, FrontConfig, Visitor};
use aether_core::handshake::{HelloDecoder, Verdict, encode_verdict};
use aether_core::http::Decoder;
use aether_core::hub::{ConnId, Hub, Input, Output, Refusal, ServerEvent, WaiterId};
use aether_core::limits::Limits;
use aether_core::options::ServeOptions;
use aether_core::relay::{After, DRAIN_BUDGET};
use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{Receiver, Sender, TrySendError, bounded};

use crate::Spawner;
use crate::io::{HeadDeadlines, HeadError, Outcome, exchange, read_buf, read_head, splice, timeout_at};

/// The answer for a visitor granted a connection whose task is gone.
const OFFLINE: Refusal = Refusal::Offline { retry_after: aether_core::hub::OFFLINE_RETRY_AFTER };

/// A response whose visitor left is read to its end, up to this, to keep its tunnel connection.
const DRAIN: Option<usize> = Some(DRAIN_BUDGET);

/// A tunnel connection lent to one visitor request; dropping it closes the connection.
struct Lease {
    stream: TcpStream,
    back: Sender<Back>,
}

/// What a visitor's task says of a lent connection; saying nothing means it failed (closed).
enum Back {
    /// The exchange ended cleanly: the connection serves again.
    Checkin(TcpStream),
    /// The server is done with a connection that is still open: its client will replace it.
    Retire,
}

impl Lease {
    fn checkin(self) {
        let _ = self.back.try_send(Back::Checkin(self.stream));
    }

    /// Closes the connection: retired if it is still open, else (the client went) just closed.
    async fn end(self) {
        let mut probe = [0u8; 1];
        let open = match future::poll_once(self.stream.peek(&mut probe)).await {
            None => true,
            Some(read) => read.is_ok_and(|n| n > 0),
        };
        if open {
            let _ = self.back.try_send(Back::Retire);
        }
    }
}

/// What the hub left for a tunnel connection's task.
enum Mail {
    /// Lend the connection to this visitor request.
    Grant(WaiterId),
    /// Close the connection.
    Close,
}

/// What the hub's outputs are delivered to (the one-shot senders are bounded(1) channels).
#[derive(Default)]
struct Routes {
    verdicts: HashMap<ConnId, Sender<(Verdict, bool)>>,
    /// Wakes an idle tunnel connection's task: a bounded(1) channel of `()`, lighter than a queue.
    bells: HashMap<ConnId, Sender<()>>,
    /// What the hub left for a tunnel connection's task, read when its bell rings.
    mail: HashMap<ConnId, Mail>,
    waiters: HashMap<WaiterId, Sender<Result<Lease, Refusal>>>,
    next_id: u64,
}

/// The hub and where its outputs go, under one lock.
struct State {
    hub: Hub,
    routes: Routes,
    /// The deadline the timer loop was last woken for.
    armed: Option<Instant>,
}

/// Everything the server's tasks share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// A one-permit wake-up for the timer loop (tokio's `Notify`).
    timer: (Sender<()>, Receiver<()>),
    front: FrontConfig,
    limits: Limits,
    local: String,
    legacy: bool,
    log: fn(&ServerEvent),
    spawner: Spawner,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole server down with a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the hub and delivers everything it says.
    fn hub(&self, f: impl FnOnce(&mut Hub, Instant)) {
        let mut st = self.lock();
        f(&mut st.hub, Instant::now());
        self.deliver(&mut st);
    }

    fn deliver(&self, st: &mut State) {
        while let Some(out) = st.hub.poll() {
            match out {
                Output::Verdict { conn, verdict, write_line } => {
                    if let Some(tx) = st.routes.verdicts.remove(&conn) {
                        let _ = tx.try_send((verdict, write_line));
                    }
                }
                Output::Granted { waiter, conn } => {
                    let routes = &mut st.routes;
                    match routes.bells.get(&conn) {
                        Some(bell) => {
                            routes.mail.insert(conn, Mail::Grant(waiter));
                            // Full means it is already ringing.
                            let _ = bell.try_send(());
                        }
                        // The connection's task is gone: it reports ConnClosed itself; this waiter is refused.
                        None => {
                            if let Some(tx) = routes.waiters.remove(&waiter) {
                                let _ = tx.try_send(Err(OFFLINE));
                            }
                        }
                    }
                }
                Output::Refused { waiter, why } => {
                    if let Some(tx) = st.routes.waiters.remove(&waiter) {
                        let _ = tx.try_send(Err(why));
                    }
                }
                Output::Close { conn } => {
                    let routes = &mut st.routes;
                    if let Some(bell) = routes.bells.get(&conn) {
                        routes.mail.insert(conn, Mail::Close);
                        let _ = bell.try_send(());
                    }
                }
                Output::Event(e) => (self.log)(&e),
            }
        }
        // Wake the timer loop only when the next deadline moved: most hub calls leave it alone.
        let next = st.hub.poll_timeout();
        if next != st.armed {
            st.armed = next;
            let _ = self.timer.0.try_send(());
        }
    }

    fn next_id(&self) -> u64 {
        let mut st = self.lock();
        st.routes.next_id += 1;
        st.routes.next_id
    }
}

/// Binds both listeners and spawns the server's tasks with `spawner`.
pub(crate) async fn start(
    opts: ServeOptions,
    log: fn(&ServerEvent),
    spawner: Spawner,
) -> std::io::Result<(SocketAddr, SocketAddr, Arc<Shared>)> {
    let http = TcpListener::bind((opts.address, opts.port)).await?;
    let tunnel = TcpListener::bind((opts.address, opts.tunnel_port)).await?;
    let (http_addr, tunnel_addr) = (http.local_addr()?, tunnel.local_addr()?);
    let hub = Hub::new(opts.server_config(tunnel_addr.port()), Instant::now());
    let shared = Arc::new(Shared {
        state: Mutex::new(State { hub, routes: Routes::default(), armed: None }),
        timer: bounded(1),
        front: opts.front_config(),
        limits: opts.limits.clone(),
        local: http_addr.to_string(),
        legacy: opts.legacy_handshake,
        log,
        spawner: spawner.clone(),
    });
    spawner.detach(timer_loop(shared.clone()));
    spawner.detach(accept_loop(http, shared.clone(), |s, addr, sh| {
        sh.spawner.clone().detach(visitor(s, addr, sh))
    }));
    spawner.detach(accept_loop(tunnel, shared.clone(), |s, _, sh| {
        sh.spawner.clone().detach(tunnel_conn(s, sh))
    }));
    Ok((http_addr, tunnel_addr, shared))
}

/// Accepts connections for ever, handing each to `spawn`.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    spawn: fn(TcpStream, SocketAddr, Arc<Shared>),
) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                spawn(stream, addr, shared.clone());
            }
            // Out of descriptors and the like: wait a moment instead of spinning.
            Err(_) => {
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Arms one timer at the hub's next deadline (the driving contract).
async fn timer_loop(shared: Arc<Shared>) {
    let notified = || async { shared.timer.1.recv().await.is_ok() };
    loop {
        let deadline = shared.lock().hub.poll_timeout();
        match deadline {
            None => {
                notified().await;
            }
            Some(at) => {
                let fired = future::or(async { !notified().await }, async {
                    Timer::at(at).await;
                    true
                })
                .await;
                if fired && Instant::now() >= at {
                    shared.hub(|hub, now| hub.handle_timeout(now));
                }
            }
        }
    }
}

/// One tunnel connection: handshake, then idle/leased until it closes.
async fn tunnel_conn(mut stream: TcpStream, shared: Arc<Shared>) {
    let conn = ConnId(shared.next_id());
    let mut dec = HelloDecoder::new(Instant::now(), &shared.limits, shared.legacy);
    let mut buf = BytesMut::with_capacity(512);
    let hello = loop {
        match dec.decode(&mut buf) {
            Ok(Some(hello)) => break hello,
            Ok(None) => {}
            Err(e) => {
                if let Some(verdict) = e.verdict() {
                    let mut line = BytesMut::new();
                    encode_verdict(verdict, &mut line);
                    let _ = stream.write_all(&line).await;
                }
                return;
            }
        }
        let Some(deadline) = dec.deadline() else { return };
        match timeout_at(deadline, read_buf(&mut stream, &mut buf, crate::io::READ_CHUNK)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let (vtx, vrx) = bounded(1);
    let (ring, bell) = bounded(1);
    {
        let mut st = shared.lock();
        st.routes.verdicts.insert(conn, vtx);
        st.routes.bells.insert(conn, ring);
    }
    shared.hub(|hub, now| hub.handle(now, Input::Hello { conn, hello }));
    let ended = |shared: &Shared, input: Input| {
        {
            // With the bell gone `deliver` refuses later grants itself; one that crossed the close is
            // refused here the same way, so no visitor waits forever.
            let mut st = shared.lock();
            st.routes.bells.remove(&conn);
            if let Some(Mail::Grant(waiter)) = st.routes.mail.remove(&conn)
                && let Some(tx) = st.routes.waiters.remove(&waiter)
            {
                let _ = tx.try_send(Err(OFFLINE));
            }
        }
        shared.hub(|hub, now| hub.handle(now, input));
    };
    let closed = |shared: &Shared| ended(shared, Input::ConnClosed { conn });
    let Ok((verdict, write_line)) = vrx.recv().await else { return closed(&shared) };
    if write_line {
        let mut line = BytesMut::new();
        encode_verdict(verdict, &mut line);
        if stream.write_all(&line).await.is_err() {
            return closed(&shared);
        }
    }
    if verdict != Verdict::Accepted {
        // The hub never counted it.
        shared.lock().routes.bells.remove(&conn);
        return;
    }
    if !buf.is_empty() {
        // A client sends nothing before a request reaches it.
        return closed(&shared);
    }
    // An idle connection owns no buffer.
    drop(buf);
    let mut probe = [0u8; 1];
    loop {
        let rang = future::or(async { bell.recv().await.is_ok() }, async {
            // Idle: any byte or a close ends the connection.
            let _ = stream.read(&mut probe).await;
            false
        })
        .await;
        if !rang {
            return closed(&shared);
        }
        let waiter = match shared.lock().routes.mail.remove(&conn) {
            Some(Mail::Grant(waiter)) => waiter,
            Some(Mail::Close) => return closed(&shared),
            None => continue,
        };
        let waiting = shared.lock().routes.waiters.remove(&waiter);
        // No waiter: the visitor's cancel crossed the grant. Either way an unused connection goes back.
        let Some(tx) = waiting else {
            shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
            continue;
        };
        let (back_tx, back_rx) = bounded(1);
        match tx.try_send(Ok(Lease { stream, back: back_tx })) {
            Ok(()) => match back_rx.recv().await {
                Ok(Back::Checkin(s)) => {
                    stream = s;
                    shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
                }
                Ok(Back::Retire) => return ended(&shared, Input::Retired { conn }),
                Err(_) => return closed(&shared),
            },
            // The visitor left between grant and delivery: the connection is unused, check it in.
            Err(TrySendError::Closed(Ok(lease)) | TrySendError::Full(Ok(lease))) => {
                stream = lease.stream;
                shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
            }
            Err(_) => return closed(&shared),
        }
    }
}

/// One visitor connection: requests one after another, each answered or relayed.
async fn visitor(mut stream: TcpStream, addr: SocketAddr, shared: Arc<Shared>) {
    let ip = addr.ip().to_string();
    let deadlines =
        HeadDeadlines { idle: Some(shared.limits.idle_keepalive), head: Some(shared.limits.head_timeout) };
    let mut buf = BytesMut::with_capacity(crate::io::READ_CHUNK);
    let mut dec = Decoder::request(&shared.limits);
    // What the tunnel connection sent for the current exchange; kept across requests to spare allocations.
    let mut tbuf = BytesMut::new();
    loop {
        let head = match read_head(&mut stream, &mut buf, &mut dec, deadlines).await {
            Ok(head) => head,
            Err(HeadError::Frame(e)) => return write_and_close(stream, &front::frame_error(e)).await,
            Err(HeadError::TimedOut) => return write_and_close(stream, &front::head_timeout()).await,
            Err(HeadError::Closed) => return,
        };
        let mut admit = None;
        shared.hub(|hub, now| {
            let visitor = Visitor { addr: &ip, local: &shared.local };
            admit = Some(front::admit(&shared.front, hub, now, &head, visitor, crate::entropy, &mut dec));
        });
        let (tunnel, forward) = match admit {
            Some(Admit::Proxy(tunnel, forward)) => (tunnel, forward),
            Some(Admit::Reply { bytes, close }) => {
                if stream.write_all(&bytes).await.is_err() || close {
                    return;
                }
                continue;
            }
            None => return,
        };
        let waiter = WaiterId(shared.next_id());
        let (tx, rx) = bounded(1);
        shared.lock().routes.waiters.insert(waiter, tx);
        shared.hub(|hub, now| hub.handle(now, Input::Checkout { waiter, tunnel }));
        let granted = future::or(async { Some(rx.recv().await) }, async {
            left(&stream).await;
            None
        })
        .await;
        let Some(granted) = granted else { return cancel(&shared, waiter, &rx) };
        let mut lease = match granted {
            Ok(Ok(lease)) => lease,
            Ok(Err(why)) => {
                let (reply, close) = forward.refused(why, &mut dec);
                if stream.write_all(&reply).await.is_err() || close {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        let (mut req, mut resp) = forward.pumps(dec, &shared.limits);
        tbuf.clear();
        let outcome =
            exchange(&mut stream, &mut buf, &mut req, &mut lease.stream, &mut tbuf, &mut resp, DRAIN).await;
        let (request_end, response_end) = match outcome {
            Outcome::Done { request, response } => (request, response),
            Outcome::RequestFailed { frame, response_started } => {
                lease.end().await;
                if let Some(reply) = front::broken(frame, response_started) {
                    let _ = stream.write_all(&reply).await;
                }
                return;
            }
            Outcome::ResponseFailed { response_started } => {
                lease.end().await;
                if let Some(reply) = front::broken(None, response_started) {
                    let _ = stream.write_all(&reply).await;
                }
                return;
            }
            Outcome::Abandoned { request, response } => {
                // The visitor left and the response was read to its end: the connection may be in step.
                match resp.settle(request, response, !tbuf.is_empty()).upstream {
                    After::Reuse => lease.checkin(),
                    After::Close | After::Raw => lease.end().await,
                }
                return;
            }
        };
        // Bytes after the response would be taken for the next one: that connection is done.
        let settled = resp.settle(request_end, response_end, !tbuf.is_empty());
        match settled.upstream {
            After::Raw => {
                // The connection leaves the pool now (the hub forgets it), so the client can replace it.
                let Lease { stream: mut tunnel, back } = lease;
                let _ = back.try_send(Back::Retire);
                let _ = splice(&mut stream, &buf, &mut tunnel, &tbuf).await;
                return;
            }
            After::Reuse => lease.checkin(),
            After::Close => lease.end().await,
        }
        dec = req.into_decoder();
        if settled.downstream != After::Reuse {
            return;
        }
        dec.reset();
    }
}

/// Completes when the visitor's connection is gone for reading (reset, or failed).
///
/// Neither the bytes of a pipelined request nor an end of stream count: a visitor that half-closes
/// after a complete request (`nc -N`, HTTP/1.0 tools) still reads the response, and on the wire its
/// FIN looks the same as a full close.
async fn left(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    if stream.peek(&mut probe).await.is_ok() {
        future::pending::<()>().await;
    }
}

/// The visitor left while waiting: take it out of the queue, or hand back a connection granted meanwhile.
fn cancel(shared: &Shared, waiter: WaiterId, rx: &Receiver<Result<Lease, Refusal>>) {
    rx.close();
    if let Ok(Ok(lease)) = rx.try_recv() {
        lease.checkin();
        return;
    }
    shared.lock().routes.waiters.remove(&waiter);
    shared.hub(|hub, now| hub.handle(now, Input::Cancel { waiter }));
}

/// Writes the server's own reply, then closes the connection.
async fn write_and_close(mut stream: TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown(Shutdown::Write);
}
