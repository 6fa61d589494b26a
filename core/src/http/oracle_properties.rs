//! The decoders against the framing oracle, over generated framing-header combinations.
//!
//! Generated: HTTP/1.0 and 1.1, HEAD and CONNECT, absolute- and authority-form
//! targets, `Content-Length` lists (same and differing, empty, not digits),
//! `Transfer-Encoding` lists (chunked, gzip, identity, unknown, twice, not
//! last, any case), `Connection` lists, OWS and tabs around values, obs-text in
//! other fields, and chunked bodies in either hex case with varied extensions.
//! Not generated: line-syntax errors (the fuzz target's noise covers those).

use proptest::prelude::*;

use super::oracle::{Body, Framing, Side, Verdict, classify};
use super::*;
use crate::Limits;
use crate::fuzzing::{Event, run_decoder};

#[derive(Debug, Clone)]
struct Gen {
    role: Role,
    version: Version,
    method: &'static str,
    target: &'static str,
    status: u16,
    asked: RequestInfo,
    hosts: usize,
    /// (name, value) in wire order: framing fields and others.
    fields: Vec<(&'static str, Vec<u8>)>,
    chunks: Vec<(usize, bool, &'static str)>,
}

fn ows() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just(""), 2 => Just(" "), 1 => Just("\t"), 1 => Just(" \t ")]
}

/// A comma list of `items`, with OWS around each element and sometimes an empty element.
fn list(items: impl Strategy<Value = &'static str> + Clone) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((ows(), items, ows()), 0..4).prop_map(|els| {
        els.iter().map(|(a, i, b)| format!("{a}{i}{b}")).collect::<Vec<_>>().join(",").into_bytes()
    })
}

fn cl_value() -> impl Strategy<Value = Vec<u8>> {
    let n = prop_oneof![8 => Just("12"), 2 => Just("0"), 2 => Just("012"), 1 => Just("7"), 1 => Just(""),
        1 => Just("abc"), 1 => Just("+12"), 1 => Just("-1"), 1 => Just("0x5"), 1 => Just("12345678901234567890")];
    prop_oneof![3 => n.clone().prop_map(|v| v.as_bytes().to_vec()), 1 => list(n)]
}

fn te_value() -> impl Strategy<Value = Vec<u8>> {
    let coding = prop_oneof![8 => Just("chunked"), 2 => Just("Chunked"), 1 => Just("CHUNKED"), 2 => Just("gzip"),
        1 => Just("GZip"), 1 => Just("identity"), 1 => Just("deflate"), 1 => Just("x-gzip"), 1 => Just("foo"),
        1 => Just("xchunked"), 1 => Just("chunked\u{e9}"), 1 => Just("gzip;x=1"), 1 => Just("chunked ; x")];
    let before = prop_oneof![Just("gzip"), Just("foo"), Just("identity"), Just("deflate")];
    prop_oneof![
        3 => list(coding),
        2 => Just(b"chunked".to_vec()),
        2 => (before, ows(), prop_oneof![Just("chunked"), Just("Chunked")])
            .prop_map(|(c, o, last)| format!("{c}{o},{o}{last}").into_bytes()),
    ]
}

fn conn_value() -> impl Strategy<Value = Vec<u8>> {
    list(prop_oneof![
        Just("close"),
        Just("Close"),
        Just("keep-alive"),
        Just("Keep-Alive"),
        Just("upgrade"),
        Just("x-foo")
    ])
}

fn framing_field() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    prop_oneof![
        3 => (prop_oneof![Just("Content-Length"), Just("content-length"), Just("CONTENT-LENGTH")], cl_value()),
        3 => (prop_oneof![Just("Transfer-Encoding"), Just("transfer-encoding")], te_value()),
        3 => (prop_oneof![Just("Connection"), Just("connection")], conn_value()),
        2 => (Just("X-Other"), proptest::collection::vec(prop_oneof![Just(b' '), Just(b'\t'), Just(b'a'), 0x80u8..=0xff], 0..8)
            .prop_map(|mut v| { v.insert(0, b'v'); v.push(b'v'); v })),
        1 => (Just("X-Empty"), Just(Vec::new())),
    ]
}

fn chunk() -> impl Strategy<Value = (usize, bool, &'static str)> {
    let ext = prop_oneof![
        Just(""),
        Just(";a"),
        Just(";a=b"),
        Just(";a=\"q s\""),
        Just(";a=b;c"),
        Just(";A-1=\"\\\"\"")
    ];
    (1usize..40, any::<bool>(), ext)
}

