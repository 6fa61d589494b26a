//! The server's one control machine: registrations, tunnel connections and
//! visitor requests waiting for them, for every tunnel at once.
//!
//! ```text
//!  register ─▶ tunnel (offline) ─Hello accepted─▶ online ─last ConnClosed─▶ offline ─grace─▶ Expired
//!
//!  visitor request:  Checkout ─┬─▶ Granted(conn) ─▶ exchange ─┬─ Checkin ─▶ conn idle / next waiter
//!                              │                               └─ ConnClosed ─▶ conn gone
//!                              ├─▶ queued ─┬─▶ Granted (check-in or new conn, oldest first)
//!                              │           ├─▶ Refused TimedOut (504) at its deadline
//!                              │           ├─▶ Refused Offline (503) when the last conn goes
//!                              │           └─▶ Cancel (visitor left): no output
//!                              └─▶ Refused UnknownTunnel (404) / Offline (503) / QueueFull (503)
//! ```
//!
//! The hub owns the [`Registry`] and one [`Pool`] per tunnel, and follows the
//! driving contract in the crate docs: every entry point first clamps `now`
//! and settles whatever deadline is due by then (so a request is never
//! granted after its deadline and an expired name is free), then applies its
//! input; outputs queue until [`Hub::poll`] drains them. Every waiter ends
//! exactly once: `Granted`, `Refused`, or cancelled by the adapter. A `Cancel`
//! that crosses a `Granted` is harmless, and the adapter then checks the
//! connection back in itself.
//!
//! It does not read sockets, parse handshakes or HTTP, or time out handshakes
//! (the adapter holds a [`HelloDecoder`](crate::handshake::HelloDecoder) per
//! new connection); it sees connections only once their hello is decoded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::handshake::{Hello, Verdict};
use crate::id::{Token, TunnelId};
use crate::limits::Limits;
use crate::pool::{Checkout, Pool};
use crate::registry::{Presence, Registry};

pub use crate::pool::{ConnId, WaiterId};
pub use crate::registry::RegisterError;

/// The longest `Retry-After` told to a visitor of an offline tunnel: clients reconnect within seconds.
pub const OFFLINE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How the server is set up, as far as the hub cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Bounds and timeouts.
    pub limits: Limits,
    /// `Some(D)`: tunnels are `<id>.D`; `None`: tunnels are `/<id>` on the registration host.
    pub domain: Option<String>,
    /// Public URLs are `https` (TLS is terminated in front of the server).
    pub secure: bool,
    /// The tunnel port told to clients in the registration reply.
    pub tunnel_port: u16,
    /// Accept the seed's tokenless `<id>` handshake line.
    pub legacy_handshake: bool,
}

impl Default for ServerConfig {
    /// SPEC §2 and §8 defaults: path mode, plain http, tunnel port 62322, no legacy handshakes.
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            domain: None,
            secure: false,
            tunnel_port: 62322,
            legacy_handshake: false,
        }
    }
}

/// A registration request, already routed and validated by the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The requested name; `None` for a random one.
    pub name: Option<TunnelId>,
    /// The token from `Aether-Tunnel-Token`, to resume a held name.
    pub resume: Option<Token>,
    /// The Host the registration was sent to; the URL's authority in path mode.
    pub host: String,
}

/// The JSON answer to a registration, shared with the client (which also parses localtunnel's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationReply {
    /// The tunnel's name.
    pub id: TunnelId,
    /// The port to open tunnel connections to.
    pub port: u16,
    /// How many tunnel connections the client should hold.
    pub max_conn_count: usize,
    /// The public URL.
    pub url: String,
    /// The ownership proof to send in each handshake; absent from localtunnel servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

/// What the adapter tells the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A tunnel connection sent its (decoded) handshake line.
    Hello {
        /// The connection.
        conn: ConnId,
        /// What it said.
        hello: Hello,
    },
    /// A tunnel connection closed or failed, idle or busy (or its exchange did not end cleanly).
    ConnClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A visitor request wants a connection of this tunnel.
    Checkout {
        /// The request, named by the adapter.
        waiter: WaiterId,
        /// The tunnel its Host or path names.
        tunnel: TunnelId,
    },
    /// The visitor went away before being granted.
    Cancel {
        /// The request.
        waiter: WaiterId,
    },
    /// The exchange on this leased connection ended cleanly: it may serve another.
    Checkin {
        /// The connection.
        conn: ConnId,
    },
}

