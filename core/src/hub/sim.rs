//! A reference model of the [`Hub`] and a driver that runs both side by side.
//!
//! The model is the rules written the plainest way (a map of tunnels, each with
//! a `VecDeque` of idle connections and a FIFO of waiters, deadlines found by
//! scanning). After every step the driver checks that the hub said exactly what
//! the model says, and, independently of both, that leases are exclusive,
//! waiters end once and in FIFO order, no waiter outlives its deadline, and
//! `poll_timeout` is the earliest live deadline. Used by the model-based
//! proptest and by [`fuzz_ops`](super::fuzz_ops). Test and fuzz code only: the
//! one `Instant::now()` below is an arbitrary origin, all behaviour depends on
//! offsets from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::{
    ConnId, Hub, Input, OFFLINE_RETRY_AFTER, Output, Refusal, RegisterError, RegisterRequest, ServerConfig,
    ServerEvent, WaiterId,
};
use crate::entropy::Rng;
use crate::handshake::{Hello, Verdict};
use crate::id::{Token, TunnelId};
use crate::limits::Limits;

/// Requestable names; random ones join the list as they are handed out.
const NAMES: [&str; 3] = ["alpha", "bravo-two", "charlie3"];
/// A name no one registers: checkouts and hellos for it are 404 / unknown-tunnel.
const UNKNOWN: &str = "nobody-here";

/// One thing the driver does; indices pick among known names, connections and waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Register a listed name (or a random one past the list); resume 0 none, 1 own token, 2 wrong token.
    Register { name: u8, resume: u8 },
    /// A new connection says hello; token 0 the tunnel's, 1 wrong, 2 none (legacy).
    Hello { tunnel: u8, token: u8 },
    /// Any connection ever opened closes (stale ids included); `retired`: the adapter closed it
    /// after a failed exchange, so its client is expected to replace it.
    Close { conn: u8, retired: bool },
    /// A visitor request for a known, random or unknown name.
    Checkout { tunnel: u8 },
    /// Any waiter ever made goes away (ended ones included: a race).
    Cancel { waiter: u8 },
    /// A leased connection finishes its exchange cleanly.
    Checkin { conn: u8 },
    /// The timer fires.
    Timeout,
}

/// An op, after `dt` more time; `late` passes an instant 1 s in the past (it must be clamped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub dt: Duration,
    pub late: bool,
    pub op: Op,
}

/// Small limits so that full pools, full queues, timeouts and expiry all happen in short runs.
pub(crate) fn config(
    legacy: bool,
    max_conn: usize,
    max_waiters: usize,
    max_tunnels: usize,
    domain: bool,
) -> ServerConfig {
    ServerConfig {
        limits: Limits {
            max_conn_per_tunnel: max_conn,
            max_waiters,
            max_tunnels,
            wait_timeout: Duration::from_secs(5),
            // Shorter than the wait, so a retired last connection's replacement wait can run out.
            handshake_timeout: Duration::from_secs(2),
            offline_grace: Duration::from_secs(8),
            ..Limits::default()
        },
        domain: domain.then(|| "tunnel.test".to_string()),
        secure: domain,
        tunnel_port: 62322,
        legacy_handshake: legacy,
    }
}

/// Byte 0 picks the config, then each 3 bytes are an op: `[kind | late<<3 | flag<<4, arg, dt]`.
pub(crate) fn decode(data: &[u8]) -> (ServerConfig, Vec<Step>) {
    let c = data.first().copied().unwrap_or(0);
    let cfg = config(
        c & 1 != 0,
        1 + usize::from(c >> 1 & 3) % 3,
        usize::from(c >> 3 & 3),
        2 + usize::from(c >> 5 & 3),
        c & 0x80 != 0,
    );
    let steps = data
        .get(1..)
        .unwrap_or(&[])
        .chunks_exact(3)
        .map(|b| {
            let flag = b[0] >> 4;
            let op = match b[0] & 7 {
                0 => Op::Register { name: b[1], resume: flag % 3 },
                1 => Op::Hello { tunnel: b[1], token: flag % 3 },
                2 => Op::Close { conn: b[1], retired: flag & 1 != 0 },
                3 => Op::Checkout { tunnel: b[1] },
                4 => Op::Cancel { waiter: b[1] },
                5 => Op::Checkin { conn: b[1] },
                _ => Op::Timeout,
            };
            // Mostly short steps, sometimes long ones that cross the 5 s and 8 s deadlines.
            let dt = match b[2] {
                d @ 0..200 => Duration::from_millis(u64::from(d) * 10),
                d => Duration::from_millis(u64::from(d - 200) * 300),
            };
            Step { dt, late: b[0] & 8 != 0, op }
        })
        .collect();
    (cfg, steps)
}

