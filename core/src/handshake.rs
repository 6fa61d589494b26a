//! The tunnel port's handshake: one line from the client, one verdict line back.
//!
//! ```text
//! client                                   server
//!   | -- "<id> <token>\n" ------------------> |   HelloDecoder (bounded line, deadline)
//!   | <--------- "accepted\n" --------------- |   or "rejected unknown-tunnel|bad-token|full\n", then close
//!   | <== HTTP exchanges, one at a time ====> |   bytes after the line belong to the tunnel
//! ```
//!
//! The decoders work on a caller-owned `BytesMut`: they consume exactly the
//! line (newline included) and leave every byte after it in the buffer, so
//! nothing read past the handshake is lost. A line longer than the limit is an
//! error however it is split; a line that never ends is cut off by the deadline
//! the decoder hands out. With `legacy` on, the seed's bare `<id>\n` (no token,
//! no verdict expected) is accepted too. This module does not decide whether a
//! token is right: the server's registry does.

use std::fmt;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::id::{IdError, Token, TokenError, TunnelId};
use crate::limits::Limits;

/// What a client says on a new tunnel connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The tunnel this connection is for.
    pub id: TunnelId,
    /// The ownership proof; `None` only for the seed's legacy line.
    pub token: Option<Token>,
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The connection joins the tunnel's pool.
    Accepted,
    /// No such tunnel (the server restarted or the lease expired): register again.
    UnknownTunnel,
    /// The token does not prove ownership of the tunnel.
    BadToken,
    /// The tunnel already holds `max_conn_count` connections: stop dialling until one drops.
    Full,
}

impl Verdict {
    /// The verdict's line on the wire, newline included.
    pub fn line(self) -> &'static [u8] {
        match self {
            Verdict::Accepted => b"accepted\n",
            Verdict::UnknownTunnel => b"rejected unknown-tunnel\n",
            Verdict::BadToken => b"rejected bad-token\n",
            Verdict::Full => b"rejected full\n",
        }
    }

    fn parse(line: &[u8]) -> Option<Self> {
        [Verdict::Accepted, Verdict::UnknownTunnel, Verdict::BadToken, Verdict::Full]
            .into_iter()
            .find(|v| &v.line()[..v.line().len() - 1] == line)
    }
}

/// Why a handshake failed. The server closes the connection on any of these, after the verdict
/// [`HandshakeError::verdict`] names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The line is longer than the limit.
    TooLong,
    /// No complete line before the deadline.
    TimedOut,
    /// Not `<id> <token>` (or `<id>` in legacy mode).
    Malformed,
    /// The id breaks the id rule.
    BadId(IdError),
    /// The token is not 32 hex digits.
    BadToken(TokenError),
    /// A bare `<id>` line while legacy handshakes are off.
    MissingToken,
    /// A verdict line this client does not know.
    UnknownVerdict,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::TooLong => f.write_str("handshake line too long"),
            HandshakeError::TimedOut => f.write_str("no handshake line before the deadline"),
            HandshakeError::Malformed => f.write_str("handshake line is not `<id> <token>`"),
            HandshakeError::BadId(e) => write!(f, "handshake: {e}"),
            HandshakeError::BadToken(e) => write!(f, "handshake: {e}"),
            HandshakeError::MissingToken => {
                f.write_str("handshake line has no token (legacy handshakes are off)")
            }
            HandshakeError::UnknownVerdict => f.write_str("unknown verdict line from the server"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl HandshakeError {
    /// The verdict the server still gives for this error: a token that is missing or not a token
    /// at all is not this tunnel's, so `rejected bad-token` (SPEC §4); anything else gets none.
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            HandshakeError::BadToken(_) | HandshakeError::MissingToken => Some(Verdict::BadToken),
            _ => None,
        }
    }
}

/// Finds one `\n`-terminated line of bounded length, remembering how far it has searched.
#[derive(Debug, Clone)]
struct LineReader {
    scanned: usize,
    max: usize,
}

impl LineReader {
    /// Takes one line (newline included) off the front of `buf`; returns it without `\n` or `\r\n`.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HandshakeError> {
        let window = buf.len().min(self.max);
        let found = buf[self.scanned.min(window)..window].iter().position(|&b| b == b'\n');
        match found {
            Some(i) => {
                let end = self.scanned + i + 1;
                self.scanned = 0;
                let mut line = buf.split_to(end).freeze();
                line.truncate(end - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                Ok(Some(line))
            }
            None if buf.len() >= self.max => Err(HandshakeError::TooLong),
            None => {
                self.scanned = window;
                Ok(None)
            }
        }
    }
}

/// Server side: reads the client's [`Hello`] and says when to give up on it.
#[derive(Debug, Clone)]
pub struct HelloDecoder {
    line: LineReader,
    legacy: bool,
    deadline: Option<Instant>,
}

impl HelloDecoder {
    /// A decoder for a connection opened at `now`; `legacy` also accepts the seed's bare `<id>` line.
    pub fn new(now: Instant, limits: &Limits, legacy: bool) -> Self {
        Self {
            line: LineReader { scanned: 0, max: limits.max_handshake_line },
            legacy,
            deadline: now.checked_add(limits.handshake_timeout),
        }
    }

    /// When the line must be complete; the caller closes the connection then ([`HandshakeError::TimedOut`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// `Err(TimedOut)` once `now` has reached the deadline.
    pub fn check_deadline(&self, now: Instant) -> Result<(), HandshakeError> {
        match self.deadline {
            Some(d) if now >= d => Err(HandshakeError::TimedOut),
            _ => Ok(()),
        }
    }

    /// Consumes the hello line when it is complete; later bytes stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Hello>, HandshakeError> {
        let Some(line) = self.line.decode(buf)? else {
            return Ok(None);
        };
        let mut parts = line.split(|&b| b == b' ');
        let id = parts.next().ok_or(HandshakeError::Malformed)?;
        let token = parts.next();
        if parts.next().is_some() {
            return Err(HandshakeError::Malformed);
        }
        let id = TunnelId::parse_bytes(id).map_err(HandshakeError::BadId)?;
        let token = match token {
            Some(t) => Some(Token::parse(t).map_err(HandshakeError::BadToken)?),
            None if self.legacy => None,
            None => return Err(HandshakeError::MissingToken),
        };
        Ok(Some(Hello { id, token }))
    }
}

/// Client side: reads the server's verdict line.
#[derive(Debug, Clone)]
pub struct VerdictDecoder {
    line: LineReader,
}

impl VerdictDecoder {
    /// A decoder bounded by the handshake line limit.
    pub fn new(limits: &Limits) -> Self {
        Self { line: LineReader { scanned: 0, max: limits.max_handshake_line } }
    }

    /// Consumes the verdict line when it is complete; later bytes (the first request) stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Verdict>, HandshakeError> {
        match self.line.decode(buf)? {
            Some(line) => Verdict::parse(&line).map(Some).ok_or(HandshakeError::UnknownVerdict),
            None => Ok(None),
        }
    }
}

/// Appends the hello line: `<id> <token>\n`, or the legacy `<id>\n` when `token` is `None`.
pub fn encode_hello(hello: &Hello, out: &mut BytesMut) {
    out.extend_from_slice(hello.id.as_str().as_bytes());
    if let Some(token) = &hello.token {
        out.extend_from_slice(b" ");
        out.extend_from_slice(token.to_hex().as_bytes());
    }
    out.extend_from_slice(b"\n");
}

/// Appends the verdict line.
pub fn encode_verdict(verdict: Verdict, out: &mut BytesMut) {
    out.extend_from_slice(verdict.line());
}

#[cfg(test)]
mod tests;
