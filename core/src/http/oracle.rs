//! A reference classifier for HTTP/1.1 message framing, for tests and fuzzing.
//!
//! It is written from RFC 9112 §6 (message body length), §9.3 (persistence)
//! and SPEC §5 (what aether refuses, with which status), not from the
//! decoder, so the two can be compared: from a message's version, method or
//! status, its `Content-Length`, `Transfer-Encoding` and `Connection` field
//! values, it says which status refuses the message, or how its body is
//! delimited and whether its connection may carry another message.
//!
//! It models framing decisions only. It does not model limits, chunk syntax,
//! trailers or routing; [`classify_head`] reads only heads in a strict clean
//! syntax (CRLF lines, token names, visible values) and returns `None` for
//! anything else, where the decoder alone decides.

use super::{Method, RequestInfo, Role, Version};

/// Which side of an exchange a message is, with what framing depends on there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A visitor's request, with how many `Host` fields it carries.
    Request {
        /// Number of `Host` field lines.
        hosts: usize,
    },
    /// An origin's response, with its status and the request it answers.
    Response {
        /// The status code.
        status: u16,
        /// The request it answers.
        request: RequestInfo,
    },
}

/// The framing facts of one message head: field values as received (OWS included), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing<'a> {
    /// Request or response, and what goes with it.
    pub side: Side,
    /// The message's version.
    pub version: Version,
    /// Each `Content-Length` field line's value.
    pub content_length: Vec<&'a [u8]>,
    /// Each `Transfer-Encoding` field line's value.
    pub transfer_encoding: Vec<&'a [u8]>,
    /// Each `Connection` field line's value.
    pub connection: Vec<&'a [u8]>,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (a length of zero is this too).
    None,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// The chunked coding's own framing.
    Chunked,
    /// Everything until the connection closes.
    UntilClose,
}

/// What the oracle decides about a message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused: answer with this status (a request's fault) or 502 (an origin's).
    Refuse(u16),
    /// An interim 1xx response: the final one is still to come.
    Interim,
    /// The connection leaves HTTP (101 to an upgrade, 2xx to CONNECT).
    Switched,
    /// A message to read.
    Message {
        /// How its body ends.
        body: Body,
        /// Its connection may carry another message after it.
        keep_alive: bool,
    },
}

/// Classifies one message head by RFC 9112 §6 and SPEC §5.
pub fn classify(m: &Framing<'_>) -> Verdict {
    match m.side {
        Side::Request { hosts } => request(m, hosts),
        Side::Response { status, request } => response(m, status, request),
    }
}

