//! The load generator: keep-alive `GET /hello?<tag>` loops on `c` threads (every reply's
//! status and body checked, so a crossed response counts as a wrong body), and the bulk
//! download / upload of the [`Payload`](crate::origin::Payload).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::origin::Payload;

/// Where a system serves the origin: an address and the path prefix (aether's `/<id>`, else empty).
#[derive(Clone)]
pub struct Target {
    /// `host:port` to connect to.
    pub addr: String,
    /// Prefix of every request path.
    pub prefix: String,
}

/// The outcome of one load run.
#[derive(Default)]
pub struct Load {
    /// Latency of every good request, in nanoseconds.
    pub latencies: Vec<u64>,
    /// I/O errors, timeouts, malformed replies and failed connects.
    pub errors: usize,
    /// Replies whose status was not 2xx.
    pub non_2xx: usize,
    /// 2xx replies with a body other than the one asked for.
    pub wrong_bodies: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Good requests in each whole second of the run, in order (a slow start shows here).
    pub per_second: Vec<u64>,
}

impl Load {
    /// Adds another run's requests and time to this one (latencies stay sorted).
    pub fn absorb(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.errors += other.errors;
        self.non_2xx += other.non_2xx;
        self.wrong_bodies += other.wrong_bodies;
        self.elapsed += other.elapsed;
        self.per_second.extend(other.per_second);
    }

    /// Good requests per second.
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile of latency, in milliseconds (the latencies must be sorted).
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let l = &self.latencies;
        let i = ((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1));
        l.get(i).map_or(f64::NAN, |&ns| ns as f64 / 1e6)
    }
}

/// A response head: status and body length.
struct Reply {
    status: u16,
    content_length: usize,
}

/// A keep-alive client connection with a read buffer (bytes past one reply are kept).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Connects with `TCP_NODELAY` and read and write timeouts.
    pub fn open(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { stream, buf: vec![0; 64 * 1024], start: 0, end: 0 })
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::other("reply head too long"));
        }
        match self.stream.read(&mut self.buf[self.end..])? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Reads one response head (1xx interim replies skipped).
    fn head(&mut self) -> io::Result<Reply> {
        loop {
            let Some(at) = self.buf[self.start..self.end].windows(4).position(|w| w == b"\r\n\r\n") else {
                self.fill()?;
                continue;
            };
            let reply = parse_reply(&self.buf[self.start..self.start + at]);
            self.start += at + 4;
            let reply = reply.ok_or_else(|| io::Error::other("malformed reply head"))?;
            if !(100..200).contains(&reply.status) {
                return Ok(reply);
            }
        }
    }

    /// Reads a whole reply whose body is at most the buffer's size; returns status and body.
    fn small_reply(&mut self) -> io::Result<(u16, &[u8])> {
        let reply = self.head()?;
        if reply.content_length > self.buf.len() / 2 {
            return Err(io::Error::other("reply body too big"));
        }
        while self.end - self.start < reply.content_length {
            self.fill()?;
        }
        let body = self.start..self.start + reply.content_length;
        self.start = body.end;
        Ok((reply.status, &self.buf[body]))
    }

    /// Streams a reply body through `each` (bytes already buffered first); returns the status.
    fn stream_body(&mut self, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<(u16, usize)> {
        let reply = self.head()?;
        let mut left = reply.content_length;
        let buffered = left.min(self.end - self.start);
        let mut ok = each(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        left -= buffered;
        let mut chunk = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = left.min(chunk.len());
            match self.stream.read(&mut chunk[..want])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    ok &= each(&chunk[..n]);
                    left -= n;
                }
            }
        }
        if !ok {
            return Err(io::Error::other("wrong body bytes"));
        }
        Ok((reply.status, reply.content_length))
    }
}

fn parse_reply(head: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let mut content_length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.trim().parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // the origin frames by length; a re-chunked reply is reported as an error
        }
    }
    let content_length = content_length.or(if status == 204 || status == 304 { Some(0) } else { None })?;
    Some(Reply { status, content_length })
}

