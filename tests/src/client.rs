//! A raw-socket HTTP/1.1 client: tests decide every byte that is written, and
//! responses are read by their framing (Content-Length, chunked, close, or no
//! body for HEAD / 1xx / 204 / 304), so keep-alive and pipelining are visible.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long any read or write on a test socket may block (stretched by [`slack`](crate::slack)).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body and how it is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body and no framing header.
    None,
    /// `Content-Length` framing.
    Length(Vec<u8>),
    /// `Transfer-Encoding: chunked`, one chunk per element (empty elements are skipped).
    Chunked(Vec<Vec<u8>>),
}

/// A request to encode; the `Host` header is added unless the test set one.
#[derive(Debug, Clone)]
pub struct Req {
    /// The method, as written.
    pub method: String,
    /// The request target, as written.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'static str,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Req {
    /// A request with no body.
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.into(),
            target: target.into(),
            version: "HTTP/1.1",
            headers: Vec::new(),
            body: Body::None,
        }
    }

    /// A GET request.
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets a Content-Length body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Length(body.into());
        self
    }

    /// Sets a chunked body.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.body = Body::Chunked(chunks);
        self
    }

    /// Makes it an HTTP/1.0 request.
    pub fn http10(mut self) -> Self {
        self.version = "HTTP/1.0";
        self
    }

    /// The request's bytes; `host` goes into a `Host` field unless one is set or `host` is empty.
    pub fn encode(&self, host: &str) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version).into_bytes();
        let has_host = self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
        if !has_host && !host.is_empty() {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        match &self.body {
            Body::None => out.extend_from_slice(b"\r\n"),
            Body::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Body::Chunked(chunks) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }
}

/// How a response's body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by the rules (HEAD, 1xx, 204, 304).
    NoBody,
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Read until the connection closed.
    Close,
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
    /// The body's bytes exactly as received (chunk lines, extensions and trailers included).
    pub raw_body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// Status codes of interim (1xx, not 101) responses read before this one.
    pub interim: Vec<u16>,
    /// How the body was delimited.
    pub framing: Framing,
}

impl Response {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of the header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What an echo from [`Origin`](crate::Origin) says the origin received in header `name`.
    pub fn echoed(&self, name: &str) -> Option<&str> {
        self.header(&format!("x-echo-h-{}", name.to_ascii_lowercase()))
    }

