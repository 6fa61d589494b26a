//! `aether serve`, sequenced once: the public HTTP listener, the tunnel listener, the hub's timer
//! loop, and the delivery of the hub's outputs.
//!
//! Each tunnel connection has a task (its line, [`line`]) that owns the socket while it is idle
//! and notices when it closes; a visitor granted that connection borrows the socket and gives it
//! back as a [`Back`]: checked in, retired (still open: its client replaces it), or nothing
//! (failed: closed). The hub and the routes its outputs go to sit under one lock.
//!
//! ```text
//!  visitor: read head ─▶ front::admit ─▶ Checkout ─▶ grant (or left: Cancel) ─▶ exchange ─▶ settle
//!  line:    hello ─▶ verdict ─▶ idle ─bell: Grant─▶ lent ─Back─▶ idle / Retired / ConnClosed
//! ```

use crate::idmap::IdMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::sync::{Bell, Either, Receiver, Sender, lock, oneshot, select_biased};
use super::time::{Deadline, timeout_at};
use super::wire::{
    HeadDeadlines, HeadError, READ_CHUNK, exchange, left, probe, read_head, read_some, splice, write_all,
    write_and_close,
};
use super::{Listener, Rt, Stream, Watch};
use crate::front::{self, Admit, FrontConfig, Visitor};
use crate::handshake::{Hello, HelloDecoder, Verdict, encode_verdict};
use crate::http::Decoder;
use crate::hub::{ConnId, Hub, Input, Output, Refusal, ServerEvent, WaiterId};
use crate::limits::Limits;
use crate::options::ServeOptions;
use crate::relay::{After, DRAIN_BUDGET, Flow, Outcome};

/// The answer to a visitor whose granted connection closed before it could be used.
const OFFLINE: Refusal = Refusal::Offline { retry_after: crate::hub::OFFLINE_RETRY_AFTER };

/// A tunnel connection lent to one visitor request; dropping it closes the connection.
struct Lease<S> {
    stream: S,
    back: Sender<Back<S>>,
}

/// What a visitor's task says of a lent connection; saying nothing means it failed (closed).
enum Back<S> {
    /// The exchange ended cleanly: the connection serves again.
    Checkin(S),
    /// The server is done with a connection that is still open: its client will replace it.
    Retire,
}

impl<S: Stream> Lease<S> {
    fn checkin(self) {
        let _ = self.back.send(Back::Checkin(self.stream));
    }