/// Why a visitor request gets no tunnel connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No tunnel has this name (404).
    UnknownTunnel,
    /// The tunnel exists but its client is not connected (503 with `Retry-After`).
    Offline {
        /// When to try again.
        retry_after: Duration,
    },
    /// Too many requests already wait for this tunnel (503).
    QueueFull,
    /// No connection came free before the deadline (504).
    TimedOut,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::UnknownTunnel => 404,
            Refusal::Offline { .. } | Refusal::QueueFull => 503,
            Refusal::TimedOut => 504,
        }
    }

    /// The response body, for the visitor.
    pub fn message(&self) -> &str {
        match self {
            Refusal::UnknownTunnel => "no tunnel by this name on this server",
            Refusal::Offline { .. } => "tunnel offline: its client is not connected; try again shortly",
            Refusal::QueueFull => "tunnel busy: too many requests are waiting for it; try again later",
            Refusal::TimedOut => "tunnel busy: no tunnel connection came free in time",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A tunnel was registered, or resumed with its token.
    Registered {
        /// The tunnel.
        id: TunnelId,
        /// True for a resume.
        resumed: bool,
    },
    /// A tunnel got its first connection.
    Online {
        /// The tunnel.
        id: TunnelId,
    },
    /// A tunnel lost its last connection; its grace started.
    Offline {
        /// The tunnel.
        id: TunnelId,
    },
    /// A tunnel's grace ran out; its name is free.
    Expired {
        /// The tunnel.
        id: TunnelId,
    },
}

/// What the hub tells the adapter to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Answer a hello; the adapter closes the connection unless `Accepted`.
    Verdict {
        /// The connection.
        conn: ConnId,
        /// The answer.
        verdict: Verdict,
        /// False for a legacy (tokenless) hello: the seed's client expects no line.
        write_line: bool,
    },
    /// Send this request down this connection.
    Granted {
        /// The request.
        waiter: WaiterId,
        /// Its connection, leased until `Checkin` or `ConnClosed`.
        conn: ConnId,
    },
    /// Answer this request with an error.
    Refused {
        /// The request.
        waiter: WaiterId,
        /// Why.
        why: Refusal,
    },
    /// Close this tunnel connection (its tunnel is gone while it was held).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Log this.
    Event(ServerEvent),
}

/// The JSON of `GET /api/tunnels/<id>/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunnelStatus {
    /// Tunnel connections held (localtunnel's field).
    pub connected_sockets: usize,
    /// The most it may hold.
    pub max_conn_count: usize,
    /// Connections waiting for a request.
    pub idle: usize,
    /// Connections carrying a request.
    pub busy: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// Requests routed to it so far.
    pub requests: u64,
    /// Seconds since registration.
    pub age_secs: u64,
    /// Seconds since the last request (or registration).
    pub idle_secs: u64,
}

/// Process memory figures for `/api/status`, in bytes, supplied by the adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemStats {
    /// Bytes allocated now.
    pub alloc: u64,
    /// Bytes allocated in total since start.
    #[serde(rename = "totalAlloc")]
    pub total_alloc: u64,
    /// Resident set size.
    pub sys: u64,
    /// Heap bytes in use.
    #[serde(rename = "heapAlloc")]
    pub heap_alloc: u64,
}

/// The JSON of `GET /api/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServerStatus {
    /// Tunnels held.
    pub tunnels: usize,
    /// Memory figures.
    pub mem: MemStats,
}

#[derive(Debug, Clone)]
struct WaiterEntry {
    tunnel: TunnelId,
    deadline: Option<Instant>,
}

/// The server control machine. See the module docs and the crate's driving contract.
#[derive(Debug)]
pub struct Hub {
    config: ServerConfig,
    now: Instant,
    registry: Registry,
    pools: HashMap<TunnelId, Pool>,
    conns: HashMap<ConnId, TunnelId>,
    waiters: HashMap<WaiterId, WaiterEntry>,
    /// (deadline, waiter) for every queued waiter with a finite deadline.
    deadlines: BTreeSet<(Instant, WaiterId)>,
    out: VecDeque<Output>,
}

