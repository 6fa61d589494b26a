//! The service being shared: a real HTTP/1.1 server on `127.0.0.1:0`, one
//! thread per connection, keep-alive, with these endpoints (any method):
//!
//! | path | answer |
//! | --- | --- |
//! | any request with `Upgrade` | `101`, then raw bytes (see [`upgraded`]: echo, last word, hang up first) |
//! | `/download/<n>` | `n` bytes of [`pattern`]`(n, n)`, Content-Length, `X-Sum` |
//! | `/chunked` | [`CHUNKED_RAW`] as a chunked body (an extension and a trailer) |
//! | `/close` | [`CLOSE_BODY`] with no Content-Length, then closes |
//! | `/status/<code>` | that status; no body for 204 and 304 (304 carries an `ETag`) |
//! | `/sse` | `text/event-stream`, one chunk per [`Origin::sse_send`], ends on [`Origin::sse_end`] |
//! | `/hold` | waits until [`Origin::release`], then 200 |
//! | anything else | echo (below) |
//!
//! The echo answers 200 with the request's body (decoded if chunked) and
//! `X-Echo-Method`, `X-Echo-Target`, `X-Echo-Version`, `X-Echo-Framing`
//! (`length`/`chunked`/`none`), `X-Echo-Len`, `X-Echo-Sum` (a [`checksum`]
//! in hex), `X-Echo-Trailers`, and one `X-Echo-H-<name>` per received field.
//! Request headers change it: `X-Sink: 1` drops the body from the answer,
//! `X-Want-Raw: 1` answers the body bytes exactly as they arrived (chunk lines
//! included). `Expect: 100-continue` gets an interim `100 Continue` first, unless
//! `X-No-Continue: 1` is sent (the origin then just waits for the body).
//! `X-Reject-Early: <code>` answers that final status at once, without reading
//! the body, and closes.
//!
//! Every request head is counted by target ([`Origin::hits`]), and every
//! request whose body was read to its end is counted too ([`Origin::completed`]).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{checksum, pattern};

pub mod upgraded;

/// The raw chunked body `/chunked` sends: a chunk extension and a trailer included.
pub const CHUNKED_RAW: &[u8] =
    b"5\r\nalpha\r\n4;note=x\r\nbeta\r\n5\r\ngamma\r\n0\r\nX-Trailer: done\r\n\r\n";
/// `CHUNKED_RAW` without its framing.
pub const CHUNKED_DATA: &[u8] = b"alphabetagamma";
/// The body `/close` sends before closing.
pub const CLOSE_BODY: &[u8] = b"this body ends when the connection does\n";
/// How long `/sse` and `/hold` wait for a signal before giving up.
const SIGNAL_WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Signals {
    sse: VecDeque<Option<String>>,
    released: bool,
}

#[derive(Default)]
struct State {
    hits: Mutex<HashMap<String, usize>>,
    requests: AtomicUsize,
    completed: AtomicUsize,
    connections: AtomicUsize,
    held: AtomicUsize,
    signals: Mutex<Signals>,
    signal: Condvar,
    stopping: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
    /// What `/upgrade/hang-up-first` read after its own half-close, once the peer's end of stream came.
    heard_after_hang_up: Mutex<Option<Vec<u8>>>,
}

impl State {
    fn signals(&self) -> MutexGuard<'_, Signals> {
        self.signals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running origin; dropping it closes its listener and every connection.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin on `127.0.0.1:0`.
    pub fn start() -> Origin {
        Origin::bind(0).expect("bind the origin")
    }

