use super::*;
use proptest::prelude::*;

fn limits(max_tunnels: usize) -> Limits {
    Limits { max_tunnels, offline_grace: Duration::from_secs(60), ..Limits::default() }
}

fn id(s: &str) -> TunnelId {
    TunnelId::parse(s).unwrap()
}

fn entropy(b: u8) -> [u8; 32] {
    let mut e = [b; 32];
    e[0] = b.wrapping_add(1); // token bytes differ from seed bytes
    e
}

#[test]
fn random_name_and_token_from_entropy() {
    let mut reg = Registry::new(&limits(10));
    let now = Instant::now();
    let e = entropy(9);
    let r = reg.register(now, None, None, &e).unwrap();
    assert!(TunnelId::parse(r.id.as_str()).is_ok());
    assert_eq!(r.id.as_str().split('-').count(), 3);
    let mut want = [9u8; 16];
    want[0] = 10;
    assert!(r.token.ct_eq(&Token::from_bytes(want)));
    assert!(!r.resumed);
    let t = reg.get(&r.id).unwrap();
    assert_eq!((t.created, t.connected, t.offline_since), (now, 0, Some(now)));
}

#[test]
fn held_name_is_409_unless_resumed_with_its_token() {
    let mut reg = Registry::new(&limits(10));
    let now = Instant::now();
    let first = reg.register(now, Some(id("myapp")), None, &entropy(1)).unwrap();
    // Offline (never connected): 409 says when it frees up.
    let later = now + Duration::from_secs(20);
    assert_eq!(
        reg.register(later, Some(id("myapp")), None, &entropy(2)),
        Err(RegisterError::NameTaken { retry_after: Some(Duration::from_secs(40)) })
    );
    let wrong = Token::from_bytes([0; 16]);
    assert!(matches!(
        reg.register(later, Some(id("myapp")), Some(&wrong), &entropy(2)),
        Err(RegisterError::NameTaken { .. })
    ));
    // Online: 409 with no date.
    assert_eq!(reg.set_connected(&id("myapp"), 2, later), Some(Presence::Online));
    assert_eq!(
        reg.register(later, Some(id("myapp")), None, &entropy(2)),
        Err(RegisterError::NameTaken { retry_after: None })
    );
    let again = reg.register(later, Some(id("myapp")), Some(&first.token), &entropy(3)).unwrap();
    assert!(again.resumed);
    assert!(again.token.ct_eq(&first.token));
    assert_eq!(reg.get(&id("myapp")).unwrap().connected, 2, "resume keeps the connections");
    assert_eq!(reg.len(), 1);
}

#[test]
fn max_tunnels_is_503_but_resume_still_works() {
    let mut reg = Registry::new(&limits(1));
    let now = Instant::now();
    let a = reg.register(now, Some(id("aaaa")), None, &entropy(1)).unwrap();
    let full = reg.register(now, Some(id("bbbb")), None, &entropy(2));
    assert_eq!(full, Err(RegisterError::TooManyTunnels));
    assert_eq!(full.unwrap_err().status(), 503);
    assert_eq!(reg.register(now, None, None, &entropy(2)), Err(RegisterError::TooManyTunnels));
    assert!(reg.register(now, Some(id("aaaa")), Some(&a.token), &entropy(3)).unwrap().resumed);
}

#[test]
fn grace_counts_from_registration_and_from_last_disconnect() {
    let mut reg = Registry::new(&limits(10));
    let t0 = Instant::now();
    let grace = Duration::from_secs(60);
    reg.register(t0, Some(id("never")), None, &entropy(1)).unwrap();
    reg.register(t0, Some(id("blip")), None, &entropy(2)).unwrap();
    reg.set_connected(&id("blip"), 1, t0 + Duration::from_secs(1));
    assert_eq!(reg.next_expiry(), Some(t0 + grace));
    assert!(reg.pop_expired(t0 + grace - Duration::from_nanos(1)).is_none());
    let (gone, _) = reg.pop_expired(t0 + grace).unwrap();
    assert_eq!(gone, id("never"));
    assert!(reg.pop_expired(t0 + grace).is_none(), "the connected tunnel stays");
    let t1 = t0 + Duration::from_secs(100);
    assert_eq!(reg.set_connected(&id("blip"), 0, t1), Some(Presence::Offline));
    assert_eq!(reg.get(&id("blip")).unwrap().offline_since, Some(t1));
    assert_eq!(reg.next_expiry(), Some(t1 + grace));
    assert!(reg.pop_expired(t1 + grace - Duration::from_nanos(1)).is_none());
    assert_eq!(reg.pop_expired(t1 + grace).map(|(i, _)| i), Some(id("blip")));
    assert!(reg.is_empty());
    reg.check_invariants();
}

