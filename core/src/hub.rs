//! The server's one control machine: registrations, tunnel connections and
//! visitor requests waiting for them, for every tunnel at once.
//!
//! ```text
//!  register ─▶ tunnel (offline) ─Hello accepted─▶ online ─last ConnClosed─▶ offline ─grace─▶ Expired
//!
//!  visitor request:  Checkout ─┬─▶ Granted(conn) ─▶ exchange ─┬─ Checkin ─▶ conn idle / next waiter
//!                              │                               ├─ ConnClosed ─▶ conn gone
//!                              │                               └─ Retired ─▶ conn gone, client replaces it
//!                              ├─▶ queued ─┬─▶ Granted (check-in or new conn, oldest first)
//!                              │           ├─▶ Refused TimedOut (504) at its deadline
//!                              │           ├─▶ Refused Offline (503) when the last conn goes, or
//!                              │           │   when a retired last conn is not replaced in time
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
//! A connection the adapter closed itself after an exchange that did not end
//! cleanly (`Retired`) is not a client going away: its client redials at once.
//! When it was the tunnel's last, waiting requests stay queued, and new ones
//! queue too, for as long as a handshake may take ([`Limits::handshake_timeout`]);
//! only if no connection arrives by then are they refused as offline.
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
use crate::idmap::IdMap;
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
    /// A tunnel connection closed or failed on its own, idle or busy.
    ConnClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The adapter closed a leased connection whose exchange did not end cleanly; its client will
    /// replace it.
    Retired {
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
    conns: IdMap<ConnId, TunnelId>,
    waiters: IdMap<WaiterId, WaiterEntry>,
    /// (deadline, waiter) for every queued waiter with a finite deadline.
    deadlines: BTreeSet<(Instant, WaiterId)>,
    /// (until, tunnel) for each tunnel whose last connection was retired: its replacement is awaited.
    replacing: BTreeSet<(Instant, TunnelId)>,
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
            conns: IdMap::default(),
            waiters: IdMap::default(),
            deadlines: BTreeSet::new(),
            replacing: BTreeSet::new(),
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
            Input::ConnClosed { conn } => self.conn_closed(now, conn, false),
            Input::Retired { conn } => self.conn_closed(now, conn, true),
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
        let replacing = self.replacing.first().map(|(d, _)| *d);
        [waiter, replacing, self.registry.next_expiry()].into_iter().flatten().min()
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
        // Waiter deadlines and replacement waits in time order (a waiter first on a tie): a waiter
        // refused as offline at a replacement wait's end never reaches its own later deadline.
        loop {
            let waiter = self.deadlines.first().filter(|(at, _)| *at <= now).cloned();
            let replacing = self.replacing.first().filter(|(at, _)| *at <= now).cloned();
            let waiter_first = match (&waiter, &replacing) {
                (Some((at, _)), Some((until, _))) => at <= until,
                (w, _) => w.is_some(),
            };
            if let (true, Some((_, waiter))) = (waiter_first, waiter) {
                self.deadlines.pop_first();
                if let Some(entry) = self.waiters.remove(&waiter) {
                    if let Some(pool) = self.pools.get_mut(&entry.tunnel) {
                        pool.cancel(waiter);
                    }
                    self.out.push_back(Output::Refused { waiter, why: Refusal::TimedOut });
                }
            } else if let Some((_, id)) = replacing {
                self.replacing.pop_first();
                self.refuse_queue(&id);
            } else {
                break;
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
            self.replacing.retain(|(_, t)| *t != id);
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
        self.replacing.retain(|(_, t)| *t != hello.id);
        self.conns.insert(conn, hello.id.clone());
        if self.registry.set_connected(&hello.id, connected, now) == Some(Presence::Online) {
            self.out.push_back(Output::Event(ServerEvent::Online { id: hello.id }));
        }
        if let Some(waiter) = granted {
            self.grant(waiter, conn);
        }
    }

    fn conn_closed(&mut self, now: Instant, conn: ConnId, retired: bool) {
        // Unknown is normal: the conn was refused, or its tunnel expired, or the close raced another event.
        let Some(id) = self.conns.remove(&conn) else { return };
        let Some(pool) = self.pools.get_mut(&id) else { return };
        pool.remove(conn);
        let connected = pool.len();
        if self.registry.set_connected(&id, connected, now) == Some(Presence::Offline) {
            self.out.push_back(Output::Event(ServerEvent::Offline { id: id.clone() }));
        }
        if connected > 0 {
            return;
        }
        if retired {
            // Its client redials at once; the wait ends with the grace at the latest, so no name expires
            // with requests queued.
            let grace_end = self.registry.get(&id).and_then(|t| t.expires_at());
            if let Some(until) = now.checked_add(self.config.limits.handshake_timeout) {
                self.replacing.insert((grace_end.map_or(until, |e| e.min(until)), id));
                return;
            }
        }
        self.refuse_queue(&id);
    }

    /// Nothing will serve `id`'s queue now: tells each waiter the tunnel is offline, oldest first.
    fn refuse_queue(&mut self, id: &TunnelId) {
        let Some(pool) = self.pools.get_mut(id) else { return };
        let orphans: Vec<WaiterId> = pool.drain_waiters().collect();
        let why = self.offline_refusal(id);
        for waiter in orphans {
            self.forget_waiter(waiter);
            self.out.push_back(Output::Refused { waiter, why });
        }
    }

    /// True while `id` awaits the replacement of its retired last connection.
    fn awaiting_replacement(&self, id: &TunnelId) -> bool {
        self.replacing.iter().any(|(_, t)| t == id)
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
        let awaiting = self.awaiting_replacement(&tunnel);
        let Some(pool) = self.pools.get_mut(&tunnel) else { return };
        if pool.is_empty() && !awaiting {
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
                pool.waiting_count() == 0 || pool.busy_count() > 0 || self.awaiting_replacement(id),
                "{id}: waiters with nothing to wait for"
            );
            if self.awaiting_replacement(id) {
                assert!(pool.is_empty(), "{id}: awaits a replacement while holding connections");
            }
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
        for (_, id) in &self.replacing {
            assert!(self.pools.contains_key(id), "{id}: awaits a replacement but has no pool");
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
mod sim;

/// Decodes an op sequence with time deltas from `data`, drives a [`Hub`] with it beside a
/// reference model, and panics on any invariant violation (the `hub_ops` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn fuzz_ops(data: &[u8]) {
    run_ops(data);
}

/// [`fuzz_ops`], returning what the run reached.
#[cfg(any(test, feature = "fuzzing"))]
fn run_ops(data: &[u8]) -> sim::Outcomes {
    let (config, ops) = sim::decode(data);
    sim::Sim::new(config).run(&ops)
}

#[cfg(test)]
mod tests;
