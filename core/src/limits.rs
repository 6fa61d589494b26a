//! Every bound and deadline aether enforces, in one typed struct with SPEC §8's defaults.
//!
//! Adapters surface each field as a CLI flag; core machines read them. Nothing
//! here is enforced by this module itself: it is plain data.

use std::time::Duration;

/// The hard ceiling on headers per message: the parser's stack array has this many slots.
pub const HEADER_SLOTS: usize = 256;

/// Limits and timeouts for one server or client. `Limits::default()` is SPEC §8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line (method, target, version), in bytes. Over it: 414.
    pub max_request_line: usize,
    /// Longest message head (start line and headers), in bytes. Over it: 431.
    pub max_head: usize,
    /// Most header fields in one head (capped at [`HEADER_SLOTS`]). Over it: 431.
    pub max_headers: usize,
    /// Longest chunk-size line, extensions included, in bytes. Over it: 400.
    pub max_chunk_line: usize,
    /// Time allowed for a visitor's head to arrive, from its first byte. Over it: 408.
    pub head_timeout: Duration,
    /// How long an idle keep-alive visitor connection is kept.
    pub idle_keepalive: Duration,
    /// Longest tunnel handshake line, newline included.
    pub max_handshake_line: usize,
    /// Time allowed for the handshake line to arrive after the tunnel socket opens.
    pub handshake_timeout: Duration,
    /// Requests that may wait for a busy tunnel. Over it: 503.
    pub max_waiters: usize,
    /// How long a request may wait for a tunnel connection. Over it: 504.
    pub wait_timeout: Duration,
    /// How long a tunnel with no connections keeps its name for its token holder.
    pub offline_grace: Duration,
    /// Most tunnels one server holds. Over it: 503 on registration.
    pub max_tunnels: usize,
    /// Most tunnel connections one tunnel may hold (`max_conn_count` in the registration reply).
    pub max_conn_per_tunnel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_head: 64 * 1024,
            max_headers: 128,
            max_chunk_line: 4 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_keepalive: Duration::from_secs(60),
            max_handshake_line: 256,
            handshake_timeout: Duration::from_secs(5),
            max_waiters: 256,
            wait_timeout: Duration::from_secs(30),
            offline_grace: Duration::from_secs(60),
            max_tunnels: 10_000,
            max_conn_per_tunnel: 10,
        }
    }
}

impl Limits {
    /// `max_headers` clamped to what the parser can hold.
    pub fn header_slots(&self) -> usize {
        self.max_headers.clamp(1, HEADER_SLOTS)
    }
}