/// `c` keep-alive connections sending `GET /hello?<tag>` for `time`, each reply checked.
pub fn hello(target: &Target, c: usize, time: Duration) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..c)
        .map(|i| {
            let (target, stop, done) = (target.clone(), stop.clone(), done.clone());
            thread::spawn(move || client(&target, i, &stop, &done))
        })
        .collect();
    let per_second = count_seconds(started, time, &done);
    stop.store(true, Ordering::Relaxed);
    let mut total = Load { elapsed: started.elapsed(), per_second, ..Load::default() };
    for w in workers {
        let one = w.join().unwrap_or_else(|_| Load { errors: 1, ..Load::default() });
        total.latencies.extend(one.latencies);
        total.errors += one.errors;
        total.non_2xx += one.non_2xx;
        total.wrong_bodies += one.wrong_bodies;
    }
    total.latencies.sort_unstable();
    total
}

/// Waits out `time` from `started`, reading `done` at each whole second: the requests of each.
fn count_seconds(started: Instant, time: Duration, done: &AtomicU64) -> Vec<u64> {
    let mut per_second = Vec::new();
    let mut last = 0;
    for s in 1..=time.as_secs() {
        thread::sleep((started + Duration::from_secs(s)).saturating_duration_since(Instant::now()));
        let now = done.load(Ordering::Relaxed);
        per_second.push(now - last);
        last = now;
    }
    thread::sleep((started + time).saturating_duration_since(Instant::now()));
    per_second
}

fn client(target: &Target, worker: usize, stop: &AtomicBool, done: &AtomicU64) -> Load {
    let mut out = Load::default();
    let mut conn: Option<Conn> = None;
    let mut request = Vec::with_capacity(256);
    let mut expect = Vec::with_capacity(64);
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&target.addr, Duration::from_secs(5)) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    out.errors += 1;
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        seq += 1;
        request.clear();
        expect.clear();
        let _ = write!(
            request,
            "GET {}/hello?{worker}-{seq} HTTP/1.1\r\nHost: {}\r\n\r\n",
            target.prefix, target.addr
        );
        let _ = write!(expect, "hello {worker}-{seq}");
        let t = Instant::now();
        let result = c.stream.write_all(&request).and_then(|()| c.small_reply());
        match result {
            Ok((status, body)) if (200..300).contains(&status) => {
                if body == expect.as_slice() {
                    out.latencies.push(t.elapsed().as_nanos() as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    out.wrong_bodies += 1;
                    conn = None;
                }
            }
            Ok(_) => out.non_2xx += 1,
            Err(_) => {
                out.errors += 1;
                conn = None;
            }
        }
    }
    out
}

/// The outcome of one bulk transfer.
pub struct Bulk {
    /// Megabytes (10^6) per second, if the transfer succeeded and checked out.
    pub mb_per_s: Option<f64>,
    /// Why not, otherwise.
    pub error: Option<String>,
}

impl Bulk {
    fn from(result: io::Result<Duration>, len: usize) -> Bulk {
        match result {
            Ok(t) => Bulk { mb_per_s: Some(len as f64 / t.as_secs_f64() / 1e6), error: None },
            Err(e) => Bulk { mb_per_s: None, error: Some(e.to_string()) },
        }
    }
}

/// The median of several transfers; the first failure if any failed.
pub fn median(transfers: Vec<Bulk>) -> Bulk {
    let mut speeds = Vec::with_capacity(transfers.len());
    for t in transfers {
        match t {
            Bulk { mb_per_s: Some(v), .. } => speeds.push(v),
            failed => return failed,
        }
    }
    match middle(&mut speeds) {
        Some(v) => Bulk { mb_per_s: Some(v), error: None },
        None => Bulk { mb_per_s: None, error: Some("no transfer ran".into()) },
    }
}