    /// Starts an origin on `127.0.0.1:port`.
    pub fn bind(port: u16) -> io::Result<Origin> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = std::thread::Builder::new().name("origin-accept".into()).spawn(move || {
            for stream in listener.incoming() {
                if st.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                st.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    st.streams.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                }
                let st = st.clone();
                let _ = std::thread::Builder::new().name("origin-conn".into()).spawn(move || {
                    let _ = serve_conn(stream, &st);
                });
            }
        })?;
        Ok(Origin { addr, state, accept: Some(accept) })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Request heads received for exactly this target.
    pub fn hits(&self, target: &str) -> usize {
        self.state.hits.lock().unwrap_or_else(|e| e.into_inner()).get(target).copied().unwrap_or(0)
    }

    /// Every target received, with how many times.
    pub fn all_hits(&self) -> HashMap<String, usize> {
        self.state.hits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Request heads received in total.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests whose body was read to its end.
    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// What the last `/upgrade/hang-up-first` connection received after shutting down its sending
    /// side, once the peer ended its side too (`None` until then).
    pub fn heard_after_hang_up(&self) -> Option<Vec<u8>> {
        self.state.heard_after_hang_up.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `/hold` requests waiting now.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets every `/hold` request (now and later) answer.
    pub fn release(&self) {
        self.state.signals().released = true;
        self.state.signal.notify_all();
    }

    /// Makes the `/sse` stream send one event with `data`.
    pub fn sse_send(&self, data: &str) {
        self.state.signals().sse.push_back(Some(data.to_owned()));
        self.state.signal.notify_all();
    }

    /// Makes the `/sse` stream end its body.
    pub fn sse_end(&self) {
        self.state.signals().sse.push_back(None);
        self.state.signal.notify_all();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        self.state.signal.notify_all();
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in self.state.streams.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A parsed request head.
struct ReqHead {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, String)>,
}

impl ReqHead {
    fn field(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

struct Wire<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
}

impl Wire<'_> {
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn need(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.drain(..i + 2).collect());
            }
            if self.buf.len() > 64 * 1024 || self.fill()? == 0 {
                return Err(io::ErrorKind::InvalidData.into());
            }
        }
    }

    /// `Ok(None)`: the peer closed between requests.
    fn head(&mut self) -> io::Result<Option<ReqHead>> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 256];
            let mut r = httparse::Request::new(&mut slots);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = ReqHead {
                        method: r.method.unwrap_or_default().to_owned(),
                        target: r.path.unwrap_or_default().to_owned(),
                        minor: r.version.unwrap_or(1),
                        headers: r
                            .headers
                            .iter()
                            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                            .collect(),
                    };
                    self.buf.drain(..len);
                    return Ok(Some(head));
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        return Ok(None);
                    }
                }
                Err(_) => return Err(io::ErrorKind::InvalidData.into()),
            }
        }
    }
}

/// A request body: decoded bytes, raw bytes, framing name, trailers.
struct ReqBody {
    data: Vec<u8>,
    raw: Vec<u8>,
    framing: &'static str,
    trailers: Vec<String>,
}

fn read_body(w: &mut Wire<'_>, head: &ReqHead) -> io::Result<ReqBody> {
    let mut body = ReqBody { data: Vec::new(), raw: Vec::new(), framing: "none", trailers: Vec::new() };
    if head.has_token("transfer-encoding", "chunked") {
        body.framing = "chunked";
        loop {
            let line = w.line()?;
            body.raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = text.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            if size == 0 {
                loop {
                    let t = w.line()?;
                    body.raw.extend_from_slice(&t);
                    if t == b"\r\n" {
                        return Ok(body);
                    }
                    body.trailers.push(String::from_utf8_lossy(&t[..t.len() - 2]).into_owned());
                }
            }
            w.need(size + 2)?;
            let chunk: Vec<u8> = w.buf.drain(..size + 2).collect();
            body.data.extend_from_slice(&chunk[..size]);
            body.raw.extend_from_slice(&chunk);
        }
    }
    if let Some(len) = head.field("content-length") {
        let len: usize = len.trim().parse().map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        body.framing = "length";
        w.need(len)?;
        body.data = w.buf.drain(..len).collect();
        body.raw = body.data.clone();
    }
    Ok(body)
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)
}