impl Hub {
    /// A hub with no tunnels, its clock at `now`.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        Self {
            registry: Registry::new(&config.limits),
            config,
            now,
            pools: HashMap::new(),
            conns: HashMap::new(),
            waiters: HashMap::new(),
            deadlines: BTreeSet::new(),
            out: VecDeque::new(),
        }
    }

    /// Registers (or resumes) a tunnel; queues a `Registered` event. Drain `poll` afterwards.
    pub fn register(
        &mut self,
        now: Instant,
        req: RegisterRequest,
        entropy: [u8; 32],
    ) -> Result<RegistrationReply, RegisterError> {
        let now = self.advance(now);
        let reg = self.registry.register(now, req.name, req.resume.as_ref(), &entropy)?;
        if !reg.resumed {
            let pool = Pool::new(self.config.limits.max_conn_per_tunnel, self.config.limits.max_waiters);
            self.pools.insert(reg.id.clone(), pool);
        }
        self.out
            .push_back(Output::Event(ServerEvent::Registered { id: reg.id.clone(), resumed: reg.resumed }));
        let scheme = if self.config.secure { "https" } else { "http" };
        let url = match &self.config.domain {
            Some(domain) => format!("{scheme}://{}.{domain}", reg.id),
            None => format!("{scheme}://{}/{}", req.host, reg.id),
        };
        Ok(RegistrationReply {
            id: reg.id,
            port: self.config.tunnel_port,
            max_conn_count: self.config.limits.max_conn_per_tunnel,
            url,
            token: Some(reg.token),
        })
    }

    /// Applies one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        let now = self.advance(now);
        match input {
            Input::Hello { conn, hello } => self.hello(now, conn, hello),
            Input::ConnClosed { conn } => self.conn_closed(now, conn),
            Input::Checkout { waiter, tunnel } => self.checkout(now, waiter, tunnel),
            Input::Cancel { waiter } => self.cancel(waiter),
            Input::Checkin { conn } => self.checkin(conn),
        }
    }

    /// Settles every deadline due by `now`: waiters time out (504), idle tunnels expire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next thing for the adapter to do.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When `handle_timeout` should next be called; `None`: no deadline pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waiter = self.deadlines.first().map(|(d, _)| *d);
        match (waiter, self.registry.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many tunnels exist.
    pub fn tunnel_count(&self) -> usize {
        self.registry.len()
    }

    /// The status of tunnel `id` at `now`, or `None` (404).
    pub fn tunnel_status(&self, now: Instant, id: &TunnelId) -> Option<TunnelStatus> {
        let t = self.registry.get(id)?;
        let pool = self.pools.get(id)?;
        let now = now.max(self.now);
        Some(TunnelStatus {
            connected_sockets: pool.len(),
            max_conn_count: pool.max_conn(),
            idle: pool.idle_count(),
            busy: pool.busy_count(),
            waiting: pool.waiting_count(),
            requests: t.requests,
            age_secs: now.saturating_duration_since(t.created).as_secs(),
            idle_secs: now.saturating_duration_since(t.last_access).as_secs(),
        })
    }

    /// The `/api/status` document, with memory figures from the adapter.
    pub fn server_status(&self, mem: MemStats) -> ServerStatus {
        ServerStatus { tunnels: self.tunnel_count(), mem }
    }

    /// Clamps the clock forward and fires what is due; returns the clamped `now`.
    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        let now = self.now;
        while let Some(&(at, waiter)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(entry) = self.waiters.remove(&waiter) {
                if let Some(pool) = self.pools.get_mut(&entry.tunnel) {
                    pool.cancel(waiter);
                }
                self.out.push_back(Output::Refused { waiter, why: Refusal::TimedOut });
            }
        }
        while let Some((id, _)) = self.registry.pop_expired(now) {
            // An expiring tunnel has no connection, so no waiter either; close defensively all the same.
            if let Some(mut pool) = self.pools.remove(&id) {
                debug_assert!(pool.is_empty() && pool.waiting_count() == 0, "{id} expired while in use");
                for waiter in pool.drain_waiters().collect::<Vec<_>>() {
                    self.forget_waiter(waiter);
                    self.out.push_back(Output::Refused { waiter, why: Refusal::UnknownTunnel });
                }
                if !pool.is_empty() {
                    self.conns.retain(|conn, t| {
                        if *t == id {
                            self.out.push_back(Output::Close { conn: *conn });
                        }
                        *t != id
                    });
                }
            }
            self.out.push_back(Output::Event(ServerEvent::Expired { id }));
        }
        now
    }

    fn hello(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        if self.conns.contains_key(&conn) {
            debug_assert!(false, "Hello for {conn:?}, which is already in a pool");
            return;
        }
        let write_line = hello.token.is_some();
        let verdict = match (self.registry.get(&hello.id), self.pools.get(&hello.id)) {
            (Some(t), Some(pool)) => match &hello.token {
                Some(token) if !token.ct_eq(&t.token) => Verdict::BadToken,
                None if !self.config.legacy_handshake => Verdict::BadToken,
                _ if pool.is_full() => Verdict::Full,
                _ => Verdict::Accepted,
            },
            _ => Verdict::UnknownTunnel,
        };
        self.out.push_back(Output::Verdict { conn, verdict, write_line });
        if verdict != Verdict::Accepted {
            return;
        }
        let Some(pool) = self.pools.get_mut(&hello.id) else { return };
        let granted = match pool.add(conn) {
            Ok(granted) => granted,
            Err(e) => {
                debug_assert!(false, "pool refused an accepted conn: {e}");
                return;
            }
        };
        let connected = pool.len();
        self.conns.insert(conn, hello.id.clone());
        if self.registry.set_connected(&hello.id, connected, now) == Some(Presence::Online) {
            self.out.push_back(Output::Event(ServerEvent::Online { id: hello.id }));
        }
        if let Some(waiter) = granted {
            self.grant(waiter, conn);
        }
    }

    fn conn_closed(&mut self, now: Instant, conn: ConnId) {
        // Unknown is normal: the conn was refused, or its tunnel expired, or the close raced another event.
        let Some(id) = self.conns.remove(&conn) else { return };
        let Some(pool) = self.pools.get_mut(&id) else { return };
        pool.remove(conn);
        let connected = pool.len();
        let orphans: Vec<WaiterId> = if connected == 0 { pool.drain_waiters().collect() } else { Vec::new() };
        if self.registry.set_connected(&id, connected, now) == Some(Presence::Offline) {
            self.out.push_back(Output::Event(ServerEvent::Offline { id: id.clone() }));
        }
        // Nothing will serve the queue now: tell each waiter the tunnel is offline, oldest first.
        let why = self.offline_refusal(&id);
        for waiter in orphans {
            self.forget_waiter(waiter);
            self.out.push_back(Output::Refused { waiter, why });
        }
    }

    fn checkout(&mut self, now: Instant, waiter: WaiterId, tunnel: TunnelId) {
        if self.waiters.contains_key(&waiter) {
            debug_assert!(false, "Checkout for {waiter:?}, which is already waiting");
            return;
        }
        if !self.registry.touch(&tunnel, now) {
            self.out.push_back(Output::Refused { waiter, why: Refusal::UnknownTunnel });
            return;
        }
        let Some(pool) = self.pools.get_mut(&tunnel) else { return };
        if pool.is_empty() {
            let why = self.offline_refusal(&tunnel);
            self.out.push_back(Output::Refused { waiter, why });
            return;
        }
        let deadline = now.checked_add(self.config.limits.wait_timeout);
        match pool.checkout(waiter, deadline) {
            Checkout::Granted(conn) => self.out.push_back(Output::Granted { waiter, conn }),
            Checkout::QueueFull => self.out.push_back(Output::Refused { waiter, why: Refusal::QueueFull }),
            Checkout::Queued => {
                if let Some(d) = deadline {
                    self.deadlines.insert((d, waiter));
                }
                self.waiters.insert(waiter, WaiterEntry { tunnel, deadline });
            }
        }
    }

    fn cancel(&mut self, waiter: WaiterId) {
        // Unknown is normal: the visitor left just as it was granted or refused.
        let Some(entry) = self.waiters.get(&waiter) else { return };
        if let Some(pool) = self.pools.get_mut(&entry.tunnel) {
            pool.cancel(waiter);
        }
        self.forget_waiter(waiter);
    }

    fn checkin(&mut self, conn: ConnId) {
        let Some(pool) = self.conns.get(&conn).and_then(|id| self.pools.get_mut(id)) else {
            debug_assert!(false, "Checkin of unknown {conn:?}");
            return;
        };
        match pool.checkin(conn) {
            Ok(Some(waiter)) => self.grant(waiter, conn),
            Ok(None) => {}
            Err(e) => debug_assert!(false, "Checkin of {conn:?}: {e}"),
        }
    }

    /// A queued waiter got a connection.
    fn grant(&mut self, waiter: WaiterId, conn: ConnId) {
        self.forget_waiter(waiter);
        self.out.push_back(Output::Granted { waiter, conn });
    }

    fn forget_waiter(&mut self, waiter: WaiterId) {
        if let Some(WaiterEntry { deadline: Some(d), .. }) = self.waiters.remove(&waiter) {
            self.deadlines.remove(&(d, waiter));
        }
    }

    /// 503 for an offline tunnel: retry after the rest of its grace, at most [`OFFLINE_RETRY_AFTER`], at least 1 s.
    fn offline_refusal(&self, id: &TunnelId) -> Refusal {
        let left = self
            .registry
            .get(id)
            .and_then(|t| t.expires_at())
            .map_or(OFFLINE_RETRY_AFTER, |e| e.saturating_duration_since(self.now));
        Refusal::Offline { retry_after: left.clamp(Duration::from_secs(1), OFFLINE_RETRY_AFTER) }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Hub {
    /// Checks that every index agrees with every other (tests and fuzzing); panics otherwise.
    pub(crate) fn check_invariants(&self) {
        self.registry.check_invariants();
        assert_eq!(self.pools.len(), self.registry.len(), "a pool per tunnel");
        let mut conns = 0;
        let mut queued = 0;
        for (id, pool) in &self.pools {
            pool.check_invariants();
            let t = self.registry.get(id).expect("pool without a tunnel");
            assert_eq!(t.connected, pool.len(), "{id}: registry and pool disagree on connections");
            assert!(
                pool.waiting_count() == 0 || pool.busy_count() > 0,
                "{id}: waiters with nothing to wait for"
            );
            for w in pool.waiters() {
                assert_eq!(self.waiters.get(&w).map(|e| &e.tunnel), Some(id), "{w:?} queued but not indexed");
            }
            conns += pool.len();
            queued += pool.waiting_count();
        }
        for (conn, id) in &self.conns {
            assert!(self.pools.get(id).is_some_and(|p| p.contains(*conn)), "{conn:?} indexed but not pooled");
        }
        assert_eq!(conns, self.conns.len(), "pooled connections not indexed");
        assert_eq!(queued, self.waiters.len(), "indexed waiters not queued");
        let deadlines: BTreeSet<_> =
            self.waiters.iter().filter_map(|(w, e)| e.deadline.map(|d| (d, *w))).collect();
        assert_eq!(deadlines, self.deadlines, "deadline index out of step");
    }
}

#[cfg(any(test, feature = "fuzzing"))]
mod sim;

/// Decodes an op sequence with time deltas from `data`, drives a [`Hub`] with it beside a
/// reference model, and panics on any invariant violation (the `hub_ops` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn fuzz_ops(data: &[u8]) {
    let (config, ops) = sim::decode(data);
    sim::Sim::new(config).run(&ops);
}