fn message() -> impl Strategy<Value = Gen> {
    (
        prop_oneof![Just(Role::Request), Just(Role::Response)],
        prop_oneof![Just(Version::Http11), Just(Version::Http10)],
        prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("CONNECT"), Just("OPTIONS")],
        prop_oneof![Just("/p?q=1"), Just("http://example.test/a"), Just("example.test:443"), Just("*")],
        prop_oneof![4 => Just(200u16), 1 => Just(100), 1 => Just(101), 1 => Just(103), 1 => Just(204), 1 => Just(304), 1 => Just(404), 1 => Just(201)],
        (any::<bool>(), any::<bool>()),
        prop_oneof![1 => Just(0usize), 8 => Just(1), 1 => Just(2)],
        proptest::collection::vec(framing_field(), 0..4),
        proptest::collection::vec(chunk(), 0..4),
    )
        .prop_map(|(role, version, method, target, status, (upgrade, keep_alive), hosts, fields, chunks)| {
            let m = match method {
                "GET" => Method::Get,
                "HEAD" => Method::Head,
                "CONNECT" => Method::Connect,
                _ => Method::Other,
            };
            let asked = RequestInfo { method: m, upgrade, keep_alive };
            Gen { role, version, method, target, status, asked, hosts, fields, chunks }
        })
}

