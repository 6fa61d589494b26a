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
//! - [`proxy`]: [`Proxy`], a loopback TCP forwarder whose target can be switched
//!   or refused, so "the origin is down" or "the server restarted" never needs a
//!   port number bound twice.
//!
//! # Timing
//!
//! A deadline the product must honour is a lower bound and is asserted as given
//! (a 408 must not come before the head timeout). Every upper bound, how long a
//! test is willing to wait for something, is multiplied by one factor,
//! [`slack`], read from the environment variable `AETHER_TEST_SLACK` (a number
//! ≥ 1, default 1): the bounds of [`wait_until`], [`poll_for`] and
//! [`eventually`], [`Conn`]'s read timeouts, [`Share::wait_online`], and each
//! case's time limit. On a loaded machine, run with e.g. `AETHER_TEST_SLACK=3`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod client;
pub mod harness;
pub mod origin;
pub mod proxy;

pub use client::{Body, Conn, Req, Response};
pub use harness::{Env, Pair, Rt, Server, Share, Tunnel, loopback, run};
pub use origin::Origin;
pub use proxy::Proxy;

/// The slack factor from `AETHER_TEST_SLACK` (1 when unset); panics if it is not a number ≥ 1.
pub fn slack_factor() -> f64 {
    static FACTOR: OnceLock<f64> = OnceLock::new();
    *FACTOR.get_or_init(|| {
        let v = std::env::var("AETHER_TEST_SLACK").ok();
        parse_slack(v.as_deref())
            .unwrap_or_else(|| panic!("AETHER_TEST_SLACK must be a number >= 1, got {v:?}"))
    })
}

/// The factor a value of `AETHER_TEST_SLACK` means: 1 when unset or blank, `None` when not a number ≥ 1.
fn parse_slack(v: Option<&str>) -> Option<f64> {
    match v.map(str::trim) {
        None | Some("") => Some(1.0),
        Some(v) => v.parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 1.0),
    }
}

/// An upper bound `d` stretched by [`slack_factor`]; never use it on a deadline under test.
pub fn slack(d: Duration) -> Duration {
    d.mul_f64(slack_factor())
}

/// Polls `cond` until it holds; panics naming `what` if it does not within `slack(limit)`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll_for(limit, what, || cond().then_some(()))
}

/// Polls `probe` until it returns `Some`; panics naming `what` if it does not within `slack(limit)`.
pub fn poll_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    if !eventually(limit, || {
        found = probe();
        found.is_some()
    }) {
        panic!("timed out after {:?} waiting for {what}", slack(limit));
    }
    found.expect("set when the probe succeeded")
}

/// Polls `cond` until it holds (true) or `slack(limit)` passes (false).
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + slack(limit);
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
    fn bare_lf_response_heads_are_an_error() {
        for head in [
            &b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
        ] {
            let mut c = Conn::open(crate::client::serve_bytes(head));
            let e = c.try_response("GET").expect_err("a head with a bare LF");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        }
        let mut c = Conn::open(crate::client::serve_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert_eq!(c.try_response("GET").unwrap().text(), "ok", "CRLF throughout is fine");
    }

    #[test]
    fn slack_values() {
        assert_eq!(parse_slack(None), Some(1.0));
        assert_eq!(parse_slack(Some(" ")), Some(1.0));
        assert_eq!(parse_slack(Some("3")), Some(3.0));
        assert_eq!(parse_slack(Some(" 1.5 ")), Some(1.5));
        for bad in ["0.5", "0", "-2", "fast", "inf", "NaN"] {
            assert_eq!(parse_slack(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn pattern_is_deterministic_and_varied() {
        let a = pattern(1000, 7);
        assert_eq!(a, pattern(1000, 7));
        assert_ne!(a, pattern(1000, 8));
        assert_ne!(checksum(&a), checksum(&a[1..]));
    }
}