#[cfg(test)]
mod tests {
    use super::sim::{Op, Sim, Step};
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn cfg() -> ServerConfig {
        assert_eq!(ServerConfig::default().tunnel_port, 62322);
        ServerConfig {
            limits: Limits {
                max_conn_per_tunnel: 2,
                max_waiters: 2,
                max_tunnels: 3,
                wait_timeout: 30 * SEC,
                offline_grace: 60 * SEC,
                ..Limits::default()
            },
            domain: None,
            secure: false,
            tunnel_port: 62322,
            legacy_handshake: false,
        }
    }

    fn id(s: &str) -> TunnelId {
        TunnelId::parse(s).unwrap()
    }

    fn req(name: Option<&str>, resume: Option<Token>) -> RegisterRequest {
        RegisterRequest { name: name.map(id), resume, host: "example.com:8080".into() }
    }

    fn drain(hub: &mut Hub) -> Vec<Output> {
        std::iter::from_fn(|| hub.poll()).collect()
    }

    /// A hub with tunnel "myapp" registered at t0; returns its token.
    fn setup(config: ServerConfig) -> (Hub, Instant, Token) {
        let t0 = Instant::now();
        let mut hub = Hub::new(config, t0);
        let reply = hub.register(t0, req(Some("myapp"), None), [7; 32]).unwrap();
        drain(&mut hub);
        (hub, t0, reply.token.unwrap())
    }

