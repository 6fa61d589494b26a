//! The parties around the driver in a simulation: a tiny HTTP/1.1 origin written against the sim
//! streams (not with core's decoders), and visitors that play a script of requests and say how
//! each ended. The origin's answer is a pure function of the request it saw, so a visitor knows the
//! exact bytes it must get. It models keep-alive, Content-Length and chunked responses, and
//! visitors that leave at a chosen point; not pipelining, upgrades or request chunking.

use std::future::poll_fn;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::SimRt;
use super::net::{self, SimStream};
use crate::drive::sync::lock;
use crate::drive::time::Deadline;
use crate::drive::wire::{read_some, write_all};
use crate::drive::{Rt, Stream};

/// One request of a visitor.
#[derive(Debug, Clone)]
pub struct Req {
    /// A POST with this many body bytes (else a GET).
    pub post: Option<usize>,
    /// Response body bytes.
    pub resp_len: usize,
    /// Chunked response with chunks of this size (else Content-Length).
    pub chunk: Option<usize>,
    /// Asks `Connection: close`.
    pub close: bool,
}

/// Where a visitor leaves, in its request `req`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After this many bytes of the request (cut short if it is longer).
    Sending(usize),
    /// Once the server read the whole request, after this many (mod 4) of the visitor's own turns:
    /// while it is queued, or around its grant.
    Sent(usize),
    /// After this many bytes of the response.
    Reading(usize),
}

/// A visitor leaving: in which request, where, and whether with a reset (else a close).
#[derive(Debug, Clone, Copy)]
pub struct Leave {
    /// The request's index.
    pub req: usize,
    /// The point.
    pub at: At,
    /// A reset rather than a close.
    pub reset: bool,
}

/// One visitor connection's script.
#[derive(Debug, Clone, Default)]
pub struct Visit {
    /// Its requests, one after another on one connection.
    pub reqs: Vec<Req>,
    /// Where it leaves, if it does.
    pub leave: Option<Leave>,
    /// Shuts its sending side after the last request (`nc -N`), still reading the response.
    pub half_close: bool,
}

/// How one request ended, as its visitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The origin's exact response.
    Answered,
    /// The server answered itself with this status (502, 503, 504).
    Refused(u16),
    /// The connection closed after a prefix of the origin's response.
    Cut,
    /// The visitor left as scripted; `clean` if the server had read its whole request by then.
    Left {
        /// The server had read the whole request: leaving cannot put a tunnel connection out of step.
        clean: bool,
    },
    /// Bytes that are neither the origin's response nor a server's reply.
    Wrong,
}

/// What the visitors saw: (visitor, request, end), in the order they ended.
pub type Ends = Arc<Mutex<Vec<(usize, usize, End)>>>;

fn body_byte(seed: usize, j: usize) -> u8 {
    b'a' + ((j * 7 + seed * 13) % 26) as u8
}

