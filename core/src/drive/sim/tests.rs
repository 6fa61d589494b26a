//! Properties of the whole driver, run on the simulation: bytes through, churn, timer rules.

use proptest::prelude::*;

use super::script::{At, End, Leave, Req, Visit};
use super::world::{Config, SETTLE, World};
use super::*;
use crate::limits::Limits;

fn config(seed: u64, shape: Shape, conns: usize) -> Config {
    Config { seed, shape, conns, limits: Limits::default() }
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop_oneof![Just(1usize), 2..64usize, Just(1 << 16)],
        prop_oneof![Just(1usize), 2..32usize, Just(1 << 16)],
    )
        .prop_map(|(max_cap, max_chunk)| Shape { max_cap, max_chunk })
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop_oneof![Just(None), (0..600usize).prop_map(Some)],
        0..900usize,
        prop_oneof![Just(None), (1..300usize).prop_map(Some)],
    )
        .prop_map(|(post, resp_len, chunk)| Req { post, resp_len, chunk, close: false })
}

/// A visitor whose last request asks to close, so the server ends the connection.
fn visit(leaves: bool) -> impl Strategy<Value = Visit> {
    let leave = (
        0..4usize,
        prop_oneof![(0..200usize).prop_map(At::Sending), Just(At::Sent), (0..400usize).prop_map(At::Reading)],
        any::<bool>(),
    )
        .prop_map(|(req, at, reset)| Leave { req, at, reset });
    (
        proptest::collection::vec(req(), 1..4),
        if leaves { proptest::option::weighted(0.6, leave).boxed() } else { Just(None).boxed() },
        any::<bool>(),
    )
        .prop_map(|(mut reqs, leave, half_close)| {
            if let Some(last) = reqs.last_mut() {
                last.close = true;
            }
            Visit { reqs, leave, half_close }
        })
}

/// Visitor `v` ended each request it reached once, in order, and stopped only where it had to.
fn check_ends(w: &World, v: usize, script: &Visit, chaos: bool) -> Result<(), TestCaseError> {
    let ends = w.ends_of(v);
    prop_assert!(!ends.is_empty() && ends.len() <= script.reqs.len(), "visitor {v}: {ends:?}");
    for (i, e) in ends.iter().enumerate() {
        let last = i + 1 == ends.len();
        match e {
            End::Answered => {}
            End::Refused(_) | End::Cut => prop_assert!(chaos, "visitor {v} request {i}: {e:?} without churn"),
            End::Left { .. } => {
                prop_assert!(last && script.leave.is_some_and(|l| l.req == i), "visitor {v}: left at {i}")
            }
            End::Wrong => prop_assert!(false, "visitor {v} request {i}: bytes not the origin's"),
        }
        if !last {
            prop_assert!(matches!(e, End::Answered | End::Refused(_)), "visitor {v} went on after {e:?}");
        }
    }
    if ends.len() < script.reqs.len() {
        prop_assert!(
            !matches!(ends.last(), Some(End::Answered | End::Refused(_))),
            "visitor {v} stopped early"
        );
    }
    Ok(())
}

/// Runs `visits` (and, with `gaps`, resets of tunnel connections), then checks every invariant.
fn run_script(w: &World, visits: &[Visit], gaps: Vec<Duration>) -> Result<(), TestCaseError> {
    let chaos = !gaps.is_empty();
    w.chaos(gaps);
    w.visit(0, visits);
    let finished = |w: &World| {
        (0..visits.len()).all(|v| {
            let ends = w.ends_of(v);
            ends.len() == visits[v].reqs.len()
                || matches!(ends.last(), Some(End::Left { .. } | End::Cut | End::Wrong))
        })
    };
    let until = w.rt.now() + SETTLE;
    prop_assert!(
        w.rt.run_until(until, world::MAX_POLLS, || finished(w)),
        "visitors hang: {:?}",
        w.ends.lock().unwrap()
    );
    for (v, script) in visits.iter().enumerate() {
        check_ends(w, v, script, chaos)?;
    }
    let until = w.rt.now() + SETTLE;
    prop_assert!(
        w.rt.run_until(until, world::MAX_POLLS, || w.open_visitors() == 0),
        "visitor connections left open"
    );
    // Once the churn is over the tunnel is back to its target and serves a fresh request.
    prop_assert!(w.settle(), "live {} of {}", w.live_tunnels(), w.conns);
    let fresh = Visit {
        reqs: vec![Req { post: Some(3), resp_len: 50, chunk: None, close: true }],
        ..Visit::default()
    };
    let n = w.ends.lock().unwrap().len();
    w.visit(visits.len(), &[fresh]);
    prop_assert!(w.run_ends(n + 1, SETTLE));
    prop_assert_eq!(w.ends_of(visits.len()), vec![End::Answered]);
    // Only a visitor that left before the server read its whole request may cost a connection.
    let mid_request =
        w.ends.lock().unwrap().iter().filter(|(.., e)| *e == End::Left { clean: false }).count();
    prop_assert!(
        w.healthy_closed_by_server() <= mid_request,
        "{} healthy tunnel connections closed",
        w.healthy_closed_by_server()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random request scripts through the tunnel: every visitor gets the origin's bytes, byte for byte.
    #[test]
    fn visitors_get_the_origins_bytes(
        seed in any::<u64>(), shape in shape(), conns in 1..4usize,
        visits in proptest::collection::vec(visit(false), 1..5),
    ) {
        let w = World::start(&config(seed, shape, conns)).expect("online");
        run_script(&w, &visits, Vec::new())?;
        prop_assert!((0..visits.len()).all(|v| w.ends_of(v).iter().all(|e| *e == End::Answered)));
    }

    /// Visitors leaving at random points and tunnel connections reset at random times: every request
    /// ends once, nothing hangs, and the pool comes back whole.
    #[test]
    fn churn_ends_each_request_once_and_keeps_the_pool(
        seed in any::<u64>(), shape in shape(), conns in 1..4usize,
        visits in proptest::collection::vec(visit(true), 1..6),
        gaps in proptest::collection::vec((0..300u64).prop_map(Duration::from_millis), 0..4),
    ) {
        let w = World::start(&config(seed, shape, conns)).expect("online");
        run_script(&w, &visits, gaps)?;
    }
}
