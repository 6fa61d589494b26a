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
    let lt =
        r#"{"id":"abcd","port":40001,"max_conn_count":10,"url":"https://abcd.loca.lt","cached_url":null}"#;
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
    assert_eq!(checkout(&mut hub, t0 + 61 * SEC, 1, "myapp")[0].clone(), refused(1, Refusal::UnknownTunnel));
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
    assert_eq!(out, vec![Output::Verdict { conn: ConnId(2), verdict: Verdict::BadToken, write_line: false }]);
    hub.handle(t0, Input::Hello { conn: ConnId(3), hello: Hello { id: id("other"), token: Some(token) } });
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
    assert_eq!(out[0], Output::Verdict { conn: ConnId(1), verdict: Verdict::Accepted, write_line: false });
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
    // `requests` counts every visitor request routed to the tunnel, answered or refused (the four
    // checkouts above), and `idle_secs` runs from the last of them (at 2 s), per TunnelStatus's docs.
    let (routed, last_request) = (4, 2);
    let s = hub.tunnel_status(t0 + 40 * SEC, &id("myapp")).unwrap();
    assert_eq!((s.busy, s.idle, s.waiting), (1, 0, 0));
    assert_eq!((s.requests, s.age_secs, s.idle_secs), (routed, 40, 40 - last_request));
}

#[test]
fn a_new_connection_serves_the_oldest_waiter_and_cancel_leaves_no_trace() {
    let (mut hub, t0, token) = setup(cfg());
    hello(&mut hub, t0, 1, Some(token));
    assert_eq!(
        checkout(&mut hub, t0, 1, "myapp"),
        vec![Output::Granted { waiter: WaiterId(1), conn: ConnId(1) }]
    );
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
    assert_eq!(
        checkout(&mut hub, t0, 1, "myapp"),
        vec![Output::Granted { waiter: WaiterId(1), conn: ConnId(1) }]
    );
    assert!(checkout(&mut hub, t0, 2, "myapp").is_empty(), "the second request queues");
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

/// SPEC §5: a connection the server retired is replaced by its client, so requests queued behind it
/// (and new ones) wait for the replacement instead of getting "offline"; only if none comes within
/// a handshake's time are they refused.
#[test]
fn a_retired_last_connection_keeps_the_queue_for_its_replacement() {
    let (mut hub, t0, token) = setup(cfg());
    let handshake = cfg().limits.handshake_timeout;
    hello(&mut hub, t0, 1, Some(token));
    assert_eq!(
        checkout(&mut hub, t0, 1, "myapp"),
        vec![Output::Granted { waiter: WaiterId(1), conn: ConnId(1) }]
    );
    assert!(checkout(&mut hub, t0, 2, "myapp").is_empty(), "the second request queues");
    hub.handle(t0 + SEC, Input::Retired { conn: ConnId(1) });
    assert_eq!(drain(&mut hub), vec![Output::Event(ServerEvent::Offline { id: id("myapp") })]);
    assert!(checkout(&mut hub, t0 + SEC, 3, "myapp").is_empty(), "a new request queues too");
    assert_eq!(hub.poll_timeout(), Some(t0 + SEC + handshake));
    let granted = hello(&mut hub, t0 + 2 * SEC, 2, Some(token));
    assert_eq!(
        granted,
        vec![
            verdict(Verdict::Accepted, 2),
            Output::Event(ServerEvent::Online { id: id("myapp") }),
            Output::Granted { waiter: WaiterId(2), conn: ConnId(2) },
        ]
    );
    // The wait is over: the next retirement starts a new one, and this time nothing comes.
    hub.handle(t0 + 3 * SEC, Input::Retired { conn: ConnId(2) });
    drain(&mut hub);
    hub.handle_timeout(t0 + 3 * SEC + handshake - Duration::from_millis(1));
    assert!(drain(&mut hub).is_empty(), "refused before the replacement wait ran out");
    hub.handle_timeout(t0 + 3 * SEC + handshake);
    let offline = Refusal::Offline { retry_after: OFFLINE_RETRY_AFTER };
    assert_eq!(drain(&mut hub), vec![refused(3, offline)]);
    let refused_now = checkout(&mut hub, t0 + 3 * SEC + handshake, 4, "myapp");
    assert_eq!(refused_now, vec![refused(4, offline)], "no wait once the replacement did not come");
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

/// The fixed inputs, also committed as `fuzz/seeds/hub_ops/<name>` (rewrite them with `AETHER_WRITE_SEEDS=1`).
fn fixed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // One connection, no queue: register alpha, hello x2 (the second is Full), checkout x3 (one granted,
        // two 503 queue-full), checkin, close, timeout: alpha expires.
        (
            "register-hello-checkout",
            vec![0x06, 0, 0, 0, 1, 0, 5, 1, 0, 5, 3, 0, 0, 3, 0, 0, 3, 0, 0, 5, 0, 10, 2, 0, 220, 7, 0, 255],
        ),
        (
            "domain-legacy-mixed",
            vec![0xff, 0, 3, 0, 0x21, 3, 0, 3, 3, 0, 0x09, 0, 0, 4, 1, 1, 0x10, 0, 0, 6, 0, 250],
        ),
        // One connection, a queue of one: the second request waits past its 5 s deadline (504).
        ("queued-times-out", vec![0x08, 0, 0, 0, 1, 0, 0, 3, 0, 0, 3, 0, 0, 6, 0, 250]),
        ("every-byte", (0..=255u8).collect()),
        ("long-hash", (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
    ]
}

fn expected_outcome(name: &str) -> sim::Outcomes {
    let o = sim::Outcomes::default();
    match name {
        "register-hello-checkout" => {
            sim::Outcomes { registered: 1, accepted: 1, granted: 1, queue_full: 2, expired: 1, ..o }
        }
        "domain-legacy-mixed" => sim::Outcomes { registered: 2, accepted: 1, granted: 1, expired: 1, ..o },
        "queued-times-out" => sim::Outcomes { registered: 1, accepted: 1, granted: 1, timed_out: 1, ..o },
        // The long runs reach every kind of ending but a timeout.
        "every-byte" => {
            sim::Outcomes { registered: 6, accepted: 2, granted: 2, offline: 5, unknown: 3, expired: 2, ..o }
        }
        "long-hash" => sim::Outcomes {
            registered: 13,
            accepted: 2,
            granted: 11,
            offline: 5,
            queue_full: 2,
            unknown: 8,
            expired: 6,
            ..o
        },
        other => panic!("no expected outcome for seed {other}"),
    }
}

#[test]
fn fuzz_ops_fixed_inputs_reach_their_states() {
    assert_eq!(run_ops(&[]), sim::Outcomes::default());
    assert_eq!(run_ops(&[0]), sim::Outcomes::default());
    for (name, data) in fixed_inputs() {
        assert_eq!(run_ops(&data), expected_outcome(name), "{name}");
    }
}

#[test]
fn committed_seeds_are_the_fixed_inputs() {
    crate::fuzzing::seeds_are_the_fixed_inputs("hub_ops", &fixed_inputs(), |name, data| {
        assert_eq!(run_ops(data), expected_outcome(name), "seed {name}")
    });
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u8>(), 0..3u8).prop_map(|(name, resume)| Op::Register { name, resume }),
        3 => (any::<u8>(), prop_oneof![8 => Just(0u8), 1 => Just(1), 1 => Just(2)])
            .prop_map(|(tunnel, token)| Op::Hello { tunnel, token }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(conn, retired)| Op::Close { conn, retired }),
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