#[derive(Debug)]
struct MTunnel {
    token: Token,
    idle: VecDeque<ConnId>,
    busy: BTreeSet<ConnId>,
    queue: VecDeque<(WaiterId, Option<Instant>)>,
    /// Set while offline.
    expires: Option<Instant>,
    /// Set while its retired last connection's replacement is awaited: until when.
    replace_by: Option<Instant>,
}

impl MTunnel {
    fn connected(&self) -> usize {
        self.idle.len() + self.busy.len()
    }
}

/// The rules, plainly.
#[derive(Debug)]
struct Model {
    cfg: ServerConfig,
    now: Instant,
    tunnels: BTreeMap<TunnelId, MTunnel>,
    conn_of: HashMap<ConnId, TunnelId>,
}

impl Model {
    fn advance(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.now = self.now.max(now);
        let now = self.now;
        // One due event at a time, earliest first; a waiter's deadline before a replacement wait's end
        // at the same instant.
        loop {
            let waiter = self
                .tunnels
                .values()
                .flat_map(|t| t.queue.iter().filter_map(|&(w, d)| d.filter(|d| *d <= now).map(|d| (d, w))))
                .min();
            let replace = self
                .tunnels
                .iter()
                .filter_map(|(id, t)| t.replace_by.filter(|r| *r <= now).map(|r| (r, id.clone())))
                .min();
            match (waiter, replace) {
                (Some((d, w)), r) if r.as_ref().is_none_or(|r| d <= r.0) => {
                    self.tunnels.values_mut().for_each(|t| t.queue.retain(|q| q.0 != w));
                    out.push(Output::Refused { waiter: w, why: Refusal::TimedOut });
                }
                (_, Some((_, id))) => {
                    let t = &self.tunnels[&id];
                    let why = self.offline(t);
                    out.extend(t.queue.iter().map(|&(waiter, _)| Output::Refused { waiter, why }));
                    if let Some(t) = self.tunnels.get_mut(&id) {
                        t.queue.clear();
                        t.replace_by = None;
                    }
                }
                _ => break,
            }
        }
        let mut expired: Vec<(Instant, TunnelId)> = self
            .tunnels
            .iter()
            .filter_map(|(id, t)| t.expires.filter(|e| *e <= now).map(|e| (e, id.clone())))
            .collect();
        expired.sort();
        for (_, id) in expired {
            self.tunnels.remove(&id);
            out.push(Output::Event(ServerEvent::Expired { id }));
        }
    }

    /// An offline refusal carrying the grace left (not the value told): the driver checks the told
    /// `Retry-After` against it (see [`Sim::check_retry_after`]).
    fn offline(&self, t: &MTunnel) -> Refusal {
        Refusal::Offline {
            retry_after: t.expires.map_or(Duration::MAX, |e| e.saturating_duration_since(self.now)),
        }
    }

    /// What registration should do; `Ok(None)` for "a fresh random name".
    fn register(
        &self,
        name: &Option<TunnelId>,
        resume: Option<Token>,
    ) -> Result<Option<(TunnelId, bool)>, RegisterError> {
        if let Some(id) = name {
            if let Some(t) = self.tunnels.get(id) {
                return match resume {
                    Some(r) if r == t.token => Ok(Some((id.clone(), true))),
                    _ => Err(RegisterError::NameTaken { retry_after: t.expires.map(|e| e - self.now) }),
                };
            }
        }
        if self.tunnels.len() >= self.cfg.limits.max_tunnels {
            return Err(RegisterError::TooManyTunnels);
        }
        Ok(name.clone().map(|id| (id, false)))
    }

    fn hello(&mut self, conn: ConnId, hello: &Hello, out: &mut Vec<Output>) {
        let write_line = hello.token.is_some();
        let Some(t) = self.tunnels.get_mut(&hello.id) else {
            out.push(Output::Verdict { conn, verdict: Verdict::UnknownTunnel, write_line });
            return;
        };
        let verdict = match hello.token {
            Some(tok) if tok != t.token => Verdict::BadToken,
            None if !self.cfg.legacy_handshake => Verdict::BadToken,
            _ if t.connected() >= self.cfg.limits.max_conn_per_tunnel => Verdict::Full,
            _ => Verdict::Accepted,
        };
        out.push(Output::Verdict { conn, verdict, write_line });
        if verdict != Verdict::Accepted {
            return;
        }
        self.conn_of.insert(conn, hello.id.clone());
        if t.connected() == 0 {
            t.expires = None;
            t.replace_by = None;
            out.push(Output::Event(ServerEvent::Online { id: hello.id.clone() }));
        }
        match t.queue.pop_front() {
            Some((w, _)) => {
                t.busy.insert(conn);
                out.push(Output::Granted { waiter: w, conn });
            }
            None => t.idle.push_back(conn),
        }
    }

