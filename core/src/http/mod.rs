//! HTTP/1.1 message framing (RFC 9112) for a proxy: find where each message
//! ends, never re-encode it.
//!
//! aether forwards visitors' requests down a tunnel and the origin's responses
//! back up. Both directions go through a [`Decoder`] that reads from a
//! caller-owned `BytesMut` and yields [`Frame`]s:
//!
//! ```text
//!            ┌──────────── 1xx (not 101): Interim ─────────────┐
//!            ▼                                                 │
//! ──▶ [Head] ──Head──▶ [Body: Length | Chunked | UntilClose] ──Body*──▶ End{keep_alive} ──reset──▶ [Head]
//!            └──Head (101 to an Upgrade, 2xx to CONNECT)──▶ Switched (raw bytes from here on)
//! ```
//!
//! Bodies come out as the raw wire bytes (chunk framing included), so
//! forwarding is writing them out; nothing is collected whole. Heads are
//! parsed once they are complete (one httparse call), and what framing needs
//! (method, status, version, lengths, codings, `Connection` options, `Host`)
//! is read off once into a [`Head`] that keeps the raw bytes.
//!
//! Requests (from the public internet) are strict: anything ambiguous is an
//! error that maps to a 4xx/5xx for the visitor ([`FrameError::status`]).
//! Responses (from the developer's own origin) are read as leniently as keeps
//! the framing self-consistent. The [`rewrite`] module turns a parsed head into
//! the head to forward (path prefix, `X-Forwarded-*`, hop-by-hop headers);
//! [`encode`] writes the server's own replies. This module does not do I/O,
//! decompression, or HTTP/2.

mod chunked;
mod decode;
pub mod encode;
mod error;
mod head;
#[cfg(any(test, feature = "fuzzing"))]
pub mod oracle;
pub mod rewrite;
mod scan;

pub use decode::{Decoder, Frame};
pub use error::FrameError;
pub use head::{BodyKind, Head, Method, RequestInfo, Version};

/// Which kind of message a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Requests, from a visitor (strict).
    Request,
    /// Responses, from an origin (lenient where framing stays unambiguous).
    Response,
}

#[cfg(test)]
mod oracle_properties;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
