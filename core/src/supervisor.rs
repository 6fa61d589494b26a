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
                // Stop dialling this slot until another connection ends. Its backoff (first retry within
                // 250 ms, doubling to the cap) is the safety net: a drop the server has not yet counted
                // (a redial racing the close), or connections it still holds that we lost unseen.
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
    run_ops(data);
}

/// [`fuzz_ops`], returning what the run reached (empty input: nothing).
#[cfg(any(test, feature = "fuzzing"))]
fn run_ops(data: &[u8]) -> sim::Outcomes {
    let Some((&config, rest)) = data.split_first() else { return sim::Outcomes::default() };
    let mut sim = sim::Sim::new(config);
    for op in rest.chunks(3) {
        let at = |i: usize| op.get(i).copied().unwrap_or(0);
        sim.step(sim::Op::from_parts(at(0), at(1), at(2)));
    }
    sim.outcomes
}

#[cfg(any(test, feature = "fuzzing"))]
mod sim;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod liveness;

#[cfg(test)]
mod seeds;
