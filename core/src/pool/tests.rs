use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const C: fn(u64) -> ConnId = ConnId;
const W: fn(u64) -> WaiterId = WaiterId;

#[test]
fn idle_connections_are_used_round_robin() {
    let mut p = Pool::new(3, 4);
    for c in 1..=3 {
        assert_eq!(p.add(C(c)), Ok(None));
    }
    assert_eq!(p.checkout(W(1), None), Checkout::Granted(C(1)));
    assert_eq!(p.checkin(C(1)), Ok(None));
    // C(1) went to the back: the next two checkouts get C(2) and C(3), then C(1).
    assert_eq!(p.checkout(W(2), None), Checkout::Granted(C(2)));
    assert_eq!(p.checkout(W(3), None), Checkout::Granted(C(3)));
    assert_eq!(p.checkout(W(4), None), Checkout::Granted(C(1)));
    assert_eq!((p.idle_count(), p.busy_count()), (0, 3));
    p.check_invariants();
}

#[test]
fn full_pool_refuses_more_connections_and_duplicates() {
    let mut p = Pool::new(2, 4);
    assert_eq!(p.add(C(1)), Ok(None));
    assert_eq!(p.add(C(1)), Err(PoolError::Duplicate));
    assert_eq!(p.add(C(2)), Ok(None));
    assert!(p.is_full());
    assert_eq!(p.add(C(3)), Err(PoolError::Full));
    assert!(p.remove(C(1)));
    assert!(!p.remove(C(1)), "removing twice is harmless");
    assert_eq!(p.add(C(3)), Ok(None));
    assert_eq!(p.len(), 2);
}

#[test]
fn waiters_are_served_oldest_first_and_the_queue_is_bounded() {
    let mut p = Pool::new(1, 2);
    p.add(C(1)).unwrap();
    assert_eq!(p.checkout(W(1), None), Checkout::Granted(C(1)));
    assert_eq!(p.checkout(W(2), None), Checkout::Queued);
    assert_eq!(p.checkout(W(3), None), Checkout::Queued);
    assert_eq!(p.checkout(W(4), None), Checkout::QueueFull);
    assert_eq!(p.checkin(C(1)), Ok(Some(W(2))), "check-in goes to the oldest waiter");
    assert_eq!(p.busy_count(), 1, "and the connection stays leased");
    assert_eq!(p.checkin(C(1)), Ok(Some(W(3))));
    assert_eq!(p.checkin(C(1)), Ok(None));
    assert_eq!(p.checkin(C(1)), Err(PoolError::NotBusy), "an idle conn cannot be checked in");
    assert_eq!(p.checkin(C(9)), Err(PoolError::NotBusy));
}

#[test]
fn a_new_connection_goes_to_the_oldest_waiter() {
    let mut p = Pool::new(2, 4);
    p.add(C(1)).unwrap();
    assert_eq!(p.checkout(W(1), None), Checkout::Granted(C(1)));
    assert_eq!(p.checkout(W(2), None), Checkout::Queued);
    assert_eq!(p.checkout(W(3), None), Checkout::Queued);
    assert!(p.cancel(W(2)));
    assert!(!p.cancel(W(2)));
    assert_eq!(p.add(C(2)), Ok(Some(W(3))));
    assert_eq!(p.waiting_count(), 0);
}

#[test]
fn expired_waiters_leave_from_the_front() {
    let t = Instant::now();
    let mut p = Pool::new(1, 4);
    p.add(C(1)).unwrap();
    assert_eq!(p.checkout(W(1), None), Checkout::Granted(C(1)));
    assert_eq!(p.checkout(W(2), Some(t + Duration::from_secs(1))), Checkout::Queued);
    assert_eq!(p.checkout(W(3), Some(t + Duration::from_secs(2))), Checkout::Queued);
    assert_eq!(p.pop_expired(t), None);
    assert_eq!(p.pop_expired(t + Duration::from_secs(1)), Some(W(2)));
    assert_eq!(p.pop_expired(t + Duration::from_secs(1)), None);
    assert_eq!(p.drain_waiters().collect::<Vec<_>>(), vec![W(3)]);
}

#[derive(Debug, Clone)]
enum Op {
    Add,
    /// A checkout whose deadline is this many seconds away (`None`: no deadline).
    Checkout(Option<u64>),
    Checkin(usize),
    Remove(usize),
    Cancel(usize),
    /// Time passes, then every due waiter at the front is popped.
    Expire(u64),
}

/// The rules of SPEC §5 and the module docs, kept apart from the pool: its own connections, idle order,
/// leases and queue with deadlines.
struct Model {
    max_conn: usize,
    max_waiters: usize,
    idle: VecDeque<ConnId>,
    lease: HashMap<ConnId, WaiterId>,
    queue: VecDeque<(WaiterId, Option<Instant>)>,
}

impl Model {
    fn count(&self) -> usize {
        self.idle.len() + self.lease.len()
    }

    /// A connection joins: the oldest waiter gets it, else it idles at the back.
    fn place(&mut self, c: ConnId) -> Option<WaiterId> {
        match self.queue.pop_front() {
            Some((w, _)) => {
                self.lease.insert(c, w);
                Some(w)
            }
            None => {
                self.idle.push_back(c);
                None
            }
        }
    }
}

