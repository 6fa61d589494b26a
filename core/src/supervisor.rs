//! The client's control machine: when to register, how many tunnel connections
//! to keep, when to dial each one, and what to say on it.
//!
//! It models the registration call and the life of each tunnel connection up
//! to "live" and back, following the driving contract in the crate docs. It
//! does not model HTTP (the adapter makes the registration call and parses the
//! reply into a [`Registration`]), the bytes of the handshake (see
//! [`handshake`](crate::handshake)) or the requests carried on a live
//! connection. Every step has a deadline; every retry a jittered backoff.
//!
//! ```text
//!  new ─▶ Registering ──Registered──▶ Online ──UnknownTunnel / BadToken / n dead dials──┐
//!          ▲    │ failure, timeout     │                                                │
//!          │    ▼                      │ each slot below min(max_conn_count, cap):      │
//!          └─ WaitingToRegister ◀──────┼──────────────────────────────────────────────── ┘
//!               │ 403, or 409 before the first success: Fatal
//!
//!  slot:  Empty ─dial─▶ Connecting ─Connected─▶ Handshaking ─Accepted─▶ Live ─Closed─▶ dial again
//!                        │ fail/timeout          │ fail/timeout  Full─▶ Parked        (now if it was
//!                        ▼                       ▼                 │                 healthy, else
//!                      Waiting (backoff) ◀───────┘   another slot's close, or backoff   backoff)
//! ```
//!
//! Without a token to send (a localtunnel server) or in legacy mode (the seed's
//! server) no verdict comes back, so `Connected` goes straight to `Live`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, BackoffConfig};
use crate::entropy::Rng;
use crate::handshake::{Hello, Verdict};
use crate::id::{Token, TunnelId};

/// Most tunnel connections one client keeps, whatever the server offers.
pub const MAX_SLOTS: usize = 256;
/// The shortest delay the machine schedules: a zero jitter must not make a deadline equal to `now`.
pub const MIN_DELAY: Duration = Duration::from_millis(1);
/// The longest `Retry-After` the machine honours, so a server cannot park the client for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How the client talks on a fresh tunnel connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandshakeMode {
    /// `<id> <token>\n` and wait for a verdict if the registration had a token; say nothing if not (localtunnel).
    #[default]
    Auto,
    /// The seed's Go server: a bare `<id>\n`, and no verdict line comes back.
    Legacy,
}

/// What the user asked for, plus every deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The tunnel name to ask for; `None` lets the server pick one.
    pub name: Option<TunnelId>,
    /// Keep at most this many connections, below the server's `max_conn_count`; `None`: as many as it allows.
    pub max_conns: Option<usize>,
    /// What to write on each tunnel connection.
    pub handshake: HandshakeMode,
    /// Backoff for failed registrations and failed dials.
    pub backoff: BackoffConfig,
    /// Time allowed for one registration call.
    pub register_timeout: Duration,
    /// Time allowed to connect a tunnel connection and write the hello.
    pub connect_timeout: Duration,
    /// Time allowed for the verdict line after the hello.
    pub verdict_timeout: Duration,
    /// A live connection that lasted this long (or carried a request) ended normally: redial at once.
    pub healthy_after: Duration,
    /// Register again after this many failed dials in a row with no connection up (0: never); this is
    /// how a server restart is noticed when no verdict line comes back.
    pub reregister_after: u32,
    /// Seed for the jitter generator; the adapter fills it from the OS.
    pub seed: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            name: None,
            max_conns: None,
            handshake: HandshakeMode::Auto,
            backoff: BackoffConfig::default(),
            register_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            verdict_timeout: Duration::from_secs(10),
            healthy_after: Duration::from_secs(3),
            reregister_after: 6,
            seed: 0,
        }
    }
}

/// The server's registration reply, as the adapter parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The tunnel's name.
    pub id: TunnelId,
    /// The public URL to print.
    pub url: String,
    /// The port to dial tunnel connections on.
    pub port: u16,
    /// Most connections the server lets this tunnel hold.
    pub max_conn_count: usize,
    /// The ownership proof; `None` from servers that have none (localtunnel, the seed).
    pub token: Option<Token>,
}

/// One registration call; replies to an abandoned call are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegisterId(pub u64);

/// One tunnel connection: the slot it fills and which dial it is (dials are numbered across all slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    /// The slot, `0..max_conns`.
    pub index: usize,
    /// The dial's number, unique for the supervisor's life.
    pub dial: u64,
}

/// Why a registration call did not produce a [`Registration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterFailure {
    /// The server could not be reached (DNS, refused, reset).
    Unreachable,
    /// No reply within the deadline.
    TimedOut,
    /// A 2xx whose body is not a registration reply.
    BadReply,
    /// A non-2xx answer.
    Rejected {
        /// The HTTP status (403 invalid name, 409 taken, 429 slow down, 503 full, ...).
        status: u16,
        /// The server's message, for the user.
        message: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

impl fmt::Display for RegisterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterFailure::Unreachable => f.write_str("server unreachable"),
            RegisterFailure::TimedOut => f.write_str("registration timed out"),
            RegisterFailure::BadReply => f.write_str("server sent a reply that is not a registration"),
            RegisterFailure::Rejected { status, message, .. } => write!(f, "server said {status}: {message}"),
        }
    }
}

impl std::error::Error for RegisterFailure {}

/// Why the client gave up: only things that retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatalError {
    /// 403: the server refuses the name (or this client).
    NameRefused {
        /// The name asked for.
        name: Option<TunnelId>,
        /// The server's message.
        message: String,
    },
    /// 409 on the first registration: another client holds the name.
    NameTaken {
        /// The name asked for.
        name: Option<TunnelId>,
        /// The server's message.
        message: String,
    },
}

impl fmt::Display for FatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |n: &Option<TunnelId>| n.as_ref().map_or_else(String::new, |n| format!(" `{n}`"));
        match self {
            FatalError::NameRefused { name, message } => write!(
                f,
                "the server refused the tunnel name{} ({message}); {} — choose another with --subdomain",
                shown(name),
                crate::id::IdError::RULE
            ),
            FatalError::NameTaken { name, message } => write!(
                f,
                "the tunnel name{} is in use by another client ({message}); choose another with --subdomain, \
                 or try again once it frees up",
                shown(name)
            ),
        }
    }
}

impl std::error::Error for FatalError {}

/// Why a slot waits before its next dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// Connect or handshake failed.
    ConnectFailed,
    /// Connect or verdict did not come in time.
    TimedOut,
    /// A live connection ended before it was healthy.
    ClosedEarly,
    /// The server already holds `max_conn_count` connections for the tunnel.
    Full,
}

/// Why the client registers again while it has a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReregisterReason {
    /// The server does not know the tunnel (restart or expiry).
    UnknownTunnel,
    /// The server no longer takes the token.
    BadToken,
    /// Too many failed dials in a row with nothing live.
    DialsFailing,
}

/// Something for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Registered (again); the tunnel is reachable at `url` once a connection is live.
    Online {
        /// The tunnel's name.
        id: TunnelId,
        /// The public URL.
        url: String,
        /// How many connections the client will keep.
        conns: usize,
    },
    /// A registration failed; the next is due `after` from now.
    RegisterRetry {
        /// The wait.
        after: Duration,
        /// What went wrong.
        why: RegisterFailure,
    },
    /// The tunnel was lost; registering again under the same name.
    Reregistering {
        /// What gave it away.
        why: ReregisterReason,
    },
    /// A tunnel connection will be dialled again `after` from now.
    Reconnecting {
        /// The connection that ended.
        slot: SlotId,
        /// The wait.
        after: Duration,
        /// What went wrong.
        why: RetryReason,
    },
    /// The client stopped; nothing more will happen.
    Fatal {
        /// What the user must fix.
        error: FatalError,
    },
}

