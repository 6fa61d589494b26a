//! Liveness of the supervisor against a cooperative world, in virtual time.
//!
//! The world answers every output after a bounded latency: registrations succeed (after a few
//! transient failures, or a 409 while the server still holds our old lease), dials connect and the
//! server accepts them. The properties say the client gets somewhere: it reaches its target of live
//! connections (the smaller of its cap and the server's `max_conn_count`, SPEC §6) within a time
//! bounded by the documented backoff (250 ms doubling), and it registers again after exactly the
//! documented number of dead dials (6, `ClientConfig::reregister_after`). Safety is `sim.rs`'s job.

use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

/// The world's answers still to come, each at its time.
struct World {
    t0: Instant,
    now: Instant,
    pending: Vec<(Instant, Input)>,
}

impl World {
    fn later(&mut self, after: Duration, input: Input) {
        self.pending.push((self.now + after, input));
    }

    /// Advances to the next answer or deadline and feeds it; `None` when nothing is left to happen,
    /// else the input fed (`Some(None)`: a deadline).
    fn step(&mut self, s: &mut Supervisor) -> Option<Option<Input>> {
        let next_input = self.pending.iter().map(|p| p.0).min();
        let next = match (next_input, s.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.now = self.now.max(next);
        if let Some(i) = self.pending.iter().position(|p| p.0 <= self.now) {
            let (_, input) = self.pending.swap_remove(i);
            s.handle(self.now, input.clone());
            Some(Some(input))
        } else {
            s.handle_timeout(self.now);
            Some(None)
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

fn tid(s: &str) -> TunnelId {
    TunnelId::parse(s).expect("valid")
}

proptest! {
    /// With a cooperative server and origin the client reaches its target of live connections within
    /// bounded virtual time; after a server restart (unknown-tunnel, then 409s while the old lease is
    /// held) it is never fatal and reaches its target again.
    #[test]
    fn reaches_target_connections_in_bounded_time(
        cap in proptest::option::of(1..6usize),
        offered in 1..8usize,
        legacy in any::<bool>(),
        with_token in any::<bool>(),
        failures in 0..4u32,
        latency_ms in 1..500u32,
        restart_409s in proptest::option::of(1..3u32),
        seed in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let cfg = ClientConfig {
            max_conns: cap,
            handshake: if legacy { HandshakeMode::Legacy } else { HandshakeMode::Auto },
            seed,
            ..ClientConfig::default()
        };
        let verdicts = !legacy && with_token;
        let mut s = Supervisor::new(t0, cfg);
        let mut w = World { t0, now: t0, pending: Vec::new() };
        let lat = MS * latency_ms;
        let want = cap.map_or(offered, |c| c.min(offered));
        let token = with_token.then(|| Token::from_bytes([3; 16]));
        let reply = Registration { id: tid("myapp"), url: "http://h/myapp".into(), port: 1, max_conn_count: offered, token };
        // Failed registrations wait at most 250 ms, 500 ms, ... (BackoffConfig::default), each answer `lat`.
        let backoff = |n: u32| (0..n).map(|i| 250 * MS * 2u32.pow(i)).sum::<Duration>();
        let mut bound = backoff(failures) + lat * (failures + 3) + 10 * MS;
        let (mut refuse, mut restarted, mut unknown_next, mut fatal) = (failures, false, false, false);
        let mut reached_at = None;
        for _ in 0..10_000 {
            for out in std::iter::from_fn(|| s.poll()).collect::<Vec<_>>() {
                match out {
                    Output::Register { attempt, .. } if refuse > 0 => {
                        refuse -= 1;
                        let why = if restarted {
                            RegisterFailure::Rejected { status: 409, message: "held".into(), retry_after: None }
                        } else {
                            RegisterFailure::Unreachable
                        };
                        w.later(lat, Input::RegisterFailed { attempt, why });
                    }
                    Output::Register { attempt, .. } => w.later(lat, Input::Registered { attempt, reply: reply.clone() }),
                    Output::Connect { slot, expect_verdict, .. } => {
                        prop_assert_eq!(expect_verdict, verdicts);
                        w.later(lat, Input::Connected { slot });
                        if expect_verdict {
                            // The first dial after the restart hears that the server no longer knows the tunnel.
                            let verdict = if std::mem::take(&mut unknown_next) {
                                refuse = restart_409s.unwrap_or(0);
                                Verdict::UnknownTunnel
                            } else {
                                Verdict::Accepted
                            };
                            w.later(lat * 2, Input::Verdict { slot, verdict });
                        }
                    }
                    Output::Event(ClientEvent::Fatal { .. }) => fatal = true,
                    Output::Close { slot } => prop_assert!(restarted, "a cooperative world saw {:?} closed", slot),
                    _ => {}
                }
            }
            prop_assert!(!fatal, "fatal in a cooperative world");
            let st = s.stats();
            if reached_at.is_none() && st.live == want {
                prop_assert_eq!(st.target, want);
                prop_assert!(w.elapsed() <= bound, "{} live after {:?}, bound {:?}", want, w.elapsed(), bound);
                reached_at = Some(w.now);
                if let (Some(n), true, false) = (restart_409s, verdicts, restarted) {
                    // The server restarts: a connection ends, its redial hears unknown-tunnel, and the
                    // registration meets n 409s (the old lease still held) before it succeeds.
                    restarted = true;
                    unknown_next = true;
                    reached_at = None;
                    let SlotState::Live { id: slot, .. } = s.slots[0].state else { unreachable!() };
                    w.later(lat, Input::Closed { slot, served: true });
                    bound = w.elapsed() + backoff(n) + lat * (n + 6) + 10 * MS;
                    prop_assert!(w.step(&mut s).is_some());
                    continue;
                }
                break;
            }
            prop_assert!(w.step(&mut s).is_some(), "the supervisor stopped before reaching its target");
        }
        prop_assert!(reached_at.is_some(), "target {} never reached", want);
    }

    /// With nothing live and every dial failing, the client registers again on exactly the 6th failed
    /// dial in a row (the documented default), counted across its slots.
    #[test]
    fn reregisters_after_exactly_six_dead_dials(offered in 1..4usize, seed in any::<u64>(), latency_ms in 1..300u32) {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, ClientConfig { seed, ..ClientConfig::default() });
        let mut w = World { t0, now: t0, pending: Vec::new() };
        let reply = Registration { id: tid("myapp"), url: "http://h/myapp".into(), port: 1, max_conn_count: offered, token: None };
        let mut failed = 0u32;
        for _ in 0..1_000 {
            for out in std::iter::from_fn(|| s.poll()).collect::<Vec<_>>() {
                match out {
                    Output::Register { attempt, .. } => {
                        prop_assert_eq!(failed, if s.stats().registrations == 1 { 0 } else { 6 });
                        if s.stats().registrations > 1 {
                            return Ok(());
                        }
                        w.later(MS * latency_ms, Input::Registered { attempt, reply: reply.clone() });
                    }
                    Output::Connect { slot, .. } => w.later(MS * latency_ms, Input::ConnectFailed { slot }),
                    Output::Event(ClientEvent::Reregistering { why }) => {
                        prop_assert_eq!((why, failed), (ReregisterReason::DialsFailing, 6));
                    }
                    _ => {}
                }
            }
            let fed = w.step(&mut s);
            prop_assert!(fed.is_some());
            failed += u32::from(matches!(fed, Some(Some(Input::ConnectFailed { .. }))));
        }
        prop_assert!(false, "no re-registration");
    }
}