    fn close(&mut self, conn: ConnId, retired: bool, out: &mut Vec<Output>) {
        let Some(id) = self.conn_of.remove(&conn) else { return };
        let now = self.now;
        let Some(t) = self.tunnels.get_mut(&id) else { return };
        t.idle.retain(|&c| c != conn);
        t.busy.remove(&conn);
        if t.connected() == 0 {
            t.expires = now.checked_add(self.cfg.limits.offline_grace);
            out.push(Output::Event(ServerEvent::Offline { id: id.clone() }));
            // SPEC §5: its client replaces a connection the server closed; the queue waits for that.
            let until = now.checked_add(self.cfg.limits.handshake_timeout);
            if let (true, Some(until)) = (retired, until) {
                t.replace_by = Some(t.expires.map_or(until, |e| e.min(until)));
                return;
            }
            let t = &self.tunnels[&id];
            let why = self.offline(t);
            out.extend(t.queue.iter().map(|&(waiter, _)| Output::Refused { waiter, why }));
            if let Some(t) = self.tunnels.get_mut(&id) {
                t.queue.clear();
            }
        }
    }

    fn checkout(&mut self, waiter: WaiterId, id: &TunnelId, out: &mut Vec<Output>) {
        let Some(t) = self.tunnels.get(id) else {
            out.push(Output::Refused { waiter, why: Refusal::UnknownTunnel });
            return;
        };
        if t.connected() == 0 && t.replace_by.is_none() {
            out.push(Output::Refused { waiter, why: self.offline(t) });
            return;
        }
        let deadline = self.now.checked_add(self.cfg.limits.wait_timeout);
        let max_waiters = self.cfg.limits.max_waiters;
        let Some(t) = self.tunnels.get_mut(id) else { return };
        if let Some(conn) = t.idle.pop_front() {
            t.busy.insert(conn);
            out.push(Output::Granted { waiter, conn });
        } else if t.queue.len() >= max_waiters {
            out.push(Output::Refused { waiter, why: Refusal::QueueFull });
        } else {
            t.queue.push_back((waiter, deadline));
        }
    }

    fn checkin(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let Some(t) = self.conn_of.get(&conn).and_then(|id| self.tunnels.get_mut(id)) else { return };
        assert!(t.busy.contains(&conn), "driver checked in an idle conn");
        match t.queue.pop_front() {
            Some((w, _)) => out.push(Output::Granted { waiter: w, conn }),
            None => {
                t.busy.remove(&conn);
                t.idle.push_back(conn);
            }
        }
    }

    fn cancel(&mut self, waiter: WaiterId) {
        self.tunnels.values_mut().for_each(|t| t.queue.retain(|q| q.0 != waiter));
    }

    /// The earliest live deadline: a queued waiter's, a replacement wait's or an offline tunnel's.
    fn next_deadline(&self) -> Option<Instant> {
        self.tunnels
            .values()
            .flat_map(|t| t.queue.iter().filter_map(|q| q.1).chain(t.expires).chain(t.replace_by))
            .min()
    }
}

/// Drives a [`Hub`] and a [`Model`] with the same steps and checks them after each one.
pub(crate) struct Sim {
    hub: Hub,
    model: Model,
    t: Instant,
    next_conn: u64,
    next_waiter: u64,
    registrations: u64,
    names: Vec<TunnelId>,
    tokens: HashMap<TunnelId, Token>,
    /// Connections leased to a request right now (from `Granted` until `Checkin`/`Close`).
    leases: HashMap<ConnId, WaiterId>,
    /// Per tunnel, the waiters queued and not yet ended, oldest first (observed from outside).
    queued: HashMap<TunnelId, VecDeque<(WaiterId, Option<Instant>)>>,
    ended: HashSet<WaiterId>,
    cancelled: HashSet<WaiterId>,
    outcomes: Outcomes,
}

