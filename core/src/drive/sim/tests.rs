//! Properties of the whole driver, run on the simulation: bytes through, churn, timer rules.

use proptest::prelude::*;

use super::ops;
use super::script::{At, End, Leave, Req, Visit};
use super::world::{Config, World};
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
        prop_oneof![
            (0..200usize).prop_map(At::Sending),
            (0..300usize).prop_map(At::Sent),
            (0..400usize).prop_map(At::Reading)
        ],
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

fn run_script(w: &World, visits: &[Visit], gaps: Vec<usize>) -> Result<(), TestCaseError> {
    ops::run_script(w, visits, gaps).map(|_| ()).map_err(TestCaseError::fail)
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
        gaps in proptest::collection::vec(0..400usize, 0..4),
    ) {
        let w = World::start(&config(seed, shape, conns)).expect("online");
        run_script(&w, &visits, gaps)?;
    }
}

/// The committed `drive_ops` seeds (see [`ops::decode`] for the byte layout).
fn fixed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // Two connections of 64-byte pipes; two visitors, three keep-alive requests each (POST,
        // chunked, GET), nobody leaves.
        (
            "keepalive-scripts",
            vec![41, 7, 0, 14, 0, 1, 50, 100, 26, 0, 40, 0, 0, 10, 14, 0, 3, 20, 9, 0, 0, 0, 1, 9, 9],
        ),
        // One connection; a long request holds it while four visitors queue behind and leave just
        // after sending (reset, close, half-close), so cancels cross grants.
        (
            "leave-while-queued",
            vec![57, 3, 0, 12, 0, 0, 0, 250, 36, 0, 0, 0, 5, 36, 0, 0, 0, 5, 4, 0, 0, 0, 5, 36, 0, 1, 9, 5],
        ),
        // Three connections of 1-byte pipes, three resets 20-60 ms apart while visitors leave
        // mid-request and mid-response.
        (
            "resets-and-leaves",
            vec![2, 9, 3, 10, 20, 30, 32, 40, 1, 80, 60, 8, 30, 3, 9, 90, 0, 0, 40, 14, 0, 2, 0, 99],
        ),
        ("every-byte", (0..=255u8).collect()),
        ("long-hash", (0..400u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
    ]
}

fn expected_counts(name: &str) -> ops::Counts {
    let c = ops::Counts::default();
    match name {
        "keepalive-scripts" => ops::Counts { answered: 7, ..c },
        "leave-while-queued" => ops::Counts { answered: 2, left: 4, ..c },
        "resets-and-leaves" => ops::Counts { answered: 1, cut: 1, left: 2, resets: 3, ..c },
        // The long runs reach server refusals and cut responses too.
        "every-byte" => ops::Counts { answered: 1, refused: 4, cut: 4, resets: 1, ..c },
        "long-hash" => ops::Counts { answered: 1, refused: 2, cut: 4, left: 2, resets: 1 },
        _ => panic!("{name}: no expected counts"),
    }
}

#[test]
fn drive_ops_fixed_inputs_reach_their_outcomes() {
    for (name, data) in fixed_inputs() {
        let got = ops::drive_ops(&data);
        assert_eq!(got, expected_counts(name), "{name}");
        assert_eq!(ops::drive_ops(&data), got, "{name}: the same bytes, the same run");
    }
}

#[test]
fn committed_seeds_are_the_fixed_inputs() {
    crate::fuzzing::seeds_are_the_fixed_inputs("drive_ops", &fixed_inputs(), |name, data| {
        assert_eq!(ops::drive_ops(data), expected_counts(name), "seed {name}")
    });
}

/// Found by the fuzzer: a visitor waiting for the server to read its request spun without letting
/// virtual time pass, while the request it waited on was queued until time passed.
#[test]
fn a_visitor_waiting_for_its_request_to_be_read_lets_time_pass() {
    let data = [
        57, 105, 109, 13, 10, 0, 0, 132, 0, 0, 0, 36, 0, 36, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 5, 36, 0, 0, 0, 5,
        4, 0, 0, 139, 0, 0, 0, 0, 0, 0, 0, 0, 5, 36, 0, 1, 9, 5,
    ];
    ops::drive_ops(&data);
}
