//! Table-style cases for the request and response decoders (the rewriter's are in `rewrite_tests.rs`).

use bytes::BytesMut;

use super::*;
use crate::Limits;
use crate::fuzzing::{Event, Outcome, run_decoder};

/// A keep-alive GET, the request most responses in these tests answer.
pub(super) const GET: RequestInfo = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };

fn req(input: &str) -> Outcome {
    run_decoder(Role::Request, GET, &Limits::default(), input.as_bytes(), &[])
}

fn resp(info: RequestInfo, input: &str) -> Outcome {
    run_decoder(Role::Response, info, &Limits::default(), input.as_bytes(), &[])
}

fn bodies(o: &Outcome) -> Vec<&[u8]> {
    o.events.iter().filter_map(|e| if let Event::Body(b) = e { Some(&b[..]) } else { None }).collect()
}

fn ends(o: &Outcome) -> Vec<bool> {
    o.events.iter().filter_map(|e| if let Event::End(k) = e { Some(*k) } else { None }).collect()
}

/// The head `input` decodes to, as a request or as a response to an upgrade-asking GET.
pub(super) fn head_of(role: Role, input: &str) -> Head {
    let mut buf = BytesMut::from(input);
    let mut dec = match role {
        Role::Request => Decoder::request(&Limits::default()),
        Role::Response => Decoder::response(&Limits::default(), RequestInfo { upgrade: true, ..GET }),
    };
    match dec.decode(&mut buf) {
        Ok(Some(Frame::Head(h))) => h,
        other => panic!("no head: {other:?}"),
    }
}

#[test]
fn requests_with_each_body_kind() {
    let o = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((o.events.len(), o.error, ends(&o)), (2, None, vec![true]));
    let o = req("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(bodies(&o), vec![&b"hello"[..]]);
    let chunked =
        "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n";
    let o = req(chunked);
    assert_eq!(bodies(&o), vec![&b"5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"[..]]);
    assert_eq!(o.consumed, chunked.len());
}

#[test]
fn pipelined_requests_and_leading_empty_lines() {
    let o = req(
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nxGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(o.error, None);
    assert_eq!(ends(&o), vec![true, true, true]);
    assert_eq!(bodies(&o), vec![&b"x"[..]]);
}

#[test]
fn keep_alive_rules() {
    assert_eq!(ends(&req("GET / HTTP/1.0\r\n\r\n")), vec![false]);
    assert_eq!(ends(&req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")), vec![true]);
    assert_eq!(ends(&req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")), vec![false]);
}

#[test]
fn ambiguous_requests_are_refused_with_their_status() {
    let cases: &[(&str, FrameError, u16)] = &[
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            FrameError::LengthWithTransferEncoding,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            FrameError::ConflictingContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            FrameError::ConflictingContentLength,
            400,
        ),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", FrameError::InvalidContentLength, 400),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12345678901234567890\r\n\r\n",
            FrameError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            FrameError::ChunkedNotLast,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            FrameError::ChunkedNotLast,
            400,
        ),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", FrameError::ChunkedNotLast, 400),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: sponge, chunked\r\n\r\n",
            FrameError::UnknownTransferCoding,
            501,
        ),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", FrameError::TransferEncodingInHttp10, 400),
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", FrameError::BareLf, 400),
        ("GET / HTTP/1.1\r\nHost: a\n\r\n", FrameError::BareLf, 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", FrameError::ObsFold, 400),
        ("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", FrameError::InvalidHeaderName, 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", FrameError::InvalidHeaderName, 400),
        ("GET / HTTP/1.1\r\n\r\n", FrameError::MissingHost, 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", FrameError::DuplicateHost, 400),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", FrameError::UnsupportedVersion, 505),
        ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", FrameError::InvalidMethod, 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello", FrameError::BareLf, 400),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
            FrameError::InvalidChunkSize,
            400,
        ),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nshort", FrameError::UnexpectedEof, 400),
    ];
    for (input, want, status) in cases {
        let o = req(input);
        assert_eq!(o.error, Some(*want), "{input:?}");
        assert_eq!(want.status(Role::Request), *status, "{input:?}");
        // Nothing of a refused head reaches the origin: no Head event was produced for it.
        if !input.contains("\r\n\r\n5") && !input.contains("\r\n\r\nz") && !input.ends_with("short") {
            assert!(o.events.is_empty(), "{input:?} produced {:?}", o.events);
        }
    }
}

#[test]
fn size_limits() {
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert_eq!(req(&long_line).error, Some(FrameError::RequestLineTooLong));
    let unterminated_line = format!("GET /{}", "a".repeat(9000));
    assert_eq!(req(&unterminated_line).error, Some(FrameError::RequestLineTooLong));
    let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(70_000));
    assert_eq!(req(&big_head).error, Some(FrameError::HeadTooLarge));
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(128));
    assert_eq!(req(&many).error, Some(FrameError::TooManyHeaders));
    let just_enough = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(127));
    assert_eq!(req(&just_enough).error, None);
    assert_eq!(FrameError::HeadTooLarge.status(Role::Request), 431);
}

