//! The invariants every simulated run must keep, shared by the properties and the `drive_ops` fuzz
//! target, and the decoding of fuzz bytes into a run: visitors' scripts, connection shapes and
//! tunnel resets. A broken invariant is an `Err` naming it (the fuzz target panics with it).

use std::sync::atomic::Ordering;

use super::Shape;
use super::script::{At, End, Leave, Req, Visit};
use super::world::{Config, MAX_POLLS, SETTLE, World};
use crate::drive::Rt;
use crate::drive::sync::lock;
use crate::limits::Limits;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// How a run's requests ended, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Answered with the origin's bytes (the final fresh request included).
    pub answered: usize,
    /// Answered by the server itself (502, 503, 504).
    pub refused: usize,
    /// Cut short by a closed connection.
    pub cut: usize,
    /// Left by their visitor.
    pub left: usize,
    /// Tunnel connections reset.
    pub resets: usize,
}

/// Visitor `v` ended each request it reached once, in order, and stopped only where it had to.
fn check_ends(w: &World, v: usize, script: &Visit, chaos: bool) -> Result<(), String> {
    let ends = w.ends_of(v);
    ensure!(!ends.is_empty() && ends.len() <= script.reqs.len(), "visitor {v}: {ends:?}");
    for (i, e) in ends.iter().enumerate() {
        let last = i + 1 == ends.len();
        match e {
            End::Answered => {}
            End::Refused(_) | End::Cut => ensure!(chaos, "visitor {v} request {i}: {e:?} without churn"),
            End::Left { .. } => {
                ensure!(last && script.leave.is_some_and(|l| l.req == i), "visitor {v}: left at {i}")
            }
            End::Wrong => ensure!(false, "visitor {v} request {i}: bytes not the origin's"),
        }
        if !last {
            ensure!(matches!(e, End::Answered | End::Refused(_)), "visitor {v} went on after {e:?}");
        }
    }
    if ends.len() < script.reqs.len() {
        ensure!(!matches!(ends.last(), Some(End::Answered | End::Refused(_))), "visitor {v} stopped early");
    }
    Ok(())
}

/// Runs `visits` (and, with `gaps`, resets of tunnel connections), then checks every invariant.
pub fn run_script(w: &World, visits: &[Visit], gaps: Vec<usize>) -> Result<Counts, String> {
    let chaos = !gaps.is_empty();
    w.chaos(gaps);
    w.visit(0, visits);
    let finished = |w: &World| {
        w.chaos_done.load(Ordering::SeqCst)
            && (0..visits.len()).all(|v| {
                let ends = w.ends_of(v);
                ends.len() == visits[v].reqs.len()
                    || matches!(ends.last(), Some(End::Left { .. } | End::Cut | End::Wrong))
            })
    };
    let until = w.rt.now() + SETTLE;
    ensure!(w.rt.run_until(until, MAX_POLLS, || finished(w)), "visitors hang: {:?}", lock(&w.ends));
    for (v, script) in visits.iter().enumerate() {
        check_ends(w, v, script, chaos)?;
    }
    let until = w.rt.now() + SETTLE;
    ensure!(w.rt.run_until(until, MAX_POLLS, || w.open_visitors() == 0), "visitor connections left open");
    // Once the churn is over the tunnel is back to its target and serves a fresh request.
    ensure!(w.settle(), "live {} of {}", w.live_tunnels(), w.conns);
    let fresh = Visit {
        reqs: vec![Req { post: Some(3), resp_len: 50, chunk: None, close: true }],
        ..Visit::default()
    };
    let n = lock(&w.ends).len();
    w.visit(visits.len(), &[fresh]);
    ensure!(w.run_ends(n + 1, SETTLE), "the fresh request hangs");
    ensure!(
        w.ends_of(visits.len()) == vec![End::Answered],
        "the fresh request: {:?}",
        w.ends_of(visits.len())
    );
    // Only a visitor that left before the server read its whole request may cost a connection.
    let mid_request = lock(&w.ends).iter().filter(|(.., e)| *e == End::Left { clean: false }).count();
    ensure!(
        w.healthy_closed_by_server() <= mid_request,
        "{} healthy tunnel connections closed",
        w.healthy_closed_by_server()
    );
    let mut counts = Counts { resets: w.tunnel_resets(), ..Counts::default() };
    for (.., e) in lock(&w.ends).iter() {
        match e {
            End::Answered => counts.answered += 1,
            End::Refused(_) => counts.refused += 1,
            End::Cut => counts.cut += 1,
            End::Left { .. } => counts.left += 1,
            End::Wrong => {}
        }
    }
    Ok(counts)
}

/// Reads fuzz bytes, 0 past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> usize {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        usize::from(b)
    }
}

/// Decodes fuzz bytes into a world's config, visitors' scripts and reset gaps.
///
/// Byte 0: target connections (1..=3), connection shapes, half the seed; byte 1: the other half;
/// byte 2: tunnel resets (0..=3), then a gap byte each (in pairs of the chaos task's polls). Then visitors, at most 6: a
/// flags byte (requests 1..=3, where and how it leaves, half-close), a leave byte, and three bytes
/// a request (POST and chunked flags with the chunk size, body length, response length).
pub fn decode(data: &[u8]) -> (Config, Vec<Visit>, Vec<usize>) {
    let mut b = Bytes(data);
    let head = b.next();
    let seed = (head as u64) << 8 | b.next() as u64;
    let caps = [1, 7, 64, 1 << 16];
    let shape = Shape { max_cap: caps[head >> 2 & 3], max_chunk: caps[head >> 4 & 3] };
    let conns = 1 + head % 3;
    let gaps = (0..b.next() % 4).map(|_| 2 * b.next()).collect();
    let mut visits = Vec::new();
    while !b.0.is_empty() && visits.len() < 6 {
        let flags = b.next();
        let at = b.next();
        let n = 1 + flags % 3;
        let reqs: Vec<Req> = (0..n)
            .map(|i| {
                let (f, body, resp) = (b.next(), b.next(), b.next());
                Req {
                    post: (f & 1 != 0).then_some(body * 2),
                    resp_len: resp * 3,
                    chunk: (f & 2 != 0).then_some(1 + (f >> 2)),
                    close: i + 1 == n,
                }
            })
            .collect();
        let point = match flags >> 2 & 7 {
            0 => Some(At::Sending(at)),
            1 => Some(At::Sent(at)),
            2 => Some(At::Reading(at * 2)),
            _ => None,
        };
        let leave = point.map(|at_| Leave { req: at % n, at: at_, reset: flags & 0x20 != 0 });
        visits.push(Visit { reqs, leave, half_close: flags & 0x40 != 0 });
    }
    let cfg = Config { seed, shape, conns, limits: Limits::default() };
    (cfg, visits, gaps)
}

/// Fuzz target `drive_ops`: a whole server, client and origin on the simulation, playing the run
/// `data` decodes to; panics on any broken invariant. Returns the run's counts.
pub fn drive_ops(data: &[u8]) -> Counts {
    let (cfg, visits, gaps) = decode(data);
    let Some(world) = World::start(&cfg) else { panic!("the tunnel did not come up") };
    match run_script(&world, &visits, gaps) {
        Ok(counts) => counts,
        Err(why) => panic!("{why}"),
    }
}
