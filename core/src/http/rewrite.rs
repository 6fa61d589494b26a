//! The heads a proxy forwards: the visitor's request on its way down the
//! tunnel, and the origin's response on its way back.
//!
//! Requests: the target loses the path-mode `/<id>` prefix (otherwise byte for
//! byte as sent), hop-by-hop fields go (`Connection`, what it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, and `Upgrade` unless this is an
//! upgrade request), and `X-Forwarded-For` (appended to), `-Proto` and `-Host`
//! are set. Responses: hop-by-hop fields go, and `Connection` says what the
//! server will do with the visitor's connection. Framing fields
//! (`Content-Length`, `Transfer-Encoding`) and `Host` are never removed, since
//! the body bytes are forwarded as received. Bodies are not touched here.

use bytes::BytesMut;

use super::head::{for_each_field, list_items};
use super::{BodyKind, Head, RequestInfo, Version};

/// How the request target changes on its way to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetRewrite {
    /// Bytes dropped from the front of the target (scheme and authority, `/<id>`).
    pub skip: usize,
    /// Put `/` before what remains (when it is empty or starts with `?`).
    pub lead_slash: bool,
}

/// The scheme the visitor used to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain HTTP.
    Http,
    /// HTTPS, terminated in front of the server (`--secure`).
    Https,
}

/// What the server adds to a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding<'a> {
    /// The visitor's address, as it goes into `X-Forwarded-For`.
    pub client: &'a str,
    /// `X-Forwarded-Proto`.
    pub proto: Proto,
    /// The target change decided by routing.
    pub target: TargetRewrite,
}

/// Header fields a proxy never forwards.
const HOP_BY_HOP: [&str; 4] = ["connection", "keep-alive", "proxy-connection", "te"];
/// Header fields of a request that are set anew (or re-added only for an upgrade).
const REQUEST_DROP: [&str; 4] = ["upgrade", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];
/// The same for an HTTP/1.0 request, whose `Expect` a server must ignore (RFC 9110 §10.1.1): not
/// forwarding it keeps the origin from sending a 1xx, which an HTTP/1.0 client must never get (§15.2).
const REQUEST_DROP_10: [&str; 5] =
    ["upgrade", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "expect"];
/// Header fields that `Connection` may not remove: the forwarded bytes depend on them.
const KEPT: [&str; 3] = ["content-length", "transfer-encoding", "host"];
/// `Connection` options held on the stack; a head naming more spills them into a sorted `Vec`,
/// so every field `Connection` names is removed (RFC 9110 §7.6.1) at O(log n) a field.
const INLINE_OPTIONS: usize = 16;

fn is(name: &[u8], set: &[&str]) -> bool {
    set.iter().any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
}

/// Copies the fields that survive: not hop-by-hop, not in `drop`, not named by `Connection` unless in `keep`.
fn copy_end_to_end(head: &Head, drop: &[&str], keep: &[&str], out: &mut BytesMut) {
    let mut few: [&[u8]; INLINE_OPTIONS] = [&[]; INLINE_OPTIONS];
    let mut n = 0;
    let mut many: Vec<&[u8]> = Vec::new();
    for_each_field(head, |name, value| {
        if name.eq_ignore_ascii_case(b"connection") {
            for opt in list_items(value) {
                if n < INLINE_OPTIONS {
                    few[n] = opt;
                    n += 1;
                } else {
                    many.push(opt);
                }
            }
        }
    });
    if !many.is_empty() {
        many.extend_from_slice(&few[..n]);
        many.sort_unstable_by(|a, b| cmp_ignore_case(a, b));
    }
    let in_connection = |name: &[u8]| {
        if many.is_empty() {
            few[..n].iter().any(|o| o.eq_ignore_ascii_case(name))
        } else {
            many.binary_search_by(|o| cmp_ignore_case(o, name)).is_ok()
        }
    };
    for_each_field(head, |name, value| {
        let named = in_connection(name) && !is(name, &KEPT) && !is(name, keep);
        if is(name, &HOP_BY_HOP) || is(name, drop) || named {
            return;
        }
        field(out, name, value);
    });
}