/// Counts of what a run reached, for tests that claim an input gets somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcomes {
    /// Tunnels registered (resumes included).
    pub registered: u32,
    /// Hellos accepted.
    pub accepted: u32,
    /// Requests granted a connection.
    pub granted: u32,
    /// Requests refused 503 offline.
    pub offline: u32,
    /// Requests refused 503 queue full.
    pub queue_full: u32,
    /// Requests refused 504 at their deadline.
    pub timed_out: u32,
    /// Requests refused 404.
    pub unknown: u32,
    /// Tunnels expired.
    pub expired: u32,
}

impl Sim {
    pub(crate) fn new(cfg: ServerConfig) -> Self {
        let t = Instant::now() + Duration::from_secs(10); // room for `late` steps before the origin
        let mut names: Vec<TunnelId> = NAMES.iter().map(|n| tid(n)).collect();
        names.push(tid(UNKNOWN));
        Self {
            hub: Hub::new(cfg.clone(), t),
            model: Model { cfg, now: t, tunnels: BTreeMap::new(), conn_of: HashMap::new() },
            t,
            next_conn: 0,
            next_waiter: 0,
            registrations: 0,
            names,
            tokens: HashMap::new(),
            leases: HashMap::new(),
            queued: HashMap::new(),
            ended: HashSet::new(),
            cancelled: HashSet::new(),
            outcomes: Outcomes::default(),
        }
    }

    /// Runs all steps, then lets every deadline pass and checks that no waiter was lost.
    pub(crate) fn run(mut self, steps: &[Step]) -> Outcomes {
        for step in steps {
            self.step(*step);
        }
        self.step(Step { dt: Duration::from_secs(3600), late: false, op: Op::Timeout });
        assert!(self.queued.values().all(|q| q.is_empty()), "waiters left after every deadline passed");
        assert_eq!(self.hub.poll_timeout(), None, "a deadline outlived an hour of silence");
        assert_eq!((self.ended.len() + self.cancelled.len()) as u64, self.next_waiter, "a waiter was lost");
        self.outcomes
    }

    fn step(&mut self, step: Step) {
        self.t += step.dt;
        let given =
            if step.late { self.t.checked_sub(Duration::from_secs(1)).unwrap_or(self.t) } else { self.t };
        let mut want = Vec::new();
        let mut cancel = None;
        match step.op {
            Op::Register { name, resume } => self.register(given, name, resume, &mut want),
            Op::Hello { tunnel, token } => {
                let id = self.pick_name(tunnel);
                let token = match token {
                    0 => Some(self.tokens.get(&id).copied().unwrap_or_else(wrong)),
                    1 => Some(wrong()),
                    _ => None,
                };
                self.next_conn += 1;
                let (conn, hello) = (ConnId(self.next_conn), Hello { id, token });
                self.model.advance(given, &mut want);
                self.model.hello(conn, &hello, &mut want);
                self.hub.handle(given, Input::Hello { conn, hello });
            }
            Op::Close { conn, retired } => {
                let conn = ConnId(1 + u64::from(conn) % self.next_conn.max(1));
                self.leases.remove(&conn);
                self.model.advance(given, &mut want);
                self.model.close(conn, retired, &mut want);
                let input = if retired { Input::Retired { conn } } else { Input::ConnClosed { conn } };
                self.hub.handle(given, input);
            }
            Op::Checkout { tunnel } => {
                let id = self.pick_name(tunnel);
                self.next_waiter += 1;
                let waiter = WaiterId(self.next_waiter);
                self.model.advance(given, &mut want);
                self.model.checkout(waiter, &id, &mut want);
                self.hub.handle(given, Input::Checkout { waiter, tunnel: id.clone() });
                // Queued unless this step ends it; its deadline is from the clamped clock.
                let deadline = self.model.now.checked_add(self.model.cfg.limits.wait_timeout);
                self.queued.entry(id).or_default().push_back((waiter, deadline));
            }
            Op::Cancel { waiter } => {
                let waiter = WaiterId(1 + u64::from(waiter) % self.next_waiter.max(1));
                self.model.advance(given, &mut want);
                self.model.cancel(waiter);
                self.hub.handle(given, Input::Cancel { waiter });
                cancel = Some(waiter);
            }
            Op::Checkin { conn } => {
                let mut leased: Vec<ConnId> = self.leases.keys().copied().collect();
                leased.sort();
                self.model.advance(given, &mut want);
                if let Some(&conn) = leased.get(usize::from(conn) % leased.len().max(1)) {
                    self.leases.remove(&conn);
                    self.model.checkin(conn, &mut want);
                    self.hub.handle(given, Input::Checkin { conn });
                } else {
                    self.hub.handle_timeout(given);
                }
            }
            Op::Timeout => {
                self.model.advance(given, &mut want);
                self.hub.handle_timeout(given);
            }
        }
        let got: Vec<Output> = std::iter::from_fn(|| self.hub.poll()).collect();
        Self::check_retry_after(&got, &mut want);
        assert_eq!(got, want, "hub and model disagree on {step:?}");
        for out in &got {
            self.observe(out);
        }
        // A cancel counts only if the waiter was still queued after the step's own timeouts.
        for q in self.queued.values_mut() {
            if let Some(i) = q.iter().position(|e| Some(e.0) == cancel) {
                q.remove(i);
                self.cancelled.extend(cancel);
            }
        }
        self.check(step);
    }

