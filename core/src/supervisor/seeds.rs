//! The fuzz target's fixed inputs (committed as `fuzz/seeds/supervisor_ops/`) and what each must reach.
//! `AETHER_WRITE_SEEDS=1 cargo test -p aether-core committed_seeds` rewrites the seed files.

use super::*;

/// The fixed inputs, also committed as `fuzz/seeds/supervisor_ops/<name>` (the fuzz target's starting corpus).
fn fixed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut long = vec![0x20];
    for i in 0..600u32 {
        long.extend_from_slice(&[(i * 7 % 251) as u8, (i * 13 % 253) as u8, (i * 31 % 255) as u8]);
    }
    vec![
        // Register OK with 3 conns, connect all, accept one and close it; the other two time out.
        (
            "online-accept-close",
            vec![0, 3, 0, 3, 4, 0, 1, 4, 1, 1, 4, 2, 1, 5, 0, 0, 6, 0, 0, 0, 255, 255, 7, 0, 0],
        ),
        // Legacy, capped to 1, named, re-register after 3 dead dials: a 502, online, an early close and two
        // failed dials, re-registration, a 409 (not fatal after being online), time reversal, online again.
        (
            "legacy-409-after-online",
            vec![
                0x1b, 3, 9, 1, 0, 100, 0, 3, 1, 2, 4, 0, 1, 6, 0, 1, 0, 100, 0, 4, 0, 0, 0, 100, 0, 4, 0, 0,
                3, 10, 0, 2, 200, 0, 0, 100, 0, 0, 100, 0, 3, 0, 1,
            ],
        ),
        ("long-mixed", long),
    ]
}

/// What each fixed input (and committed seed) must reach, as its comment says.
fn expected_outcome(name: &str) -> sim::Outcomes {
    let o = sim::Outcomes::default();
    match name {
        "online-accept-close" => sim::Outcomes { online: 1, live: 1, reconnects: 3, ..o },
        "legacy-409-after-online" => {
            sim::Outcomes { online: 2, live: 1, reregistered: 1, register_retries: 2, reconnects: 3, ..o }
        }
        "long-mixed" => {
            sim::Outcomes { online: 8, live: 4, reregistered: 7, register_retries: 11, reconnects: 52, ..o }
        }
        other => panic!("no expected outcome for seed {other}"),
    }
}

#[test]
fn committed_seeds_are_the_fixed_inputs() {
    crate::fuzzing::seeds_are_the_fixed_inputs("supervisor_ops", &fixed_inputs(), |name, data| {
        assert_eq!(run_ops(data), expected_outcome(name), "seed {name}")
    });
}

#[test]
fn fuzz_ops_fixed_inputs_reach_their_states() {
    assert_eq!(run_ops(&[]), sim::Outcomes::default());
    assert_eq!(run_ops(&[0]), sim::Outcomes::default());
    for (name, data) in fixed_inputs() {
        assert_eq!(run_ops(&data), expected_outcome(name), "{name}");
    }
}
