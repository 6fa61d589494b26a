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
    Registration { id: name(id), url: format!("https://{id}.t.example"), port: 62322, max_conn_count, token }
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
    assert_eq!(register_of(&drain(&mut s)), RegisterId(1));
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
    let mut last_ceiling = Duration::ZERO;
    for (i, why) in [
        RegisterFailure::Unreachable,
        RegisterFailure::BadReply,
        RegisterFailure::Rejected { status: 503, message: "full".into(), retry_after: None },
        RegisterFailure::Rejected { status: 404, message: "?".into(), retry_after: None },
    ]
    .into_iter()
    .enumerate()
    {
        let ceiling = s.register_backoff.ceiling();
        assert!(ceiling > last_ceiling, "attempt {i}: the ceiling did not grow: {ceiling:?}");
        assert_eq!(ceiling, Duration::from_millis(250 << i), "250 ms doubling (BackoffConfig::default)");
        last_ceiling = ceiling;
        s.handle(now, Input::RegisterFailed { attempt, why });
        let outs = drain(&mut s);
        let [Output::Event(ClientEvent::RegisterRetry { after, .. })] = &outs[..] else { panic!("{outs:?}") };
        assert!(*after <= ceiling, "attempt {i}: {after:?}");
        assert_eq!(s.register_backoff.failures(), i as u32 + 1);
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
    let why = RegisterFailure::Rejected { status: 429, message: "slow".into(), retry_after: Some(20 * SEC) };
    s.handle(t, Input::RegisterFailed { attempt, why: why.clone() });
    assert_eq!(drain(&mut s), [Output::Event(ClientEvent::RegisterRetry { after: 20 * SEC, why })]);
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
    assert_eq!(register_of(&drain(&mut s)), RegisterId(3), "the third registration, after the wait");
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
    let outs = drain(&mut s);
    assert_eq!(closes(&outs), [dials[0]]);
    assert!(
        matches!(events(&outs)[..], [ClientEvent::Reconnecting { why: RetryReason::Full, .. }]),
        "{outs:?}"
    );
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
    let mut last_ceiling = Duration::ZERO;
    for i in 0..12u32 {
        let ceiling = s.slots[0].backoff.ceiling();
        assert!(ceiling > last_ceiling || ceiling == 30 * SEC, "failure {i}: the ceiling did not grow");
        last_ceiling = ceiling;
        s.handle(now, Input::ConnectFailed { slot });
        let outs = drain(&mut s);
        let [Output::Event(ClientEvent::Reconnecting { after, why: RetryReason::ConnectFailed, .. })] =
            &outs[..]
        else {
            panic!("{outs:?}")
        };
        assert_eq!(ceiling, Duration::from_millis(250u64 << i.min(7)).min(30 * SEC));
        assert!(*after <= ceiling, "failure {i}: {after:?} > {ceiling:?}");
        assert_eq!(s.slots[0].backoff.failures(), i + 1);
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
    assert!(matches!(events(&outs)[..], [ClientEvent::Reconnecting { why: RetryReason::ClosedEarly, .. }]));
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
            assert_eq!(register_of(&outs), RegisterId(2));
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
    assert!(matches!(&events(&outs)[..], [ClientEvent::Online { id, .. }] if id.as_str() == "other-name"));
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
    assert_eq!(closes(&drain(&mut s)), [dials[0]]);
    assert!(s.poll_timeout().unwrap() > t + 3 * SEC);
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