/// Something the supervisor wants to happen.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Make the registration call: `?new=<name>` (or `?new`), with `resume` as the token header when `Some`.
    Register {
        /// Answer with this id.
        attempt: RegisterId,
        /// The name to ask for.
        name: Option<TunnelId>,
        /// The previous token, so the server gives back the same tunnel.
        resume: Option<Token>,
    },
    /// Drop the registration call (its deadline passed); any late answer is ignored.
    CancelRegister {
        /// The abandoned call.
        attempt: RegisterId,
    },
    /// Open a tunnel connection to `port`, write `hello` if `Some`, then read a verdict if `expect_verdict`.
    Connect {
        /// The connection's id, for every input about it.
        slot: SlotId,
        /// The port from the registration reply.
        port: u16,
        /// The line to write first.
        hello: Option<Hello>,
        /// Whether a verdict line comes back.
        expect_verdict: bool,
    },
    /// Close this tunnel connection (timed out, rejected, or no longer wanted).
    Close {
        /// The connection.
        slot: SlotId,
    },
    /// Tell the user.
    Event(ClientEvent),
}

/// What happened, as the adapter saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The registration call succeeded.
    Registered {
        /// The call.
        attempt: RegisterId,
        /// The parsed reply.
        reply: Registration,
    },
    /// The registration call failed.
    RegisterFailed {
        /// The call.
        attempt: RegisterId,
        /// Why.
        why: RegisterFailure,
    },
    /// TCP connected and the hello (if any) written.
    Connected {
        /// The connection.
        slot: SlotId,
    },
    /// Connecting, writing the hello or reading the verdict failed.
    ConnectFailed {
        /// The connection.
        slot: SlotId,
    },
    /// The server's verdict line.
    Verdict {
        /// The connection.
        slot: SlotId,
        /// The verdict.
        verdict: Verdict,
    },
    /// A connection ended; `served` if it carried at least one request (then a quick end is normal).
    Closed {
        /// The connection.
        slot: SlotId,
        /// Whether any request went through it.
        served: bool,
    },
}

/// Counts, for status lines and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections the client means to keep.
    pub target: usize,
    /// Connections dialling or waiting for a verdict.
    pub connecting: usize,
    /// Connections up.
    pub live: usize,
    /// Registration calls made.
    pub registrations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registering(RegisterId),
    WaitingToRegister,
    Online,
    Fatal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Waiting,
    Connecting(SlotId),
    Handshaking(SlotId),
    Live { id: SlotId, since: Instant },
    Parked,
}

#[derive(Debug, Clone)]
struct Slot {
    state: SlotState,
    backoff: Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Register,
    Slot(usize),
}

/// A deadline index: the next deadline in O(log n), one deadline per timer.
#[derive(Debug, Clone, Default)]
struct Timers {
    by_time: BTreeSet<(Instant, Timer)>,
    by_timer: BTreeMap<Timer, Instant>,
}

impl Timers {
    fn arm(&mut self, timer: Timer, at: Option<Instant>) {
        self.disarm(timer);
        // `None` (the addition overflowed) means "never", not "now".
        if let Some(at) = at {
            self.by_time.insert((at, timer));
            self.by_timer.insert(timer, at);
        }
    }

    fn disarm(&mut self, timer: Timer) {
        if let Some(at) = self.by_timer.remove(&timer) {
            self.by_time.remove(&(at, timer));
        }
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &(at, timer) = self.by_time.first().filter(|(at, _)| *at <= now)?;
        self.by_time.remove(&(at, timer));
        self.by_timer.remove(&timer);
        Some(timer)
    }
}

/// The client's control machine; see the module docs and the driving contract in the crate docs.
#[derive(Debug, Clone)]
pub struct Supervisor {
    config: ClientConfig,
    now: Instant,
    phase: Phase,
    lease: Option<Registration>,
    target: usize,
    slots: Vec<Slot>,
    timers: Timers,
    rng: Rng,
    register_backoff: Backoff,
    /// Re-registrations with no accepted connection in between; keeps a register/reject loop from spinning.
    churn: Backoff,
    /// Failed dials in a row, across slots.
    dead_dials: u32,
    next_register: u64,
    next_dial: u64,
    out: VecDeque<Output>,
}

impl Supervisor {
    /// A supervisor started at `now`; its first output is the first [`Output::Register`].
    pub fn new(now: Instant, config: ClientConfig) -> Self {
        let mut sup = Self {
            rng: Rng::new(config.seed),
            register_backoff: Backoff::new(config.backoff),
            churn: Backoff::new(config.backoff),
            config,
            now,
            phase: Phase::WaitingToRegister,
            lease: None,
            target: 0,
            slots: Vec::new(),
            timers: Timers::default(),
            dead_dials: 0,
            next_register: 0,
            next_dial: 0,
            out: VecDeque::new(),
        };
        sup.send_register();
        sup
    }

