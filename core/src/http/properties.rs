//! Properties of the decoders, over generated valid messages and over noise.
//!
//! `run_decoder` itself asserts progress (no bytes consumed without a frame),
//! conservation (each frame accounts for exactly the bytes it consumed) and
//! sticky errors on every run below.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::Limits;
use crate::fuzzing::{Event, Outcome, framing, run_decoder, small_limits};

/// A generated body and how it is framed.
#[derive(Debug, Clone)]
enum GenBody {
    None,
    Length(Vec<u8>),
    /// Chunks, an extension on each size line, trailer fields.
    Chunked(Vec<Vec<u8>>, bool, Vec<(String, String)>),
}

impl GenBody {
    fn payload(&self) -> Vec<u8> {
        match self {
            GenBody::None => Vec::new(),
            GenBody::Length(b) => b.clone(),
            GenBody::Chunked(chunks, ..) => chunks.concat(),
        }
    }
}

#[derive(Debug, Clone)]
struct GenRequest {
    method: &'static str,
    target: String,
    fields: Vec<(String, String)>,
    body: GenBody,
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,12}".prop_filter("framing fields are generated separately", |n| {
        !["content-length", "transfer-encoding", "host", "connection"]
            .contains(&n.to_ascii_lowercase().as_str())
    })
}

fn body() -> impl Strategy<Value = GenBody> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        Just(GenBody::None),
        bytes.prop_map(GenBody::Length),
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 0..5),
            any::<bool>(),
            proptest::collection::vec((token(), "[ -~]{0,20}"), 0..3),
        )
            .prop_map(|(c, e, t)| GenBody::Chunked(c, e, t)),
    ]
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("PATCH")],
        "/[a-zA-Z0-9/%?=&._~-]{0,40}",
        proptest::collection::vec((token(), "[!-~]([ -~]{0,30}[!-~])?"), 0..6),
        body(),
    )
        .prop_map(|(method, target, fields, body)| GenRequest { method, target, fields, body })
}