/// Orders field names as their lowercase forms order (field names are case-insensitive).
fn cmp_ignore_case(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter().map(u8::to_ascii_lowercase).cmp(b.iter().map(u8::to_ascii_lowercase))
}

fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn version_bytes(v: Version) -> &'static [u8] {
    match v {
        Version::Http10 => b"HTTP/1.0",
        Version::Http11 => b"HTTP/1.1",
    }
}

/// Appends the request head to send down the tunnel; returns what its response decoder must know.
pub fn rewrite_request(head: &Head, fwd: &Forwarding<'_>, out: &mut BytesMut) -> RequestInfo {
    let raw = head.raw();
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(0);
    let method_end = raw[start..].iter().position(|&b| b == b' ').map_or(start, |i| start + i);
    let target = head.target();
    let rest = target.get(fwd.target.skip..).unwrap_or_default();
    out.reserve(raw.len() + 96 + fwd.client.len());
    out.extend_from_slice(&raw[start..method_end]);
    out.extend_from_slice(b" ");
    if fwd.target.lead_slash {
        out.extend_from_slice(b"/");
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b" ");
    out.extend_from_slice(version_bytes(head.version()));
    out.extend_from_slice(b"\r\n");

    let info = head.request_info();
    let upgrade = if info.upgrade { head.upgrade() } else { None };
    let drop: &[&str] = if head.version() == Version::Http10 { &REQUEST_DROP_10 } else { &REQUEST_DROP };
    copy_end_to_end(head, drop, &[], out);
    if let Some(protocol) = upgrade {
        field(out, b"Connection", b"upgrade");
        field(out, b"Upgrade", protocol);
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    let mut first = true;
    for_each_field(head, |name, value| {
        if name.eq_ignore_ascii_case(b"x-forwarded-for") && !value.is_empty() {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(value);
            first = false;
        }
    });
    if !first {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.client.as_bytes());
    out.extend_from_slice(b"\r\n");
    let proto: &[u8] = if fwd.proto == Proto::Https { b"https" } else { b"http" };
    field(out, b"X-Forwarded-Proto", proto);
    if let Some(host) = head.host() {
        field(out, b"X-Forwarded-Host", host);
    }
    out.extend_from_slice(b"\r\n");
    // Hop-by-hop fields are gone: an HTTP/1.1 request now asks for persistence, an HTTP/1.0 one does not.
    RequestInfo { keep_alive: head.version() == Version::Http11, ..info }
}

/// Whether the visitor's connection can carry another request after this response.
pub fn visitor_keep_alive(request: &RequestInfo, response: &Head) -> bool {
    request.keep_alive && response.status() != 101 && response.response_body(request) != BodyKind::UntilClose
}

/// Appends the response head to send to the visitor; `keep_alive` comes from [`visitor_keep_alive`].
pub fn rewrite_response(head: &Head, keep_alive: bool, out: &mut BytesMut) {
    let raw = head.raw();
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(0);
    let line_end = raw[start..].iter().position(|&b| b == b'\n').map_or(raw.len(), |i| start + i + 1);
    out.reserve(raw.len() + 32);
    out.extend_from_slice(&raw[start..line_end]);
    let switching = head.status() == 101;
    // A 101 keeps its Upgrade (the protocol switched to), though `Connection: upgrade` names it.
    // RFC 9112 §6.3: a message framed by Transfer-Encoding is forwarded without its Content-Length.
    let te = head.field("transfer-encoding").is_some();
    let (drop, keep): (&[&str], &[&str]) = match (switching, te) {
        (true, _) => (&[], &["upgrade"]),
        (false, false) => (&["upgrade"], &[]),
        (false, true) => (&["upgrade", "content-length"], &[]),
    };
    copy_end_to_end(head, drop, keep, out);
    if switching {
        field(out, b"Connection", b"upgrade");
    } else if !keep_alive {
        field(out, b"Connection", b"close");
    } else if head.version() == Version::Http10 {
        field(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