    fn hello(hub: &mut Hub, now: Instant, conn: u64, token: Option<Token>) -> Vec<Output> {
        hub.handle(now, Input::Hello { conn: ConnId(conn), hello: Hello { id: id("myapp"), token } });
        drain(hub)
    }

    fn checkout(hub: &mut Hub, now: Instant, waiter: u64, tunnel: &str) -> Vec<Output> {
        hub.handle(now, Input::Checkout { waiter: WaiterId(waiter), tunnel: id(tunnel) });
        drain(hub)
    }

    fn verdict(v: Verdict, conn: u64) -> Output {
        Output::Verdict { conn: ConnId(conn), verdict: v, write_line: true }
    }

    #[test]
    fn registration_reply_urls_and_json() {
        let t0 = Instant::now();
        let mut hub = Hub::new(cfg(), t0);
        let r = hub.register(t0, req(Some("myapp"), None), [1; 32]).unwrap();
        assert_eq!(r.url, "http://example.com:8080/myapp");
        assert_eq!((r.port, r.max_conn_count), (62322, 2));
        assert!(r.token.unwrap().ct_eq(&Token::from_bytes([1; 16])));
        assert_eq!(
            drain(&mut hub),
            vec![Output::Event(ServerEvent::Registered { id: id("myapp"), resumed: false })]
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RegistrationReply>(&json).unwrap(), r);

        let domain = ServerConfig { domain: Some("tunnel.example.com".into()), secure: true, ..cfg() };
        let mut hub = Hub::new(domain, t0);
        let r = hub.register(t0, req(None, None), [2; 32]).unwrap();
        assert_eq!(r.url, format!("https://{}.tunnel.example.com", r.id));

        // localtunnel's reply: no token, extra fields.
        let lt = r#"{"id":"abcd","port":40001,"max_conn_count":10,"url":"https://abcd.loca.lt","cached_url":null}"#;
        let parsed: RegistrationReply = serde_json::from_str(lt).unwrap();
        assert_eq!((&parsed.id, parsed.port, parsed.token), (&id("abcd"), 40001, None));
        assert!(!serde_json::to_string(&parsed).unwrap().contains("token"));
    }

