//! Reading past a response whose visitor left, so its tunnel connection can go back to the pool.
//!
//! Once a write to the visitor fails, the response pump stops writing and keeps reading the
//! response to its end: a connection left mid-message is out of step and must be closed (the
//! client then dials a replacement). A [`Drain`] says how long that is worth it. It does not
//! read, time or close anything itself.

use std::time::{Duration, Instant};

/// Most response bytes read past for a visitor that left, before its tunnel connection is closed.
///
/// Draining a small remainder is cheaper than a redial. A large one wastes the client's uplink and
/// keeps the connection busy for longer than a replacement takes; beyond this the connection is
/// closed, and the client, seeing it close, closes the origin connection, which stops the transfer.
pub const DRAIN_BUDGET: usize = 1 << 20;

/// Longest a response is read past for a visitor that left, before its tunnel connection is closed.
///
/// The byte budget alone would let a slow or endless response (an event stream's heartbeats) hold
/// the connection for hours for nobody; a redial takes a few round trips.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// What is left of a drain's budget.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    left: usize,
    until: Instant,
}

impl Drain {
    /// A drain that started `now` (the failed write) and may read `budget` bytes within [`DRAIN_TIME`].
    pub fn new(budget: usize, now: Instant) -> Self {
        Self { left: budget, until: now + DRAIN_TIME }
    }

    /// Counts `n` bytes read at `now`; false once more than the budget was read or its time is up.
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        match self.left.checked_sub(n) {
            Some(left) if now <= self.until => {
                self.left = left;
                true
            }
            _ => false,
        }
    }

    /// When the drain's time is up: a read still waiting then ends it.
    pub fn deadline(&self) -> Instant {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_takes_its_budget_and_not_one_byte_more() {
        let now = Instant::now();
        let mut exact = Drain::new(100, now);
        assert!(exact.take(60, now) && exact.take(40, now), "budget bytes are within it");
        assert!(!exact.take(1, now), "budget + 1 is not");
        let mut over = Drain::new(100, now);
        assert!(!over.take(101, now), "one read of budget + 1 is not");
        assert!(Drain::new(100, now).take(0, now), "an end of stream costs nothing");
        assert!(Drain::new(DRAIN_BUDGET, now).take(DRAIN_BUDGET, now));
        assert!(!Drain::new(DRAIN_BUDGET, now).take(DRAIN_BUDGET + 1, now));
    }

    #[test]
    fn a_drain_ends_when_its_time_is_up() {
        let start = Instant::now();
        let mut d = Drain::new(DRAIN_BUDGET, start);
        assert_eq!(d.deadline(), start + DRAIN_TIME);
        assert!(d.take(1, start + DRAIN_TIME), "a read at the deadline still counts");
        assert!(!d.take(1, start + DRAIN_TIME + Duration::from_nanos(1)), "one after it does not");
    }
}