fn serve_conn(mut stream: TcpStream, st: &State) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let _ = stream.set_nodelay(true);
    let mut reader = stream.try_clone()?;
    let mut w = Wire { stream: &mut reader, buf: Vec::new() };
    loop {
        let head = match w.head() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return Err(e);
            }
        };
        st.requests.fetch_add(1, Ordering::SeqCst);
        *st.hits.lock().unwrap_or_else(|e| e.into_inner()).entry(head.target.clone()).or_default() += 1;
        if let Some(code) = head.field("x-reject-early") {
            // A final answer before the body, which is never read: the connection must close.
            let out =
                format!("HTTP/1.1 {code} Early\r\nContent-Length: 6\r\nConnection: close\r\n\r\nearly\n");
            stream.write_all(out.as_bytes())?;
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        let expects = head.field("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects && head.field("x-no-continue").is_none() {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = read_body(&mut w, &head)?;
        st.completed.fetch_add(1, Ordering::SeqCst);
        let head_only = head.method == "HEAD";
        let close = !head.keep_alive();
        let path = head.target.split('?').next().unwrap_or_default().to_owned();

        if head.field("upgrade").is_some() && head.has_token("connection", "upgrade") {
            let proto = head.field("upgrade").unwrap_or_default().to_owned();
            stream.write_all(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: Upgrade\r\n\r\n"
                )
                .as_bytes(),
            )?;
            let early = std::mem::take(&mut w.buf);
            return upgraded::serve(&path, early, &mut stream, w.stream, st);
        }

        if let Some(n) = path.strip_prefix("/download/") {
            let n: usize = n.parse().unwrap_or(0);
            let data = pattern(n, n as u64);
            let sum = vec![("X-Sum".to_owned(), format!("{:016x}", checksum(&data)))];
            respond(&mut stream, "200 OK", &sum, &data, head_only, close)?;
        } else if path == "/chunked" {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n".to_vec();
            if close {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(b"\r\n");
            if !head_only {
                out.extend_from_slice(CHUNKED_RAW);
            }
            stream.write_all(&out)?;
        } else if path == "/close" {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
            if !head_only {
                out.extend_from_slice(CLOSE_BODY);
            }
            stream.write_all(&out)?;
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        } else if let Some(code) = path.strip_prefix("/status/") {
            let code: u16 = code.parse().unwrap_or(500);
            let out = match code {
                204 => "HTTP/1.1 204 No Content\r\nX-Origin: 204\r\n\r\n".to_owned(),
                304 => "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_owned(),
                c => {
                    let body = format!("status {c}\n");
                    format!("HTTP/1.1 {c} Whatever\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                }
            };
            stream.write_all(out.as_bytes())?;
        } else if path == "/sse" {
            serve_sse(&mut stream, st)?;
            return Ok(());
        } else if path == "/hold" {
            st.held.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + SIGNAL_WAIT;
            let mut sig = st.signals();
            while !sig.released && !st.stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                sig = st
                    .signal
                    .wait_timeout(sig, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            drop(sig);
            st.held.fetch_sub(1, Ordering::SeqCst);
            respond(&mut stream, "200 OK", &[], b"released\n", head_only, close)?;
        } else {
            let mut h = vec![
                ("X-Echo-Method".to_owned(), head.method.clone()),
                ("X-Echo-Target".to_owned(), head.target.clone()),
                ("X-Echo-Version".to_owned(), format!("1.{}", head.minor)),
                ("X-Echo-Framing".to_owned(), body.framing.to_owned()),
                ("X-Echo-Len".to_owned(), body.data.len().to_string()),
                ("X-Echo-Sum".to_owned(), format!("{:016x}", checksum(&body.data))),
                ("X-Echo-Trailers".to_owned(), body.trailers.join("; ")),
            ];
            for (n, v) in &head.headers {
                h.push((format!("X-Echo-H-{}", n.to_ascii_lowercase()), v.clone()));
            }
            let out: &[u8] = if head.field("x-sink").is_some() {
                &[]
            } else if head.field("x-want-raw").is_some() {
                &body.raw
            } else {
                &body.data
            };
            respond(&mut stream, "200 OK", &h, out, head_only, close)?;
        }
        if close {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Streams one event per signal; each is written (and flushed) only when the test asks.
fn serve_sse(stream: &mut TcpStream, st: &State) -> io::Result<()> {
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )?;
    let deadline = Instant::now() + SIGNAL_WAIT;
    loop {
        let next = {
            let mut sig = st.signals();
            loop {
                if let Some(e) = sig.sse.pop_front() {
                    break Some(e);
                }
                if st.stopping.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    break None;
                }
                sig = st
                    .signal
                    .wait_timeout(sig, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        match next {
            Some(Some(data)) => {
                let event = format!("data: {data}\n\n");
                stream.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())?;
                stream.flush()?;
            }
            Some(None) => return stream.write_all(b"0\r\n\r\n"),
            None => return Ok(()),
        }
    }
}
