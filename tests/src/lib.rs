//! Test support for aether's end-to-end suite: origin servers and HTTP clients
//! over loopback, and a harness that runs each case against every pairing of
//! server runtime and client runtime.
//!
//! Everything here is std threads and `std::net` sockets, so the support code
//! cannot share a bug with either runtime under test.
//!
//! - [`harness`]: [`Pair`] (which runtime serves, which shares), [`Env`] (starts
//!   servers and clients of that pairing), [`Tunnel`] (a registered, connected
//!   `share`), and [`run`] (one case, bounded in time).
//! - [`origin`]: [`Origin`], the service being shared (echo, downloads, chunked,
//!   close-delimited, SSE, upgrade, held requests) with a per-request counter.
//! - [`client`]: [`Conn`], a raw-socket HTTP/1.1 client that writes exactly the
//!   bytes a test gives it and reads responses by their framing.

use std::time::{Duration, Instant};

pub mod client;
pub mod harness;
pub mod origin;

pub use client::{Body, Conn, Req, Response};
pub use harness::{Env, Pair, Rt, Server, Share, Tunnel, loopback, run};
pub use origin::Origin;

/// Polls `cond` until it holds; panics naming `what` if it does not within `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll_for(limit, what, || cond().then_some(()))
}

/// Polls `probe` until it returns `Some`; panics naming `what` if it does not within `limit`.
pub fn poll_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    if !eventually(limit, || {
        found = probe();
        found.is_some()
    }) {
        panic!("timed out after {limit:?} waiting for {what}");
    }
    found.expect("set when the probe succeeded")
}

/// Polls `cond` until it holds (true) or `limit` passes (false).
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// FNV-1a over `bytes`: a checksum that both ends of a transfer compute the same way.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `len` deterministic pseudo-random bytes from `seed` (xorshift), so data has no short period.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The raw value after `"key":` in a JSON text (first occurrence, at any depth), trimmed.
fn json_raw<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\"");
    let at = json.find(&needle)? + needle.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return Some(&rest[..s.find('"')? + 2]);
    }
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// The string value of `key` in a flat JSON text (no escapes expected), if present and a string.
pub fn json_str(json: &str, key: &str) -> Option<String> {
    let raw = json_raw(json, key)?;
    Some(raw.strip_prefix('"')?.strip_suffix('"')?.to_owned())
}

/// The unsigned integer value of `key` in a JSON text, if present and a number.
pub fn json_num(json: &str, key: &str) -> Option<u64> {
    json_raw(json, key)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields() {
        let j = r#"{"id":"a-b-c","port":62322, "mem":{"alloc":5},"url":"http://h/a-b-c","n":true}"#;
        assert_eq!(json_str(j, "id").as_deref(), Some("a-b-c"));
        assert_eq!(json_num(j, "port"), Some(62322));
        assert_eq!(json_num(j, "alloc"), Some(5));
        assert_eq!(json_str(j, "url").as_deref(), Some("http://h/a-b-c"));
        assert_eq!(json_str(j, "port"), None);
        assert_eq!(json_num(j, "missing"), None);
    }

    #[test]
    fn pattern_is_deterministic_and_varied() {
        let a = pattern(1000, 7);
        assert_eq!(a, pattern(1000, 7));
        assert_ne!(a, pattern(1000, 8));
        assert_ne!(checksum(&a), checksum(&a[1..]));
    }
}