#[test]
fn random_names_give_up_after_bounded_collisions() {
    let mut reg = Registry::new(&limits(1000));
    let now = Instant::now();
    // The same seed draws the same names in the same order: each call takes the next free one.
    let names: Vec<_> =
        (0..RANDOM_NAME_ATTEMPTS).map(|_| reg.register(now, None, None, &entropy(5))).collect();
    assert!(names.iter().all(|r| r.is_ok()));
    let err = reg.register(now, None, None, &entropy(5)).unwrap_err();
    assert_eq!(err, RegisterError::NoFreeName);
    assert_eq!(err.status(), 503);
}

#[test]
fn touch_counts_requests() {
    let mut reg = Registry::new(&limits(10));
    let now = Instant::now();
    reg.register(now, Some(id("myapp")), None, &entropy(1)).unwrap();
    assert!(reg.touch(&id("myapp"), now + Duration::from_secs(3)));
    assert!(!reg.touch(&id("nope"), now));
    let t = reg.get(&id("myapp")).unwrap();
    assert_eq!((t.requests, t.last_access), (1, now + Duration::from_secs(3)));
}

#[test]
fn errors_say_what_to_do() {
    let taken = RegisterError::NameTaken { retry_after: Some(Duration::from_millis(1500)) };
    assert_eq!(taken.status(), 409);
    assert!(taken.to_string().contains("2 s"), "{taken}");
    assert!(RegisterError::NameTaken { retry_after: None }.to_string().contains("choose another name"));
    assert!(RegisterError::TooManyTunnels.to_string().contains("try again later"));
}

#[derive(Debug, Clone)]
enum Op {
    Register { name: Option<usize>, token: u8, seed: u8 },
    Connect { name: usize, n: usize },
    Advance { secs: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (proptest::option::of(0..4usize), 0..3u8, 0..4u8).prop_map(|(name, token, seed)| Op::Register {
            name,
            token,
            seed
        }),
        (0..4usize, 0..3usize).prop_map(|(name, n)| Op::Connect { name, n }),
        (0..40u64).prop_map(|secs| Op::Advance { secs }),
    ]
}

const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// The model's record of a held name (SPEC §8: held for its token through the offline grace, then free).
struct Held {
    token: Token,
    connected: usize,
    /// Set while offline: when the name frees up.
    expires: Option<Instant>,
}