    /// Feeds one input; then drain [`poll`](Self::poll) and re-read [`poll_timeout`](Self::poll_timeout).
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        if self.phase == Phase::Fatal {
            return;
        }
        match input {
            Input::Registered { attempt, reply } if self.phase == Phase::Registering(attempt) => {
                self.on_registered(reply)
            }
            Input::RegisterFailed { attempt, why } if self.phase == Phase::Registering(attempt) => {
                self.on_register_failed(why)
            }
            Input::Registered { attempt, .. } | Input::RegisterFailed { attempt, .. } => {
                debug_assert!(attempt.0 <= self.next_register, "answer to a registration never made");
            }
            Input::Connected { slot } => self.on_connected(slot),
            Input::ConnectFailed { slot } => self.on_ended(slot, false),
            Input::Closed { slot, served } => self.on_ended(slot, served),
            Input::Verdict { slot, verdict } => self.on_verdict(slot, verdict),
        }
        self.check_queue();
    }

    /// Acts on every deadline that `now` has reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        // Everything scheduled here lies at least MIN_DELAY ahead, so this loop ends.
        while let Some(timer) = self.timers.pop_due(self.now) {
            match (timer, self.phase) {
                (Timer::Register, Phase::Registering(attempt)) => {
                    self.out.push_back(Output::CancelRegister { attempt });
                    self.on_register_failed(RegisterFailure::TimedOut);
                }
                (Timer::Register, Phase::WaitingToRegister) => self.send_register(),
                (Timer::Slot(i), _) => match self.slots[i].state {
                    SlotState::Waiting | SlotState::Parked => self.dial(i),
                    SlotState::Connecting(id) | SlotState::Handshaking(id) => {
                        self.out.push_back(Output::Close { slot: id });
                        self.slot_failed(i, id, RetryReason::TimedOut);
                    }
                    SlotState::Empty | SlotState::Live { .. } => {
                        debug_assert!(false, "timer armed for slot {i} in {:?}", self.slots[i].state)
                    }
                },
                (Timer::Register, phase) => debug_assert!(false, "register timer armed in {phase:?}"),
            }
        }
        self.check_queue();
    }

    /// The next thing to carry out, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None`: only inputs can move the machine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Whether the client gave up (a [`ClientEvent::Fatal`] was emitted).
    pub fn is_fatal(&self) -> bool {
        self.phase == Phase::Fatal
    }

    /// The current registration, kept while registering again (its name and token are resumed).
    pub fn lease(&self) -> Option<&Registration> {
        self.lease.as_ref()
    }

    /// Counts of connections and registrations.
    pub fn stats(&self) -> Stats {
        let count = |f: fn(&SlotState) -> bool| self.slots.iter().filter(|s| f(&s.state)).count();
        Stats {
            target: self.target,
            connecting: count(|s| matches!(s, SlotState::Connecting(_) | SlotState::Handshaking(_))),
            live: count(|s| matches!(s, SlotState::Live { .. })),
            registrations: self.next_register,
        }
    }

    fn after(&self, delay: Duration) -> Option<Instant> {
        self.now.checked_add(delay.max(MIN_DELAY))
    }

    fn send_register(&mut self) {
        self.next_register += 1;
        let attempt = RegisterId(self.next_register);
        self.phase = Phase::Registering(attempt);
        self.timers.arm(Timer::Register, self.after(self.config.register_timeout));
        // After the first success, always ask for the same name and prove it is ours.
        let (name, resume) = match &self.lease {
            Some(lease) => (Some(lease.id.clone()), lease.token),
            None => (self.config.name.clone(), None),
        };
        self.out.push_back(Output::Register { attempt, name, resume });
    }

    fn on_registered(&mut self, reply: Registration) {
        self.register_backoff.reset();
        let same_tunnel = self.lease.as_ref().is_some_and(|l| l.id == reply.id);
        if !same_tunnel {
            // Live connections of another tunnel would carry nobody's requests.
            for i in 0..self.slots.len() {
                if let SlotState::Live { id, .. } = self.slots[i].state {
                    self.out.push_back(Output::Close { slot: id });
                    self.slots[i].state = SlotState::Empty;
                }
            }
        }
        let wanted = self.config.max_conns.map_or(reply.max_conn_count, |cap| cap.min(reply.max_conn_count));
        // Zero would leave the tunnel with no connection at all: keep one.
        self.target = wanted.clamp(1, MAX_SLOTS);
        if self.slots.len() < self.target {
            self.slots.resize_with(self.target, || Slot {
                state: SlotState::Empty,
                backoff: Backoff::new(self.config.backoff),
            });
        }
        for slot in &mut self.slots {
            slot.backoff.reset();
        }
        self.timers.disarm(Timer::Register);
        self.phase = Phase::Online;
        self.out.push_back(Output::Event(ClientEvent::Online {
            id: reply.id.clone(),
            url: reply.url.clone(),
            conns: self.target,
        }));
        self.lease = Some(reply);
        for i in 0..self.target {
            if self.slots[i].state == SlotState::Empty {
                self.dial(i);
            }
        }
    }

    fn on_register_failed(&mut self, why: RegisterFailure) {
        let name = self.lease.as_ref().map(|l| l.id.clone()).or_else(|| self.config.name.clone());
        let fatal = match &why {
            RegisterFailure::Rejected { status: 403, message, .. } => {
                Some(FatalError::NameRefused { name, message: message.clone() })
            }
            // Once we held the tunnel, a 409 most likely is our own old lease still in its grace.
            RegisterFailure::Rejected { status: 409, message, .. } if self.lease.is_none() => {
                Some(FatalError::NameTaken { name, message: message.clone() })
            }
            _ => None,
        };
        if let Some(error) = fatal {
            return self.go_fatal(error);
        }
        let mut after = self.register_backoff.fail(&mut self.rng);
        if let RegisterFailure::Rejected { retry_after: Some(hint), .. } = &why {
            after = after.max((*hint).min(MAX_RETRY_AFTER));
        }
        let after = after.max(MIN_DELAY);
        self.phase = Phase::WaitingToRegister;
        self.timers.arm(Timer::Register, self.after(after));
        self.out.push_back(Output::Event(ClientEvent::RegisterRetry { after, why }));
    }

    fn go_fatal(&mut self, error: FatalError) {
        for i in 0..self.slots.len() {
            self.clear_slot(i, true);
        }
        self.timers = Timers::default();
        self.phase = Phase::Fatal;
        self.out.push_back(Output::Event(ClientEvent::Fatal { error }));
    }

    /// Forgets slot `i`; with `close_live`, live connections are closed too.
    fn clear_slot(&mut self, i: usize, close_live: bool) {
        self.timers.disarm(Timer::Slot(i));
        match self.slots[i].state {
            SlotState::Connecting(id) | SlotState::Handshaking(id) => {
                self.out.push_back(Output::Close { slot: id })
            }
            SlotState::Live { id, .. } if close_live => self.out.push_back(Output::Close { slot: id }),
            SlotState::Live { .. } => return,
            SlotState::Empty | SlotState::Waiting | SlotState::Parked => {}
        }
        self.slots[i].state = SlotState::Empty;
    }

    fn start_reregister(&mut self, why: ReregisterReason) {
        self.out.push_back(Output::Event(ClientEvent::Reregistering { why }));
        // Live connections stay: if the server kept the tunnel, they still carry requests.
        for i in 0..self.slots.len() {
            self.clear_slot(i, false);
        }
        self.dead_dials = 0;
        let first = self.churn.failures() == 0;
        let wait = self.churn.fail(&mut self.rng);
        if first {
            self.send_register();
        } else {
            self.phase = Phase::WaitingToRegister;
            self.timers.arm(Timer::Register, self.after(wait));
        }
    }

    fn dial(&mut self, i: usize) {
        let Some(lease) = self.lease.as_ref().filter(|_| self.phase == Phase::Online && i < self.target)
        else {
            self.timers.disarm(Timer::Slot(i));
            self.slots[i].state = SlotState::Empty;
            return;
        };
        let (hello, expect_verdict) = match (self.config.handshake, lease.token) {
            (HandshakeMode::Legacy, _) => (Some(Hello { id: lease.id.clone(), token: None }), false),
            (HandshakeMode::Auto, Some(token)) => {
                (Some(Hello { id: lease.id.clone(), token: Some(token) }), true)
            }
            (HandshakeMode::Auto, None) => (None, false),
        };
        let port = lease.port;
        self.next_dial += 1;
        let slot = SlotId { index: i, dial: self.next_dial };
        self.slots[i].state = SlotState::Connecting(slot);
        self.timers.arm(Timer::Slot(i), self.after(self.config.connect_timeout));
        self.out.push_back(Output::Connect { slot, port, hello, expect_verdict });
    }

    /// The slot index if `id` is that slot's current connection; stale ids give `None`.
    fn current(&self, id: SlotId) -> Option<usize> {
        debug_assert!(id.dial <= self.next_dial, "input for a connection never dialled: {id:?}");
        let state = self.slots.get(id.index)?.state;
        let cur = match state {
            SlotState::Connecting(c) | SlotState::Handshaking(c) | SlotState::Live { id: c, .. } => c,
            SlotState::Empty | SlotState::Waiting | SlotState::Parked => return None,
        };
        (cur == id).then_some(id.index)
    }

    fn expects_verdict(&self) -> bool {
        self.config.handshake == HandshakeMode::Auto && self.lease.as_ref().is_some_and(|l| l.token.is_some())
    }

    fn on_connected(&mut self, id: SlotId) {
        let Some(i) = self.current(id) else { return };
        match self.slots[i].state {
            SlotState::Connecting(_) if self.expects_verdict() => {
                self.slots[i].state = SlotState::Handshaking(id);
                self.timers.arm(Timer::Slot(i), self.after(self.config.verdict_timeout));
            }
            SlotState::Connecting(_) => {
                // No verdict comes back, so this is not yet proof the server knows us: counters stay.
                self.slots[i].state = SlotState::Live { id, since: self.now };
                self.timers.disarm(Timer::Slot(i));
            }
            other => debug_assert!(false, "Connected for {id:?} in {other:?}"),
        }
    }

    fn on_verdict(&mut self, id: SlotId, verdict: Verdict) {
        let Some(i) = self.current(id) else { return };
        if !matches!(self.slots[i].state, SlotState::Handshaking(_)) {
            return debug_assert!(false, "verdict for {id:?} in {:?}", self.slots[i].state);
        }
        match verdict {
            Verdict::Accepted => {
                self.slots[i].state = SlotState::Live { id, since: self.now };
                self.timers.disarm(Timer::Slot(i));
                self.dead_dials = 0;
                self.churn.reset();
            }
            Verdict::UnknownTunnel => self.start_reregister(ReregisterReason::UnknownTunnel),
            Verdict::BadToken => self.start_reregister(ReregisterReason::BadToken),
            Verdict::Full => {
                // Stop dialling this slot until another connection ends; the long timer is a safety net
                // for when the server still counts connections we lost without seeing them close.
                self.out.push_back(Output::Close { slot: id });
                let after = self.slots[i].backoff.fail(&mut self.rng).max(MIN_DELAY);
                self.slots[i].state = SlotState::Parked;
                self.timers.arm(Timer::Slot(i), self.after(after));
                self.out.push_back(Output::Event(ClientEvent::Reconnecting {
                    slot: id,
                    after,
                    why: RetryReason::Full,
                }));
            }
        }
    }

    fn on_ended(&mut self, id: SlotId, served: bool) {
        let Some(i) = self.current(id) else { return };
        self.timers.disarm(Timer::Slot(i));
        let SlotState::Live { since, .. } = self.slots[i].state else {
            // Ended before it was up: a failed dial.
            return self.slot_failed(i, id, RetryReason::ConnectFailed);
        };
        let healthy = served || self.now.saturating_duration_since(since) >= self.config.healthy_after;
        self.slots[i].state = SlotState::Empty;
        if healthy {
            self.slots[i].backoff.reset();
            self.dead_dials = 0;
            self.churn.reset();
            self.dial(i);
        } else {
            self.slot_failed(i, id, RetryReason::ClosedEarly);
        }
        // A place may have freed up on the server: parked slots try again.
        for j in 0..self.slots.len() {
            if self.phase == Phase::Online && self.slots[j].state == SlotState::Parked {
                self.dial(j);
            }
        }
    }

    fn slot_failed(&mut self, i: usize, id: SlotId, why: RetryReason) {
        self.dead_dials = self.dead_dials.saturating_add(1);
        if self.phase != Phase::Online || i >= self.target {
            self.slots[i].state = SlotState::Empty;
            self.timers.disarm(Timer::Slot(i));
            return;
        }
        let after = self.slots[i].backoff.fail(&mut self.rng).max(MIN_DELAY);
        self.slots[i].state = SlotState::Waiting;
        self.timers.arm(Timer::Slot(i), self.after(after));
        self.out.push_back(Output::Event(ClientEvent::Reconnecting { slot: id, after, why }));
        let threshold = self.config.reregister_after;
        if threshold > 0 && self.dead_dials >= threshold && self.stats().live == 0 {
            self.start_reregister(ReregisterReason::DialsFailing);
        }
    }

    fn check_queue(&self) {
        // Each input or timer produces a bounded batch; a growing queue means the caller stopped draining.
        debug_assert!(self.out.len() <= 8 * MAX_SLOTS + 64, "output queue not drained: {}", self.out.len());
    }

    /// Internal consistency, for tests and the fuzz target.
    #[cfg(any(test, feature = "fuzzing"))]
    fn check_invariants(&self) {
        let armed = |t| self.timers.by_timer.contains_key(&t);
        assert_eq!(self.timers.by_time.len(), self.timers.by_timer.len());
        match self.phase {
            Phase::Online => {
                for (i, s) in self.slots.iter().enumerate().take(self.target) {
                    assert_ne!(s.state, SlotState::Empty, "online with slot {i} empty");
                }
                assert!(!armed(Timer::Register));
            }
            Phase::Registering(_) | Phase::WaitingToRegister => {
                assert!(armed(Timer::Register), "registration phase without a deadline");
                for s in &self.slots {
                    assert!(
                        matches!(s.state, SlotState::Empty | SlotState::Live { .. }),
                        "{:?} while registering",
                        s.state
                    );
                }
            }
            Phase::Fatal => {
                assert!(self.timers.next().is_none());
                assert!(self.slots.iter().all(|s| s.state == SlotState::Empty));
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            let needs_timer = matches!(
                s.state,
                SlotState::Waiting | SlotState::Connecting(_) | SlotState::Handshaking(_) | SlotState::Parked
            );
            assert_eq!(armed(Timer::Slot(i)), needs_timer, "slot {i} in {:?}", s.state);
        }
    }
}