proptest! {
    /// The pool says exactly what the model predicts after every op: Full once max_conn connections
    /// are held, round-robin grants over idle connections, a bounded FIFO queue, check-ins and new
    /// connections to the oldest waiter, and a due waiter at the front leaves at its deadline.
    #[test]
    fn pool_matches_model(
        max_conn in 1..4usize,
        max_waiters in 0..4usize,
        ops in proptest::collection::vec(prop_oneof![
            2 => Just(Op::Add),
            3 => proptest::option::weighted(0.8, 0..6u64).prop_map(Op::Checkout),
            2 => (0..8usize).prop_map(Op::Checkin),
            1 => (0..8usize).prop_map(Op::Remove),
            1 => (0..8usize).prop_map(Op::Cancel),
            1 => (0..4u64).prop_map(Op::Expire),
        ], 1..100),
    ) {
        let mut p = Pool::new(max_conn, max_waiters);
        let mut m = Model { max_conn, max_waiters, idle: VecDeque::new(), lease: HashMap::new(), queue: VecDeque::new() };
        let mut now = Instant::now();
        let (mut next_conn, mut next_waiter) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Add => {
                    next_conn += 1;
                    let c = C(next_conn);
                    let want = if m.count() >= m.max_conn { Err(PoolError::Full) } else { Ok(m.place(c)) };
                    prop_assert_eq!(p.add(c), want);
                    // Adding it again: a duplicate once held, still Full if it was refused.
                    let again = if want.is_ok() { PoolError::Duplicate } else { PoolError::Full };
                    prop_assert_eq!(p.add(c), Err(again));
                }
                Op::Checkout(secs) => {
                    next_waiter += 1;
                    let w = W(next_waiter);
                    let deadline = secs.map(|s| now + Duration::from_secs(s));
                    let want = if let Some(c) = m.idle.pop_front() {
                        m.lease.insert(c, w);
                        Checkout::Granted(c)
                    } else if m.queue.len() >= m.max_waiters {
                        Checkout::QueueFull
                    } else {
                        m.queue.push_back((w, deadline));
                        Checkout::Queued
                    };
                    prop_assert_eq!(p.checkout(w, deadline), want);
                }
                Op::Checkin(i) => {
                    let c = C(1 + (i as u64) % next_conn.max(1));
                    let want = if m.lease.remove(&c).is_some() { Ok(m.place(c)) } else { Err(PoolError::NotBusy) };
                    prop_assert_eq!(p.checkin(c), want);
                }
                Op::Remove(i) => {
                    let c = C(1 + (i as u64) % next_conn.max(1));
                    let before = m.idle.len();
                    m.idle.retain(|&x| x != c);
                    let want = m.lease.remove(&c).is_some() || m.idle.len() < before;
                    prop_assert_eq!(p.remove(c), want);
                }
                Op::Cancel(i) => {
                    let w = W(1 + (i as u64) % next_waiter.max(1));
                    let before = m.queue.len();
                    m.queue.retain(|q| q.0 != w);
                    prop_assert_eq!(p.cancel(w), m.queue.len() < before);
                }
                Op::Expire(secs) => {
                    now += Duration::from_secs(secs);
                    loop {
                        let want = match m.queue.front() {
                            Some(&(w, Some(d))) if d <= now => m.queue.pop_front().map(|_| w),
                            _ => None,
                        };
                        prop_assert_eq!(p.pop_expired(now), want);
                        if want.is_none() {
                            break;
                        }
                    }
                }
            }
            p.check_invariants();
            prop_assert_eq!((p.len(), p.idle_count(), p.busy_count()), (m.count(), m.idle.len(), m.lease.len()));
            prop_assert_eq!(p.is_full(), m.count() >= max_conn);
            prop_assert_eq!(p.is_empty(), m.count() == 0);
            let queued: Vec<_> = m.queue.iter().map(|q| q.0).collect();
            prop_assert_eq!(p.waiters().collect::<Vec<_>>(), queued);
            prop_assert_eq!(p.waiting_count(), m.queue.len());
            for c in 1..=next_conn {
                prop_assert_eq!(p.contains(C(c)), m.lease.contains_key(&C(c)) || m.idle.contains(&C(c)));
            }
        }
        // The idle ones are granted in the model's order, then the rest drain oldest first.
        for c in m.idle.clone() {
            next_waiter += 1;
            prop_assert_eq!(p.checkout(W(next_waiter), None), Checkout::Granted(c));
        }
        let queued: Vec<_> = m.queue.iter().map(|q| q.0).collect();
        prop_assert_eq!(p.drain_waiters().collect::<Vec<_>>(), queued);
    }
}

#[test]
fn errors_say_what_went_wrong() {
    assert!(PoolError::Full.to_string().contains("maximum of connections"));
    assert!(PoolError::Duplicate.to_string().contains("already in the pool"));
    assert!(PoolError::NotBusy.to_string().contains("not leased"));
}

/// A pool broken by hand, to check that `check_invariants` notices (it guards every property and fuzz run).
fn broken(f: impl FnOnce(&mut Pool)) {
    let mut p = Pool::new(2, 2);
    p.add(C(1)).unwrap();
    f(&mut p);
    p.check_invariants();
}

#[test]
#[should_panic(expected = "connections, max")]
fn invariants_catch_an_overfull_pool() {
    broken(|p| p.idle.extend([C(2), C(3)]));
}

#[test]
#[should_panic(expected = "both idle and busy")]
fn invariants_catch_a_conn_idle_and_busy() {
    broken(|p| {
        p.busy.insert(C(1));
    });
}

#[test]
#[should_panic(expected = "waiters queued beside an idle connection")]
fn invariants_catch_a_waiter_beside_an_idle_conn() {
    broken(|p| p.waiters.push_back(Waiter { id: W(1), deadline: None }));
}
