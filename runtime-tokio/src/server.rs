//! `aether serve` on tokio: the public HTTP listener, the tunnel listener, and
//! the loop that carries out the hub's outputs.
//!
//! Each tunnel connection has a task that owns its socket while it is idle
//! (and notices when it closes); a visitor granted that connection borrows
//! the socket and gives it back (check-in), retires it (still open: its client
//! replaces it) or drops it (failed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant as StdInstant;

use aether_core::front::{self, Admit, FrontConfig, Visitor};
use aether_core::handshake::{HelloDecoder, Verdict, encode_verdict};
use aether_core::http::Decoder;
use aether_core::hub::{ConnId, Hub, Input, Output, Refusal, ServerEvent, WaiterId};
use aether_core::limits::Limits;
use aether_core::options::ServeOptions;
use aether_core::relay::{After, DRAIN_BUDGET};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use crate::io::{Deadline, HeadDeadlines, HeadError, Outcome, exchange, read_head, splice};

/// The answer to a visitor whose granted connection closed before it could be used.
const OFFLINE: Refusal = Refusal::Offline { retry_after: aether_core::hub::OFFLINE_RETRY_AFTER };

/// A response whose visitor left is read to its end, up to this, to keep its tunnel connection.
const DRAIN: Option<usize> = Some(DRAIN_BUDGET);