fn request(m: &Framing<'_>, hosts: usize) -> Verdict {
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any request with two.
    if hosts > 1 || (hosts == 0 && m.version == Version::Http11) {
        return Verdict::Refuse(400);
    }
    let te = !m.transfer_encoding.is_empty();
    if te {
        // SPEC §5: both framings present is ambiguous, refused (RFC 9112 §6.1 allows this).
        if !m.content_length.is_empty() {
            return Verdict::Refuse(400);
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        if m.version == Version::Http10 {
            return Verdict::Refuse(400);
        }
        let codings = codings(&m.transfer_encoding);
        // SPEC §5: a coding the proxy does not know is 501 (RFC 9112 §6.1's SHOULD), a name that
        // is not even a token included. SPEC names it apart from "chunked not last (400)", and
        // aether's e2e contract answers `Transfer-Encoding: x-unknown` with 501, so it comes
        // first, though RFC 9112 §6.3 ¶4 would give 400 to any list not ending in chunked.
        // Either way the request is refused and nothing reaches the origin.
        if !codings.iter().all(|c| known_coding(c)) {
            return Verdict::Refuse(501);
        }
        // RFC 9112 §6.3 ¶4 and SPEC §5: chunked must be last and, by §6.1, only once.
        let chunked = codings.iter().filter(|c| is_chunked(c)).count();
        if chunked != 1 || !codings.last().is_some_and(|c| is_chunked(c)) {
            return Verdict::Refuse(400);
        }
        return Verdict::Message { body: Body::Chunked, keep_alive: persistent(m) };
    }
    let body = match length(&m.content_length) {
        Ok(body) => body,
        // RFC 9112 §6.3 ¶5: an invalid length in a request is 400.
        Err(()) => return Verdict::Refuse(400),
    };
    // RFC 9112 §6.3 ¶6: neither field, no body.
    Verdict::Message { body: body.unwrap_or(Body::None), keep_alive: persistent(m) }
}

fn response(m: &Framing<'_>, status: u16, asked: RequestInfo) -> Verdict {
    // Divergence from RFC 9112 §6.3 ¶1-2 (which frame the statuses below "regardless of the
    // header fields"): aether reads a response head's own framing fields before it knows the
    // request, so an invalid length is refused even where no body could follow or where
    // Transfer-Encoding overrides it (§6.3 ¶3). The
    // `http` module docs' "self-consistent" reading of responses; noted for the lead.
    if length(&m.content_length).is_err() {
        return Verdict::Refuse(502);
    }
    // RFC 9112 §6.3 ¶1-2: these end at the blank line "regardless of the header fields".
    if status == 101 {
        // RFC 9110 §15.2.2: a server switches only to a protocol the client asked for;
        // the decoder's documented error (`UnsolicitedSwitch`, 502) and SPEC §5 "the origin misbehaving".
        return if asked.upgrade { Verdict::Switched } else { Verdict::Refuse(502) };
    }
    if (100..200).contains(&status) {
        return Verdict::Interim;
    }
    if asked.method == Method::Connect && (200..300).contains(&status) {
        return Verdict::Switched;
    }
    // RFC 9112 §6.3 ¶3: both framings "ought to be handled as an error"; a response is still
    // read (by Transfer-Encoding), but its connection is not trusted with another message.
    let both = !m.transfer_encoding.is_empty() && !m.content_length.is_empty();
    // RFC 9112 §6.1: after any HTTP/1.0 message with Transfer-Encoding, close.
    let old_te = !m.transfer_encoding.is_empty() && m.version == Version::Http10;
    let keep = asked.keep_alive && persistent(m) && !both && !old_te;
    if asked.method == Method::Head || status == 204 || status == 304 {
        return Verdict::Message { body: Body::None, keep_alive: keep };
    }
    if !m.transfer_encoding.is_empty() {
        // RFC 9112 §6.3 ¶3: Transfer-Encoding overrides Content-Length. Responses come from
        // the developer's own origin and are read leniently while the framing stays
        // self-consistent (`http` module docs), so this is not refused as a request is.
        let codings = codings(&m.transfer_encoding);
        // RFC 9112 §6.3 ¶4: chunked last delimits the body; otherwise the close does. Chunked
        // twice breaks §6.1's "MUST NOT apply chunked more than once", so it is not trusted
        // to delimit either: the close is the one framing that cannot misread it.
        let chunked = codings.iter().filter(|c| is_chunked(c)).count() == 1;
        return if chunked && codings.last().is_some_and(|c| is_chunked(c)) {
            Verdict::Message { body: Body::Chunked, keep_alive: keep }
        } else {
            Verdict::Message { body: Body::UntilClose, keep_alive: false }
        };
    }
    match length(&m.content_length) {
        Ok(Some(body)) => Verdict::Message { body, keep_alive: keep },
        // RFC 9112 §6.3 ¶7: a response with neither field runs until close.
        Ok(None) => Verdict::Message { body: Body::UntilClose, keep_alive: false },
        // RFC 9112 §6.3 ¶5: a proxy answers an invalid response length with 502.
        Err(()) => Verdict::Refuse(502),
    }
}

/// The body a list of `Content-Length` values gives (`None` when there is none), or an error.
///
/// RFC 9110 §8.6: identical values, in several lines or one list, may stand for one (aether
/// accepts them: SPEC §5 refuses only "differing Content-Lengths"); anything but digits is
/// invalid. At most 19 digits, the decoder's documented bound (`InvalidContentLength`), which
/// keeps every value inside a u64 (RFC 9112 §6.3 asks for overflow to be prevented).
fn length(values: &[&[u8]]) -> Result<Option<Body>, ()> {
    let mut found: Option<u64> = None;
    for value in values {
        for element in value.split(|&b| b == b',') {
            let digits = trim(element);
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n = digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err(());
            }
            found = Some(n);
        }
    }
    Ok(found.map(|n| if n == 0 { Body::None } else { Body::Length(n) }))
}

/// RFC 9112 §9.3: whether the sender lets the connection persist after this message.
fn persistent(m: &Framing<'_>) -> bool {
    let options = elements(&m.connection);
    // Connection options are case-insensitive tokens (RFC 9110 §7.6.1).
    let has = |name: &str| options.iter().any(|o| o.eq_ignore_ascii_case(name.as_bytes()));
    if has("close") {
        return false;
    }
    // HTTP/1.0 persists only with `keep-alive`. RFC 9112 §9.3 lets a proxy ignore it in a
    // request; aether's server is the visitor's origin (a gateway, RFC 9110 §3.7) and honours it.
    m.version == Version::Http11 || has("keep-alive")
}