    /// Whether the server said it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One visitor connection; bytes read past a response stay buffered for the next.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` with [`IO_TIMEOUT`] on reads and writes; panics if it cannot.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Conn::from_stream(stream)
    }

    /// Wraps a connected stream, setting [`IO_TIMEOUT`] and no-delay.
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(crate::slack(IO_TIMEOUT))).expect("set read timeout");
        stream.set_write_timeout(Some(crate::slack(IO_TIMEOUT))).expect("set write timeout");
        let _ = stream.set_nodelay(true);
        Conn { stream, buf: Vec::new() }
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Changes the read timeout to `slack(t)`.
    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(crate::slack(t))).expect("set read timeout");
    }

    /// Writes all of `bytes`; panics on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Writes all of `bytes`.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes the write half (the peer reads end of stream).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Closes abortively (`SO_LINGER` 0): the peer gets a reset, the one leave it can tell from a half-close.
    pub fn abort(self) {
        let linger = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        linger.unwrap_or_else(|e| panic!("setsockopt(SO_LINGER): {e}"));
    }

    /// Sends `req` with `Host: host` and reads its response; panics on failure.
    pub fn exchange(&mut self, host: &str, req: &Req) -> Response {
        self.send(&req.encode(host));
        self.response(&req.method)
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ensures at least `n` bytes are buffered.
    fn need(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-message"));
            }
        }
        Ok(())
    }

    /// Takes one `\r\n`-terminated line (terminator included) off the buffer.
    fn take_crlf_line(&mut self) -> io::Result<Vec<u8>> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.drain(..from + i + 2).collect());
            }
            from = self.buf.len().saturating_sub(1);
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-line"));
            }
        }
    }

    /// Reads one `\n`-terminated line (raw mode, e.g. after an upgrade); returns it without `\n`.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..from + i + 1).collect();
                return Ok(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            from = self.buf.len();
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a line ended"));
            }
        }
    }

    /// Reads exactly `n` bytes (raw mode).
    pub fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.need(n)?;
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads whatever arrives until the peer closes (or the read timeout).
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// True if the peer closes (end of stream or reset) within `slack(limit)` without sending anything more.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.set_read_timeout(limit);
        let r = self.fill();
        self.set_read_timeout(IO_TIMEOUT);
        match r {
            Ok(n) => n == 0,
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        }
    }

    /// Reads the response to a request with `method`; panics with the reason on failure.
    pub fn response(&mut self, method: &str) -> Response {
        self.try_response(method).unwrap_or_else(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                let t = self.stream.read_timeout().ok().flatten().unwrap_or(IO_TIMEOUT);
                panic!("no response to {method} within {t:?}")
            }
            _ => panic!("reading the response to {method}: {e}"),
        })
    }

    /// Reads the response to a request with `method`, after any interim 1xx responses.
    pub fn try_response(&mut self, method: &str) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let (status, headers) = self.read_head()?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let mut resp = Response {
                status,
                headers,
                body: Vec::new(),
                raw_body: Vec::new(),
                trailers: Vec::new(),
                interim,
                framing: Framing::NoBody,
            };
            if method.eq_ignore_ascii_case("HEAD") || matches!(status, 101 | 204 | 304) {
                return Ok(resp);
            }
            let chunked = resp.header_all("transfer-encoding").last().is_some_and(|v| {
                v.rsplit(',').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
            if chunked {
                resp.framing = Framing::Chunked;
                self.read_chunked(&mut resp)?;
            } else if let Some(len) = resp.header("content-length") {
                let len: usize =
                    len.trim().parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
                resp.framing = Framing::Length;
                resp.body = self.read_exact(len)?;
                resp.raw_body = resp.body.clone();
            } else {
                resp.framing = Framing::Close;
                resp.body = self.read_to_end()?;
                resp.raw_body = resp.body.clone();
            }
            return Ok(resp);
        }
    }

    /// Reads a final response's head only (interim 1xx responses skipped); the body stays unread.
    pub fn response_head(&mut self) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let (status, headers) = self.read_head()?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            return Ok(Response {
                status,
                headers,
                body: Vec::new(),
                raw_body: Vec::new(),
                trailers: Vec::new(),
                interim,
                framing: Framing::NoBody,
            });
        }
    }

    /// Reads one chunk of a chunked body whose head was read: its data, or `None` after the
    /// last chunk (trailers consumed).
    pub fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line = self.take_crlf_line()?;
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let size = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk line {text:?}")))?;
        if size == 0 {
            while self.take_crlf_line()? != b"\r\n" {}
            return Ok(None);
        }
        let data = self.read_exact(size + 2)?;
        if &data[size..] != b"\r\n" {
            return Err(bad("chunk data not followed by CRLF"));
        }
        Ok(Some(data[..size].to_vec()))
    }

    /// Reads a response head: status and fields.
    fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 256];
            let mut r = httparse::Response::new(&mut slots);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    // httparse takes a bare LF as a line end; RFC 9112 §2.2 has servers send CRLF.
                    let bare_lf =
                        (0..len).find(|&i| self.buf[i] == b'\n' && (i == 0 || self.buf[i - 1] != b'\r'));
                    if let Some(at) = bare_lf {
                        let seen = String::from_utf8_lossy(&self.buf[..len.min(200)]).into_owned();
                        return Err(bad(format!("bare LF at byte {at} of the response head: {seen:?}")));
                    }
                    let status = r.code.unwrap_or(0);
                    let headers = r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    self.buf.drain(..len);
                    return Ok((status, headers));
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        let seen = String::from_utf8_lossy(&self.buf).into_owned();
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("closed before a response head (got {seen:?})"),
                        ));
                    }
                }
                Err(e) => {
                    let seen = String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]).into_owned();
                    return Err(bad(format!("bad response head ({e}): {seen:?}")));
                }
            }
        }
    }

    fn read_chunked(&mut self, resp: &mut Response) -> io::Result<()> {
        loop {
            let line = self.take_crlf_line()?;
            resp.raw_body.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = text.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk line {text:?}")))?;
            if size == 0 {
                loop {
                    let t = self.take_crlf_line()?;
                    resp.raw_body.extend_from_slice(&t);
                    if t == b"\r\n" {
                        return Ok(());
                    }
                    let t = String::from_utf8_lossy(&t[..t.len() - 2]).into_owned();
                    let (n, v) = t.split_once(':').ok_or_else(|| bad(format!("bad trailer {t:?}")))?;
                    resp.trailers.push((n.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let data = self.read_exact(size + 2)?;
            if &data[size..] != b"\r\n" {
                return Err(bad("chunk data not followed by CRLF"));
            }
            resp.body.extend_from_slice(&data[..size]);
            resp.raw_body.extend_from_slice(&data);
        }
    }
}

/// Sends `req` on a fresh connection to `addr` with `Host: host` and reads the response.
pub fn fetch(addr: SocketAddr, host: &str, req: &Req) -> Response {
    Conn::open(addr).exchange(host, req)
}

/// A loopback server that writes `bytes` to its first connection and closes it (for the client's tests).
#[cfg(test)]
pub(crate) fn serve_bytes(bytes: &'static [u8]) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(bytes).unwrap();
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pipelined_responses_by_framing() {
        let addr = serve_bytes(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\nhi\r\n0\r\nT: v\r\n\r\n\
              HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\
              HTTP/1.1 200 OK\r\n\r\nrest",
        );
        let mut c = Conn::open(addr);
        let r = c.response("POST");
        assert_eq!((r.status, r.body.as_slice(), r.interim.as_slice()), (200, &b"abc"[..], &[100][..]));
        let r = c.response("GET");
        assert_eq!((r.body.as_slice(), r.framing), (&b"hi"[..], Framing::Chunked));
        assert_eq!(r.raw_body, b"2;x=1\r\nhi\r\n0\r\nT: v\r\n\r\n");
        assert_eq!(r.trailers, vec![("T".to_owned(), "v".to_owned())]);
        assert_eq!(c.response("GET").framing, Framing::NoBody);
        assert_eq!(c.response("HEAD").framing, Framing::NoBody);
        let r = c.response("GET");
        assert_eq!((r.body.as_slice(), r.framing), (&b"rest"[..], Framing::Close));
    }

    #[test]
    fn encodes_requests() {
        let r = Req::new("POST", "/x").header("A", "1").chunked(vec![b"ab".to_vec(), vec![], b"c".to_vec()]);
        assert_eq!(
            r.encode("h:1"),
            b"POST /x HTTP/1.1\r\nHost: h:1\r\nA: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
        );
        assert_eq!(Req::get("/").http10().encode(""), b"GET / HTTP/1.0\r\n\r\n");
    }
}
