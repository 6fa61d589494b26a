//! A message head: parsed once, framing facts read off.
//!
//! Once [`HeadScan`](super::scan::HeadScan) has found the blank line that ends a head (and
//! enforced the size and line rules), [`Head::parse`] calls httparse once and records what
//! framing needs; everything else stays in the raw bytes.

use std::mem::MaybeUninit;

use bytes::Bytes;

use super::{FrameError, Role};
use crate::limits::{HEADER_SLOTS, Limits};

/// The HTTP versions a head can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0: connections close unless `keep-alive` is asked for.
    Http10,
    /// HTTP/1.1: connections persist unless `close` is said.
    Http11,
}

/// A request method, by the distinctions framing and routing make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: its response has no body.
    Head,
    /// `CONNECT`: a 2xx response switches to raw bytes.
    Connect,
    /// Any other method (its exact bytes are in the raw head).
    Other,
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ended by the zero chunk and trailers.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// What a response decoder must know about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestInfo {
    /// The request's method.
    pub method: Method,
    /// The request asked to switch protocols (`Connection: upgrade` and `Upgrade`).
    pub upgrade: bool,
    /// The request allows the connection to persist.
    pub keep_alive: bool,
}

/// A byte range inside [`Head::raw`].
type Span = (usize, usize);

/// A complete, validated message head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    raw: Bytes,
    version: Version,
    method: Option<Method>,
    target: Span,
    status: u16,
    host: Option<Span>,
    upgrade: Option<Span>,
    body: BodyKind,
    close: bool,
    keep_alive: bool,
    conn_upgrade: bool,
    expect_continue: bool,
    /// Each field's name and value, as spans of `raw`, in order: iterating them needs no re-parse.
    fields: Vec<(Span, Span)>,
}

impl Head {
    /// The exact bytes of the head as received, blank line included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The message's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request method (`None` for a response).
    pub fn method(&self) -> Option<Method> {
        self.method
    }

    /// The request target exactly as sent (empty for a response).
    pub fn target(&self) -> &[u8] {
        &self.raw[self.target.0..self.target.1]
    }

