use std::future::pending;
use std::time::Duration;

use super::*;
use crate::Limits;
use crate::drive::sync::{Either, select_biased};
use crate::drive::testrt::{TestRt, block_on, pair};
use crate::http::{Method, RequestInfo};
use crate::relay::{DRAIN_TIME, Pump, Sink};

const MS: Duration = Duration::from_millis(1);
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

fn get_info() -> RequestInfo {
    RequestInfo { method: Method::Get, upgrade: false, keep_alive: true }
}

/// The request's flow (its head already decoded from `GET`) and the response's, as the client has them.
fn flows(limits: &Limits) -> (Flow, Flow) {
    let mut dec = Decoder::request(limits);
    let mut buf = BytesMut::from(GET);
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Head(_)))));
    (Flow::new(Pump::request_body(dec)), Flow::new(Pump::response(limits, get_info(), Sink::Peer)))
}

#[test]
fn a_head_cut_short_times_out_from_its_first_byte_on_a_reused_clock() {
    let rt = TestRt::new();
    let limits = Limits::default();
    let deadlines = HeadDeadlines { idle: Some(60_000 * MS), head: Some(100 * MS) };
    let (peer, mut conn) = pair();
    let (mut buf, mut dec, mut clock) = (BytesMut::new(), Decoder::request(&limits), Deadline::default());
    peer.send(GET);
    let head = block_on(&rt, read_head(&rt, &mut conn, &mut buf, &mut dec, deadlines, &mut clock));
    assert!(head.is_ok(), "{head:?}");
    dec.reset();
    // The idle deadline (60 s) stays armed; the head's (100 ms from its first byte) must still hold.
    peer.send(b"GET / HT");
    let start = rt.now();
    let cut = block_on(&rt, read_head(&rt, &mut conn, &mut buf, &mut dec, deadlines, &mut clock));
    assert!(matches!(cut, Err(HeadError::TimedOut)), "{cut:?}");
    assert_eq!(rt.now() - start, 100 * MS, "timed out at the head's deadline");
}

#[test]
fn an_idle_connection_closes_at_its_idle_deadline_and_a_head_read_whole_or_at_eof() {
    let rt = TestRt::new();
    let limits = Limits::default();
    let deadlines = HeadDeadlines { idle: Some(500 * MS), head: Some(100 * MS) };
    let (peer, mut conn) = pair();
    let (mut buf, mut dec, mut clock) = (BytesMut::new(), Decoder::request(&limits), Deadline::default());
    let start = rt.now();
    let idle = block_on(&rt, read_head(&rt, &mut conn, &mut buf, &mut dec, deadlines, &mut clock));
    assert!(matches!(idle, Err(HeadError::Closed)), "{idle:?}");
    assert_eq!(rt.now() - start, 500 * MS);
    peer.send(b"GET /x HTTP/1.0\r\n\r\n");
    drop(peer);
    let head = block_on(&rt, read_head(&rt, &mut conn, &mut buf, &mut dec, deadlines, &mut clock));
    assert_eq!(head.map(|h| h.target().to_vec()).ok(), Some(b"/x".to_vec()));
}