fn write_body(body: &GenBody, out: &mut Vec<u8>) {
    match body {
        GenBody::None => out.extend_from_slice(b"\r\n"),
        GenBody::Length(b) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        GenBody::Chunked(chunks, ext, trailers) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in chunks {
                let ext = if *ext { ";name=\"v al\"" } else { "" };
                out.extend_from_slice(format!("{:X}{ext}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for (n, v) in trailers {
                out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn serialize(r: &GenRequest) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nHost: example.test\r\n", r.method, r.target).into_bytes();
    for (n, v) in &r.fields {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    write_body(&r.body, &mut out);
    out
}

/// An independent reading of a chunked body's payload, for comparison.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").expect("size line");
        let digits: Vec<u8> = raw[..eol].iter().copied().take_while(u8::is_ascii_hexdigit).collect();
        let size = usize::from_str_radix(std::str::from_utf8(&digits).unwrap(), 16).unwrap();
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

const GET: RequestInfo = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };

fn requests(input: &[u8], cuts: &[usize]) -> Outcome {
    run_decoder(Role::Request, GET, &Limits::default(), input, cuts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// P1 + P2: pipelined valid requests decode to the same frames however they are split, and every byte is accounted for.
    #[test]
    fn requests_split_invariant_and_conserved(
        reqs in proptest::collection::vec(request(), 1..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let input: Vec<u8> = reqs.iter().flat_map(serialize).collect();
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        let whole = requests(&input, &[]);
        prop_assert_eq!(whole.error, None);
        prop_assert_eq!(whole.consumed, input.len());
        prop_assert_eq!(whole.events.iter().filter(|e| matches!(e, Event::End(true))).count(), reqs.len());
        prop_assert_eq!(&requests(&input, &cuts), &whole);
    }

    /// P4: what goes in comes out: method, target, fields, and the payload (de-chunked).
    #[test]
    fn requests_round_trip(r in request()) {
        let input = serialize(&r);
        let mut buf = BytesMut::from(&input[..]);
        let mut dec = Decoder::request(&Limits::default());
        let Ok(Some(Frame::Head(head))) = dec.decode(&mut buf) else { panic!("no head") };
        prop_assert_eq!(head.target(), r.target.as_bytes());
        prop_assert_eq!(head.method(), Some(if r.method == "GET" { Method::Get } else { Method::Other }));
        // Through the parsed accessor, not the raw bytes (which are the input itself): the first
        // field of each name, any case, has the value that was sent.
        for (n, _) in &r.fields {
            let first = r.fields.iter().find(|(m, _)| m.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_bytes());
            prop_assert_eq!(head.field(n), first);
            prop_assert_eq!(head.field(&n.to_ascii_uppercase()), first);
        }
        prop_assert_eq!(head.host(), Some(&b"example.test"[..]));
        let mut raw_body = Vec::new();
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Frame::Body(b))) => raw_body.extend_from_slice(&b),
                Ok(Some(Frame::End { keep_alive })) => { prop_assert!(keep_alive); break }
                other => panic!("unexpected {other:?}"),
            }
        }
        let payload = if matches!(r.body, GenBody::Chunked(..)) { dechunk(&raw_body) } else { raw_body };
        prop_assert_eq!(payload, r.body.payload());
        prop_assert!(buf.is_empty());
    }

    /// P3: a message followed by anything yields the same frames up to its End, and leaves the rest unread.
    #[test]
    fn no_over_read(r in request(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let msg = serialize(&r);
        let mut input = msg.clone();
        input.extend_from_slice(&tail);
        let mut buf = BytesMut::from(&input[..]);
        let mut dec = Decoder::request(&Limits::default());
        let mut frames = 0;
        while let Ok(Some(frame)) = dec.decode(&mut buf) {
            frames += 1;
            if matches!(frame, Frame::End { .. }) { break }
        }
        prop_assert!(frames >= 2);
        prop_assert_eq!(&buf[..], &tail[..]);
        prop_assert_eq!(dec.decode(&mut buf), Ok(None), "waits for reset, consumes nothing");
        prop_assert_eq!(&buf[..], &tail[..]);
    }

    /// P1 for responses: every body kind, interim heads, HEAD requests, split anywhere.
    #[test]
    fn responses_split_invariant(
        status in prop_oneof![Just(200u16), Just(201), Just(204), Just(304), Just(404), Just(500)],
        interim in any::<bool>(),
        is_head in any::<bool>(),
        b in body(),
        close_delimited in any::<bool>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut input = Vec::new();
        if interim {
            input.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        input.extend_from_slice(format!("HTTP/1.1 {status} X\r\nServer: t\r\n").as_bytes());
        let no_body = is_head || status == 204 || status == 304;
        if close_delimited && !no_body {
            input.extend_from_slice(b"\r\n");
            input.extend_from_slice(&b.payload());
        } else if !no_body {
            // A response with neither length nor chunking is close-delimited: give `None` an explicit 0.
            let b = if matches!(b, GenBody::None) { GenBody::Length(Vec::new()) } else { b.clone() };
            write_body(&b, &mut input);
        } else {
            input.extend_from_slice(b"\r\n");
        }
        let req = RequestInfo { method: if is_head { Method::Head } else { Method::Get }, ..GET };
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        let whole = run_decoder(Role::Response, req, &Limits::default(), &input, &[]);
        prop_assert_eq!(whole.error, None);
        prop_assert_eq!(whole.consumed, input.len());
        let keep = no_body || !close_delimited;
        prop_assert_eq!(whole.events.last(), Some(&Event::End(keep)));
        prop_assert_eq!(run_decoder(Role::Response, req, &Limits::default(), &input, &cuts), whole);
    }

    /// P6: an oversized head is refused whatever the splits, before the buffer grows past the limit.
    #[test]
    fn oversized_heads_refused_at_any_split(
        extra in 1usize..200,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let limits = small_limits();
        let input = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(limits.max_head + extra));
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        let out = run_decoder(Role::Request, GET, &limits, input.as_bytes(), &cuts);
        prop_assert_eq!(out.error, Some(FrameError::HeadTooLarge));
        prop_assert!(out.events.is_empty());
    }

    /// The fuzz target's own assertions (whole = split = byte-at-a-time) over noise and over mutated valid messages.
    #[test]
    fn framing_target_holds_on_noise(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        framing(&data);
    }

    #[test]
    fn framing_target_holds_on_mutations(
        flags in any::<u8>(),
        r in request(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cuts in any::<[u8; 3]>(),
    ) {
        let mut input = serialize(&r);
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        let mut data = vec![flags];
        data.extend_from_slice(&cuts);
        data.extend_from_slice(&input);
        framing(&data);
    }
}