/// A tunnel connection lent to one visitor request; dropping it closes the connection.
struct Lease {
    stream: TcpStream,
    back: oneshot::Sender<Back>,
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
        let _ = self.back.send(Back::Checkin(self.stream));
    }

    /// Closes the connection: retired if it is still open, else (the client went) just closed.
    fn end(self) {
        let mut probe = [0u8; 1];
        let open = match self.stream.try_read(&mut probe) {
            Ok(n) => n > 0,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        if open {
            let _ = self.back.send(Back::Retire);
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

/// What the hub's outputs are delivered to.
#[derive(Default)]
struct Routes {
    verdicts: HashMap<ConnId, oneshot::Sender<(Verdict, bool)>>,
    /// Wakes an idle tunnel connection's task (a few bytes each, where a channel would cost a block).
    bells: HashMap<ConnId, Arc<Notify>>,
    /// What the hub left for a tunnel connection's task, read when its bell rings.
    mail: HashMap<ConnId, Mail>,
    waiters: HashMap<WaiterId, oneshot::Sender<Result<Lease, Refusal>>>,
    next_id: u64,
}

struct State {
    hub: Hub,
    routes: Routes,
    /// The deadline the timer loop was last woken for.
    armed: Option<StdInstant>,
}

/// Everything the server's tasks share.
pub(crate) struct Shared {
    state: Mutex<State>,
    timer: Notify,
    front: FrontConfig,
    limits: Limits,
    local: String,
    legacy: bool,
    log: fn(&ServerEvent),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole server down with a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the hub and delivers everything it says.
    fn hub(&self, f: impl FnOnce(&mut Hub, StdInstant)) {
        let mut st = self.lock();
        f(&mut st.hub, StdInstant::now());
        self.deliver(&mut st);
    }

    fn deliver(&self, st: &mut State) {
        while let Some(out) = st.hub.poll() {
            match out {
                Output::Verdict { conn, verdict, write_line } => {
                    if let Some(tx) = st.routes.verdicts.remove(&conn) {
                        let _ = tx.send((verdict, write_line));
                    }
                }
                Output::Granted { waiter, conn } => {
                    let routes = &mut st.routes;
                    match routes.bells.get(&conn) {
                        Some(bell) => {
                            routes.mail.insert(conn, Mail::Grant(waiter));
                            bell.notify_one();
                        }
                        // The connection's task is gone: it reports ConnClosed itself; this waiter is refused.
                        None => {
                            if let Some(tx) = routes.waiters.remove(&waiter) {
                                let _ = tx.send(Err(OFFLINE));
                            }
                        }
                    }
                }
                Output::Refused { waiter, why } => {
                    if let Some(tx) = st.routes.waiters.remove(&waiter) {
                        let _ = tx.send(Err(why));
                    }
                }
                Output::Close { conn } => {
                    let routes = &mut st.routes;
                    if let Some(bell) = routes.bells.get(&conn) {
                        routes.mail.insert(conn, Mail::Close);
                        bell.notify_one();
                    }
                }
                Output::Event(e) => (self.log)(&e),
            }
        }
        // Wake the timer loop only when the next deadline moved: most hub calls leave it alone.
        let next = st.hub.poll_timeout();
        if next != st.armed {
            st.armed = next;
            self.timer.notify_one();
        }
    }

    fn next_id(&self) -> u64 {
        let mut st = self.lock();
        st.routes.next_id += 1;
        st.routes.next_id
    }
}

/// Binds both listeners and spawns the server's tasks on the current runtime.
pub(crate) async fn start(
    opts: ServeOptions,
    log: fn(&ServerEvent),
) -> std::io::Result<(SocketAddr, SocketAddr, Arc<Shared>)> {
    let http = TcpListener::bind((opts.address, opts.port)).await?;
    let tunnel = TcpListener::bind((opts.address, opts.tunnel_port)).await?;
    let (http_addr, tunnel_addr) = (http.local_addr()?, tunnel.local_addr()?);
    let hub = Hub::new(opts.server_config(tunnel_addr.port()), StdInstant::now());
    let shared = Arc::new(Shared {
        state: Mutex::new(State { hub, routes: Routes::default(), armed: None }),
        timer: Notify::new(),
        front: opts.front_config(),
        limits: opts.limits.clone(),
        local: http_addr.to_string(),
        legacy: opts.legacy_handshake,
        log,
    });
    tokio::spawn(timer_loop(shared.clone()));
    tokio::spawn(accept_loop(http, shared.clone(), |s, addr, sh| tokio::spawn(visitor(s, addr, sh))));
    tokio::spawn(accept_loop(tunnel, shared.clone(), |s, _, sh| tokio::spawn(tunnel_conn(s, sh))));
    Ok((http_addr, tunnel_addr, shared))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    spawn: fn(TcpStream, SocketAddr, Arc<Shared>) -> tokio::task::JoinHandle<()>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                spawn(stream, addr, shared.clone());
            }
            // Out of descriptors and the like: wait a moment instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Arms one timer at the hub's next deadline (the driving contract).
async fn timer_loop(shared: Arc<Shared>) {
    loop {
        let deadline = shared.lock().hub.poll_timeout();
        match deadline {
            None => shared.timer.notified().await,
            Some(at) => {
                tokio::select! {
                    _ = shared.timer.notified() => {}
                    _ = tokio::time::sleep_until(at.into()) => {
                        if StdInstant::now() >= at {
                            shared.hub(|hub, now| hub.handle_timeout(now));
                        }
                    }
                }
            }
        }
    }
}

/// One tunnel connection: handshake, then idle/leased until it closes.
async fn tunnel_conn(mut stream: TcpStream, shared: Arc<Shared>) {
    let conn = ConnId(shared.next_id());
    let mut dec = HelloDecoder::new(StdInstant::now(), &shared.limits, shared.legacy);
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
        match tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let (vtx, vrx) = oneshot::channel();
    let bell = Arc::new(Notify::new());
    {
        let mut st = shared.lock();
        st.routes.verdicts.insert(conn, vtx);
        st.routes.bells.insert(conn, bell.clone());
    }
    shared.hub(|hub, now| hub.handle(now, Input::Hello { conn, hello }));
    let Ok((verdict, write_line)) = vrx.await else { return closed(&shared, conn) };
    if write_line {
        let mut line = BytesMut::new();
        encode_verdict(verdict, &mut line);
        if stream.write_all(&line).await.is_err() {
            return closed(&shared, conn);
        }
    }
    if verdict != Verdict::Accepted {
        // The hub never counted it.
        shared.lock().routes.bells.remove(&conn);
        return;
    }
    if !buf.is_empty() {
        // A client sends nothing before a request reaches it.
        return closed(&shared, conn);
    }
    // An idle connection owns no buffer.
    drop(buf);
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            () = bell.notified() => {
                let waiter = match shared.lock().routes.mail.remove(&conn) {
                    Some(Mail::Grant(waiter)) => waiter,
                    Some(Mail::Close) => return closed(&shared, conn),
                    None => continue,
                };
                let waiting = shared.lock().routes.waiters.remove(&waiter);
                // No waiter: the visitor's cancel crossed the grant. Either way an unused connection goes back.
                let Some(tx) = waiting else {
                    shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
                    continue;
                };
                let (back_tx, back_rx) = oneshot::channel();
                match tx.send(Ok(Lease { stream, back: back_tx })) {
                    Ok(()) => match back_rx.await {
                        Ok(Back::Checkin(s)) => {
                            stream = s;
                            shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
                        }
                        Ok(Back::Retire) => return ended(&shared, conn, Input::Retired { conn }),
                        Err(_) => return closed(&shared, conn),
                    },
                    // The visitor left between grant and delivery: the connection is unused, check it in.
                    Err(Ok(lease)) => {
                        stream = lease.stream;
                        shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
                    }
                    Err(Err(_)) => return closed(&shared, conn),
                }
            }
            // Idle: any byte or a close ends the connection.
            _ = stream.read(&mut probe) => return closed(&shared, conn),
        }
    }
}

/// A tunnel connection closed: the hub forgets it, and a visitor granted it in the meantime is refused.
fn closed(shared: &Shared, conn: ConnId) {
    ended(shared, conn, Input::ConnClosed { conn })
}

/// A tunnel connection ended, told to the hub as `input`; a visitor granted it meanwhile is refused.
fn ended(shared: &Shared, conn: ConnId, input: Input) {
    {
        // With the bell gone `deliver` refuses later grants itself; one that crossed the close is
        // refused here the same way, so no visitor waits forever.
        let mut st = shared.lock();
        st.routes.bells.remove(&conn);
        if let Some(Mail::Grant(waiter)) = st.routes.mail.remove(&conn)
            && let Some(tx) = st.routes.waiters.remove(&waiter)
        {
            let _ = tx.send(Err(OFFLINE));
        }
    }
    shared.hub(|hub, now| hub.handle(now, input));
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
    let mut clock = Deadline::default();
    loop {
        let head = match read_head(&mut stream, &mut buf, &mut dec, deadlines, &mut clock).await {
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
        let (tx, mut rx) = oneshot::channel();
        shared.lock().routes.waiters.insert(waiter, tx);
        shared.hub(|hub, now| hub.handle(now, Input::Checkout { waiter, tunnel }));
        let granted = tokio::select! {
            granted = &mut rx => granted,
            () = left(&stream) => return cancel(&shared, waiter, rx),
        };
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
                lease.end();
                if let Some(reply) = front::broken(frame, response_started) {
                    let _ = stream.write_all(&reply).await;
                }
                return;
            }
            Outcome::ResponseFailed { response_started } => {
                lease.end();
                if let Some(reply) = front::broken(None, response_started) {
                    let _ = stream.write_all(&reply).await;
                }
                return;
            }
            Outcome::Abandoned { request, response } => {
                // The visitor left and the response was read to its end: the connection may be in step.
                match resp.settle(request, response, !tbuf.is_empty()).upstream {
                    After::Reuse => lease.checkin(),
                    After::Close | After::Raw => lease.end(),
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
                let _ = back.send(Back::Retire);
                let _ = splice(&mut stream, &buf, &mut tunnel, &tbuf).await;
                return;
            }
            After::Reuse => lease.checkin(),
            After::Close => lease.end(),
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
        std::future::pending::<()>().await;
    }
}

/// The visitor left while waiting: take it out of the queue, or hand back a connection granted meanwhile.
fn cancel(shared: &Shared, waiter: WaiterId, mut rx: oneshot::Receiver<Result<Lease, Refusal>>) {
    rx.close();
    if let Ok(Ok(lease)) = rx.try_recv() {
        lease.checkin();
        return;
    }
    shared.lock().routes.waiters.remove(&waiter);
    shared.hub(|hub, now| hub.handle(now, Input::Cancel { waiter }));
}

async fn write_and_close(mut stream: TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
}
