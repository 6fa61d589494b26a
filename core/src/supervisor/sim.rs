//! A simulated world around the supervisor: it answers every output as an adapter would and checks
//! the machine's invariants after each step (used by the properties and the `supervisor_ops` fuzz target).

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
    /// The status of the registration failure fed last, if it was a rejection.
    rejected: Option<u16>,
    /// What the conversation reached, for tests that claim an input gets somewhere.
    pub(super) outcomes: Outcomes,
}

/// Counts of what a run reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Outcomes {
    /// `Online` events (registrations that succeeded).
    pub online: u32,
    /// Connections that became live.
    pub live: u32,
    /// `Reregistering` events.
    pub reregistered: u32,
    /// `RegisterRetry` events.
    pub register_retries: u32,
    /// `Reconnecting` events.
    pub reconnects: u32,
    /// A `Fatal` event.
    pub fatal: bool,
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
            rejected: None,
            outcomes: Outcomes::default(),
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
                    Err(why) => {
                        self.rejected = match &why {
                            RegisterFailure::Rejected { status, .. } => Some(*status),
                            _ => None,
                        };
                        Input::RegisterFailed { attempt, why }
                    }
                };
                self.feed(Some(input));
            }
            Op::Connect(i, ok) => {
                let Some(slot) = Self::pick(&self.conns_where(|c| matches!(c, Conn::Connecting { .. })), i)
                else {
                    return;
                };
                if ok {
                    let expect = self.conns[&slot] == Conn::Connecting { expect: true };
                    self.conns.insert(slot, if expect { Conn::AwaitVerdict } else { Conn::Live });
                    self.outcomes.live += u32::from(!expect);
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
                    self.outcomes.live += 1;
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
                        assert_eq!(name.as_ref(), Some(&l.id), "re-registration must ask for the same name");
                        assert_eq!(*resume, l.token, "re-registration must resume with the token");
                    }
                    None => assert_eq!((name, resume), (&self.cfg.name, &None)),
                }
                self.register = Some(*attempt);
            }
            Output::CancelRegister { attempt } => {
                assert_eq!(self.register.take(), Some(*attempt), "cancelled a registration not outstanding");
                self.done_regs.push(*attempt);
            }
            Output::Connect { slot, port, hello, expect_verdict } => {
                assert!(self.register.is_none(), "Connect while registering");
                let lease = self.lease.as_ref().expect("Connect before any registration");
                assert_eq!(*port, lease.port);
                let (want_hello, want_expect) = match (self.cfg.handshake, lease.token) {
                    (HandshakeMode::Legacy, _) => (Some(Hello { id: lease.id.clone(), token: None }), false),
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
                // Only a 403, or a 409 before the first success, is fatal; it names what was asked for.
                let asked = self.cfg.name.clone();
                match error {
                    FatalError::NameRefused { name, .. } => {
                        assert_eq!(
                            (self.rejected, name),
                            (Some(403), &self.lease.as_ref().map(|l| l.id.clone()).or(asked))
                        )
                    }
                    FatalError::NameTaken { name, .. } => {
                        assert!(self.lease.is_none(), "409 after being online must not be fatal");
                        assert_eq!((self.rejected, name), (Some(409), &asked));
                    }
                }
                self.fatal = true;
                self.outcomes.fatal = true;
            }
            Output::Event(ClientEvent::Reconnecting { after, .. }) => {
                assert!(*after >= MIN_DELAY);
                self.outcomes.reconnects += 1;
            }
            Output::Event(ClientEvent::RegisterRetry { after, .. }) => {
                assert!(*after >= MIN_DELAY);
                self.outcomes.register_retries += 1;
            }
            Output::Event(ClientEvent::Online { .. }) => self.outcomes.online += 1,
            Output::Event(ClientEvent::Reregistering { .. }) => self.outcomes.reregistered += 1,
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