/// The median of `values` (sorting them); `None` if there are none.
pub fn middle(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// One `GET /big`, every byte compared with the payload.
pub fn download(target: &Target, big: &Payload) -> Bulk {
    let run = || -> io::Result<Duration> {
        let mut c = Conn::open(&target.addr, Duration::from_secs(60))?;
        let t = Instant::now();
        write!(c.stream, "GET {}/big HTTP/1.1\r\nHost: {}\r\n\r\n", target.prefix, target.addr)?;
        let mut at = 0;
        let (status, len) = c.stream_body(|part| {
            let ok = big.bytes.get(at..at + part.len()) == Some(part);
            at += part.len();
            ok
        })?;
        let t = t.elapsed();
        match status {
            200 if len == big.bytes.len() => Ok(t),
            200 => Err(io::Error::other(format!("{len} bytes, expected {}", big.bytes.len()))),
            s => Err(io::Error::other(format!("status {s}"))),
        }
    };
    Bulk::from(run(), big.bytes.len())
}

/// One `POST /echo` of the payload; the sink's reported length and checksum are checked.
pub fn upload(target: &Target, big: &Payload) -> Bulk {
    let run = || -> io::Result<Duration> {
        let mut c = Conn::open(&target.addr, Duration::from_secs(60))?;
        let t = Instant::now();
        write!(
            c.stream,
            "POST {}/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            target.prefix,
            target.addr,
            big.bytes.len()
        )?;
        for part in big.bytes.chunks(256 * 1024) {
            c.stream.write_all(part)?;
        }
        let expect = format!("{} {:016x}", big.bytes.len(), big.sum);
        let (status, body) = c.small_reply()?;
        let t = t.elapsed();
        match status {
            200 if body == expect.as_bytes() => Ok(t),
            200 => Err(io::Error::other(format!("sink said {:?}", String::from_utf8_lossy(body)))),
            s => Err(io::Error::other(format!("status {s}"))),
        }
    };
    Bulk::from(run(), big.bytes.len())
}

/// Checks a system serves the origin: one `/hello` with its tag.
pub fn probe(target: &Target) -> io::Result<()> {
    let mut c = Conn::open(&target.addr, Duration::from_secs(5))?;
    write!(c.stream, "GET {}/hello?probe HTTP/1.1\r\nHost: {}\r\n\r\n", target.prefix, target.addr)?;
    match c.small_reply()? {
        (200, b"hello probe") => Ok(()),
        (s, body) => Err(io::Error::other(format!("status {s}, body {:?}", String::from_utf8_lossy(body)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbing_a_run_pools_its_requests_and_time() {
        let mut a =
            Load { latencies: vec![1, 5], errors: 1, elapsed: Duration::from_secs(1), ..Load::default() };
        let b =
            Load { latencies: vec![3, 9], non_2xx: 2, elapsed: Duration::from_secs(2), ..Load::default() };
        a.absorb(b);
        assert_eq!(a.latencies, [1, 3, 5, 9]);
        assert_eq!((a.errors, a.non_2xx, a.elapsed), (1, 2, Duration::from_secs(3)));
        assert!((a.rps() - 4.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn the_median_of_transfers_is_the_middle_one_unless_one_failed() {
        let ok = |v| Bulk { mb_per_s: Some(v), error: None };
        assert_eq!(median(vec![ok(900.0), ok(100.0), ok(500.0)]).mb_per_s, Some(500.0));
        let failed = Bulk { mb_per_s: None, error: Some("cut".into()) };
        assert_eq!(median(vec![ok(1.0), failed, ok(2.0)]).error.as_deref(), Some("cut"));
        assert!(median(Vec::new()).mb_per_s.is_none());
        assert_eq!(middle(&mut []), None);
    }

    #[test]
    fn parses_reply_heads() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-A: b").expect("a reply");
        assert_eq!((r.status, r.content_length), (200, 5));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_none());
        assert!(parse_reply(b"HTTP/1.1 200 OK").is_none());
        assert_eq!(parse_reply(b"HTTP/1.1 204 No Content").map(|r| r.content_length), Some(0));
    }
}