    /// The response status code (0 for a request).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `Host` header's value, if there is exactly one.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|(a, b)| &self.raw[a..b])
    }

    /// The `Upgrade` header's value, if any.
    pub fn upgrade(&self) -> Option<&[u8]> {
        self.upgrade.map(|(a, b)| &self.raw[a..b])
    }

    /// How the body is delimited, by this head alone (responses refine it with the request: see `Decoder`).
    pub fn body(&self) -> BodyKind {
        self.body
    }

    /// The message allows its connection to carry another (version and `Connection` rules).
    pub fn keep_alive(&self) -> bool {
        !self.close && (self.version == Version::Http11 || self.keep_alive)
    }

    /// The request carries `Expect: 100-continue` and is HTTP/1.1 (an HTTP/1.0 one is ignored, RFC 9110 §10.1.1).
    pub fn expects_continue(&self) -> bool {
        self.expect_continue && self.version == Version::Http11
    }

    /// The value of the first field called `name` (any case).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        let mut found = None;
        for_each_field(self, |n, v| {
            if found.is_none() && n.eq_ignore_ascii_case(name.as_bytes()) {
                found = Some(v);
            }
        });
        found
    }

    /// How a final (non-1xx) response's body is delimited, given the request it answers (RFC 9112 §6.3).
    pub fn response_body(&self, request: &RequestInfo) -> BodyKind {
        let connect_ok = request.method == Method::Connect && (200..300).contains(&self.status);
        if request.method == Method::Head || self.status == 204 || self.status == 304 || connect_ok {
            BodyKind::Empty
        } else {
            self.body
        }
    }

    /// What a response decoder needs to know about this request.
    pub fn request_info(&self) -> RequestInfo {
        RequestInfo {
            method: self.method.unwrap_or(Method::Other),
            upgrade: self.conn_upgrade && self.upgrade.is_some(),
            keep_alive: self.keep_alive(),
        }
    }

    /// Parses a complete head (blank line included) and applies the framing rules of `role`.
    pub fn parse(raw: Bytes, role: Role, limits: &Limits) -> Result<Head, FrameError> {
        let n = limits.header_slots();
        // Uninitialised slots: filling 256 of them would cost more than parsing a small head.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
        let mut head = Head {
            raw: raw.clone(),
            version: Version::Http11,
            method: None,
            target: (0, 0),
            status: 0,
            host: None,
            upgrade: None,
            body: BodyKind::Empty,
            close: false,
            keep_alive: false,
            conn_upgrade: false,
            expect_continue: false,
            fields: Vec::new(),
        };
        let span = |s: &[u8]| span_in(&raw, s).ok_or(FrameError::InvalidStartLine);
        let (version, headers) = match role {
            Role::Request => {
                let mut req = httparse::Request::new(&mut []);
                complete(req.parse_with_uninit_headers(&raw, &mut slots[..n]), raw.len())?;
                // A complete parse always has a method and a target; their absence is refused, not defaulted.
                let (Some(method), Some(path)) = (req.method, req.path) else {
                    return Err(FrameError::InvalidStartLine);
                };
                head.method = Some(match method {
                    "GET" => Method::Get,
                    "HEAD" => Method::Head,
                    "CONNECT" => Method::Connect,
                    _ => Method::Other,
                });
                head.target = span(path.as_bytes())?;
                (req.version, req.headers)
            }
            Role::Response => {
                let mut resp = httparse::Response::new(&mut []);
                let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                    &mut resp,
                    &raw,
                    &mut slots[..n],
                );
                complete(parsed, raw.len())?;
                head.status = resp.code.ok_or(FrameError::InvalidStartLine)?;
                (resp.version, resp.headers)
            }
        };
        head.version = if version == Some(0) { Version::Http10 } else { Version::Http11 };
        let mut framing = Framing::default();
        let mut hosts = 0;
        head.fields.reserve_exact(headers.len());
        for h in headers.iter() {
            let name = h.name.as_bytes();
            head.fields.push((span(name)?, span(h.value)?));
            if name.eq_ignore_ascii_case(b"content-length") {
                framing.add_length(h.value)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                framing.add_codings(h.value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for opt in list_items(h.value) {
                    head.close |= opt.eq_ignore_ascii_case(b"close");
                    head.keep_alive |= opt.eq_ignore_ascii_case(b"keep-alive");
                    head.conn_upgrade |= opt.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
                head.host = Some(span(h.value)?);
            } else if name.eq_ignore_ascii_case(b"upgrade") && !h.value.is_empty() {
                head.upgrade = Some(span(h.value)?);
            } else if name.eq_ignore_ascii_case(b"expect") {
                head.expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        match role {
            Role::Request => {
                if hosts > 1 {
                    return Err(FrameError::DuplicateHost);
                }
                if hosts == 0 && head.version == Version::Http11 {
                    return Err(FrameError::MissingHost);
                }
                head.body = framing.request_body(head.version)?;
            }
            Role::Response => {
                head.body = framing.response_body()?;
                // A response framed by Transfer-Encoding despite a Content-Length is read by TE;
                // the connection cannot be trusted afterwards.
                head.close |= framing.te && framing.length.is_some();
                // RFC 9112 §6.1: after an HTTP/1.0 message with Transfer-Encoding, MUST close.
                head.close |= framing.te && head.version == Version::Http10;
            }
        }
        Ok(head)
    }
}

/// Where `part` sits inside `raw`, if it is a sub-slice of it (httparse hands back slices of its input).
fn span_in(raw: &[u8], part: &[u8]) -> Option<Span> {
    let start = (part.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= raw.len()).then_some((start, end))
}

fn complete(status: httparse::Result<usize>, len: usize) -> Result<(), FrameError> {
    match status {
        Ok(httparse::Status::Complete(n)) if n == len => Ok(()),
        // HeadScan found the blank line, so httparse must agree on where the head ends.
        Ok(_) => Err(FrameError::InvalidStartLine),
        Err(e) => Err(match e {
            httparse::Error::HeaderName => FrameError::InvalidHeaderName,
            httparse::Error::HeaderValue => FrameError::InvalidHeaderValue,
            httparse::Error::NewLine => FrameError::BareLf,
            httparse::Error::Token => FrameError::InvalidMethod,
            httparse::Error::TooManyHeaders => FrameError::TooManyHeaders,
            httparse::Error::Version => FrameError::UnsupportedVersion,
            httparse::Error::Status => FrameError::InvalidStartLine,
        }),
    }
}

/// The items of a comma-separated header list, trimmed, empty ones skipped.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|item| item.trim_ascii()).filter(|item| !item.is_empty())
}

/// What `Content-Length` and `Transfer-Encoding` said, across all their fields.
#[derive(Default)]
struct Framing {
    length: Option<u64>,
    te: bool,
    chunked_count: usize,
    last_chunked: bool,
    unknown_coding: bool,
}

impl Framing {
    fn add_length(&mut self, value: &[u8]) -> Result<(), FrameError> {
        let mut any = false;
        for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(FrameError::InvalidContentLength);
            }
            let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if self.length.is_some_and(|m| m != n) {
                return Err(FrameError::ConflictingContentLength);
            }
            self.length = Some(n);
            any = true;
        }
        if any { Ok(()) } else { Err(FrameError::InvalidContentLength) }
    }

    fn add_codings(&mut self, value: &[u8]) {
        self.te = true;
        for item in list_items(value) {
            // A coding may carry parameters (`gzip;q=...` is not one, but `;` starts them); the name decides.
            let name = item.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            self.chunked_count += usize::from(chunked);
            self.last_chunked = chunked;
            self.unknown_coding |= !chunked
                && !["gzip", "x-gzip", "deflate", "compress", "x-compress"]
                    .iter()
                    .any(|k| name.eq_ignore_ascii_case(k.as_bytes()));
        }
    }

    fn request_body(&self, version: Version) -> Result<BodyKind, FrameError> {
        if self.te {
            if version == Version::Http10 {
                return Err(FrameError::TransferEncodingInHttp10);
            }
            // Both framings at once is the smuggling signal: refuse it before judging the codings.
            if self.length.is_some() {
                return Err(FrameError::LengthWithTransferEncoding);
            }
            if self.unknown_coding {
                return Err(FrameError::UnknownTransferCoding);
            }
            if self.chunked_count != 1 || !self.last_chunked {
                return Err(FrameError::ChunkedNotLast);
            }
            return Ok(BodyKind::Chunked);
        }
        Ok(self.length.map_or(BodyKind::Empty, BodyKind::Length))
    }

    fn response_body(&self) -> Result<BodyKind, FrameError> {
        if self.te {
            // RFC 9112 §6.3: chunked last means chunked; any other coding is read until close.
            let chunked = self.chunked_count == 1 && self.last_chunked;
            return Ok(if chunked { BodyKind::Chunked } else { BodyKind::UntilClose });
        }
        Ok(self.length.map_or(BodyKind::UntilClose, BodyKind::Length))
    }
}

/// The header fields of a validated head, in order, from the spans its parse recorded.
pub(crate) fn for_each_field<'h>(head: &'h Head, mut f: impl FnMut(&'h [u8], &'h [u8])) {
    let raw = head.raw();
    for &((n0, n1), (v0, v1)) in &head.fields {
        f(&raw[n0..n1], &raw[v0..v1]);
    }
}