    #[test]
    fn held_name_is_409_with_when_it_frees_and_resume_keeps_connections() {
        let (mut hub, t0, token) = setup(cfg());
        let t1 = t0 + 10 * SEC;
        let taken = hub.register(t1, req(Some("myapp"), None), [8; 32]);
        assert_eq!(taken, Err(RegisterError::NameTaken { retry_after: Some(50 * SEC) }));
        let wrong = hub.register(t1, req(Some("myapp"), Some(Token::from_bytes([8; 16]))), [8; 32]);
        assert_eq!(wrong.unwrap_err().status(), 409);
        assert_eq!(hello(&mut hub, t1, 1, Some(token))[0], verdict(Verdict::Accepted, 1));
        assert_eq!(
            hub.register(t1, req(Some("myapp"), None), [8; 32]),
            Err(RegisterError::NameTaken { retry_after: None })
        );
        let resumed = hub.register(t1, req(Some("myapp"), Some(token)), [9; 32]).unwrap();
        assert!(resumed.token.unwrap().ct_eq(&token));
        assert_eq!(
            drain(&mut hub),
            vec![Output::Event(ServerEvent::Registered { id: id("myapp"), resumed: true })]
        );
        assert_eq!(hub.tunnel_status(t1, &id("myapp")).unwrap().connected_sockets, 1);
    }

    #[test]
    fn a_tunnel_never_connected_expires_after_grace_and_frees_its_name() {
        let (mut hub, t0, _) = setup(cfg());
        assert_eq!(hub.poll_timeout(), Some(t0 + 60 * SEC));
        hub.handle_timeout(t0 + 60 * SEC - Duration::from_nanos(1));
        assert_eq!(hub.tunnel_count(), 1);
        hub.handle_timeout(t0 + 60 * SEC);
        assert_eq!(drain(&mut hub), vec![Output::Event(ServerEvent::Expired { id: id("myapp") })]);
        assert_eq!((hub.tunnel_count(), hub.poll_timeout()), (0, None));
        assert_eq!(
            checkout(&mut hub, t0 + 61 * SEC, 1, "myapp")[0].clone(),
            refused(1, Refusal::UnknownTunnel)
        );
        // A late registration finds the name free even if the timer has not fired yet.
        let (mut hub, t0, _) = setup(cfg());
        assert!(hub.register(t0 + 60 * SEC, req(Some("myapp"), None), [3; 32]).is_ok());
    }

    fn refused(w: u64, why: Refusal) -> Output {
        Output::Refused { waiter: WaiterId(w), why }
    }

    #[test]
    fn grace_restarts_when_the_last_connection_goes() {
        let (mut hub, t0, token) = setup(cfg());
        hello(&mut hub, t0 + SEC, 1, Some(token));
        assert_eq!(hub.poll_timeout(), None, "online: nothing to expire");
        hub.handle(t0 + 100 * SEC, Input::ConnClosed { conn: ConnId(1) });
        assert_eq!(drain(&mut hub), vec![Output::Event(ServerEvent::Offline { id: id("myapp") })]);
        assert_eq!(hub.poll_timeout(), Some(t0 + 160 * SEC));
        let early = checkout(&mut hub, t0 + 101 * SEC, 1, "myapp");
        assert_eq!(early, vec![refused(1, Refusal::Offline { retry_after: OFFLINE_RETRY_AFTER })]);
        // Near the end of the grace, Retry-After is what is left of it.
        let late = checkout(&mut hub, t0 + 158 * SEC, 2, "myapp");
        assert_eq!(late, vec![refused(2, Refusal::Offline { retry_after: 2 * SEC })]);
        hub.handle(t0 + 100 * SEC, Input::ConnClosed { conn: ConnId(1) }); // stale close: harmless
        assert!(drain(&mut hub).is_empty());
    }