proptest! {
    /// The registry does what a model of names, tokens and the offline grace predicts: ids are unique
    /// and valid; a held name is granted only to its token, with 409 saying when it frees up; every
    /// tunnel whose grace ran out is expired by `pop_expired` (earliest first) and none before;
    /// `set_connected` reports Online / Offline exactly on the change between none and some.
    #[test]
    fn registry_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let grace = limits(3).offline_grace;
        let mut reg = Registry::new(&limits(3));
        let mut now = Instant::now();
        let mut held: HashMap<TunnelId, Held> = HashMap::new();
        for op in ops {
            match op {
                Op::Advance { secs } => {
                    now += Duration::from_secs(secs);
                    let mut due: Vec<(Instant, TunnelId)> = held
                        .iter()
                        .filter_map(|(id, h)| h.expires.filter(|e| *e <= now).map(|e| (e, id.clone())))
                        .collect();
                    due.sort();
                    for (at, want) in due {
                        let (gone, t) = reg.pop_expired(now).expect("a tunnel past its grace was not expired");
                        prop_assert_eq!(&gone, &want);
                        prop_assert_eq!((t.connected, t.expires_at()), (0, Some(at)));
                        held.remove(&gone);
                    }
                    prop_assert!(reg.pop_expired(now).is_none(), "a tunnel expired before its grace ran out");
                    let next = held.values().filter_map(|h| h.expires).min();
                    prop_assert_eq!(reg.next_expiry(), next);
                }
                Op::Connect { name, n } => {
                    let name = id(NAMES[name]);
                    let want = held.get_mut(&name).and_then(|h| {
                        let was = std::mem::replace(&mut h.connected, n);
                        match (was, n) {
                            (0, 1..) => {
                                h.expires = None;
                                Some(Presence::Online)
                            }
                            (1.., 0) => {
                                h.expires = Some(now + grace);
                                Some(Presence::Offline)
                            }
                            _ => None,
                        }
                    });
                    prop_assert_eq!(reg.set_connected(&name, n, now), want);
                }
                Op::Register { name, token, seed } => {
                    let name = name.map(|i| id(NAMES[i]));
                    let holder = name.as_ref().and_then(|n| held.get(n));
                    let resume = match (token, holder) {
                        (1, Some(h)) => Some(h.token),
                        (2, _) => Some(Token::from_bytes([0xee; 16])),
                        _ => None,
                    };
                    let got = reg.register(now, name.clone(), resume.as_ref(), &entropy(seed));
                    match (&name, holder) {
                        (Some(_), Some(h)) if resume.is_some_and(|r| r.ct_eq(&h.token)) => {
                            let r = got.unwrap();
                            prop_assert!(r.resumed && r.token.ct_eq(&h.token));
                        }
                        (Some(_), Some(h)) => {
                            let retry_after = h.expires.map(|e| e - now);
                            prop_assert_eq!(got, Err(RegisterError::NameTaken { retry_after }));
                        }
                        _ if held.len() >= 3 => prop_assert_eq!(got, Err(RegisterError::TooManyTunnels)),
                        _ => {
                            let r = got.unwrap();
                            prop_assert!(!r.resumed);
                            prop_assert!(TunnelId::parse(r.id.as_str()).is_ok());
                            if let Some(n) = &name { prop_assert_eq!(&r.id, n); }
                            prop_assert!(!held.contains_key(&r.id), "id handed out twice: {}", r.id);
                            // A new tunnel starts offline: its grace runs from registration.
                            held.insert(r.id, Held { token: r.token, connected: 0, expires: Some(now + grace) });
                        }
                    }
                }
            }
            prop_assert_eq!(reg.len(), held.len());
            for (name, h) in &held {
                let t = reg.get(name).expect("a held name is missing");
                prop_assert_eq!((t.connected, t.expires_at()), (h.connected, h.expires));
            }
            reg.check_invariants();
        }
    }
}

#[test]
fn ceil_secs_rounds_only_a_fraction_up() {
    assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    assert_eq!(ceil_secs(Duration::from_nanos(2_000_000_001)), 3);
    assert_eq!(ceil_secs(Duration::ZERO), 0);
}

#[test]
fn is_empty_follows_the_tunnels() {
    let mut reg = Registry::new(&limits(10));
    assert!(reg.is_empty());
    reg.register(Instant::now(), Some(id("myapp")), None, &entropy(1)).unwrap();
    assert!(!reg.is_empty());
}

#[test]
#[should_panic(expected = "expiry index out of step")]
fn invariants_catch_a_stale_expiry_index() {
    let mut reg = Registry::new(&limits(10));
    reg.register(Instant::now(), Some(id("myapp")), None, &entropy(1)).unwrap();
    reg.expiries.clear();
    reg.check_invariants();
}

#[test]
#[should_panic(expected = "connected vs expires")]
fn invariants_catch_an_offline_tunnel_that_never_expires() {
    let mut reg = Registry::new(&limits(10));
    reg.register(Instant::now(), Some(id("myapp")), None, &entropy(1)).unwrap();
    reg.expiries.clear();
    reg.tunnels.values_mut().for_each(|t| t.expires = None);
    reg.check_invariants();
}