/// Drives a [`Supervisor`] with an op sequence decoded from `data` and panics on any broken invariant.
///
/// The first byte picks the configuration; then every three bytes are one op (time step, time going
/// backwards, registration answer, connect result, verdict, close, or a stale input). A shadow
/// supervisor is fed the clamped times and must behave identically.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn fuzz_ops(data: &[u8]) {
    let Some((&config, rest)) = data.split_first() else { return };
    let mut sim = sim::Sim::new(config);
    for op in rest.chunks(3) {
        let at = |i: usize| op.get(i).copied().unwrap_or(0);
        sim.step(sim::Op::from_parts(at(0), at(1), at(2)));
    }
}

/// A model adapter that answers the supervisor's outputs and checks every invariant after each step.
#[cfg(any(test, feature = "fuzzing"))]
mod sim {
    use super::*;

    /// One thing the simulated world does.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Op {
        /// Time passes (ms); the timer fires if due.
        Advance(u64),
        /// `handle_timeout` called whether or not anything is due.
        TimeoutEarly,
        /// The next input carries a `now` this many ms in the past.
        Back(u64),
        /// Answer the outstanding registration (kind picks success or a failure).
        Register(u8, u8),
        /// A connecting connection connects (or fails).
        Connect(u8, bool),
        /// A verdict on a connection that waits for one.
        Verdict(u8, u8),
        /// An open connection ends.
        Close(u8, bool),
        /// An input about a connection or registration that is over.
        Stale(u8, u8),
    }

    impl Op {
        pub(super) fn from_parts(kind: u8, a: u8, b: u8) -> Self {
            match kind % 8 {
                0 => Op::Advance(u64::from(a) * 64 + u64::from(b)),
                1 => Op::TimeoutEarly,
                2 => Op::Back(u64::from(a) * 40),
                3 => Op::Register(a, b),
                4 => Op::Connect(a, b % 4 != 0),
                5 => Op::Verdict(a, b),
                6 => Op::Close(a, b % 2 == 0),
                _ => Op::Stale(a, b),
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Conn {
        Connecting { expect: bool },
        AwaitVerdict,
        Live,
    }

    pub(super) struct Sim {
        sup: Supervisor,
        shadow: Supervisor,
        cfg: ClientConfig,
        /// True time; inputs may be fed earlier than this.
        clock: Instant,
        /// The latest `now` fed so far: what the supervisor clamps to.
        fed: Instant,
        back: Duration,
        register: Option<RegisterId>,
        lease: Option<Registration>,
        conns: BTreeMap<SlotId, Conn>,
        done: Vec<SlotId>,
        done_regs: Vec<RegisterId>,
        fatal: bool,
    }

    impl Sim {
        pub(super) fn new(config: u8) -> Self {
            let cfg = ClientConfig {
                name: (config & 8 != 0).then(|| TunnelId::parse("myapp").expect("valid name")),
                max_conns: match (config >> 1) & 3 {
                    0 => None,
                    n => Some(usize::from(n)),
                },
                handshake: if config & 1 != 0 { HandshakeMode::Legacy } else { HandshakeMode::Auto },
                reregister_after: [0, 3, 6, 1][usize::from((config >> 4) & 3)],
                seed: u64::from(config),
                ..ClientConfig::default()
            };
            // Test-support code: the epoch is the only real clock read; all later times are offsets.
            let epoch = Instant::now();
            let mut sim = Sim {
                sup: Supervisor::new(epoch, cfg.clone()),
                shadow: Supervisor::new(epoch, cfg.clone()),
                cfg,
                clock: epoch,
                fed: epoch,
                back: Duration::ZERO,
                register: None,
                lease: None,
                conns: BTreeMap::new(),
                done: Vec::new(),
                done_regs: Vec::new(),
                fatal: false,
            };
            sim.drain_and_check(false);
            sim
        }

        fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
            (!items.is_empty()).then(|| items[usize::from(i) % items.len()])
        }

        fn conns_where(&self, f: impl Fn(Conn) -> bool) -> Vec<SlotId> {
            self.conns.iter().filter(|(_, c)| f(**c)).map(|(id, _)| *id).collect()
        }

        pub(super) fn step(&mut self, op: Op) {
            match op {
                Op::Advance(ms) => {
                    self.clock += Duration::from_millis(ms);
                    if self.sup.poll_timeout().is_some_and(|d| d <= self.clock) {
                        self.feed(None);
                    }
                }
                Op::TimeoutEarly => {
                    self.feed(None);
                }
                Op::Back(ms) => self.back = Duration::from_millis(ms),
                Op::Register(kind, extra) => {
                    let Some(attempt) = self.register.take() else { return };
                    self.done_regs.push(attempt);
                    let input = match self.registration(kind, extra) {
                        Ok(reply) => {
                            self.lease = Some(reply.clone());
                            Input::Registered { attempt, reply }
                        }
                        Err(why) => Input::RegisterFailed { attempt, why },
                    };
                    self.feed(Some(input));
                }
                Op::Connect(i, ok) => {
                    let Some(slot) =
                        Self::pick(&self.conns_where(|c| matches!(c, Conn::Connecting { .. })), i)
                    else {
                        return;
                    };
                    if ok {
                        let expect = self.conns[&slot] == Conn::Connecting { expect: true };
                        self.conns.insert(slot, if expect { Conn::AwaitVerdict } else { Conn::Live });
                        self.feed(Some(Input::Connected { slot }));
                    } else {
                        self.forget(slot);
                        self.feed(Some(Input::ConnectFailed { slot }));
                    }
                }
                Op::Verdict(i, v) => {
                    let Some(slot) = Self::pick(&self.conns_where(|c| c == Conn::AwaitVerdict), i) else {
                        return;
                    };
                    let verdict = match v % 8 {
                        4 => Verdict::Full,
                        5 => Verdict::UnknownTunnel,
                        6 => Verdict::BadToken,
                        _ => Verdict::Accepted,
                    };
                    if verdict == Verdict::Accepted {
                        self.conns.insert(slot, Conn::Live);
                    }
                    self.feed(Some(Input::Verdict { slot, verdict }));
                    if verdict != Verdict::Accepted {
                        assert!(!self.conns.contains_key(&slot), "{verdict:?} on {slot:?} but no Close");
                    }
                }
                Op::Close(i, served) => {
                    let Some(slot) = Self::pick(&self.conns_where(|_| true), i) else { return };
                    self.forget(slot);
                    self.feed(Some(Input::Closed { slot, served }));
                }
                Op::Stale(i, kind) => self.stale(i, kind),
            }
        }

        fn registration(&self, kind: u8, extra: u8) -> Result<Registration, RegisterFailure> {
            let rejected = |status| RegisterFailure::Rejected {
                status,
                message: "no".into(),
                retry_after: (extra % 3 == 0).then(|| Duration::from_millis(u64::from(extra) * 100)),
            };
            match kind % 16 {
                0..=5 => {
                    let asked = self.lease.as_ref().map(|l| l.id.clone()).or_else(|| self.cfg.name.clone());
                    let mut id = asked.unwrap_or_else(|| TunnelId::parse("happy-blue-tiger").expect("valid"));
                    if kind % 16 == 4 && self.lease.is_some() {
                        id = TunnelId::parse("another-tunnel").expect("valid");
                    }
                    Ok(Registration {
                        url: format!("http://{id}.example.com"),
                        id,
                        port: 62322,
                        max_conn_count: usize::from(extra % 5),
                        token: (kind % 16 != 5).then(|| Token::from_bytes([extra; 16])),
                    })
                }
                6 | 15 => Err(RegisterFailure::Unreachable),
                7 => Err(RegisterFailure::TimedOut),
                8 => Err(RegisterFailure::BadReply),
                9 => Err(rejected(if extra % 4 == 0 { 403 } else { 502 })),
                10 => Err(rejected(409)),
                11 => Err(rejected(429)),
                12 => Err(rejected(503)),
                13 => Err(rejected(500)),
                _ => Err(rejected(404)),
            }
        }

        fn stale(&mut self, i: u8, kind: u8) {
            let input = if kind % 5 == 4 {
                let Some(attempt) = Self::pick(&self.done_regs, i) else { return };
                Input::RegisterFailed { attempt, why: RegisterFailure::Unreachable }
            } else {
                let Some(slot) = Self::pick(&self.done, i) else { return };
                match kind % 5 {
                    0 => Input::Connected { slot },
                    1 => Input::ConnectFailed { slot },
                    2 => Input::Verdict { slot, verdict: Verdict::UnknownTunnel },
                    _ => Input::Closed { slot, served: true },
                }
            };
            let before = self.sup.poll_timeout();
            let produced = self.feed(Some(input));
            assert_eq!(produced, 0, "a stale input produced outputs");
            assert_eq!(self.sup.poll_timeout(), before, "a stale input moved the deadline");
        }

        fn forget(&mut self, slot: SlotId) {
            assert!(self.conns.remove(&slot).is_some());
            self.done.push(slot);
        }

        /// Feeds `input` (or a timeout) to both supervisors, then checks everything; returns the output count.
        fn feed(&mut self, input: Option<Input>) -> usize {
            let raw = self.clock.checked_sub(std::mem::take(&mut self.back)).unwrap_or(self.clock);
            self.fed = self.fed.max(raw);
            let timeout = input.is_none();
            match input {
                Some(input) => {
                    self.sup.handle(raw, input.clone());
                    self.shadow.handle(self.fed, input);
                }
                None => {
                    self.sup.handle_timeout(raw);
                    self.shadow.handle_timeout(self.fed);
                }
            }
            self.drain_and_check(timeout)
        }

        fn drain_and_check(&mut self, after_timeout: bool) -> usize {
            let outs: Vec<Output> = std::iter::from_fn(|| self.sup.poll()).collect();
            let shadow: Vec<Output> = std::iter::from_fn(|| self.shadow.poll()).collect();
            assert_eq!(outs, shadow, "clamped and unclamped time disagree");
            assert_eq!(self.sup.poll_timeout(), self.shadow.poll_timeout());
            assert!(!self.fatal || outs.is_empty(), "outputs after Fatal: {outs:?}");
            for out in &outs {
                self.observe(out);
            }
            self.check(after_timeout);
            outs.len()
        }

        fn observe(&mut self, out: &Output) {
            match out {
                Output::Register { attempt, name, resume } => {
                    assert!(self.register.is_none(), "a second Register while one is outstanding");
                    match &self.lease {
                        Some(l) => {
                            assert_eq!(
                                name.as_ref(),
                                Some(&l.id),
                                "re-registration must ask for the same name"
                            );
                            assert_eq!(*resume, l.token, "re-registration must resume with the token");
                        }
                        None => assert_eq!((name, resume), (&self.cfg.name, &None)),
                    }
                    self.register = Some(*attempt);
                }
                Output::CancelRegister { attempt } => {
                    assert_eq!(
                        self.register.take(),
                        Some(*attempt),
                        "cancelled a registration not outstanding"
                    );
                    self.done_regs.push(*attempt);
                }
                Output::Connect { slot, port, hello, expect_verdict } => {
                    assert!(self.register.is_none(), "Connect while registering");
                    let lease = self.lease.as_ref().expect("Connect before any registration");
                    assert_eq!(*port, lease.port);
                    let (want_hello, want_expect) = match (self.cfg.handshake, lease.token) {
                        (HandshakeMode::Legacy, _) => {
                            (Some(Hello { id: lease.id.clone(), token: None }), false)
                        }
                        (HandshakeMode::Auto, Some(t)) => {
                            (Some(Hello { id: lease.id.clone(), token: Some(t) }), true)
                        }
                        (HandshakeMode::Auto, None) => (None, false),
                    };
                    assert_eq!((hello, *expect_verdict), (&want_hello, want_expect));
                    let fresh = self.conns.insert(*slot, Conn::Connecting { expect: *expect_verdict });
                    assert!(fresh.is_none() && !self.done.contains(slot), "slot id reused: {slot:?}");
                }
                Output::Close { slot } => {
                    assert!(self.conns.contains_key(slot), "Close for a connection not open: {slot:?}");
                    self.forget(*slot);
                }
                Output::Event(ClientEvent::Fatal { error }) => {
                    assert!(!error.to_string().is_empty());
                    self.fatal = true;
                }
                Output::Event(
                    ClientEvent::Reconnecting { after, .. } | ClientEvent::RegisterRetry { after, .. },
                ) => {
                    assert!(*after >= MIN_DELAY);
                }
                Output::Event(_) => {}
            }
        }

        fn check(&self, after_timeout: bool) {
            self.sup.check_invariants();
            self.shadow.check_invariants();
            let stats = self.sup.stats();
            let in_flight = self.conns_where(|c| c != Conn::Live).len();
            assert_eq!(stats.connecting, in_flight, "supervisor and adapter disagree on connects in flight");
            assert_eq!(stats.live, self.conns.len() - in_flight);
            if let Some(l) = &self.lease {
                let cap = self.cfg.max_conns.map_or(l.max_conn_count, |c| c.min(l.max_conn_count));
                assert!(in_flight <= stats.target && stats.target == cap.clamp(1, MAX_SLOTS));
            } else {
                assert_eq!(in_flight, 0);
            }
            assert_eq!(self.fatal, self.sup.is_fatal());
            let deadline = self.sup.poll_timeout();
            if after_timeout {
                assert!(deadline.is_none_or(|d| d > self.fed), "poll_timeout not after the handled time");
            }
            if self.fatal {
                assert!(deadline.is_none() && self.conns.is_empty() && self.register.is_none());
            } else {
                let busy = self.register.is_some() || !self.conns.is_empty() || deadline.is_some();
                assert!(busy, "the supervisor went silent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, proptest};

    const SEC: Duration = Duration::from_secs(1);

    fn drain(s: &mut Supervisor) -> Vec<Output> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    fn token() -> Token {
        Token::from_bytes([7; 16])
    }

    fn name(n: &str) -> TunnelId {
        TunnelId::parse(n).unwrap()
    }

    fn reply(id: &str, max_conn_count: usize, token: Option<Token>) -> Registration {
        Registration {
            id: name(id),
            url: format!("https://{id}.t.example"),
            port: 62322,
            max_conn_count,
            token,
        }
    }

    fn register_of(outs: &[Output]) -> RegisterId {
        match outs.iter().find(|o| matches!(o, Output::Register { .. })) {
            Some(Output::Register { attempt, .. }) => *attempt,
            _ => panic!("no Register in {outs:?}"),
        }
    }

    fn connects(outs: &[Output]) -> Vec<SlotId> {
        outs.iter()
            .filter_map(|o| if let Output::Connect { slot, .. } = o { Some(*slot) } else { None })
            .collect()
    }

    fn closes(outs: &[Output]) -> Vec<SlotId> {
        outs.iter().filter_map(|o| if let Output::Close { slot } = o { Some(*slot) } else { None }).collect()
    }

    fn events(outs: &[Output]) -> Vec<ClientEvent> {
        outs.iter().filter_map(|o| if let Output::Event(e) = o { Some(e.clone()) } else { None }).collect()
    }

    /// A supervisor registered as `myapp` with `n` slots, each dialled; returns the dials.
    fn online(cfg: ClientConfig, n: usize, tok: Option<Token>) -> (Supervisor, Instant, Vec<SlotId>) {
        let t = Instant::now();
        let mut s = Supervisor::new(t, cfg);
        let attempt = register_of(&drain(&mut s));
        s.handle(t, Input::Registered { attempt, reply: reply("myapp", n, tok) });
        let dials = connects(&drain(&mut s));
        (s, t, dials)
    }

    /// Connects and accepts every dial.
    fn accept_all(s: &mut Supervisor, t: Instant, dials: &[SlotId]) {
        for &slot in dials {
            s.handle(t, Input::Connected { slot });
            s.handle(t, Input::Verdict { slot, verdict: Verdict::Accepted });
        }
        assert!(drain(s).is_empty());
    }

    #[test]
    fn registers_first_then_fills_the_smaller_of_server_and_cap() {
        let t = Instant::now();
        let cfg = ClientConfig { max_conns: Some(3), ..ClientConfig::default() };
        let mut s = Supervisor::new(t, cfg);
        let outs = drain(&mut s);
        assert_eq!(outs, [Output::Register { attempt: RegisterId(1), name: None, resume: None }]);
        assert_eq!(s.poll_timeout(), Some(t + 10 * SEC), "registration has a deadline");
        s.handle(
            t,
            Input::Registered { attempt: RegisterId(1), reply: reply("happy-blue-tiger", 10, Some(token())) },
        );
        let outs = drain(&mut s);
        assert!(
            matches!(&outs[0], Output::Event(ClientEvent::Online { conns: 3, url, .. }) if url.contains("happy"))
        );
        let hello = Some(Hello { id: name("happy-blue-tiger"), token: Some(token()) });
        for (i, o) in outs[1..].iter().enumerate() {
            let want = Output::Connect {
                slot: SlotId { index: i, dial: i as u64 + 1 },
                port: 62322,
                hello: hello.clone(),
                expect_verdict: true,
            };
            assert_eq!(o, &want);
        }
        assert_eq!(outs.len(), 4);
        assert_eq!(s.stats(), Stats { target: 3, connecting: 3, live: 0, registrations: 1 });
        // Fewer than the cap when the server allows fewer; never zero.
        let (s, _, dials) = online(ClientConfig { max_conns: Some(3), ..ClientConfig::default() }, 2, None);
        assert_eq!((dials.len(), s.stats().target), (2, 2));
        let (_, _, dials) = online(ClientConfig::default(), 0, None);
        assert_eq!(dials.len(), 1);
    }

    #[test]
    fn registration_timeout_cancels_retries_and_ignores_the_late_answer() {
        let t = Instant::now();
        let mut s = Supervisor::new(t, ClientConfig::default());
        let _ = drain(&mut s);
        s.handle_timeout(t + 5 * SEC);
        assert!(drain(&mut s).is_empty(), "nothing is due before the deadline");
        s.handle_timeout(t + 10 * SEC);
        let outs = drain(&mut s);
        assert_eq!(outs[0], Output::CancelRegister { attempt: RegisterId(1) });
        assert!(matches!(
            &outs[1],
            Output::Event(ClientEvent::RegisterRetry { why: RegisterFailure::TimedOut, .. })
        ));
        let retry = s.poll_timeout().unwrap();
        assert!(retry > t + 10 * SEC && retry <= t + 10 * SEC + Duration::from_millis(250));
        s.handle(retry, Input::Registered { attempt: RegisterId(1), reply: reply("late-one", 4, None) });
        assert!(drain(&mut s).is_empty() && s.lease().is_none(), "an abandoned call's answer is ignored");
        s.handle_timeout(retry);
        assert_eq!(register_of(&drain(&mut s)), RegisterId(2));
        assert_eq!(s.stats().registrations, 2);
    }

    #[test]
    fn first_registration_403_and_409_are_fatal_with_advice() {
        for (status, needle) in [(403, "4 to 63"), (409, "in use")] {
            let t = Instant::now();
            let cfg = ClientConfig { name: Some(name("myapp")), ..ClientConfig::default() };
            let mut s = Supervisor::new(t, cfg);
            let attempt = register_of(&drain(&mut s));
            let why = RegisterFailure::Rejected { status, message: "nope".into(), retry_after: None };
            s.handle(t, Input::RegisterFailed { attempt, why });
            let outs = drain(&mut s);
            let [Output::Event(ClientEvent::Fatal { error })] = &outs[..] else { panic!("{outs:?}") };
            let msg = error.to_string();
            assert!(msg.contains("`myapp`") && msg.contains(needle) && msg.contains("--subdomain"), "{msg}");
            assert!(s.is_fatal() && s.poll_timeout().is_none());
            s.handle(t, Input::RegisterFailed { attempt, why: RegisterFailure::Unreachable });
            assert!(drain(&mut s).is_empty(), "nothing happens after Fatal");
        }
    }

    #[test]
    fn transient_registration_failures_retry_with_growing_backoff() {
        let t = Instant::now();
        let mut s = Supervisor::new(t, ClientConfig::default());
        let mut attempt = register_of(&drain(&mut s));
        let mut now = t;
        for (i, why) in [
            RegisterFailure::Unreachable,
            RegisterFailure::BadReply,
            RegisterFailure::Rejected { status: 503, message: "full".into(), retry_after: None },
            RegisterFailure::Rejected { status: 404, message: "?".into(), retry_after: None },
        ]
        .into_iter()
        .enumerate()
        {
            s.handle(now, Input::RegisterFailed { attempt, why });
            let outs = drain(&mut s);
            let [Output::Event(ClientEvent::RegisterRetry { after, .. })] = &outs[..] else {
                panic!("{outs:?}")
            };
            assert!(*after <= Duration::from_millis(250 << i), "attempt {i}: {after:?}");
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            attempt = register_of(&drain(&mut s));
        }
        assert!(!s.is_fatal());
    }

    #[test]
    fn retry_after_is_honoured() {
        let t = Instant::now();
        let mut s = Supervisor::new(t, ClientConfig::default());
        let attempt = register_of(&drain(&mut s));
        let why =
            RegisterFailure::Rejected { status: 429, message: "slow".into(), retry_after: Some(20 * SEC) };
        s.handle(t, Input::RegisterFailed { attempt, why });
        let _ = drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(t + 20 * SEC));
    }

    #[test]
    fn unknown_tunnel_reregisters_same_name_with_token_keeping_live_connections() {
        let (mut s, t, dials) = online(ClientConfig::default(), 2, Some(token()));
        accept_all(&mut s, t, &dials[..1]);
        s.handle(t, Input::Connected { slot: dials[1] });
        s.handle(t, Input::Verdict { slot: dials[1], verdict: Verdict::UnknownTunnel });
        let outs = drain(&mut s);
        assert_eq!(events(&outs), [ClientEvent::Reregistering { why: ReregisterReason::UnknownTunnel }]);
        assert_eq!(closes(&outs), [dials[1]]);
        assert!(connects(&outs).is_empty());
        let Some(Output::Register { attempt, name: n, resume }) = outs.last() else { panic!("{outs:?}") };
        assert_eq!((n.clone(), *resume), (Some(name("myapp")), Some(token())));
        // Answers for the rejected connection are stale now.
        s.handle(t, Input::Closed { slot: dials[1], served: false });
        assert!(drain(&mut s).is_empty());
        s.handle(t, Input::Registered { attempt: *attempt, reply: reply("myapp", 2, Some(token())) });
        let outs = drain(&mut s);
        assert_eq!(connects(&outs).iter().map(|c| c.index).collect::<Vec<_>>(), [1], "the live slot stays");
        assert_eq!(s.stats().live, 1);
    }

    #[test]
    fn bad_token_reregisters_and_409_then_retries_instead_of_dying() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        s.handle(t, Input::Connected { slot: dials[0] });
        s.handle(t, Input::Verdict { slot: dials[0], verdict: Verdict::BadToken });
        let outs = drain(&mut s);
        assert_eq!(events(&outs), [ClientEvent::Reregistering { why: ReregisterReason::BadToken }]);
        let attempt = register_of(&outs);
        let why = RegisterFailure::Rejected { status: 409, message: "held".into(), retry_after: None };
        s.handle(t, Input::RegisterFailed { attempt, why });
        let outs = drain(&mut s);
        assert!(matches!(&outs[..], [Output::Event(ClientEvent::RegisterRetry { .. })]), "{outs:?}");
        assert!(!s.is_fatal() && s.poll_timeout().is_some());
    }

    #[test]
    fn a_reregister_loop_backs_off() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        s.handle(t, Input::Connected { slot: dials[0] });
        s.handle(t, Input::Verdict { slot: dials[0], verdict: Verdict::UnknownTunnel });
        let attempt = register_of(&drain(&mut s));
        s.handle(t, Input::Registered { attempt, reply: reply("myapp", 1, Some(token())) });
        let slot = connects(&drain(&mut s))[0];
        s.handle(t, Input::Connected { slot });
        s.handle(t, Input::Verdict { slot, verdict: Verdict::UnknownTunnel });
        let outs = drain(&mut s);
        assert!(!outs.iter().any(|o| matches!(o, Output::Register { .. })), "second loop waits: {outs:?}");
        let at = s.poll_timeout().unwrap();
        assert!(at > t && at <= t + Duration::from_millis(500));
        s.handle_timeout(at);
        let _ = register_of(&drain(&mut s));
    }

    #[test]
    fn full_parks_the_slot_until_another_closes() {
        let (mut s, t, dials) = online(ClientConfig::default(), 2, Some(token()));
        accept_all(&mut s, t, &dials[..1]);
        s.handle(t, Input::Connected { slot: dials[1] });
        s.handle(t, Input::Verdict { slot: dials[1], verdict: Verdict::Full });
        let outs = drain(&mut s);
        assert_eq!(closes(&outs), [dials[1]]);
        assert!(connects(&outs).is_empty(), "no redial on Full");
        let park = s.poll_timeout().unwrap();
        let later = t;
        assert!(park > later, "the parked slot waits: {park:?}");
        // The healthy slot closes after serving: both redial at once, before the park timer.
        s.handle(later, Input::Closed { slot: dials[0], served: true });
        let redials: Vec<usize> = connects(&drain(&mut s)).iter().map(|c| c.index).collect();
        assert_eq!(redials, [0, 1]);
    }

    #[test]
    fn full_with_nothing_live_retries_on_a_timer_not_a_spin() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        s.handle(t, Input::Connected { slot: dials[0] });
        s.handle(t, Input::Verdict { slot: dials[0], verdict: Verdict::Full });
        let _ = drain(&mut s);
        let at = s.poll_timeout().expect("a parked slot still has a deadline");
        assert!(at > t);
        s.handle_timeout(at);
        assert_eq!(connects(&drain(&mut s)).len(), 1);
    }

    #[test]
    fn failed_dials_back_off_per_slot_and_are_never_fatal() {
        let cfg = ClientConfig { reregister_after: 0, ..ClientConfig::default() };
        let (mut s, t, dials) = online(cfg, 2, Some(token()));
        let mut slot = dials[0];
        let mut now = t;
        for i in 0..12u32 {
            s.handle(now, Input::ConnectFailed { slot });
            let outs = drain(&mut s);
            let [Output::Event(ClientEvent::Reconnecting { after, why: RetryReason::ConnectFailed, .. })] =
                &outs[..]
            else {
                panic!("{outs:?}")
            };
            let ceiling = Duration::from_millis(250u64 << i.min(7)).min(30 * SEC);
            assert!(*after <= ceiling, "failure {i}: {after:?} > {ceiling:?}");
            // Slot 1 is still connecting; its deadline may come first.
            now += *after;
            s.handle_timeout(now);
            let outs = drain(&mut s);
            let c = connects(&outs);
            slot = *c.iter().find(|c| c.index == 0).expect("slot 0 redials at its deadline");
        }
        assert!(!s.is_fatal());
    }

    #[test]
    fn connect_and_verdict_deadlines_close_and_retry() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        assert_eq!(s.poll_timeout(), Some(t + 10 * SEC));
        s.handle_timeout(t + 10 * SEC);
        let outs = drain(&mut s);
        assert_eq!(closes(&outs), [dials[0]]);
        assert!(matches!(events(&outs)[..], [ClientEvent::Reconnecting { why: RetryReason::TimedOut, .. }]));
        let at = s.poll_timeout().unwrap();
        s.handle_timeout(at);
        let slot = connects(&drain(&mut s))[0];
        s.handle(at, Input::Connected { slot });
        assert_eq!(s.poll_timeout(), Some(at + 10 * SEC), "the verdict has its own deadline");
        s.handle_timeout(at + 10 * SEC);
        assert_eq!(closes(&drain(&mut s)), [slot]);
    }

    #[test]
    fn healthy_close_redials_at_once_and_early_close_backs_off() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        accept_all(&mut s, t, &dials);
        s.handle(t + Duration::from_millis(10), Input::Closed { slot: dials[0], served: true });
        let slot = connects(&drain(&mut s))[0];
        accept_all(&mut s, t, &[slot]);
        s.handle(t + 5 * SEC, Input::Closed { slot, served: false });
        let slot = connects(&drain(&mut s))[0];
        accept_all(&mut s, t + 5 * SEC, &[slot]);
        s.handle(t + 5 * SEC + Duration::from_millis(100), Input::Closed { slot, served: false });
        let outs = drain(&mut s);
        assert!(connects(&outs).is_empty());
        assert!(matches!(
            events(&outs)[..],
            [ClientEvent::Reconnecting { why: RetryReason::ClosedEarly, .. }]
        ));
    }

    #[test]
    fn legacy_and_tokenless_hellos() {
        let t2 = Instant::now();
        let mut s2 =
            Supervisor::new(t2, ClientConfig { handshake: HandshakeMode::Legacy, ..ClientConfig::default() });
        let attempt = register_of(&drain(&mut s2));
        s2.handle(t2, Input::Registered { attempt, reply: reply("myapp", 1, None) });
        let outs = drain(&mut s2);
        let Some(Output::Connect { hello, expect_verdict, .. }) = outs.last() else { panic!() };
        assert_eq!((hello.clone(), *expect_verdict), (Some(Hello { id: name("myapp"), token: None }), false));
        // Connected is enough to be live when no verdict comes back.
        let slot = connects(&outs)[0];
        s2.handle(t2, Input::Connected { slot });
        assert_eq!(s2.stats().live, 1);
        assert_eq!(s2.poll_timeout(), None, "a live connection needs no timer");
        // Auto against a localtunnel server (no token): no line at all.
        let t3 = Instant::now();
        let mut s3 = Supervisor::new(t3, ClientConfig::default());
        let attempt = register_of(&drain(&mut s3));
        s3.handle(t3, Input::Registered { attempt, reply: reply("myapp", 1, None) });
        let outs = drain(&mut s3);
        assert!(matches!(outs.last(), Some(Output::Connect { hello: None, expect_verdict: false, .. })));
    }

    #[test]
    fn dials_failing_with_nothing_live_reregister() {
        // A localtunnel server that restarted refuses the old port and never says "unknown-tunnel".
        let cfg = ClientConfig { reregister_after: 3, ..ClientConfig::default() };
        let (mut s, t, dials) = online(cfg, 1, None);
        let mut slot = dials[0];
        let mut now = t;
        for i in 0..3 {
            s.handle(now, Input::ConnectFailed { slot });
            let outs = drain(&mut s);
            if i == 2 {
                let ev = events(&outs);
                assert!(
                    ev.contains(&ClientEvent::Reregistering { why: ReregisterReason::DialsFailing }),
                    "{ev:?}"
                );
                let _ = register_of(&outs);
                return;
            }
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            slot = connects(&drain(&mut s))[0];
        }
        panic!("no re-registration after 3 failed dials");
    }

    #[test]
    fn a_new_tunnel_id_closes_old_live_connections() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        accept_all(&mut s, t, &dials);
        // The connection ends normally; its redial learns the server forgot the tunnel.
        s.handle(t, Input::Closed { slot: dials[0], served: true });
        let slot = connects(&drain(&mut s))[0];
        s.handle(t, Input::Connected { slot });
        s.handle(t, Input::Verdict { slot, verdict: Verdict::UnknownTunnel });
        let attempt = register_of(&drain(&mut s));
        s.handle(t, Input::Registered { attempt, reply: reply("other-name", 1, Some(token())) });
        let outs = drain(&mut s);
        assert!(
            matches!(&events(&outs)[..], [ClientEvent::Online { id, .. }] if id.as_str() == "other-name")
        );
        let Some(Output::Connect { hello: Some(h), .. }) = outs.last() else { panic!("{outs:?}") };
        assert_eq!(h.id, name("other-name"));
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let (mut s, t, dials) = online(ClientConfig::default(), 1, Some(token()));
        s.handle(t + 3 * SEC, Input::Connected { slot: dials[0] });
        let deadline = s.poll_timeout().unwrap();
        assert_eq!(deadline, t + 13 * SEC);
        // An input stamped earlier does not move the clock back: the verdict deadline stays.
        s.handle(t, Input::Verdict { slot: dials[0], verdict: Verdict::Full });
        let _ = drain(&mut s);
        assert!(s.poll_timeout().unwrap() > t + 3 * SEC);
    }

    #[test]
    fn fuzz_ops_fixed_inputs() {
        fuzz_ops(&[]);
        fuzz_ops(&[0]);
        // Register OK with 3 conns, connect all, accept, close, time passes.
        fuzz_ops(&[0, 3, 0, 3, 4, 0, 1, 4, 1, 1, 4, 2, 1, 5, 0, 0, 6, 0, 0, 0, 255, 255, 7, 0, 0]);
        // Legacy, capped, named; failures, 403-or-502, 409 after being online, time reversal.
        fuzz_ops(&[
            0x0b, 3, 9, 1, 3, 1, 2, 2, 200, 0, 4, 0, 1, 5, 0, 5, 3, 10, 0, 0, 100, 0, 7, 1, 4, 6, 0, 1,
        ]);
        let mut long = vec![0x20];
        for i in 0..600u32 {
            long.extend_from_slice(&[(i * 7 % 251) as u8, (i * 13 % 253) as u8, (i * 31 % 255) as u8]);
        }
        fuzz_ops(&long);
    }

    proptest! {
        #[test]
        fn random_conversations_keep_every_invariant(
            config in any::<u8>(),
            ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..300),
        ) {
            // Invariants (panics inside): ≤ target connects in flight, no Connect while registering, one
            // Register at a time, poll_timeout > now after a timeout, never silent unless fatal, stale
            // inputs inert, and the same outputs as a twin fed clamped time.
            let mut sim = sim::Sim::new(config);
            for (k, a, b) in ops {
                sim.step(sim::Op::from_parts(k, a, b));
            }
        }

        #[test]
        fn non_monotonic_time_behaves_like_clamped_time(
            config in any::<u8>(),
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>()), 0..200),
        ) {
            // Every other op moves the next input's `now` into the past; the twin check compares.
            let mut sim = sim::Sim::new(config);
            for (back, k, a, b) in ops {
                if back {
                    sim.step(sim::Op::Back(u64::from(a) * 97));
                }
                sim.step(sim::Op::from_parts(k, a, b));
            }
        }

        #[test]
        fn fuzz_ops_never_panics(data in proptest::collection::vec(any::<u8>(), 0..900)) {
            fuzz_ops(&data);
        }
    }
}