#[test]
fn eof_between_messages_is_clean_inside_is_not() {
    assert_eq!(req("").error, None);
    assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n\r\n").error, None);
    assert_eq!(req("GET / HTTP/1.1\r\nHo").error, Some(FrameError::UnexpectedEof));
}

#[test]
fn responses_with_each_body_kind() {
    let o = resp(GET, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!((bodies(&o), ends(&o)), (vec![&b"hi"[..]], vec![true]));
    let o = resp(GET, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
    assert_eq!((bodies(&o), ends(&o)), (vec![&b"2\r\nhi\r\n0\r\n\r\n"[..]], vec![true]));
    let o = resp(GET, "HTTP/1.1 200 OK\r\n\r\nuntil close");
    assert_eq!((bodies(&o), ends(&o)), (vec![&b"until close"[..]], vec![false]));
    // TE with a coding other than chunked last is read until close.
    let o = resp(GET, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz");
    assert_eq!((bodies(&o), ends(&o)), (vec![&b"zz"[..]], vec![false]));
}

#[test]
fn responses_without_bodies() {
    let head = RequestInfo { method: Method::Head, ..GET };
    let o = resp(head, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    assert_eq!((bodies(&o).len(), ends(&o), o.error), (0, vec![true], None));
    for status in ["204 No Content", "304 Not Modified"] {
        let o = resp(GET, &format!("HTTP/1.1 {status}\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(ends(&o), vec![true, true], "{status}");
    }
}

#[test]
fn interim_then_final() {
    let o = resp(
        GET,
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(matches!(o.events[..], [Event::Interim(_), Event::Interim(_), Event::Head(_), Event::End(true)]));
}

#[test]
fn switching_protocols() {
    let upgrade = RequestInfo { upgrade: true, ..GET };
    let input =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x01\x05hello";
    let mut buf = BytesMut::from(input);
    let mut dec = Decoder::response(&Limits::default(), upgrade);
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Head(_)))));
    assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Switched)));
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"\x01\x05hello", "bytes after the switch stay for the splice");
    assert_eq!(resp(GET, input).error, Some(FrameError::UnsolicitedSwitch));
    let connect = RequestInfo { method: Method::Connect, ..GET };
    assert_eq!(resp(connect, "HTTP/1.1 200 OK\r\n\r\nraw").events.last(), Some(&Event::Switched));
}

#[test]
fn response_keep_alive_follows_both_sides() {
    let te_and_cl = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(ends(&resp(GET, te_and_cl)), vec![false]);
    assert_eq!(ends(&resp(GET, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")), vec![false]);
    assert_eq!(
        ends(&resp(GET, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")),
        vec![false]
    );
    let closing = RequestInfo { keep_alive: false, ..GET };
    assert_eq!(ends(&resp(closing, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")), vec![false]);
    assert_eq!(
        resp(GET, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").error,
        Some(FrameError::ConflictingContentLength)
    );
    assert_eq!(FrameError::ConflictingContentLength.status(Role::Response), 502);
}

#[test]
fn connect_is_told_apart_and_its_2xx_switches() {
    let head = head_of(Role::Request, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(head.method(), Some(Method::Connect));
    assert_eq!(head.target(), b"example.com:443");
    let o = resp(head.request_info(), "HTTP/1.1 200 Connection Established\r\n\r\nraw bytes");
    assert_eq!(o.events.last(), Some(&Event::Switched));
    // The same 200 to a GET is a close-delimited body, not a switch.
    let o = resp(GET, "HTTP/1.1 200 OK\r\n\r\nraw bytes");
    assert_eq!((bodies(&o), ends(&o)), (vec![&b"raw bytes"[..]], vec![false]));
}

#[test]
fn content_length_takes_nineteen_digits_not_twenty() {
    let o = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000003\r\n\r\nabc");
    assert_eq!((o.error, bodies(&o)), (None, vec![&b"abc"[..]]));
    let o = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000003\r\n\r\nabc");
    assert_eq!(o.error, Some(FrameError::InvalidContentLength));
}

#[test]
fn response_with_chunked_not_once_and_last_is_read_until_close() {
    // RFC 9112 §6.3: a response whose final coding is not chunked (or that repeats it) ends at close.
    for te in ["chunked, gzip", "chunked\r\nTransfer-Encoding: chunked"] {
        let o = resp(GET, &format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\nmore"));
        assert_eq!((bodies(&o), ends(&o), o.error), (vec![&b"0\r\n\r\nmore"[..]], vec![false], None), "{te}");
    }
}

#[test]
fn close_after_a_finished_or_switched_message_is_clean() {
    // A caller that sees the peer close before calling reset/expect_response gets no error.
    let mut dec = Decoder::response(&Limits::default(), GET);
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Head(_)))));
    assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::End { keep_alive: true })));
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    let mut dec = Decoder::response(&Limits::default(), RequestInfo { upgrade: true, ..GET });
    let mut buf =
        BytesMut::from("HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\nxy");
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Head(_)))));
    assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Switched)));
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"xy", "the switched bytes stay for the splice");
    // Stray empty lines and then a close are a message cut short, not a clean close.
    assert_eq!(req("\r\n").error, Some(FrameError::UnexpectedEof));
}