/// The coding names of a `Transfer-Encoding` list: RFC 9112 §7's `token *( OWS ";" OWS
/// transfer-parameter )`, where the token before any `;` names the coding and parameters
/// never change framing.
fn codings<'a>(values: &[&'a [u8]]) -> Vec<&'a [u8]> {
    elements(values).into_iter().map(|c| trim(c.split(|&b| b == b';').next().unwrap_or_default())).collect()
}

/// The non-empty elements of a comma list spread over field lines (RFC 9110 §5.6.1, §5.3).
fn elements<'a>(values: &[&'a [u8]]) -> Vec<&'a [u8]> {
    values.iter().flat_map(|v| v.split(|&b| b == b',')).map(trim).filter(|e| !e.is_empty()).collect()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn is_chunked(coding: &[u8]) -> bool {
    coding.eq_ignore_ascii_case(b"chunked")
}

/// The transfer codings RFC 9112 §7 defines (names are case-insensitive); `identity` is not one.
fn known_coding(coding: &[u8]) -> bool {
    ["chunked", "gzip", "deflate", "compress", "x-gzip", "x-compress"]
        .iter()
        .any(|k| coding.eq_ignore_ascii_case(k.as_bytes()))
}

/// RFC 9110 §5.6.2: tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Reads a complete head (blank line included) in strict clean syntax and classifies it.
///
/// `None` when the head is not clean: a line not ended by CRLF, a start line other than
/// `METHOD SP target SP HTTP/1.x` or `HTTP/1.x SP 3DIGIT SP reason`, a target byte outside
/// RFC 3986's, a field name that is not a token or a value with control bytes. For requests,
/// empty lines before the request line are skipped (RFC 9112 §2.2).
pub fn classify_head(raw: &[u8], role: Role, asked: RequestInfo) -> Option<Verdict> {
    let mut raw = raw;
    while role == Role::Request && raw.starts_with(b"\r\n") {
        raw = &raw[2..];
    }
    let mut body = raw.strip_suffix(b"\r\n\r\n")?;
    let mut lines = std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        let end = body.windows(2).position(|w| w == b"\r\n").unwrap_or(body.len());
        let line = &body[..end];
        body = body.get(end + 2..).unwrap_or_default();
        // A lone CR or LF inside a line is not clean.
        Some((!line.iter().any(|&b| b == b'\r' || b == b'\n')).then_some(line))
    });
    let start = lines.next()??;
    let mut parts = start.splitn(3, |&b| b == b' ');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    let version = |v: &[u8]| match v {
        b"HTTP/1.0" => Some(Version::Http10),
        b"HTTP/1.1" => Some(Version::Http11),
        _ => None,
    };
    let (version, side_of) = match role {
        Role::Request => {
            let target_ok = !b.is_empty()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/?".contains(&x));
            if !is_token(a) || !target_ok {
                return None;
            }
            (version(c)?, None)
        }
        Role::Response => {
            let digits = b.len() == 3 && b.iter().all(u8::is_ascii_digit) && (b'1'..=b'5').contains(&b[0]);
            if !digits || !c.iter().all(|&x| x == b'\t' || x >= b' ' && x != 0x7f) {
                return None;
            }
            let status = b.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
            (version(a)?, Some(status))
        }
    };
    let mut m = Framing {
        side: Side::Request { hosts: 0 },
        version,
        content_length: Vec::new(),
        transfer_encoding: Vec::new(),
        connection: Vec::new(),
    };
    let mut hosts = 0;
    for line in lines {
        let line = line?;
        let colon = line.iter().position(|&x| x == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) || !value.iter().all(|&x| x == b'\t' || x >= b' ' && x != 0x7f) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            m.content_length.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            m.transfer_encoding.push(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            m.connection.push(value);
        } else if name.eq_ignore_ascii_case(b"host") {
            // Host's own syntax (RFC 9110 §7.2) is not modelled: only plain reg-names are clean.
            if !trim(value).iter().all(|&x| x.is_ascii_alphanumeric() || b".-:".contains(&x)) {
                return None;
            }
            hosts += 1;
        }
    }
    m.side = match side_of {
        None => Side::Request { hosts },
        Some(status) => Side::Response { status, request: asked },
    };
    Some(classify(&m))
}