    /// Closes the connection: retired if it is still open, else (the client went) just closed.
    fn end(mut self) {
        if matches!(probe(&mut self.stream), None | Some(Watch::Data)) {
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
struct Routes<S> {
    verdicts: IdMap<ConnId, Sender<(Verdict, bool)>>,
    /// Wakes an idle tunnel connection's task (a few bytes each, where a channel would cost a block).
    bells: IdMap<ConnId, Arc<Bell>>,
    /// What the hub left for a tunnel connection's task, read when its bell rings.
    mail: IdMap<ConnId, Mail>,
    waiters: IdMap<WaiterId, Sender<Result<Lease<S>, Refusal>>>,
    next_id: u64,
}

struct State<S> {
    hub: Hub,
    routes: Routes<S>,
    /// The deadline the timer loop was last woken for.
    armed: Option<Instant>,
}

/// Everything the server's tasks share.
struct Shared<R: Rt> {
    state: Mutex<State<R::Stream>>,
    timer: Bell,
    front: FrontConfig,
    limits: Limits,
    local: String,
    legacy: bool,
    log: fn(&ServerEvent),
    rt: R,
}

impl<R: Rt> Shared<R> {
    /// The hub for `opts` (its tunnel listener on `tunnel_port`, the HTTP one at `local`), no routes yet.
    fn new(rt: R, opts: &ServeOptions, tunnel_port: u16, local: String, log: fn(&ServerEvent)) -> Self {
        let hub = Hub::new(opts.server_config(tunnel_port), rt.now());
        let routes = Routes {
            verdicts: IdMap::default(),
            bells: IdMap::default(),
            mail: IdMap::default(),
            waiters: IdMap::default(),
            next_id: 0,
        };
        Self {
            state: Mutex::new(State { hub, routes, armed: None }),
            timer: Bell::default(),
            front: opts.front_config(),
            limits: opts.limits.clone(),
            local,
            legacy: opts.legacy_handshake,
            log,
            rt,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R::Stream>> {
        lock(&self.state)
    }

    /// Feeds the hub and delivers everything it says.
    fn hub(&self, f: impl FnOnce(&mut Hub, Instant)) {
        let mut st = self.lock();
        f(&mut st.hub, self.rt.now());
        self.deliver(&mut st);
    }

    fn deliver(&self, st: &mut State<R::Stream>) {
        while let Some(out) = st.hub.poll() {
            let routes = &mut st.routes;
            match out {
                Output::Verdict { conn, verdict, write_line } => {
                    if let Some(tx) = routes.verdicts.remove(&conn) {
                        let _ = tx.send((verdict, write_line));
                    }
                }
                Output::Granted { waiter, conn } => match routes.bells.get(&conn) {
                    Some(bell) => {
                        routes.mail.insert(conn, Mail::Grant(waiter));
                        bell.ring();
                    }
                    // The connection's task is gone: it reports ConnClosed itself; this waiter is refused.
                    None => {
                        if let Some(tx) = routes.waiters.remove(&waiter) {
                            let _ = tx.send(Err(OFFLINE));
                        }
                    }
                },
                Output::Refused { waiter, why } => {
                    if let Some(tx) = routes.waiters.remove(&waiter) {
                        let _ = tx.send(Err(why));
                    }
                }
                Output::Close { conn } => {
                    if let Some(bell) = routes.bells.get(&conn) {
                        routes.mail.insert(conn, Mail::Close);
                        bell.ring();
                    }
                }
                Output::Event(e) => (self.log)(&e),
            }
        }
        // Wake the timer loop only when the next deadline moved: most hub calls leave it alone.
        let next = st.hub.poll_timeout();
        if next != st.armed {
            st.armed = next;
            self.timer.ring();
        }
    }

    fn next_id(&self) -> u64 {
        let mut st = self.lock();
        st.routes.next_id += 1;
        st.routes.next_id
    }
}

/// Binds both listeners and spawns the server's tasks on `rt`; returns the bound addresses.
pub(crate) fn start<R: Rt>(
    rt: R,
    opts: ServeOptions,
    log: fn(&ServerEvent),
) -> io::Result<(SocketAddr, SocketAddr)> {
    let http = rt.bind(SocketAddr::new(opts.address, opts.port))?;
    let tunnel = rt.bind(SocketAddr::new(opts.address, opts.tunnel_port))?;
    let (http_addr, tunnel_addr) = (http.local_addr()?, tunnel.local_addr()?);
    let shared = Arc::new(Shared::new(rt.clone(), &opts, tunnel_addr.port(), http_addr.to_string(), log));
    rt.spawn(timer_loop(shared.clone()));
    rt.spawn(accept_loop(http, shared.clone(), |s, addr, sh| sh.rt.clone().spawn(visitor(s, addr, sh))));
    rt.spawn(accept_loop(tunnel, shared, |s, _, sh| sh.rt.clone().spawn(line(s, sh))));
    Ok((http_addr, tunnel_addr))
}

/// Accepts connections for ever, handing each to `spawn`.
async fn accept_loop<R: Rt>(
    mut listener: R::Listener,
    shared: Arc<Shared<R>>,
    spawn: fn(R::Stream, SocketAddr, Arc<Shared<R>>),
) {
    let mut clock = Deadline::default();
    loop {
        match poll_fn(|cx| listener.poll_accept(cx)).await {
            Ok((stream, addr)) => spawn(stream, addr, shared.clone()),
            // Out of descriptors and the like: wait a moment instead of spinning.
            Err(_) => {
                clock.set(&shared.rt, Some(shared.rt.now() + Duration::from_millis(50)));
                clock.passed(&shared.rt).await;
            }
        }
    }
}

/// Arms one timer at the hub's next deadline (the driving contract).
async fn timer_loop<R: Rt>(shared: Arc<Shared<R>>) {
    let rt = &shared.rt;
    let mut clock = Deadline::default();
    loop {
        let deadline = shared.lock().hub.poll_timeout();
        clock.set(rt, deadline);
        if let Either::Second(()) = select_biased(shared.timer.rung(), clock.passed(rt)).await
            && deadline.is_some_and(|at| rt.now() >= at)
        {
            shared.hub(|hub, now| hub.handle_timeout(now));
        }
    }
}

/// Reads a tunnel connection's hello within its deadline; whether bytes came after it. A refused
/// hello gets its verdict line if it is owed one.
async fn read_hello<R: Rt>(shared: &Shared<R>, stream: &mut R::Stream) -> Option<(Hello, bool)> {
    let rt = &shared.rt;
    let mut dec = HelloDecoder::new(rt.now(), &shared.limits, shared.legacy);
    let mut buf = BytesMut::with_capacity(512);
    let mut clock = Deadline::default();
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(hello)) => return Some((hello, !buf.is_empty())),
            Ok(None) => {}
            Err(e) => {
                if let Some(verdict) = e.verdict() {
                    let mut line = BytesMut::new();
                    encode_verdict(verdict, &mut line);
                    let _ = write_all(stream, &line).await;
                }
                return None;
            }
        }
        let at = dec.deadline()?;
        match timeout_at(rt, &mut clock, at, read_some(stream, &mut buf, 512)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// One tunnel connection: handshake, then idle/lent until it closes.
async fn line<R: Rt>(mut stream: R::Stream, shared: Arc<Shared<R>>) {
    let conn = ConnId(shared.next_id());
    // The hello's buffer and timer end here: an idle connection owns neither. Boxed (once per
    // connection), so its state does not make every idle line's future larger.
    let Some((hello, more)) = Box::pin(read_hello(&shared, &mut stream)).await else { return };
    let (vtx, vrx) = oneshot();
    let bell = Arc::new(Bell::default());
    {
        let mut st = shared.lock();
        st.routes.verdicts.insert(conn, vtx);
        st.routes.bells.insert(conn, bell.clone());
    }
    shared.hub(|hub, now| hub.handle(now, Input::Hello { conn, hello }));
    let Some((verdict, write_line)) = vrx.await else { return closed(&shared, conn) };
    if write_line {
        let mut line = BytesMut::new();
        encode_verdict(verdict, &mut line);
        if write_all(&mut stream, &line).await.is_err() {
            return closed(&shared, conn);
        }
    }
    if verdict != Verdict::Accepted {
        // The hub never counted it.
        shared.lock().routes.bells.remove(&conn);
        return;
    }
    if more {
        // A client sends nothing before a request reaches it.
        return closed(&shared, conn);
    }
    loop {
        // Idle: any byte or a close ends the connection.
        let idle = poll_fn(|cx| stream.poll_watch(cx));
        if let Either::Second(_) = select_biased(bell.rung(), idle).await {
            return closed(&shared, conn);
        }
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
        let (back_tx, back_rx) = oneshot();
        match tx.send(Ok(Lease { stream, back: back_tx })) {
            Ok(()) => match back_rx.await {
                Some(Back::Checkin(s)) => stream = s,
                Some(Back::Retire) => return ended(&shared, conn, Input::Retired { conn }),
                None => return closed(&shared, conn),
            },
            // The visitor left between grant and delivery: the connection is unused, check it in.
            Err(Ok(lease)) => stream = lease.stream,
            Err(Err(_)) => return closed(&shared, conn),
        }
        shared.hub(|hub, now| hub.handle(now, Input::Checkin { conn }));
    }
}

/// A tunnel connection closed: the hub forgets it, and a visitor granted it in the meantime is refused.
fn closed<R: Rt>(shared: &Shared<R>, conn: ConnId) {
    ended(shared, conn, Input::ConnClosed { conn })
}

/// A tunnel connection ended, told to the hub as `input`; a visitor granted it meanwhile is refused.
fn ended<R: Rt>(shared: &Shared<R>, conn: ConnId, input: Input) {
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

#[cfg(test)]
mod tests;
mod visitor;
use visitor::visitor;
