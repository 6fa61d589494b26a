//! The names a server holds: which tunnels exist, who owns them, and when an
//! unused one is let go.
//!
//! ```text
//!   register ──▶ Offline ──(first conn)──▶ Online ──(last conn gone)──▶ Offline
//!                  │  ▲                                                  │
//!                  │  └──────────────────(a conn again)──────────────────┘
//!                  └──(offline_grace with no conn)──▶ Expired (name free again)
//! ```
//!
//! A tunnel starts offline: a client that registers and never connects loses
//! its name after `offline_grace`, like one that disconnects. While a tunnel
//! exists its name is never given to anyone else; registering it again is a
//! conflict, unless the request carries the tunnel's token, which resumes the
//! same tunnel (same token, connections kept).
//!
//! This module models names, tokens and presence only. It does not hold
//! connections (the [`pool`](crate::pool) does), nor drive its own clock: the
//! [`hub`](crate::hub) calls [`Registry::pop_expired`] when the deadline
//! from [`Registry::next_expiry`] is due.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::entropy::Rng;
use crate::id::{TOKEN_LEN, Token, TunnelId};
use crate::limits::Limits;

/// How many random names are drawn before registration gives up with [`RegisterError::NoFreeName`].
pub const RANDOM_NAME_ATTEMPTS: usize = 16;

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The requested name belongs to another tunnel (409); `retry_after` is when it frees up if that tunnel is offline.
    NameTaken {
        /// Time left in the holder's offline grace; `None` while the holder is connected.
        retry_after: Option<Duration>,
    },
    /// The server holds its maximum number of tunnels (503).
    TooManyTunnels,
    /// Every random name drawn was taken (503); the name space is nearly full.
    NoFreeName,
}

impl RegisterError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            RegisterError::NameTaken { .. } => 409,
            RegisterError::TooManyTunnels | RegisterError::NoFreeName => 503,
        }
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::NameTaken { retry_after: None } => f.write_str(
                "this tunnel name is in use by a connected tunnel; choose another name, or register without one to get a random name",
            ),
            RegisterError::NameTaken { retry_after: Some(d) } => write!(
                f,
                "this tunnel name is held for its owner, who may reconnect; it frees up in {} s unless they do (its owner can resume it with its token)",
                ceil_secs(*d)
            ),
            RegisterError::TooManyTunnels => {
                f.write_str("this server holds as many tunnels as it allows; try again later or use another server")
            }
            RegisterError::NoFreeName => {
                f.write_str("no free random tunnel name was found; try again, or ask for a name of your own")
            }
        }
    }
}

impl std::error::Error for RegisterError {}

/// Whole seconds, rounded up (what a `Retry-After` header or a person wants).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One tunnel's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The ownership proof handed out at registration.
    pub token: Token,
    /// When it was registered.
    pub created: Instant,
    /// When a visitor last asked for it (or when it was registered).
    pub last_access: Instant,
    /// Visitor requests routed to it so far.
    pub requests: u64,
    /// Tunnel connections it holds now.
    pub connected: usize,
    /// Since when it has had no connection (`Some` from registration until the first one).
    pub offline_since: Option<Instant>,
    /// When it expires if still offline; `None` while online (or if the deadline overflows).
    expires: Option<Instant>,
}

impl Tunnel {
    /// When this tunnel will be dropped unless a connection arrives first.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires
    }
}

/// A successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The tunnel's name.
    pub id: TunnelId,
    /// Its token (the existing one when resumed).
    pub token: Token,
    /// True when an existing tunnel was resumed with its token.
    pub resumed: bool,
}

/// A change of presence reported by [`Registry::set_connected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The tunnel got its first connection.
    Online,
    /// The tunnel lost its last connection; its grace started.
    Offline,
}

/// All tunnels of one server, with an index of offline-grace deadlines.
#[derive(Debug, Clone)]
pub struct Registry {
    tunnels: HashMap<TunnelId, Tunnel>,
    /// (expiry, id) of every offline tunnel with a finite grace: the earliest is first.
    expiries: BTreeSet<(Instant, TunnelId)>,
    max_tunnels: usize,
    grace: Duration,
}

