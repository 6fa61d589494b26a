//! Messages aether writes itself: the server's replies and the client's registration request.
//!
//! Proxied messages are never re-encoded (see [`rewrite`](super::rewrite));
//! this is for the few heads aether originates: registration JSON, status
//! JSON, redirects and the error replies (400, 404, 502, 503, 504 ...).

use bytes::BytesMut;

use super::{FrameError, Role};

/// The reason phrase for the statuses aether sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A complete response aether sends on its own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'a str,
    /// The body (always sent with `Content-Length`).
    pub body: &'a [u8],
    /// Extra header fields (`Location`, `Retry-After` ...).
    pub headers: &'a [(&'a str, &'a str)],
    /// Say `Connection: close` (the caller closes after writing).
    pub close: bool,
    /// The request was HEAD: send the head only.
    pub head_only: bool,
}

impl<'a> Reply<'a> {
    /// A plain-text reply.
    pub fn text(status: u16, body: &'a str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes(),
            headers: &[],
            close: false,
            head_only: false,
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, body: &'a [u8]) -> Self {
        Self { status, content_type: "application/json", body, headers: &[], close: false, head_only: false }
    }

    /// Appends the reply to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(128 + self.body.len());
        write_parts(
            out,
            &[b"HTTP/1.1 ", self.status.to_string().as_bytes(), b" ", reason(self.status).as_bytes()],
        );
        header(out, "Content-Type", self.content_type);
        header(out, "Content-Length", &self.body.len().to_string());
        for (name, value) in self.headers {
            header(out, name, value);
        }
        if self.close {
            header(out, "Connection", "close");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(self.body);
        }
    }
}

/// Appends the reply to a message that could not be framed: its status, its reason in the body, and close.
pub fn encode_frame_error(err: FrameError, role: Role, out: &mut BytesMut) {
    let body = format!("{}: {}\n", reason(err.status(role)), err.message());
    Reply { close: true, ..Reply::text(err.status(role), &body) }.encode(out);
}

/// Appends a body-less request (the client's registration call).
pub fn encode_request(method: &str, target: &str, host: &str, headers: &[(&str, &str)], out: &mut BytesMut) {
    write_parts(out, &[method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1"]);
    header(out, "Host", host);
    for (name, value) in headers {
        header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_parts(out: &mut BytesMut, parts: &[&[u8]]) {
    parts.iter().for_each(|p| out.extend_from_slice(p));
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut BytesMut, name: &str, value: &str) {
    write_parts(out, &[name.as_bytes(), b": ", value.as_bytes()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::http::{Decoder, Frame, Method, RequestInfo};

    #[test]
    fn replies_parse_back_with_their_body() {
        let mut out = BytesMut::new();
        let headers = [("Retry-After", "5")];
        Reply { headers: &headers, close: true, ..Reply::text(503, "tunnel offline\n") }.encode(&mut out);
        let req = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };
        let mut dec = Decoder::response(&Limits::default(), req);
        let Some(Frame::Head(head)) = dec.decode(&mut out).unwrap() else { panic!("no head") };
        assert_eq!(head.status(), 503);
        assert!(!head.keep_alive());
        assert!(head.raw().windows(14).any(|w| w == b"Retry-After: 5"));
        assert_eq!(dec.decode(&mut out).unwrap(), Some(Frame::Body("tunnel offline\n".into())));
        assert_eq!(dec.decode(&mut out).unwrap(), Some(Frame::End { keep_alive: false }));
    }

    fn status_line(status: u16) -> String {
        let mut out = BytesMut::new();
        Reply::text(status, "").encode(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.split("\r\n").next().unwrap_or_default().to_string()
    }

    #[test]
    fn status_lines_carry_the_rfc_reason_phrases() {
        // RFC 9110 §15 (429 and 431: RFC 6585 §4, §5), for every status aether sends.
        let rfc = [
            (100, "Continue"),
            (101, "Switching Protocols"),
            (200, "OK"),
            (204, "No Content"),
            (302, "Found"),
            (400, "Bad Request"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (409, "Conflict"),
            (414, "URI Too Long"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, phrase) in rfc {
            assert_eq!(status_line(status), format!("HTTP/1.1 {status} {phrase}"));
        }
        // RFC 9112 §4: the reason phrase may be empty, the space before it may not.
        assert_eq!(status_line(299), "HTTP/1.1 299 ");
    }

    #[test]
    fn head_only_keeps_length_drops_body() {
        let mut out = BytesMut::new();
        Reply { head_only: true, ..Reply::json(200, b"{}") }.encode(&mut out);
        assert!(out.ends_with(b"Content-Length: 2\r\n\r\n"));
    }

    #[test]
    fn frame_errors_answer_with_their_status() {
        let mut out = BytesMut::new();
        encode_frame_error(FrameError::RequestLineTooLong, Role::Request, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 414 URI Too Long\r\n"));
        // The sender learns the connection ends here (SPEC §5: refused, and the connection closed).
        let mut parse = out.clone();
        let mut dec = Decoder::response(
            &Limits::default(),
            RequestInfo { method: Method::Get, upgrade: false, keep_alive: true },
        );
        let Some(Frame::Head(head)) = dec.decode(&mut parse).unwrap() else { panic!("no head") };
        assert_eq!(head.field("connection"), Some(&b"close"[..]));
        assert!(!head.keep_alive());
        assert!(out.ends_with(b"URI Too Long: request line too long\n"));
        let mut out = BytesMut::new();
        encode_frame_error(FrameError::InvalidChunkSize, Role::Response, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n"));
    }

    #[test]
    fn request_is_well_formed() {
        let mut out = BytesMut::new();
        encode_request("GET", "/?new=myapp", "example.com:8080", &[("Aether-Tunnel-Token", "ab")], &mut out);
        let mut dec = Decoder::request(&Limits::default());
        let Some(Frame::Head(head)) = dec.decode(&mut out).unwrap() else { panic!("no head") };
        assert_eq!(head.target(), b"/?new=myapp");
        assert_eq!(head.host(), Some(&b"example.com:8080"[..]));
        assert_eq!(dec.decode(&mut out).unwrap(), Some(Frame::End { keep_alive: true }));
    }
}
