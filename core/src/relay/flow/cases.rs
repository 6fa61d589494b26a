//! The messages a [`Flow`](super::Flow)'s properties relay: a response (to a peer or a visitor,
//! with interim heads) or a request (head held or sent for `Expect`), framed by length, chunks or
//! close, maybe damaged or cut, read in random pieces, with the write sizes and failures to play.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::http::{Decoder, Frame, Method, RequestInfo};
use crate::limits::Limits;
use crate::relay::{Pump, Sink};

/// Which pump relays the message.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// A response, with its sink.
    Response(Sink),
    /// A request whose head is held until its body's first element (or sent at once with `Expect`).
    Request { expect: bool },
}

/// How the message's body is framed.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the source closes (responses only; a request falls back to `Content-Length`).
    Close,
}

/// One message, how it is read, and what goes wrong.
#[derive(Debug, Clone)]
pub struct Case {
    /// Which pump relays it.
    pub role: Role,
    /// How its body is framed.
    pub framing: Framing,
    /// `100 Continue` heads before a response's final one.
    pub interim: usize,
    /// The body's bytes.
    pub body: Vec<u8>,
    /// Chunk sizes, cycled, for a chunked body.
    pub chunks: Vec<usize>,
    /// Bytes after the message (the next one).
    pub tail: Vec<u8>,
    /// Cut the bytes after the head here (modulo their length).
    pub cut: Option<usize>,
    /// Replace a byte after the head (position modulo their length) with this one.
    pub damage: Option<(usize, u8)>,
    /// Bytes already buffered when the flow starts (after the head, for a request).
    pub first: usize,
    /// Read sizes, cycled, for the rest.
    pub reads: Vec<usize>,
    /// Sizes, cycled, of what each write call takes (at most what is pending).
    pub writes: Vec<usize>,
    /// This write call (counted from 0) fails.
    pub write_fail: Option<usize>,
    /// This read (counted from 0, an end of stream included) fails.
    pub read_fail: Option<usize>,
    /// The flow's drain budget.
    pub drain: Option<usize>,
}

fn get() -> RequestInfo {
    RequestInfo { method: Method::Get, upgrade: false, keep_alive: true }
}

impl Case {
    /// The raw bytes, and where a request's head ends (0 for a response).
    pub fn raw(&self) -> (Vec<u8>, usize) {
        let mut raw = Vec::new();
        let framing = match (self.role, self.framing) {
            (Role::Request { .. }, Framing::Close) => Framing::Length,
            (_, f) => f,
        };
        let field = match framing {
            Framing::Length => format!("Content-Length: {}\r\n", self.body.len()),
            Framing::Chunked => "Transfer-Encoding: chunked\r\n".into(),
            Framing::Close => "Connection: close\r\n".into(),
        };
        let head_len = match self.role {
            Role::Response(_) => {
                for _ in 0..self.interim {
                    raw.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                raw.extend_from_slice(format!("HTTP/1.1 200 OK\r\n{field}\r\n").as_bytes());
                0
            }
            Role::Request { expect } => {
                let expect = if expect { "Expect: 100-continue\r\n" } else { "" };
                raw.extend_from_slice(
                    format!("POST / HTTP/1.1\r\nHost: a\r\n{expect}{field}\r\n").as_bytes(),
                );
                raw.len()
            }
        };
        match framing {
            Framing::Chunked => {
                let mut rest = &self.body[..];
                for &size in self.chunks.iter().cycle().take(rest.len()) {
                    if rest.is_empty() {
                        break;
                    }
                    let (chunk, after) = rest.split_at(size.clamp(1, rest.len()));
                    raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    raw.extend_from_slice(chunk);
                    raw.extend_from_slice(b"\r\n");
                    rest = after;
                }
                raw.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::Length | Framing::Close => raw.extend_from_slice(&self.body),
        }
        raw.extend_from_slice(&self.tail);
        // Damage stays out of a request's head: the pump starts after it.
        let body_len = raw.len() - head_len;
        if let Some(cut) = self.cut {
            raw.truncate(head_len + cut % (body_len + 1));
        }
        if let Some((at, byte)) = self.damage
            && raw.len() > head_len
        {
            let at = head_len + at % (raw.len() - head_len);
            raw[at] = byte;
        }
        (raw, head_len)
    }

    /// A fresh pump, what is buffered when it starts, and the reads that follow.
    pub fn start(&self) -> (Pump, BytesMut, Vec<Vec<u8>>) {
        let limits = Limits::default();
        let (raw, head_len) = self.raw();
        let first = (head_len + self.first).min(raw.len());
        let mut buf = BytesMut::from(&raw[..first]);
        let pump = match self.role {
            Role::Response(sink) => Pump::response(&limits, get(), sink),
            Role::Request { .. } => {
                let mut dec = Decoder::request(&limits);
                let Ok(Some(Frame::Head(head))) = dec.decode(&mut buf) else { panic!("bad head in {raw:?}") };
                let forwarded = Bytes::from_static(b"POST / HTTP/1.1\r\nHost: o\r\n\r\n");
                Pump::request(dec, forwarded, head.expects_continue())
            }
        };
        let mut reads = Vec::new();
        let mut rest = &raw[first..];
        for &size in self.reads.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (read, after) = rest.split_at(size.clamp(1, rest.len()));
            reads.push(read.to_vec());
            rest = after;
        }
        (pump, buf, reads)
    }
}

/// Any case.
pub fn case() -> impl Strategy<Value = Case> {
    let role = prop_oneof![
        Just(Role::Response(Sink::Peer)),
        Just(Role::Response(Sink::Visitor)),
        any::<bool>().prop_map(|expect| Role::Request { expect }),
    ];
    let framing = prop_oneof![Just(Framing::Length), Just(Framing::Chunked), Just(Framing::Close)];
    let damage = (any::<usize>(), prop::sample::select(&b"\n\0Z9 "[..]));
    let sizes = |most: usize| prop::collection::vec(1..most, 1..6);
    let message = (role, framing, 0..12usize, prop::collection::vec(any::<u8>(), 0..3000), sizes(700));
    let trouble = (
        prop::collection::vec(any::<u8>(), 0..40),
        prop::option::weighted(0.15, any::<usize>()),
        prop::option::weighted(0.15, damage),
    );
    let io = (0..200usize, sizes(2500), sizes(400));
    let failures = (
        prop::option::weighted(0.3, 0..12usize),
        prop::option::weighted(0.2, 0..12usize),
        prop::option::weighted(0.5, 0..4000usize),
    );
    (message, trouble, io, failures).prop_map(
        |(
            (role, framing, interim, body, chunks),
            (tail, cut, damage),
            (first, reads, writes),
            (write_fail, read_fail, drain),
        )| Case {
            role,
            framing,
            interim,
            body,
            chunks,
            tail,
            cut,
            damage,
            first,
            reads,
            writes,
            write_fail,
            read_fail,
            drain,
        },
    )
}