    #[test]
    fn hello_verdicts() {
        let (mut hub, t0, token) = setup(cfg());
        let out = hello(&mut hub, t0, 1, Some(Token::from_bytes([0; 16])));
        assert_eq!(out, vec![verdict(Verdict::BadToken, 1)]);
        let out = hello(&mut hub, t0, 2, None);
        assert_eq!(
            out,
            vec![Output::Verdict { conn: ConnId(2), verdict: Verdict::BadToken, write_line: false }]
        );
        hub.handle(
            t0,
            Input::Hello { conn: ConnId(3), hello: Hello { id: id("other"), token: Some(token) } },
        );
        assert_eq!(drain(&mut hub), vec![verdict(Verdict::UnknownTunnel, 3)]);
        let out = hello(&mut hub, t0, 4, Some(token));
        assert_eq!(
            out,
            vec![verdict(Verdict::Accepted, 4), Output::Event(ServerEvent::Online { id: id("myapp") })]
        );
        assert_eq!(hello(&mut hub, t0, 5, Some(token)), vec![verdict(Verdict::Accepted, 5)]);
        assert_eq!(hello(&mut hub, t0, 6, Some(token)), vec![verdict(Verdict::Full, 6)]);
        // Refused conns were never pooled: closing them changes nothing.
        hub.handle(t0, Input::ConnClosed { conn: ConnId(6) });
        assert!(drain(&mut hub).is_empty());
        assert_eq!(hub.tunnel_status(t0, &id("myapp")).unwrap().connected_sockets, 2);
    }

    #[test]
    fn legacy_hello_only_with_the_flag_and_without_a_verdict_line() {
        let (mut hub, t0, _) = setup(ServerConfig { legacy_handshake: true, ..cfg() });
        let out = hello(&mut hub, t0, 1, None);
        assert_eq!(
            out[0],
            Output::Verdict { conn: ConnId(1), verdict: Verdict::Accepted, write_line: false }
        );
    }

    #[test]
    fn busy_tunnel_queues_fifo_then_503_when_full_and_504_at_deadline() {
        let (mut hub, t0, token) = setup(cfg());
        hello(&mut hub, t0, 1, Some(token));
        assert_eq!(
            checkout(&mut hub, t0, 1, "myapp"),
            vec![Output::Granted { waiter: WaiterId(1), conn: ConnId(1) }]
        );
        assert!(checkout(&mut hub, t0 + SEC, 2, "myapp").is_empty());
        assert!(checkout(&mut hub, t0 + 2 * SEC, 3, "myapp").is_empty());
        assert_eq!(checkout(&mut hub, t0 + 2 * SEC, 4, "myapp"), vec![refused(4, Refusal::QueueFull)]);
        assert_eq!(hub.poll_timeout(), Some(t0 + 31 * SEC));
        // A check-in goes to the oldest waiter.
        hub.handle(t0 + 3 * SEC, Input::Checkin { conn: ConnId(1) });
        assert_eq!(drain(&mut hub), vec![Output::Granted { waiter: WaiterId(2), conn: ConnId(1) }]);
        assert_eq!(hub.poll_timeout(), Some(t0 + 32 * SEC));
        hub.handle_timeout(t0 + 32 * SEC);
        assert_eq!(drain(&mut hub), vec![refused(3, Refusal::TimedOut)]);
        assert_eq!(hub.poll_timeout(), None);
        // Cancelling a finished waiter is a harmless race.
        hub.handle(t0 + 33 * SEC, Input::Cancel { waiter: WaiterId(3) });
        assert!(drain(&mut hub).is_empty());
        let s = hub.tunnel_status(t0 + 40 * SEC, &id("myapp")).unwrap();
        assert_eq!((s.busy, s.idle, s.waiting, s.requests, s.age_secs, s.idle_secs), (1, 0, 0, 4, 40, 38));
    }

    #[test]
    fn a_new_connection_serves_the_oldest_waiter_and_cancel_leaves_no_trace() {
        let (mut hub, t0, token) = setup(cfg());
        hello(&mut hub, t0, 1, Some(token));
        let _ = checkout(&mut hub, t0, 1, "myapp");
        assert!(checkout(&mut hub, t0, 2, "myapp").is_empty());
        assert!(checkout(&mut hub, t0, 3, "myapp").is_empty());
        hub.handle(t0, Input::Cancel { waiter: WaiterId(2) });
        let out = hello(&mut hub, t0, 2, Some(token));
        assert_eq!(
            out,
            vec![verdict(Verdict::Accepted, 2), Output::Granted { waiter: WaiterId(3), conn: ConnId(2) }]
        );
        assert_eq!(hub.poll_timeout(), None);
        hub.check_invariants();
    }

