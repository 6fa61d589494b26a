//! Capped exponential backoff with full jitter.
//!
//! After `n` failures in a row the next wait is drawn uniformly from
//! `[0, min(cap, base × factorⁿ)]` ("full jitter"), so a fleet of clients that
//! lost the same server does not come back in lockstep. A success resets the
//! count. Randomness comes from the caller's seeded [`Rng`]; time is only a
//! [`Duration`] here: this module never schedules anything itself, the
//! [`supervisor`](crate::supervisor) turns delays into deadlines.
//!
//! It does not model an overall retry budget or give up: callers decide that.
//!
//! ```text
//!              fail(): draw in [0, ceiling], failures += 1
//!            ┌──────┐
//!            ▼      │
//!   failures = 0 ──fail()──▶ failures = n ──reset()──▶ failures = 0
//!   ceiling  = base           ceiling = min(cap, base·factorⁿ)  (saturates, never overflows)
//! ```

use std::time::Duration;

use crate::entropy::Rng;

/// The shape of a backoff: first ceiling, growth per failure, and the most it may grow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first wait (after one failure).
    pub base: Duration,
    /// Growth of the ceiling per failure; values below 1 count as 1 (a constant backoff).
    pub factor: u32,
    /// No wait is ever longer than this.
    pub cap: Duration,
}

impl Default for BackoffConfig {
    /// 250 ms, doubling, capped at 30 s.
    fn default() -> Self {
        Self { base: Duration::from_millis(250), factor: 2, cap: Duration::from_secs(30) }
    }
}

/// Failures counted so far, and the jittered wait they call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// A backoff with no failures counted.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, failures: 0 }
    }

    /// The shape this backoff follows.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Failures counted since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The longest wait the next [`fail`](Self::fail) can return: `min(cap, base × factor^failures)`.
    pub fn ceiling(&self) -> Duration {
        let factor = self.config.factor.max(1);
        // Any overflow (of the power or the product) means "beyond the cap".
        factor
            .checked_pow(self.failures)
            .and_then(|m| self.config.base.checked_mul(m))
            .map_or(self.config.cap, |d| d.min(self.config.cap))
    }

    /// Counts a failure and returns how long to wait before the next try, uniform in `[0, ceiling]`.
    pub fn fail(&mut self, rng: &mut Rng) -> Duration {
        let delay = jitter(self.ceiling(), rng);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Forgets the failures: the next wait is drawn from `[0, base]` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A duration uniform in `[0, max]`, at nanosecond resolution (longer spans are cut to u64 nanoseconds, 584 years).
fn jitter(max: Duration, rng: &mut Rng) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    let drawn = match nanos.checked_add(1) {
        Some(n) => rng.below(n),
        None => rng.next_u64(),
    };
    Duration::from_nanos(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::Rng;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    #[test]
    fn default_ceilings_double_then_cap() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut rng = Rng::new(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            ceilings.push(ceiling.as_millis());
            assert!(b.fail(&mut rng) <= ceiling);
        }
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(b.failures(), 10);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut rng = Rng::new(9);
        let cfg = BackoffConfig { base: Duration::from_secs(1), factor: 2, cap: Duration::from_secs(1) };
        let draws: Vec<Duration> = (0..400).map(|_| Backoff::new(cfg).fail(&mut rng)).collect();
        let low = draws.iter().filter(|d| d.as_millis() < 250).count();
        let high = draws.iter().filter(|d| d.as_millis() >= 750).count();
        // Full jitter: each quarter of [0, 1 s] gets about 100 of 400 draws.
        assert!(low > 60 && high > 60, "low {low}, high {high}");
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(1)));
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut b = Backoff::new(BackoffConfig::default());
            (0..6).map(|_| b.fail(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn extreme_configs_do_not_panic() {
        let mut rng = Rng::new(3);
        let huge = BackoffConfig { base: Duration::MAX, factor: u32::MAX, cap: Duration::MAX };
        let mut b = Backoff::new(huge);
        for _ in 0..100 {
            let ceiling = b.ceiling();
            assert!(b.fail(&mut rng) <= ceiling);
        }
        assert_eq!(b.ceiling(), Duration::MAX);
        let zero = BackoffConfig { base: Duration::ZERO, factor: 0, cap: Duration::ZERO };
        assert_eq!(Backoff::new(zero).fail(&mut rng), Duration::ZERO);
        // factor 0 counts as 1: a constant backoff, not one that collapses to zero.
        let flat = BackoffConfig { base: Duration::from_secs(2), factor: 0, cap: Duration::from_secs(9) };
        let mut b = Backoff::new(flat);
        assert!(b.fail(&mut rng) <= Duration::from_secs(2));
        assert_eq!(b.ceiling(), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn delays_lie_in_zero_to_cap_and_under_the_ceiling(
            base_ms in 0u64..10_000,
            factor in 0u32..10,
            cap_ms in 0u64..100_000,
            failures in 0u32..200,
            seed in any::<u64>(),
        ) {
            let cfg = BackoffConfig {
                base: Duration::from_millis(base_ms),
                factor,
                cap: Duration::from_millis(cap_ms),
            };
            let mut b = Backoff::new(cfg);
            let mut rng = Rng::new(seed);
            let mut last_ceiling = Duration::ZERO;
            for _ in 0..failures {
                let ceiling = b.ceiling();
                prop_assert!(ceiling <= cfg.cap);
                prop_assert!(ceiling >= last_ceiling, "ceiling shrank: {:?} < {:?}", ceiling, last_ceiling);
                last_ceiling = ceiling;
                let d = b.fail(&mut rng);
                prop_assert!(d <= ceiling && d <= cfg.cap);
            }
            prop_assert_eq!(b.failures(), failures);
        }

        #[test]
        fn cap_is_reached_and_held_after_many_failures(seed in any::<u64>(), extra in 0u32..10_000) {
            let cfg = BackoffConfig::default();
            let mut b = Backoff::new(cfg);
            let mut rng = Rng::new(seed);
            for _ in 0..(8 + extra) {
                let ceiling = b.ceiling();
                prop_assert!(b.fail(&mut rng) <= ceiling);
            }
            prop_assert_eq!(b.ceiling(), cfg.cap);
            prop_assert!(b.fail(&mut rng) <= cfg.cap);
        }
    }
}
