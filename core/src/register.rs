//! The client's registration call: the request it writes and the reading of
//! the server's reply into a [`Registration`] or a [`RegisterFailure`].
//!
//! Works against aether, localtunnel (no `token`) and the seed's server. It
//! does not decide when to call or what to do with a failure (see
//! [`supervisor`](crate::supervisor)).

use std::time::Duration;

use bytes::BytesMut;

use crate::front::TOKEN_HEADER;
use crate::http::encode::encode_request;
use crate::http::{Decoder, Frame, Method, RequestInfo};
use crate::hub::RegistrationReply;
use crate::id::{Token, TunnelId};
use crate::limits::Limits;
use crate::supervisor::{RegisterFailure, Registration};

/// Largest reply body read; a registration reply is a few hundred bytes.
pub const MAX_REPLY: usize = 64 * 1024;

/// Appends the registration request: `GET /?new[=<name>]`, with the token header to resume.
pub fn encode_call(host: &str, name: Option<&TunnelId>, resume: Option<&Token>, out: &mut BytesMut) {
    let target = name.map_or_else(|| "/?new".to_owned(), |n| format!("/?new={n}"));
    let token = resume.map(Token::to_hex);
    let mut headers = vec![("Connection", "close"), ("User-Agent", "aether")];
    if let Some(t) = &token {
        headers.push((TOKEN_HEADER, t));
    }
    encode_request("GET", &target, host, &headers, out);
}

/// Reads one registration reply from the bytes of the connection.
#[derive(Debug)]
pub struct ReplyReader {
    dec: Decoder,
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Default for ReplyReader {
    fn default() -> Self {
        let get = RequestInfo { method: Method::Get, upgrade: false, keep_alive: false };
        Self {
            dec: Decoder::response(&Limits::default(), get),
            status: 0,
            retry_after: None,
            body: Vec::new(),
        }
    }
}

impl ReplyReader {
    /// Consumes bytes from `buf`; `Ok(None)`: read more (or call again with `eof` once closed).
    pub fn feed(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Registration>, RegisterFailure> {
        loop {
            let frame = if eof { self.dec.decode_eof(buf) } else { self.dec.decode(buf) };
            match frame.map_err(|_| RegisterFailure::BadReply)? {
                None if eof => return Err(RegisterFailure::BadReply),
                None => return Ok(None),
                Some(Frame::Head(head)) => {
                    self.status = head.status();
                    self.retry_after = head
                        .field("retry-after")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse().ok())
                        .map(Duration::from_secs);
                }
                Some(Frame::Interim(_)) => {}
                Some(Frame::Body(bytes)) => {
                    if self.body.len() + bytes.len() > MAX_REPLY {
                        return Err(RegisterFailure::BadReply);
                    }
                    self.body.extend_from_slice(&bytes);
                }
                Some(Frame::End { .. }) => return self.finish().map(Some),
                Some(Frame::Switched) => return Err(RegisterFailure::BadReply),
            }
        }
    }

    fn finish(&mut self) -> Result<Registration, RegisterFailure> {
        if !(200..300).contains(&self.status) {
            // A chunked body keeps its chunk lines here; only the message text matters.
            let message = String::from_utf8_lossy(&self.body).trim().chars().take(300).collect();
            return Err(RegisterFailure::Rejected {
                status: self.status,
                message,
                retry_after: self.retry_after,
            });
        }
        let reply: RegistrationReply =
            serde_json::from_slice(&self.body).map_err(|_| RegisterFailure::BadReply)?;
        Ok(Registration {
            id: reply.id,
            url: reply.url,
            port: reply.port,
            max_conn_count: reply.max_conn_count,
            token: reply.token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_split(reply: &[u8], split: usize) -> Result<Registration, RegisterFailure> {
        let mut r = ReplyReader::default();
        let mut buf = BytesMut::new();
        for piece in reply.chunks(split) {
            buf.extend_from_slice(piece);
            if let Some(reg) = r.feed(&mut buf, false)? {
                return Ok(reg);
            }
        }
        r.feed(&mut buf, true)?.ok_or(RegisterFailure::BadReply)
    }

    #[test]
    fn call_names_the_tunnel_and_carries_the_token() {
        let mut out = BytesMut::new();
        let id = TunnelId::parse("myapp").unwrap();
        encode_call("srv:8080", Some(&id), Some(&Token::from_bytes([0xab; 16])), &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("GET /?new=myapp HTTP/1.1\r\nHost: srv:8080\r\n"), "{text}");
        assert!(text.contains(&format!("{TOKEN_HEADER}: {}\r\n", "ab".repeat(16))));
        let mut out = BytesMut::new();
        encode_call("srv", None, None, &mut out);
        assert!(out.starts_with(b"GET /?new HTTP/1.1\r\n") && !out.windows(5).any(|w| w == b"Aethe"));
    }

    #[test]
    fn replies_from_aether_localtunnel_and_errors() {
        let body = r#"{"id":"myapp","port":62322,"max_conn_count":10,"url":"http://h/myapp","token":"000102030405060708090a0b0c0d0e0f"}"#;
        let ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        for split in [1, 5, 1000] {
            let reg = read_split(ok.as_bytes(), split).unwrap();
            assert_eq!((reg.id.as_str(), reg.port, reg.max_conn_count), ("myapp", 62322, 10));
            assert!(reg.token.is_some());
        }
        // localtunnel: no token, close-delimited, extra fields.
        let lt = "HTTP/1.1 200 OK\r\n\r\n{\"id\":\"abcd\",\"port\":40001,\"max_conn_count\":10,\"url\":\"https://abcd.lt.example\",\"cached_url\":null}";
        let reg = read_split(lt.as_bytes(), 7).unwrap();
        assert_eq!((reg.port, reg.token), (40001, None));
        let taken = "HTTP/1.1 409 Conflict\r\nRetry-After: 42\r\nContent-Length: 6\r\n\r\nheld\r\n";
        assert_eq!(
            read_split(taken.as_bytes(), 3),
            Err(RegisterFailure::Rejected {
                status: 409,
                message: "held".into(),
                retry_after: Some(Duration::from_secs(42))
            })
        );
        assert_eq!(
            read_split(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 4),
            Err(RegisterFailure::BadReply)
        );
        assert_eq!(read_split(b"SSH-2.0-OpenSSH\r\n", 4), Err(RegisterFailure::BadReply));
        assert_eq!(
            read_split(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{", 4),
            Err(RegisterFailure::BadReply)
        );
    }
}