    /// SPEC §5/§8: an offline tunnel's 503 carries a `Retry-After` while the name is held; the hub
    /// promises (OFFLINE_RETRY_AFTER) a soon one, clients reconnecting within seconds: between 1 s and
    /// 5 s, and not past the end of the grace unless under 1 s is left. `want` carries the grace left.
    fn check_retry_after(got: &[Output], want: &mut [Output]) {
        for (g, w) in got.iter().zip(want.iter_mut()) {
            if let (
                Output::Refused { why: Refusal::Offline { retry_after: told }, waiter: a },
                Output::Refused { why: Refusal::Offline { retry_after: left }, waiter: b },
            ) = (g, &mut *w)
            {
                if a != b {
                    continue;
                }
                assert!(
                    *told >= Duration::from_secs(1) && *told <= OFFLINE_RETRY_AFTER,
                    "Retry-After {told:?}"
                );
                assert!(
                    *told <= (*left).max(Duration::from_secs(1)),
                    "Retry-After {told:?} past the grace ({left:?} left)"
                );
                *left = *told;
            }
        }
    }

    fn register(&mut self, given: Instant, name: u8, resume: u8, want: &mut Vec<Output>) {
        let i = usize::from(name) % (NAMES.len() + 1);
        let name = NAMES.get(i).map(|n| tid(n));
        let own = name.as_ref().and_then(|n| self.tokens.get(n).copied());
        let resume = match resume {
            1 => own,
            2 => Some(wrong()),
            _ => None,
        };
        self.registrations += 1;
        let mut entropy = [0u8; 32];
        let mut rng = Rng::new(self.registrations);
        entropy.chunks_mut(8).for_each(|c| c.copy_from_slice(&rng.next_u64().to_le_bytes()));
        let fresh = Token::from_bytes(entropy[..16].try_into().expect("16 bytes"));
        self.model.advance(given, want);
        let expect = self.model.register(&name, resume);
        let req = RegisterRequest { name, resume, host: "example.test:8080".to_string() };
        let got = self.hub.register(given, req, entropy);
        let (id, resumed) = match (expect, got) {
            (Err(e), got) => return assert_eq!(got, Err(e)),
            (Ok(_), Err(e)) => panic!("model registers, hub says {e:?}"),
            (Ok(expect), Ok(reply)) => {
                let (id, resumed) = expect.unwrap_or_else(|| (reply.id.clone(), false));
                assert_eq!(reply.id, id);
                assert!(resumed || !self.model.tunnels.contains_key(&id), "{id} handed out twice");
                let token = if resumed { self.model.tunnels[&id].token } else { fresh };
                assert_eq!(reply.token, Some(token), "token of {id}");
                let cfg = &self.model.cfg;
                let url = match &cfg.domain {
                    Some(d) => format!("https://{id}.{d}"),
                    None => format!("http://example.test:8080/{id}"),
                };
                assert_eq!(
                    (reply.url, reply.port, reply.max_conn_count),
                    (url, 62322, cfg.limits.max_conn_per_tunnel)
                );
                (id, resumed)
            }
        };
        if !resumed {
            let expires = self.model.now.checked_add(self.model.cfg.limits.offline_grace);
            let t = MTunnel {
                token: fresh,
                idle: VecDeque::new(),
                busy: BTreeSet::new(),
                queue: VecDeque::new(),
                expires,
                replace_by: None,
            };
            self.model.tunnels.insert(id.clone(), t);
            self.tokens.insert(id.clone(), fresh);
            if !self.names.contains(&id) {
                self.names.push(id.clone());
            }
        }
        want.push(Output::Event(ServerEvent::Registered { id, resumed }));
    }