/// The origin's response to `method target` with `body`: a pure function the visitor recomputes.
/// The target is `/r/<visitor>/<req>/<len>/<l|c<chunk>>`.
pub fn response(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let parts: Vec<&str> = target.split('/').collect();
    let num = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
    let (v, r, len) = (num(2), num(3), num(4));
    let chunk = parts.get(5).and_then(|m| m.strip_prefix('c')).and_then(|c| c.parse::<usize>().ok());
    let sum: usize = body.iter().map(|&b| usize::from(b)).sum();
    let data: Vec<u8> = (0..len).map(|j| body_byte(v * 31 + r, j)).collect();
    let mut out =
        format!("HTTP/1.1 200 OK\r\nX-Echo: {method} {target} {} {sum}\r\n", body.len()).into_bytes();
    match chunk {
        Some(k) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for piece in data.chunks(k.max(1)) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        None => {
            out.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
            out.extend_from_slice(&data);
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Serves one origin connection: each request's head and Content-Length body, then its response.
pub async fn origin_conn(mut s: SimStream) {
    let mut buf = BytesMut::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !matches!(read_some(&mut s, &mut buf, 4096).await, Ok(n) if n > 0) {
                return;
            }
        };
        let len = content_length(&buf[..end]);
        while buf.len() < end + len {
            if !matches!(read_some(&mut s, &mut buf, 4096).await, Ok(n) if n > 0) {
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf[..end]).lines().next().unwrap_or_default().to_owned();
        let mut words = line.split(' ');
        let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let reply = response(method, target, &buf[end..end + len]);
        if write_all(&mut s, &reply).await.is_err() {
            return;
        }
        buf.advance(end + len);
    }
}

/// A visitor's request bytes for request `i`, the target the origin sees, and the body.
fn request(tunnel: &str, v: usize, i: usize, r: &Req) -> (Vec<u8>, String, Vec<u8>) {
    let mode = r.chunk.map_or("l".to_owned(), |k| format!("c{k}"));
    let target = format!("/r/{v}/{i}/{}/{mode}", r.resp_len);
    let body: Vec<u8> = (0..r.post.unwrap_or(0)).map(|j| body_byte(i + 5, j)).collect();
    let method = if r.post.is_some() { "POST" } else { "GET" };
    let mut out = format!("{method} /{tunnel}{target} HTTP/1.1\r\nHost: sim\r\n").into_bytes();
    if r.post.is_some() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if r.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    (out, target, body)
}

/// What the visitor must read for `r`: the origin's response, byte for byte.
pub fn expected(v: usize, i: usize, r: &Req) -> Vec<u8> {
    let (_, target, body) = request("", v, i, r);
    response(if r.post.is_some() { "POST" } else { "GET" }, &target, &body)
}

/// A server's own reply at the front of `buf`, once whole: its status and length.
fn server_reply(buf: &[u8]) -> Option<(u16, usize)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    let len = end + content_length(&buf[..end]);
    (buf.len() >= len).then_some((status, len))
}

/// Plays visitor `v`'s script against the server's HTTP port, recording how each request ended.
pub async fn visit(rt: SimRt, port: u16, tunnel: String, v: usize, script: Visit, ends: Ends) {
    let record = |i: usize, e: End| lock(&ends).push((v, i, e));
    let Ok(mut s) = rt.dial(port) else { return record(0, End::Cut) };
    let mut buf = BytesMut::new();
    let last = script.reqs.len().saturating_sub(1);
    for (i, r) in script.reqs.iter().enumerate() {
        let (bytes, ..) = request(&tunnel, v, i, r);
        let leave = script.leave.filter(|l| l.req == i);
        let send = match leave.map(|l| l.at) {
            Some(At::Sending(n)) => n.min(bytes.len()),
            _ => bytes.len(),
        };
        if send_reading(&mut s, &bytes[..send], &mut buf).await.is_err() {
            let end = match server_reply(&buf) {
                Some((status, _)) if status >= 500 => End::Refused(status),
                _ => End::Cut,
            };
            return record(i, end);
        }
        if let Some(l) = leave
            && matches!(l.at, At::Sending(_) | At::Sent(_))
        {
            if let At::Sent(turns) = l.at {
                // Once the server has read it all (and, so, checked out), a few turns more: the
                // leave lands around the grant.
                // Waited for by turns, then in virtual milliseconds: a request queued behind
                // others is read only once it is granted, which may take time to pass (a spin
                // would hold the clock still), and never past its queue deadline.
                let give_up = rt.now() + Duration::from_secs(40);
                let (mut clock, mut spins) = (Deadline::default(), 0);
                while !s.sent_all_read() && rt.now() < give_up {
                    if spins < 64 {
                        spins += 1;
                        yield_now().await;
                    } else {
                        clock.set(&rt, Some(rt.now() + Duration::from_millis(1)));
                        clock.passed(&rt).await;
                    }
                }
                for _ in 0..turns % 4 {
                    yield_now().await;
                }
            }
            let clean = send == bytes.len() && s.sent_all_read();
            return leave_now(s, l, || record(i, End::Left { clean }));
        }
        if i == last && script.half_close {
            let _ = poll_fn(|cx| s.poll_shutdown(cx)).await;
        }
        let want = expected(v, i, r);
        let stop = match leave.map(|l| l.at) {
            Some(At::Reading(n)) => n.min(want.len()),
            _ => want.len(),
        };
        let end = loop {
            let n = buf.len().min(want.len());
            if buf[..n] != want[..n] {
                match server_reply(&buf) {
                    Some((status, len)) if status >= 500 && status != 200 => {
                        buf.advance(len);
                        break End::Refused(status);
                    }
                    _ if find(&buf, b"\r\n\r\n").is_some() && !buf.starts_with(b"HTTP/1.1 5") => {
                        break End::Wrong;
                    }
                    _ => {}
                }
            } else if n >= stop {
                if let Some(l) = leave {
                    let clean = s.sent_all_read();
                    return leave_now(s, l, || record(i, End::Left { clean }));
                }
                buf.advance(want.len());
                break End::Answered;
            }
            match read_some(&mut s, &mut buf, 4096).await {
                Ok(n) if n > 0 => {}
                // A prefix of the origin's answer or of the server's own, cut by a close or a reset.
                _ if want.starts_with(&buf)
                    || buf.starts_with(b"HTTP/1.1 5")
                    || b"HTTP/1.1 5".starts_with(&buf) =>
                {
                    break End::Cut;
                }
                _ => break End::Wrong,
            }
        };
        record(i, end);
        if end != End::Answered && !matches!(end, End::Refused(_)) {
            return;
        }
    }
    // After a `Connection: close` answer the server closes; nothing more may come.
    if script.reqs.last().is_some_and(|r| r.close) && !buf.is_empty() {
        record(script.reqs.len(), End::Wrong);
    }
}

/// Writes `bytes` while reading what comes meanwhile into `buf`, as a real client's socket buffers
/// would (tiny simulated buffers would otherwise deadlock a server that answers early).
async fn send_reading(s: &mut SimStream, mut bytes: &[u8], buf: &mut BytesMut) -> Result<(), ()> {
    poll_fn(|cx| {
        while !bytes.is_empty() {
            match s.poll_write(cx, &[IoSlice::new(bytes)]) {
                Poll::Ready(Ok(n)) => bytes = &bytes[n..],
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending => {
                    buf.reserve(4096);
                    match s.poll_read(cx, buf) {
                        Poll::Ready(Ok(n)) if n > 0 => {}
                        Poll::Ready(_) => return Poll::Ready(Err(())),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

fn leave_now(s: SimStream, l: Leave, record: impl FnOnce()) {
    if l.reset {
        net::reset(s.rec());
    }
    drop(s);
    record();
}

/// Lets every other ready task have a turn (in the seed's order) before going on.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
