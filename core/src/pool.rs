//! One tunnel's pool of connections and the visitor requests waiting for one.
//!
//! ```text
//!            add ──▶ ┌──────┐ ──checkout──▶ ┌──────┐ ──remove (closed)──▶ gone
//!   (or straight to  │ idle │               │ busy │
//!    oldest waiter)  └──────┘ ◀──checkin─── └──────┘ ──checkin, waiter queued──▶ busy (new lease)
//! ```
//!
//! Every connection is in exactly one of `idle` or `busy`; a busy one is leased
//! to exactly one request. Checkout takes the front of `idle` and check-in
//! pushes to the back, so idle connections are used round-robin. When all are
//! busy a request waits in a bounded FIFO queue; a check-in or a new connection
//! goes to the oldest waiter first, so waiters are only ever queued while
//! `idle` is empty.
//!
//! The pool stores each waiter's deadline but keeps no clock: the
//! [`hub`](crate::hub) keeps a deadline index over all pools and calls
//! [`Pool::cancel`] when one is due ([`Pool::pop_expired`] serves a pool used
//! alone). Ids are opaque numbers the adapter allocates; the pool never sees a
//! socket.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use crate::idmap::IdSet;

/// A tunnel connection, named by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A visitor request waiting for (or granted) a tunnel connection, named by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// What a checkout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Checkout {
    /// This idle connection is now leased to the waiter.
    Granted(ConnId),
    /// The waiter joined the back of the queue.
    Queued,
    /// The queue is full; the waiter was not queued.
    QueueFull,
}

/// Caller misuse of a [`Pool`] (the pool is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// The pool already holds its maximum of connections.
    Full,
    /// This connection is already in the pool.
    Duplicate,
    /// Check-in of a connection that is not leased.
    NotBusy,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolError::Full => "the tunnel already holds its maximum of connections",
            PoolError::Duplicate => "this connection is already in the pool",
            PoolError::NotBusy => "check-in of a connection that is not leased",
        })
    }
}

impl std::error::Error for PoolError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    id: WaiterId,
    deadline: Option<Instant>,
}

/// One tunnel's connections (idle and busy) and its queue of waiting requests.
#[derive(Debug, Clone)]
pub struct Pool {
    max_conn: usize,
    max_waiters: usize,
    idle: VecDeque<ConnId>,
    busy: IdSet<ConnId>,
    waiters: VecDeque<Waiter>,
}

impl Pool {
    /// An empty pool of at most `max_conn` connections and `max_waiters` queued requests.
    pub fn new(max_conn: usize, max_waiters: usize) -> Self {
        Self {
            max_conn,
            max_waiters,
            idle: VecDeque::new(),
            busy: IdSet::default(),
            waiters: VecDeque::new(),
        }
    }

    /// Connections held, idle or busy.
    pub fn len(&self) -> usize {
        self.idle.len() + self.busy.len()
    }

    /// True when the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when no further connection may join.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_conn
    }

    /// Idle connections.
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// Leased connections.
    pub fn busy_count(&self) -> usize {
        self.busy.len()
    }

    /// Queued waiters.
    pub fn waiting_count(&self) -> usize {
        self.waiters.len()
    }

    /// The most connections this pool holds.
    pub fn max_conn(&self) -> usize {
        self.max_conn
    }

    /// True if `conn` is in the pool, idle or busy.
    pub fn contains(&self, conn: ConnId) -> bool {
        self.busy.contains(&conn) || self.idle.contains(&conn)
    }

    /// Adds a new connection: leased at once to the oldest waiter (returned), else idle at the back.
    pub fn add(&mut self, conn: ConnId) -> Result<Option<WaiterId>, PoolError> {
        if self.contains(conn) {
            return Err(PoolError::Duplicate);
        }
        if self.is_full() {
            return Err(PoolError::Full);
        }
        Ok(self.place(conn))
    }

    /// Leases an idle connection to `waiter`, or queues it with its `deadline`.
    pub fn checkout(&mut self, waiter: WaiterId, deadline: Option<Instant>) -> Checkout {
        debug_assert!(!self.waiters.iter().any(|w| w.id == waiter), "{waiter:?} checked out twice");
        if let Some(conn) = self.idle.pop_front() {
            self.busy.insert(conn);
            return Checkout::Granted(conn);
        }
        if self.waiters.len() >= self.max_waiters {
            return Checkout::QueueFull;
        }
        self.waiters.push_back(Waiter { id: waiter, deadline });
        Checkout::Queued
    }

    /// Returns a leased connection: to the oldest waiter (returned; the conn stays busy), else idle.
    pub fn checkin(&mut self, conn: ConnId) -> Result<Option<WaiterId>, PoolError> {
        if !self.busy.remove(&conn) {
            return Err(PoolError::NotBusy);
        }
        Ok(self.place(conn))
    }

    fn place(&mut self, conn: ConnId) -> Option<WaiterId> {
        match self.waiters.pop_front() {
            Some(w) => {
                self.busy.insert(conn);
                Some(w.id)
            }
            None => {
                self.idle.push_back(conn);
                None
            }
        }
    }

    /// Drops a closed connection, idle or busy; false if it was not here.
    pub fn remove(&mut self, conn: ConnId) -> bool {
        if self.busy.remove(&conn) {
            return true;
        }
        // Linear, but bounded by max_conn (tens).
        match self.idle.iter().position(|&c| c == conn) {
            Some(i) => self.idle.remove(i).is_some(),
            None => false,
        }
    }

    /// Takes `waiter` out of the queue; false if it was not queued.
    pub fn cancel(&mut self, waiter: WaiterId) -> bool {
        // Linear, but bounded by max_waiters; due waiters are usually at the front.
        match self.waiters.iter().position(|w| w.id == waiter) {
            Some(i) => self.waiters.remove(i).is_some(),
            None => false,
        }
    }

    /// Removes and returns the oldest waiter if its deadline has passed by `now`.
    ///
    /// Only the front is looked at: with one wait timeout and a clamped clock, deadlines queue in order.
    pub fn pop_expired(&mut self, now: Instant) -> Option<WaiterId> {
        match self.waiters.front() {
            Some(Waiter { deadline: Some(d), .. }) if *d <= now => self.waiters.pop_front().map(|w| w.id),
            _ => None,
        }
    }

    /// Empties the queue, oldest first (the tunnel lost its last connection).
    pub fn drain_waiters(&mut self) -> impl Iterator<Item = WaiterId> + '_ {
        self.waiters.drain(..).map(|w| w.id)
    }

    /// Queued waiters, oldest first.
    pub fn waiters(&self) -> impl Iterator<Item = WaiterId> + '_ {
        self.waiters.iter().map(|w| w.id)
    }

    /// Checks the pool's structural invariants (tests and fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self) {
        assert!(self.len() <= self.max_conn, "{} connections, max {}", self.len(), self.max_conn);
        assert!(self.waiters.len() <= self.max_waiters, "queue over its bound");
        let idle: IdSet<_> = self.idle.iter().collect();
        assert_eq!(idle.len(), self.idle.len(), "a connection is idle twice");
        assert!(idle.iter().all(|c| !self.busy.contains(c)), "a connection is both idle and busy");
        assert!(self.waiters.is_empty() || self.idle.is_empty(), "waiters queued beside an idle connection");
        let ids: IdSet<_> = self.waiters.iter().map(|w| w.id).collect();
        assert_eq!(ids.len(), self.waiters.len(), "a waiter is queued twice");
    }
}

#[cfg(test)]
mod tests;
