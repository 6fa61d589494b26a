//! Time as deadlines, never as sleeps: one lazily moved timer per connection.
//!
//! A connection's [`Deadline`] is set from what core computes (head idle and first-byte
//! deadlines, a hello's deadline, the origin connect timeout, a drain's end); it arms one
//! [`Timer`] at the earliest deadline set and moves it only when it would otherwise fire late.
//! A deadline moved later lets the timer fire early, and it then moves on to the deadline that
//! holds by then. (A fresh timer per keep-alive read woke tokio's driver once more per request:
//! tokio commit 33035e1.) The clock is read before the timer is polled, as quinn does: a timer
//! may stay pending for a deadline that has passed. No deadline, no timer.

use std::future::{Future, poll_fn};
use std::task::{Context, Poll};
use std::time::Instant;

use super::sync::{Either, select_biased};
use super::{Rt, Timer};

/// A connection's deadline, kept lazily: moving it later costs nothing.
#[derive(Debug)]
pub struct Deadline<T> {
    /// Created at the first deadline.
    timer: Option<T>,
    /// What the timer is armed for.
    armed: Option<Instant>,
    /// The deadline that holds now.
    at: Option<Instant>,
}

impl<T> Default for Deadline<T> {
    fn default() -> Self {
        Self { timer: None, armed: None, at: None }
    }
}

impl<T: Timer> Deadline<T> {
    /// Sets the deadline (`None`: none); the timer moves only if it would otherwise fire late.
    pub fn set<R: Rt<Timer = T>>(&mut self, rt: &R, at: Option<Instant>) {
        self.at = at;
        let Some(at) = at else { return };
        match &mut self.timer {
            Some(timer) if self.armed.is_none_or(|armed| armed > at) => {
                timer.reset(at);
                self.armed = Some(at);
            }
            Some(_) => {}
            None => {
                self.timer = Some(rt.timer(at));
                self.armed = Some(at);
            }
        }
    }

    /// The deadline that holds now.
    pub fn at(&self) -> Option<Instant> {
        self.at
    }

    /// Ready once the deadline set last has passed by `now` (or its timer fired for it).
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        loop {
            let (Some(at), Some(timer)) = (self.at, &mut self.timer) else { return Poll::Pending };
            if now >= at {
                return Poll::Ready(());
            }
            if timer.poll_fired(cx).is_pending() {
                return Poll::Pending;
            }
            if self.armed.is_some_and(|armed| armed >= at) {
                return Poll::Ready(());
            }
            // It fired early, for a deadline since moved later: on to the one that holds.
            timer.reset(at);
            self.armed = Some(at);
        }
    }

    /// Completes once the deadline set last has passed; never without one.
    pub async fn passed<R: Rt<Timer = T>>(&mut self, rt: &R) {
        poll_fn(|cx| self.poll_passed(cx, rt.now())).await
    }
}

/// Runs `fut` until `at` on the connection's `clock`; `None` if the deadline came first.
pub async fn timeout_at<R: Rt, F: Future>(
    rt: &R,
    clock: &mut Deadline<R::Timer>,
    at: Instant,
    fut: F,
) -> Option<F::Output> {
    clock.set(rt, Some(at));
    match select_biased(fut, clock.passed(rt)).await {
        Either::First(v) => Some(v),
        Either::Second(()) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::drive::testrt::{TestRt, block_on};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_deadline_moved_later_does_not_fire_at_the_earlier_one() {
        let rt = TestRt::new();
        let start = rt.now();
        let mut clock = Deadline::default();
        clock.set(&rt, Some(start + 30 * MS));
        clock.set(&rt, Some(start + 150 * MS));
        block_on(&rt, clock.passed(&rt));
        assert!(rt.now() >= start + 150 * MS, "fired after {:?}", rt.now() - start);
    }

    #[test]
    fn a_deadline_moved_earlier_fires_at_the_earlier_one() {
        let rt = TestRt::new();
        let start = rt.now();
        let mut clock = Deadline::default();
        clock.set(&rt, Some(start + 60_000 * MS));
        clock.set(&rt, Some(start + 20 * MS));
        block_on(&rt, clock.passed(&rt));
        assert_eq!(rt.now() - start, 20 * MS, "the timer moved to the earlier deadline");
    }

    #[test]
    fn a_deadline_set_again_after_firing_waits_anew() {
        let rt = TestRt::new();
        let mut clock = Deadline::default();
        clock.set(&rt, Some(rt.now() + 10 * MS));
        block_on(&rt, clock.passed(&rt));
        let again = rt.now() + 80 * MS;
        clock.set(&rt, Some(again));
        block_on(&rt, clock.passed(&rt));
        assert!(rt.now() >= again);
    }

    #[test]
    fn a_passed_deadline_is_seen_by_the_clock_before_the_timer() {
        let rt = TestRt::new();
        let mut clock = Deadline::default();
        clock.set(&rt, Some(rt.now() + 10 * MS));
        rt.advance(10 * MS);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(clock.poll_passed(&mut cx, rt.now()).is_ready());
        clock.set(&rt, None);
        assert!(clock.poll_passed(&mut cx, rt.now() + 60_000 * MS).is_pending(), "no deadline, never");
    }

    #[test]
    fn timeout_at_gives_the_future_its_time_and_no_more() {
        let rt = TestRt::new();
        let mut clock = Deadline::default();
        let at = rt.now() + 50 * MS;
        assert_eq!(block_on(&rt, timeout_at(&rt, &mut clock, at, std::future::ready(3))), Some(3));
        assert_eq!(block_on(&rt, timeout_at(&rt, &mut clock, at, std::future::pending::<u8>())), None);
        assert_eq!(rt.now(), at);
    }
}
