//! Timer rules on the simulation, exact in virtual time: a silent visitor is closed at the idle
//! keep-alive limit, a cut head gets 408 at the head timeout, a silent tunnel connection is closed at
//! the handshake timeout; none before.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use proptest::prelude::*;

use super::net::SimStream;
use super::world::{Config, MAX_POLLS, World};
use super::*;
use crate::drive::sync::lock;
use crate::drive::wire::{read_some, write_all};
use crate::limits::Limits;

fn world(seed: u64, limits: Limits) -> World {
    let shape = Shape { max_cap: 1 << 16, max_chunk: 1 << 16 };
    World::start(&Config { seed, shape, conns: 1, limits }).expect("online")
}

/// How long after now the server closes its end of `s` (sent `bytes` first, reading all the while),
/// and what it wrote.
fn closed_after(w: &World, mut s: SimStream, bytes: &'static [u8]) -> (Duration, Vec<u8>) {
    let start = w.rt.now();
    let rec = s.rec().clone();
    let said = Arc::new(Mutex::new(Vec::new()));
    let heard = said.clone();
    w.rt.spawn(async move {
        let _ = write_all(&mut s, bytes).await;
        let mut buf = BytesMut::new();
        while let Ok(n @ 1..) = read_some(&mut s, &mut buf, 4096).await {
            lock(&heard).extend_from_slice(&buf.split_to(n));
        }
    });
    let closed = w.rt.run_until(start + Duration::from_secs(3600), MAX_POLLS, || !lock(&rec).open[1]);
    assert!(closed, "the server never closed it");
    let took = w.rt.now() - start;
    // What the server wrote before closing is read at the same instant.
    w.rt.run_until(w.rt.now(), MAX_POLLS, || false);
    (took, lock(&said).clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_silent_visitor_is_closed_at_the_idle_limit(seed in any::<u64>(), ms in 1..120_000u64) {
        let idle = Duration::from_millis(ms);
        let w = world(seed, Limits { idle_keepalive: idle, ..Limits::default() });
        let s = w.rt.dial(w.http).unwrap();
        let (took, said) = closed_after(&w, s, b"");
        prop_assert_eq!(took, idle);
        prop_assert!(said.is_empty(), "{:?}", String::from_utf8_lossy(&said));
    }

    #[test]
    fn a_cut_head_gets_408_at_the_head_timeout(seed in any::<u64>(), ms in 1..60_000u64) {
        let head = Duration::from_millis(ms);
        let w = world(seed, Limits { head_timeout: head, ..Limits::default() });
        let s = w.rt.dial(w.http).unwrap();
        let (took, said) = closed_after(&w, s, b"GET /x HTTP/1.1\r\nHost: a");
        prop_assert_eq!(took, head);
        prop_assert!(said.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&said));
    }

    #[test]
    fn a_silent_tunnel_connection_is_closed_at_the_handshake_timeout(seed in any::<u64>(), ms in 1..20_000u64) {
        let hs = Duration::from_millis(ms);
        let w = world(seed, Limits { handshake_timeout: hs, ..Limits::default() });
        let s = w.rt.dial(w.tunnel).unwrap();
        let (took, said) = closed_after(&w, s, b"");
        prop_assert_eq!(took, hs);
        prop_assert!(said.is_empty());
    }
}