#[test]
fn an_exchange_relays_both_ways_and_ends_with_both_messages_kept_alive() {
    let rt = TestRt::new();
    let limits = Limits::default();
    let (down_peer, mut down) = pair();
    let (up_peer, mut up) = pair();
    let (mut req, mut resp) = flows(&limits);
    up_peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    let (mut dbuf, mut ubuf, mut clock) = (BytesMut::new(), BytesMut::new(), Deadline::default());
    let out = block_on(
        &rt,
        exchange(&rt, &mut down, &mut dbuf, &mut up, &mut ubuf, &mut req, &mut resp, &mut clock),
    );
    let kept = Ending::Message { keep_alive: true };
    assert_eq!(out, Outcome::Done { request: Some(kept), response: kept });
    assert_eq!(down_peer.take(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    assert!(ubuf.is_empty());
}

#[test]
fn a_response_whose_visitor_left_is_drained_to_its_end_or_given_up_at_the_drain_deadline() {
    let rt = TestRt::new();
    let limits = Limits::default();
    for rest_comes in [true, false] {
        let (down_peer, mut down) = pair();
        let (up_peer, mut up) = pair();
        let (mut req, resp) = flows(&limits);
        let mut resp = resp.with_drain(relay::DRAIN_BUDGET);
        down_peer.refuse();
        up_peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
        let (mut dbuf, mut ubuf, mut clock) = (BytesMut::new(), BytesMut::new(), Deadline::default());
        let start = rt.now();
        let run = exchange(&rt, &mut down, &mut dbuf, &mut up, &mut ubuf, &mut req, &mut resp, &mut clock);
        let rest = async {
            if rest_comes {
                up_peer.send(b"cd");
            }
            pending::<()>().await
        };
        let out = match block_on(&rt, select_biased(run, rest)) {
            Either::First(out) => out,
            Either::Second(()) => unreachable!(),
        };
        if rest_comes {
            let kept = Ending::Message { keep_alive: true };
            assert_eq!(out, Outcome::Abandoned { request: Some(kept), response: kept });
            assert_eq!(rt.now(), start, "no waiting for a rest that came");
        } else {
            assert_eq!(out, Outcome::ResponseFailed { response_started: false });
            assert_eq!(rt.now() - start, DRAIN_TIME, "given up at the drain's deadline, not before");
        }
    }
}

#[test]
fn a_request_whose_source_breaks_its_framing_fails_the_exchange() {
    let rt = TestRt::new();
    let limits = Limits::default();
    let (down_peer, mut down) = pair();
    let (_up_peer, mut up) = pair();
    let mut dec = Decoder::request(&limits);
    let mut dbuf = BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
    assert!(matches!(dec.decode(&mut dbuf), Ok(Some(Frame::Head(_)))));
    let mut req = Flow::new(Pump::request_body(dec));
    let mut resp = Flow::new(Pump::response(&limits, get_info(), Sink::Peer));
    down_peer.send(b"zz\r\n");
    let (mut ubuf, mut clock) = (BytesMut::new(), Deadline::default());
    let out = block_on(
        &rt,
        exchange(&rt, &mut down, &mut dbuf, &mut up, &mut ubuf, &mut req, &mut resp, &mut clock),
    );
    assert!(matches!(out, Outcome::RequestFailed { frame: Some(_), response_started: false }), "{out:?}");
}

#[test]
fn left_is_a_reset_only_not_pipelined_bytes_nor_a_half_close() {
    let rt = TestRt::new();
    for (make, gone) in [(0, false), (1, false), (2, true)] {
        let (mut peer, mut conn) = pair();
        match make {
            0 => peer.send(b"GET / HTTP/1.1\r\n"),
            1 => block_on(&rt, poll_fn(|cx| peer.poll_shutdown(cx))).expect("shutdown"),
            _ => peer.reset(),
        }
        let timer = async {
            let mut clock = Deadline::default();
            clock.set(&rt, Some(rt.now() + 50 * MS));
            clock.passed(&rt).await
        };
        let out = block_on(&rt, select_biased(left(&mut conn), timer));
        assert_eq!(matches!(out, Either::First(())), gone, "case {make}");
    }
}

#[test]
fn a_splice_passes_each_half_close_on_while_the_other_way_flows() {
    let rt = TestRt::new();
    let (mut a_peer, mut a) = pair();
    let (mut b_peer, mut b) = pair();
    a_peer.send(b"up");
    block_on(&rt, poll_fn(|cx| a_peer.poll_shutdown(cx))).expect("shutdown");
    let mut seen = BytesMut::new();
    let script = async {
        // b's end reads a's bytes to their end, and only then answers: a's half-close came through.
        while read_some(&mut b_peer, &mut seen, 64).await.expect("read") > 0 {}
        b_peer.send(b"down");
        let _ = poll_fn(|cx| b_peer.poll_shutdown(cx)).await;
        pending::<()>().await
    };
    let done = block_on(&rt, select_biased(splice(&mut a, b"A", &mut b, b"B"), script));
    assert!(matches!(done, Either::First(Ok(()))), "the splice ends once both sides ended");
    assert_eq!(&seen[..], b"Aup");
    let mut back = BytesMut::new();
    while block_on(&rt, read_some(&mut a_peer, &mut back, 64)).expect("read") > 0 {}
    assert_eq!(&back[..], b"Bdown", "b's bytes and then its end reached a");
}