    #[test]
    fn losing_the_last_connection_refuses_the_queue_as_offline() {
        let (mut hub, t0, token) = setup(cfg());
        hello(&mut hub, t0, 1, Some(token));
        let _ = checkout(&mut hub, t0, 1, "myapp");
        let _ = checkout(&mut hub, t0, 2, "myapp");
        hub.handle(t0 + SEC, Input::ConnClosed { conn: ConnId(1) });
        let offline = Refusal::Offline { retry_after: OFFLINE_RETRY_AFTER };
        assert_eq!(
            drain(&mut hub),
            vec![Output::Event(ServerEvent::Offline { id: id("myapp") }), refused(2, offline)]
        );
        assert_eq!(
            (offline.status(), Refusal::TimedOut.status(), Refusal::UnknownTunnel.status()),
            (503, 504, 404)
        );
        assert!(offline.message().contains("tunnel offline"));
    }

    #[test]
    fn too_many_tunnels_is_503_and_time_is_clamped() {
        let (mut hub, t0, _) = setup(cfg());
        hub.register(t0, req(Some("two2"), None), [2; 32]).unwrap();
        hub.register(t0, req(None, None), [3; 32]).unwrap();
        let err = hub.register(t0, req(None, None), [4; 32]).unwrap_err();
        assert_eq!((err, err.status()), (RegisterError::TooManyTunnels, 503));
        hub.handle_timeout(t0 + 70 * SEC);
        assert_eq!(hub.tunnel_count(), 0);
        // An earlier instant is treated as the latest one seen: no deadline from the past.
        assert!(hub.register(t0, req(Some("back"), None), [5; 32]).is_ok());
        assert_eq!(hub.poll_timeout(), Some(t0 + 130 * SEC));
    }

    #[test]
    fn status_documents() {
        let (hub, _, _) = setup(cfg());
        let mem = MemStats { alloc: 1, total_alloc: 2, sys: 3, heap_alloc: 4 };
        let json = serde_json::to_value(hub.server_status(mem)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"tunnels": 1, "mem": {"alloc": 1, "totalAlloc": 2, "sys": 3, "heapAlloc": 4}})
        );
        let t = hub.tunnel_status(hub.now, &id("myapp")).unwrap();
        assert_eq!(serde_json::to_value(t).unwrap()["connected_sockets"], 0);
        assert!(hub.tunnel_status(hub.now, &id("nope")).is_none());
    }

    #[test]
    fn fuzz_ops_over_fixed_inputs() {
        fuzz_ops(&[]);
        fuzz_ops(&[0]);
        // Register alpha, hello x2, checkout x3, checkin, close, timeout, with varied configs and gaps.
        fuzz_ops(&[
            0x06, 0, 0, 0, 1, 0, 5, 1, 0, 5, 3, 0, 0, 3, 0, 0, 3, 0, 0, 5, 0, 10, 2, 0, 220, 7, 0, 255,
        ]);
        fuzz_ops(&[0xff, 0, 3, 0, 0x21, 3, 0, 3, 3, 0, 0x09, 0, 0, 4, 1, 1, 0x10, 0, 0, 6, 0, 250]);
        fuzz_ops(&(0..=255u8).collect::<Vec<_>>());
        fuzz_ops(&(0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>());
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (any::<u8>(), 0..3u8).prop_map(|(name, resume)| Op::Register { name, resume }),
            3 => (any::<u8>(), prop_oneof![8 => Just(0u8), 1 => Just(1), 1 => Just(2)])
                .prop_map(|(tunnel, token)| Op::Hello { tunnel, token }),
            2 => any::<u8>().prop_map(|conn| Op::Close { conn }),
            5 => any::<u8>().prop_map(|tunnel| Op::Checkout { tunnel }),
            1 => any::<u8>().prop_map(|waiter| Op::Cancel { waiter }),
            4 => any::<u8>().prop_map(|conn| Op::Checkin { conn }),
            1 => Just(Op::Timeout),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        // Half-second multiples make deadlines land exactly on a step now and then (the `<=` edge).
        let dt = prop_oneof![3 => 0..2_000u64, 2 => (0..24u64).prop_map(|n| n * 500), 1 => 0..12_000u64]
            .prop_map(Duration::from_millis);
        (dt, proptest::bool::weighted(0.1), op()).prop_map(|(dt, late, op)| Step { dt, late, op })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The hub agrees with the reference model after every step, and: leases are exclusive, pools stay
        /// within max_conn, waiters are served FIFO and end exactly once, none outlives its deadline,
        /// poll_timeout is the earliest live deadline and is later than t after handle_timeout(t).
        #[test]
        fn hub_matches_model(
            legacy in any::<bool>(),
            max_conn in 1..4usize,
            max_waiters in 0..4usize,
            max_tunnels in 1..5usize,
            domain in any::<bool>(),
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            Sim::new(sim::config(legacy, max_conn, max_waiters, max_tunnels, domain)).run(&steps);
        }

        /// The fuzz target's byte decoding reaches the same checks without false alarms.
        #[test]
        fn fuzz_ops_holds_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_ops(&data);
        }
    }
}
