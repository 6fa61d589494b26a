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
            // The grace is finite in every configuration (60 s by default): offline means a deadline is set.
            assert_eq!(t.connected == 0, t.expires.is_some(), "{id}: connected vs expires");
        }
        assert!(self.tunnels.len() <= self.max_tunnels);
    }
}

#[cfg(test)]
mod tests;