impl Gen {
    fn framing(&self) -> Framing<'_> {
        let values = |n: &str| {
            self.fields.iter().filter(|(f, _)| f.eq_ignore_ascii_case(n)).map(|(_, v)| &v[..]).collect()
        };
        let side = match self.role {
            Role::Request => Side::Request { hosts: self.hosts },
            Role::Response => Side::Response { status: self.status, request: self.asked },
        };
        Framing {
            side,
            version: self.version,
            content_length: values("content-length"),
            transfer_encoding: values("transfer-encoding"),
            connection: values("connection"),
        }
    }

    fn head(&self) -> Vec<u8> {
        let v = if self.version == Version::Http11 { "HTTP/1.1" } else { "HTTP/1.0" };
        let mut out = match self.role {
            Role::Request => format!("{} {} {v}\r\n", self.method, self.target),
            Role::Response => format!("{v} {} Status\r\n", self.status),
        }
        .into_bytes();
        for _ in 0..if self.role == Role::Request { self.hosts } else { 0 } {
            out.extend_from_slice(b"Host: example.test\r\n");
        }
        for (n, v) in &self.fields {
            out.extend_from_slice(format!("{n}:").as_bytes());
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A chunked body: sizes in either hex case, some with leading zeros, the given extensions, one trailer.
    fn chunked(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(len, lower, ext) in &self.chunks {
            let size = if lower { format!("0{len:x}") } else { format!("{len:X}") };
            out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
            out.extend(std::iter::repeat_n(b'd', len));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0;last\r\nX-Trailer: t\r\n\r\n");
        out
    }
}

fn decoded_kind(head: &Head, role: Role, asked: &RequestInfo) -> Body {
    let kind = if role == Role::Request { head.body() } else { head.response_body(asked) };
    match kind {
        BodyKind::Empty | BodyKind::Length(0) => Body::None,
        BodyKind::Length(n) => Body::Length(n),
        BodyKind::Chunked => Body::Chunked,
        BodyKind::UntilClose => Body::UntilClose,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// O1: the decoder refuses with the oracle's status, or reads the body the oracle names and
    /// ends with its keep-alive; interim and switched heads likewise.
    #[test]
    fn decoder_agrees_with_oracle(g in message()) {
        let verdict = classify(&g.framing());
        let limits = Limits::default();
        let mut input = g.head();
        let head_len = input.len();
        let body: Vec<u8> = match verdict {
            Verdict::Message { body: Body::Length(n), .. } => vec![b'b'; usize::try_from(n).unwrap()],
            Verdict::Message { body: Body::Chunked, .. } => g.chunked(),
            Verdict::Message { body: Body::UntilClose, .. } => b"until the close".to_vec(),
            Verdict::Interim => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            Verdict::Switched => b"raw bytes".to_vec(),
            Verdict::Message { body: Body::None, .. } | Verdict::Refuse(_) => Vec::new(),
        };
        input.extend_from_slice(&body);
        let out = run_decoder(g.role, g.asked, &limits, &input, &[]);
        let heads = out.events.iter().filter(|e| matches!(e, Event::Head(_))).count();
        match verdict {
            Verdict::Refuse(status) => {
                prop_assert_eq!(out.error.map(|e| e.status(g.role)), Some(status), "{:?}", out);
                prop_assert_eq!(heads, 0);
            }
            Verdict::Interim => {
                prop_assert_eq!(out.error, None);
                prop_assert!(matches!(out.events.first(), Some(Event::Interim(_))), "{:?}", out);
            }
            Verdict::Switched => {
                prop_assert_eq!(out.error, None);
                prop_assert!(matches!(&out.events[..], [Event::Head(_), Event::Switched]), "{:?}", out);
            }
            Verdict::Message { body: kind, keep_alive } => {
                prop_assert_eq!(out.error, None, "{:?}", verdict);
                let Some(Event::Head(raw)) = out.events.first() else { panic!("no head: {out:?}") };
                prop_assert_eq!(raw.len(), head_len);
                let head = Head::parse(raw.clone(), g.role, &limits).expect("a head the decoder framed parses");
                prop_assert_eq!(decoded_kind(&head, g.role, &g.asked), kind);
                let mut rest = &out.events[1..];
                if !body.is_empty() {
                    prop_assert_eq!(rest.first(), Some(&Event::Body(body.clone())));
                    rest = &rest[1..];
                }
                prop_assert_eq!(rest, &[Event::End(keep_alive)][..]);
                prop_assert_eq!(out.consumed, input.len());
            }
        }
    }

    /// O2: the oracle's own head reader agrees with the structured classification of the same message.
    #[test]
    fn oracle_head_reader_matches_structure(g in message()) {
        let head = g.head();
        // A request's Host is plain and clean, as the reader requires.
        prop_assert_eq!(super::oracle::classify_head(&head, g.role, g.asked), Some(classify(&g.framing())));
    }
}

/// SPEC §5: an unknown coding is 501 even when `chunked` is not last either (the oracle's documented order).
#[test]
fn unknown_coding_is_501_before_chunked_not_last() {
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n";
    let out = run_decoder(
        Role::Request,
        RequestInfo { method: Method::Get, upgrade: false, keep_alive: true },
        &Limits::default(),
        input,
        &[],
    );
    assert_eq!(out.error.map(|e| e.status(Role::Request)), Some(501));
}

/// Regression (found by O1): an HTTP/1.0 response with Transfer-Encoding closes its connection (RFC 9112 §6.1).
#[test]
fn http10_response_with_te_closes() {
    let input = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let asked = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };
    let out = run_decoder(Role::Response, asked, &Limits::default(), input, &[]);
    assert_eq!(out.error, None);
    assert_eq!(out.events.last(), Some(&Event::End(false)));
}

/// Regression: a response with both framings reaches the visitor framed by Transfer-Encoding alone (RFC 9112 §6.3 ¶3).
#[test]
fn cl_te_response_forwarded_without_content_length() {
    let raw = bytes::Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let head = Head::parse(raw, Role::Response, &Limits::default()).expect("parses");
    let mut out = bytes::BytesMut::new();
    rewrite::rewrite_response(&head, false, &mut out);
    let forwarded =
        Head::parse(out.freeze(), Role::Response, &Limits::default()).expect("forwarded head parses");
    assert_eq!(forwarded.field("content-length"), None);
    assert_eq!(forwarded.field("transfer-encoding"), Some(&b"chunked"[..]));
    assert_eq!(forwarded.body(), BodyKind::Chunked);
}

/// The generator reaches every verdict of the oracle often enough for O1 to mean something.
#[test]
fn generator_reaches_every_verdict() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2000 {
        let g = message().new_tree(&mut runner).expect("a value").current();
        let key = match classify(&g.framing()) {
            Verdict::Refuse(s) => format!("refuse {s}"),
            Verdict::Interim => "interim".into(),
            Verdict::Switched => "switched".into(),
            Verdict::Message { body, keep_alive } => {
                let body = match body {
                    Body::None => "None",
                    Body::Length(_) => "Length",
                    Body::Chunked => "Chunked",
                    Body::UntilClose => "UntilClose",
                };
                format!("{body} {}", if keep_alive { "keep" } else { "close" })
            }
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    for kind in [
        "refuse 400",
        "refuse 501",
        "refuse 502",
        "interim",
        "switched",
        "None keep",
        "None close",
        "Length keep",
        "Chunked keep",
        "Chunked close",
        "UntilClose close",
    ] {
        assert!(seen.get(kind).copied().unwrap_or(0) >= 10, "{kind} too rare: {seen:?}");
        println!("{kind}: {}", seen[kind]);
    }
}
