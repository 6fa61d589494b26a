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
    let _ = p.checkout(W(1), None);
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
    let _ = p.checkout(W(1), None);
    let _ = p.checkout(W(2), Some(t + Duration::from_secs(1)));
    let _ = p.checkout(W(3), Some(t + Duration::from_secs(2)));
    assert_eq!(p.pop_expired(t), None);
    assert_eq!(p.pop_expired(t + Duration::from_secs(1)), Some(W(2)));
    assert_eq!(p.pop_expired(t + Duration::from_secs(1)), None);
    assert_eq!(p.drain_waiters().collect::<Vec<_>>(), vec![W(3)]);
}

#[derive(Debug, Clone)]
enum Op {
    Add,
    Checkout,
    Checkin(usize),
    Remove(usize),
    Cancel(usize),
}

proptest! {
    /// Leases are exclusive, the pool never exceeds max_conn, grants follow FIFO order, and
    /// k idle connections give k distinct connections to k checkouts.
    #[test]
    fn leases_are_exclusive_and_fifo(
        max_conn in 1..4usize,
        max_waiters in 0..4usize,
        ops in proptest::collection::vec(prop_oneof![
            Just(Op::Add), Just(Op::Checkout), (0..8usize).prop_map(Op::Checkin),
            (0..8usize).prop_map(Op::Remove), (0..8usize).prop_map(Op::Cancel),
        ], 1..80),
    ) {
        let mut p = Pool::new(max_conn, max_waiters);
        let (mut next_conn, mut next_waiter) = (0u64, 0u64);
        let mut lease: HashMap<ConnId, WaiterId> = HashMap::new();
        let mut queue: VecDeque<WaiterId> = VecDeque::new(); // the model's FIFO
        let grant = |lease: &mut HashMap<ConnId, WaiterId>, c: ConnId, w: WaiterId| {
            prop_assert!(lease.insert(c, w).is_none(), "{:?} leased twice", c);
            Ok(())
        };
        for op in ops {
            match op {
                Op::Add => {
                    next_conn += 1;
                    let full = p.is_full();
                    match p.add(C(next_conn)) {
                        Err(PoolError::Full) => prop_assert!(full),
                        Ok(Some(w)) => {
                            prop_assert_eq!(Some(w), queue.pop_front());
                            grant(&mut lease, C(next_conn), w)?;
                        }
                        Ok(None) => prop_assert!(queue.is_empty()),
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Checkout => {
                    next_waiter += 1;
                    let idle_before = p.idle_count();
                    match p.checkout(W(next_waiter), None) {
                        Checkout::Granted(c) => {
                            prop_assert!(idle_before > 0);
                            grant(&mut lease, c, W(next_waiter))?;
                        }
                        Checkout::Queued => queue.push_back(W(next_waiter)),
                        Checkout::QueueFull => prop_assert_eq!(queue.len(), max_waiters),
                    }
                }
                Op::Checkin(i) => {
                    let mut busy: Vec<_> = lease.keys().copied().collect();
                    busy.sort();
                    if let Some(&c) = busy.get(i % busy.len().max(1)) {
                        lease.remove(&c);
                        if let Some(w) = p.checkin(c).unwrap() {
                            prop_assert_eq!(Some(w), queue.pop_front());
                            grant(&mut lease, c, w)?;
                        }
                    }
                }
                Op::Remove(i) => {
                    let c = C(1 + (i as u64) % next_conn.max(1));
                    let had = p.contains(c);
                    prop_assert_eq!(p.remove(c), had);
                    lease.remove(&c);
                }
                Op::Cancel(i) => {
                    let w = W(1 + (i as u64) % next_waiter.max(1));
                    let queued = queue.contains(&w);
                    prop_assert_eq!(p.cancel(w), queued);
                    queue.retain(|&q| q != w);
                }
            }
            p.check_invariants();
            prop_assert_eq!(p.busy_count(), lease.len());
            prop_assert_eq!(p.waiters().collect::<Vec<_>>(), queue.iter().copied().collect::<Vec<_>>());
        }
        // k idle connections, k checkouts: k distinct connections.
        let k = p.idle_count();
        let got: HashSet<_> = (0..k)
            .filter_map(|i| match p.checkout(W(1000 + i as u64), None) {
                Checkout::Granted(c) => Some(c),
                _ => None,
            })
            .collect();
        prop_assert_eq!(got.len(), k);
        prop_assert!(got.iter().all(|c| !lease.contains_key(c)));
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
