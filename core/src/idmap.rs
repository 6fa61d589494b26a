//! Maps and sets keyed by ids this process hands out itself (connections, waiters, slots).
//!
//! Such keys are counters, never chosen by a peer, so they need no defence against crafted
//! collisions; SipHash, std's default, was a visible share of each proxied request. This module
//! does not serve keys that come from the network (tunnel names): those keep the default hasher.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by a process-assigned id.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A set of process-assigned ids.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a `u64` id: one multiply spreads a counter's values over the high bits
/// the table's control bytes use, and keeps the low bits distinct.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_ids_hash_apart_in_high_and_low_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (0u64..4096).map(|id| build.hash_one(id)).collect();
        let low: IdSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let high: IdSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(low.len(), 4096, "the low 12 bits of 4,096 consecutive ids are all distinct");
        assert_eq!(high.len(), 128, "every 7-bit control value is used");
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut m: IdMap<u64, u64> = IdMap::default();
        for id in 0..1000 {
            m.insert(id * 7, id);
        }
        assert!((0..1000).all(|id| m.get(&(id * 7)) == Some(&id)));
        assert_eq!(m.get(&1), None);
    }
}