    /// Mostly a live tunnel (so that pools fill and queues form), sometimes any name ever seen or unknown.
    fn pick_name(&self, i: u8) -> TunnelId {
        let live: Vec<&TunnelId> = self.model.tunnels.keys().collect();
        match live.get(usize::from(i) % live.len().max(1)) {
            Some(id) if i < 200 => (*id).clone(),
            _ => self.names[usize::from(i) % self.names.len()].clone(),
        }
    }

    /// Checks one output against what the driver saw before it, independently of the model.
    fn observe(&mut self, out: &Output) {
        let o = &mut self.outcomes;
        match out {
            Output::Event(ServerEvent::Registered { .. }) => o.registered += 1,
            Output::Event(ServerEvent::Expired { .. }) => o.expired += 1,
            Output::Verdict { verdict: Verdict::Accepted, .. } => o.accepted += 1,
            Output::Granted { .. } => o.granted += 1,
            Output::Refused { why: Refusal::Offline { .. }, .. } => o.offline += 1,
            Output::Refused { why: Refusal::QueueFull, .. } => o.queue_full += 1,
            Output::Refused { why: Refusal::TimedOut, .. } => o.timed_out += 1,
            Output::Refused { why: Refusal::UnknownTunnel, .. } => o.unknown += 1,
            _ => {}
        }
        let (waiter, conn) = match out {
            Output::Granted { waiter, conn } => (*waiter, Some(*conn)),
            Output::Refused { waiter, .. } => (*waiter, None),
            _ => return,
        };
        assert!(waiter.0 >= 1 && waiter.0 <= self.next_waiter, "{waiter:?} was never issued");
        assert!(!self.cancelled.contains(&waiter), "{waiter:?} answered after it was cancelled");
        assert!(self.ended.insert(waiter), "{waiter:?} ended twice");
        let timed_out = matches!(out, Output::Refused { why: Refusal::TimedOut, .. });
        for q in self.queued.values_mut() {
            if let Some(i) = q.iter().position(|e| e.0 == waiter) {
                // Grants and timeouts both take the oldest waiter: FIFO (deadlines queue in order).
                assert!(i == 0 || !(conn.is_some() || timed_out), "{waiter:?} served before older waiters");
                q.remove(i);
            }
        }
        if let Some(conn) = conn {
            assert!(self.leases.insert(conn, waiter).is_none(), "{conn:?} leased twice");
        }
    }

    /// Invariants after every step.
    fn check(&mut self, step: Step) {
        self.hub.check_invariants();
        let now = self.model.now;
        assert_eq!(self.hub.now, now, "clock not clamped");
        let live: Vec<Option<Instant>> = self.queued.values().flatten().map(|e| e.1).collect();
        assert!(live.iter().flatten().all(|d| *d > now), "a waiter outlived its deadline");
        let expiries = self.model.tunnels.values().flat_map(|t| t.expires.into_iter().chain(t.replace_by));
        let earliest = live.iter().flatten().copied().chain(expiries).min();
        assert_eq!(earliest, self.model.next_deadline());
        assert_eq!(self.hub.poll_timeout(), earliest, "poll_timeout is not the earliest live deadline");
        // Every entry point settles what is due, so this holds after any step, not only after handle_timeout.
        assert!(
            self.hub.poll_timeout().is_none_or(|d| d > now),
            "poll_timeout not after {step:?} at {now:?}"
        );
        assert_eq!(self.hub.tunnel_count(), self.model.tunnels.len());
        for (id, t) in &self.model.tunnels {
            let s = self.hub.tunnel_status(now, id).expect("model tunnel missing from hub");
            assert!(s.connected_sockets <= s.max_conn_count, "{id} over max_conn");
            let queued = self.queued.get(id).map_or(0, |q| q.len());
            assert_eq!((s.idle, s.busy, s.waiting), (t.idle.len(), t.busy.len(), queued), "{id} status");
        }
        // Leased conns are exactly the busy ones.
        let busy: usize = self.model.tunnels.values().map(|t| t.busy.len()).sum();
        assert_eq!(self.leases.len(), busy, "leases and busy conns disagree");
    }
}

/// A token no tunnel gets (registration tokens come from SplitMix64 output).
fn wrong() -> Token {
    Token::from_bytes([0xee; 16])
}

fn tid(s: &str) -> TunnelId {
    TunnelId::parse(s).expect("test names are valid")
}
