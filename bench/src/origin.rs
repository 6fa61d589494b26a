//! The origin every system is measured against: a thread-per-connection HTTP/1.1
//! keep-alive server on loopback, inside the bench process.
//!
//! - `GET /hello` answers `hello`; `GET /hello?<tag>` answers `hello <tag>`, so
//!   the load generator can tell a crossed response from its own.
//! - `GET /big` answers the shared [`Payload`] (`Content-Length` framed).
//! - `POST /echo` reads its `Content-Length` body and answers `<length> <checksum>`
//!   (see [`Checksum`]), a sink for the upload figure.
//!
//! Anything else is a 404. Requests with a body other than `/echo` are refused (400).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

/// A deterministic, non-repeating body served by `GET /big` and uploaded to `POST /echo`.
pub struct Payload {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Their [`Checksum`].
    pub sum: u64,
}

impl Payload {
    /// `len` bytes of xorshift output (never all-zero, so an offset or dropped chunk shows).
    pub fn new(len: usize) -> Payload {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bytes.truncate(len);
        let mut sum = Checksum::default();
        sum.update(&bytes);
        Payload { sum: sum.finish(), bytes }
    }
}

/// A fast streaming 64-bit checksum over 8-byte words (FNV-style multiply), independent of
/// how the stream is split into reads.
#[derive(Default)]
pub struct Checksum {
    hash: u64,
    pending: [u8; 8],
    pending_len: usize,
    len: u64,
}

impl Checksum {
    fn word(&mut self, w: u64) {
        self.hash = (self.hash ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17);
    }

    /// Feeds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The checksum of everything fed (the trailing partial word zero-padded, then the length).
    pub fn finish(mut self) -> u64 {
        if self.pending_len > 0 {
            self.pending[self.pending_len..].fill(0);
            self.word(u64::from_le_bytes(self.pending));
        }
        self.word(self.len);
        self.hash
    }
}

/// Starts the origin on an ephemeral loopback port; returns the port. It runs until the process exits.
pub fn start(big: Arc<Payload>) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let big = big.clone();
            let _ = thread::Builder::new().stack_size(64 * 1024).spawn(move || serve(stream, &big));
        }
    });
    Ok(port)
}

/// The parts of a request head the origin needs.
struct Head {
    post: bool,
    target: String,
    content_length: usize,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let method = start.next()?;
    let target = start.next()?.to_owned();
    let mut content_length = 0;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // the bench never sends chunked bodies
        }
    }
    Some(Head { post: method == "POST", target, content_length })
}

fn serve(mut s: TcpStream, big: &Payload) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    loop {
        let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            if have == buf.len() {
                return;
            }
            match s.read(&mut buf[have..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => have += n,
            }
            continue;
        };
        let head = parse_head(&buf[..end]);
        buf.copy_within(end + 4..have, 0);
        have -= end + 4;
        let Some(head) = head else {
            let _ =
                s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        };
        let ok = match (head.post, head.target.as_str()) {
            (true, "/echo") => sink(&mut s, &mut buf, &mut have, head.content_length),
            (true, _) => false,
            (false, _) if head.content_length > 0 => false,
            (false, "/big") => reply(&mut s, "200 OK", &big.bytes),
            (false, "/hello") => reply(&mut s, "200 OK", b"hello"),
            (false, t) => match t.strip_prefix("/hello?") {
                Some(tag) => reply(&mut s, "200 OK", format!("hello {tag}").as_bytes()),
                None => reply(&mut s, "404 Not Found", b""),
            },
        };
        if !ok {
            let _ =
                s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
    }
}

fn reply(s: &mut TcpStream, status: &str, body: &[u8]) -> bool {
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", body.len());
    if body.len() <= 4096 {
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        s.write_all(&all).is_ok()
    } else {
        s.write_all(head.as_bytes()).is_ok() && s.write_all(body).is_ok()
    }
}

/// Reads a `len`-byte body (some of it may already be in `buf`) and answers `<len> <checksum>`.
fn sink(s: &mut TcpStream, buf: &mut [u8], have: &mut usize, len: usize) -> bool {
    let mut sum = Checksum::default();
    let mut left = len;
    let take = left.min(*have);
    sum.update(&buf[..take]);
    buf.copy_within(take..*have, 0);
    *have -= take;
    left -= take;
    while left > 0 {
        let want = left.min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                sum.update(&buf[..n]);
                left -= n;
            }
        }
    }
    reply(s, "200 OK", format!("{len} {:016x}", sum.finish()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_read_boundaries() {
        let p = Payload::new(1000);
        for split in [1, 3, 7, 8, 9, 500, 999] {
            let mut c = Checksum::default();
            for part in p.bytes.chunks(split) {
                c.update(part);
            }
            assert_eq!(c.finish(), p.sum);
        }
        let mut other = Payload::new(1000).bytes;
        other[500] ^= 1;
        let mut c = Checksum::default();
        c.update(&other);
        assert_ne!(c.finish(), p.sum);
    }
}