impl Registry {
    /// An empty registry bounded by `limits.max_tunnels`, with `limits.offline_grace`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            tunnels: HashMap::new(),
            expiries: BTreeSet::new(),
            max_tunnels: limits.max_tunnels,
            grace: limits.offline_grace,
        }
    }

    /// Registers `name` (or a random name), or resumes it when `resume` is its token.
    ///
    /// `entropy` is fresh OS randomness: its first 16 bytes become the token, the
    /// rest seed the random name. Due expiries must be popped first: a tunnel
    /// still here is still holding its name.
    pub fn register(
        &mut self,
        now: Instant,
        name: Option<TunnelId>,
        resume: Option<&Token>,
        entropy: &[u8; 32],
    ) -> Result<Registration, RegisterError> {
        if let Some(id) = &name {
            if let Some(held) = self.tunnels.get(id) {
                return match resume {
                    Some(t) if held.token.ct_eq(t) => {
                        Ok(Registration { id: id.clone(), token: held.token, resumed: true })
                    }
                    _ => Err(RegisterError::NameTaken {
                        retry_after: held.expires.map(|e| e.saturating_duration_since(now)),
                    }),
                };
            }
        }
        if self.tunnels.len() >= self.max_tunnels {
            return Err(RegisterError::TooManyTunnels);
        }
        let id = match name {
            Some(id) => id,
            None => self.free_random_name(&entropy[TOKEN_LEN..])?,
        };
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&entropy[..TOKEN_LEN]);
        let token = Token::from_bytes(token);
        let expires = now.checked_add(self.grace);
        if let Some(e) = expires {
            self.expiries.insert((e, id.clone()));
        }
        let tunnel = Tunnel {
            token,
            created: now,
            last_access: now,
            requests: 0,
            connected: 0,
            offline_since: Some(now),
            expires,
        };
        self.tunnels.insert(id.clone(), tunnel);
        Ok(Registration { id, token, resumed: false })
    }

    fn free_random_name(&self, seed: &[u8]) -> Result<TunnelId, RegisterError> {
        let mut rng = Rng::from_bytes(seed);
        (0..RANDOM_NAME_ATTEMPTS)
            .map(|_| TunnelId::random(&mut rng))
            .find(|id| !self.tunnels.contains_key(id))
            .ok_or(RegisterError::NoFreeName)
    }

    /// The tunnel called `id`, if any.
    pub fn get(&self, id: &TunnelId) -> Option<&Tunnel> {
        self.tunnels.get(id)
    }

    /// How many tunnels exist.
    pub fn len(&self) -> usize {
        self.tunnels.len()
    }

    /// True when no tunnel exists.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    /// Counts one visitor request for `id`; false if there is no such tunnel.
    pub fn touch(&mut self, id: &TunnelId, now: Instant) -> bool {
        match self.tunnels.get_mut(id) {
            Some(t) => {
                t.requests += 1;
                t.last_access = t.last_access.max(now);
                true
            }
            None => false,
        }
    }

    /// Records that `id` now holds `connected` connections; reports a change between none and some.
    pub fn set_connected(&mut self, id: &TunnelId, connected: usize, now: Instant) -> Option<Presence> {
        let t = self.tunnels.get_mut(id)?;
        let was = t.connected;
        t.connected = connected;
        if was == 0 && connected > 0 {
            if let Some(e) = t.expires.take() {
                self.expiries.remove(&(e, id.clone()));
            }
            t.offline_since = None;
            Some(Presence::Online)
        } else if was > 0 && connected == 0 {
            t.offline_since = Some(now);
            t.expires = now.checked_add(self.grace);
            if let Some(e) = t.expires {
                self.expiries.insert((e, id.clone()));
            }
            Some(Presence::Offline)
        } else {
            None
        }
    }

    /// The earliest offline-grace deadline, if any tunnel is offline.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(e, _)| *e)
    }

    /// Removes and returns one tunnel whose grace has run out by `now` (earliest first).
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TunnelId, Tunnel)> {
        let (at, _) = self.expiries.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.expiries.pop_first()?;
        let tunnel = self.tunnels.remove(&id);
        debug_assert!(tunnel.is_some(), "expiry index names a missing tunnel {id}");
        tunnel.map(|t| (id, t))
    }

    /// Checks that the expiry index matches the records exactly (tests and fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self) {
        let from_records: BTreeSet<_> =
            self.tunnels.iter().filter_map(|(id, t)| t.expires.map(|e| (e, id.clone()))).collect();
        assert_eq!(from_records, self.expiries, "expiry index out of step with the records");
        for (id, t) in &self.tunnels {
            assert_eq!(t.connected == 0, t.offline_since.is_some(), "{id}: offline_since vs connected");
            assert!(t.connected > 0 || t.expires.is_some() || t.offline_since.is_some());
        }
        assert!(self.tunnels.len() <= self.max_tunnels);
    }
}

#[cfg(test)]
mod tests {
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

    proptest! {
        /// Ids are unique and valid; a requested name is granted iff it is free or the resume token is its own.
        #[test]
        fn names_are_granted_only_when_free_or_owned(ops in proptest::collection::vec(op(), 1..60)) {
            let mut reg = Registry::new(&limits(3));
            let mut now = Instant::now();
            // The model: which names are held, with their tokens.
            let mut held: HashMap<TunnelId, Token> = HashMap::new();
            for op in ops {
                match op {
                    Op::Advance { secs } => {
                        now += Duration::from_secs(secs);
                        while let Some((gone, t)) = reg.pop_expired(now) {
                            prop_assert_eq!(t.connected, 0);
                            prop_assert!(t.expires_at().unwrap() <= now);
                            prop_assert!(held.remove(&gone).is_some());
                        }
                    }
                    Op::Connect { name, n } => {
                        reg.set_connected(&id(NAMES[name]), n, now);
                    }
                    Op::Register { name, token, seed } => {
                        let name = name.map(|i| id(NAMES[i]));
                        let holder = name.as_ref().and_then(|n| held.get(n).copied());
                        let resume = match (token, holder) {
                            (1, Some(t)) => Some(t),
                            (2, _) => Some(Token::from_bytes([0xee; 16])),
                            _ => None,
                        };
                        let got = reg.register(now, name.clone(), resume.as_ref(), &entropy(seed));
                        match (&name, holder) {
                            (Some(_), Some(t)) => {
                                let owned = resume.is_some_and(|r| r.ct_eq(&t));
                                prop_assert_eq!(got.is_ok(), owned, "held name granted iff token matches");
                                if let Ok(r) = &got {
                                    prop_assert!(r.resumed && r.token.ct_eq(&t));
                                }
                            }
                            _ if held.len() >= 3 => prop_assert_eq!(got, Err(RegisterError::TooManyTunnels)),
                            _ => {
                                let r = got.unwrap();
                                prop_assert!(!r.resumed);
                                prop_assert!(TunnelId::parse(r.id.as_str()).is_ok());
                                if let Some(n) = &name { prop_assert_eq!(&r.id, n); }
                                prop_assert!(!held.contains_key(&r.id), "id handed out twice: {}", r.id);
                                held.insert(r.id, r.token);
                            }
                        }
                    }
                }
                prop_assert_eq!(reg.len(), held.len());
                reg.check_invariants();
            }
        }
    }
}
