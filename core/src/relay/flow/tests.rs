use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::http::{Method, RequestInfo};
use crate::limits::Limits;
use crate::relay::{DRAIN_TIME, READ_FIRST, READ_MOST, Sink};

fn response_flow() -> Flow {
    let get = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };
    Flow::new(Pump::response(&Limits::default(), get, Sink::Peer))
}

/// The pending pieces, each as bytes.
fn pieces(flow: &Flow) -> Vec<Vec<u8>> {
    let mut out = [IoSlice::new(&[]); BATCH];
    let n = flow.slices(&mut out);
    out[..n].iter().map(|s| s.to_vec()).collect()
}

/// Writes everything pending in one go; returns it.
fn write_all(flow: &mut Flow) -> Vec<u8> {
    let bytes = pieces(flow).concat();
    if !bytes.is_empty() {
        flow.wrote(bytes.len());
    }
    bytes
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";

#[test]
fn what_one_read_decoded_goes_out_together_before_the_next_read() {
    let mut flow = response_flow();
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"[..]);
    assert_eq!(flow.want_read(), None, "a fresh flow steps first: bytes may be buffered");
    assert!(flow.step(&mut buf));
    assert_eq!(pieces(&flow), [HEAD.to_vec(), b"ab".to_vec()], "head and body in one vectored write");
    assert_eq!(flow.want_read(), None, "pending pieces are written before the next read");
    assert!(!flow.step(&mut buf), "nor does it step while they wait");
    assert!(!flow.started());
    write_all(&mut flow);
    assert!(flow.started());
    assert_eq!(flow.want_read(), Some(READ_FIRST));
    assert!(!flow.step(&mut buf), "a pump that asked to read is not stepped without one");
    assert_eq!(flow.finished(), None);
    buf.extend_from_slice(b"cde");
    flow.read(&mut buf, READ_FIRST, 3, Instant::now());
    assert_eq!(flow.finished(), None, "the end counts once its bytes are written");
    assert_eq!(write_all(&mut flow), b"cde");
    assert_eq!(flow.finished(), Some(Ok(Ending::Message { keep_alive: true })));
    assert_eq!(flow.want_read(), None);
}

#[test]
fn a_partial_write_goes_on_from_the_byte_it_stopped_at() {
    let mut flow = response_flow();
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde"[..]);
    assert!(flow.step(&mut buf));
    flow.wrote(HEAD.len() - 2);
    assert!(flow.started(), "some bytes reached the sink");
    assert_eq!(pieces(&flow), [b"\r\n".to_vec(), b"abcde".to_vec()]);
    flow.wrote(3);
    assert_eq!(pieces(&flow), [b"bcde".to_vec()], "across the boundary");
    assert_eq!(flow.finished(), None);
    flow.wrote(4);
    assert_eq!(flow.finished(), Some(Ok(Ending::Message { keep_alive: true })));
}

#[test]
fn a_full_batch_is_written_before_the_pump_steps_on() {
    let mut flow = response_flow();
    let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10)[..]);
    buf.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert!(flow.step(&mut buf));
    assert_eq!(pieces(&flow).len(), BATCH);
    assert_eq!((flow.want_read(), flow.finished()), (None, None));
    assert!(!flow.step(&mut buf), "a full batch is written before the pump steps again");
    assert_eq!(pieces(&flow).len(), BATCH);
    write_all(&mut flow);
    assert_eq!(flow.want_read(), None, "the rest of this read is still to be stepped");
    assert!(flow.step(&mut buf));
    assert_eq!(pieces(&flow).len(), 3, "two interim heads and the final one");
    write_all(&mut flow);
    assert_eq!(flow.finished(), Some(Ok(Ending::Message { keep_alive: true })));
}

#[test]
fn a_framing_error_drops_what_its_read_decoded_and_ends_the_flow() {
    let mut flow = response_flow();
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"[..]);
    assert!(flow.step(&mut buf));
    assert_eq!(flow.finished(), Some(Err(FlowError::Frame(FrameError::InvalidChunkSize))));
    assert!(!flow.pending() && !flow.started(), "nothing of it reaches the sink");
}

#[test]
fn a_close_delimited_message_ends_at_eof_and_a_cut_one_fails() {
    let mut flow = response_flow();
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nab"[..]);
    assert!(flow.step(&mut buf));
    write_all(&mut flow);
    flow.read(&mut buf, READ_FIRST, 0, Instant::now());
    assert_eq!(flow.finished(), Some(Ok(Ending::Message { keep_alive: false })));

    let mut cut = response_flow();
    let mut buf = BytesMut::from(HEAD);
    assert!(cut.step(&mut buf));
    write_all(&mut cut);
    cut.read(&mut buf, READ_FIRST, 0, Instant::now());
    assert_eq!(cut.finished(), Some(Err(FlowError::Frame(FrameError::UnexpectedEof))));
}

#[test]
fn without_a_drain_a_failed_write_or_read_fails_the_flow() {
    let now = Instant::now();
    let mut flow = response_flow();
    let mut buf = BytesMut::from(HEAD);
    assert!(flow.step(&mut buf));
    flow.write_failed(now);
    assert_eq!(flow.finished(), Some(Err(FlowError::Write)));
    assert!(!flow.pending() && !flow.started(), "a failed write took nothing");
    assert_eq!(flow.drain_deadline(), None);

    let mut flow = response_flow();
    let mut buf = BytesMut::from(HEAD);
    assert!(flow.step(&mut buf));
    write_all(&mut flow);
    flow.read_failed();
    assert_eq!(flow.finished(), Some(Err(FlowError::Read)));
    assert!(flow.started());
}

/// A flow with a drain whose head write failed at `now`, waiting to read the 5-byte body.
fn lost(budget: usize, now: Instant) -> (Flow, BytesMut) {
    let mut flow = response_flow().with_drain(budget);
    let mut buf = BytesMut::from(HEAD);
    assert!(flow.step(&mut buf));
    flow.write_failed(now);
    (flow, buf)
}

#[test]
fn a_lost_sink_is_read_past_to_the_end_within_the_budget() {
    let now = Instant::now();
    let (mut flow, mut buf) = lost(5, now);
    assert_eq!(flow.finished(), None, "the flow reads on");
    assert_eq!(flow.want_read(), Some(READ_FIRST));
    assert_eq!(flow.drain_deadline(), Some(now + DRAIN_TIME));
    buf.extend_from_slice(b"abcde");
    flow.read(&mut buf, READ_FIRST, 5, now);
    assert!(!flow.pending(), "nothing more is written");
    assert_eq!(flow.finished(), Some(Err(FlowError::Drained(Ending::Message { keep_alive: true }))));

    let (mut over, mut buf) = lost(4, now);
    buf.extend_from_slice(b"abcde");
    over.read(&mut buf, READ_FIRST, 5, now);
    assert_eq!(over.finished(), Some(Err(FlowError::Write)), "budget + 1 is too much");

    let (mut broken, _) = lost(5, now);
    broken.read_failed();
    assert_eq!(broken.finished(), Some(Err(FlowError::Read)));
}

#[test]
fn a_drain_ends_when_its_time_is_up() {
    let now = Instant::now();
    let ns = Duration::from_nanos(1);
    let (mut flow, _) = lost(5, now);
    flow.handle_timeout(now + DRAIN_TIME - ns);
    assert_eq!(flow.finished(), None, "before the deadline the read is still awaited");
    flow.handle_timeout(now + DRAIN_TIME);
    assert_eq!(flow.finished(), Some(Err(FlowError::Write)));

    // A read that arrives at the deadline counts, one after it does not.
    let (mut at, mut abuf) = lost(5, now);
    abuf.extend_from_slice(b"abcde");
    at.read(&mut abuf, READ_FIRST, 5, now + DRAIN_TIME);
    assert!(matches!(at.finished(), Some(Err(FlowError::Drained(_)))));
    let (mut late, mut buf) = lost(5, now);
    buf.extend_from_slice(b"abcde");
    late.read(&mut buf, READ_FIRST, 5, now + DRAIN_TIME + ns);
    assert_eq!(late.finished(), Some(Err(FlowError::Write)));
}

#[test]
fn a_write_that_fails_after_the_end_drains_to_it() {
    let mut flow = response_flow().with_drain(0);
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde"[..]);
    assert!(flow.step(&mut buf));
    flow.wrote(3);
    flow.write_failed(Instant::now());
    assert!(flow.started(), "three bytes got out");
    assert_eq!(flow.finished(), Some(Err(FlowError::Drained(Ending::Message { keep_alive: true }))));
    assert_eq!(flow.drain_deadline(), None, "nothing left to wait for");
}

#[test]
fn the_read_room_grows_with_reads_that_fill_what_they_were_given() {
    let mut flow = response_flow();
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"[..]);
    assert!(flow.step(&mut buf));
    write_all(&mut flow);
    let mut read = |flow: &mut Flow, room: usize, n: usize| {
        buf.resize(buf.len() + n, b'x');
        flow.read(&mut buf, room, n, Instant::now());
        write_all(flow);
    };
    // A read that brings what was asked but not the room it was given (the buffer had more spare)
    // does not grow it: the room, not the size asked, is what a full read is measured against.
    read(&mut flow, READ_FIRST + 4096, READ_FIRST);
    assert_eq!(flow.want_read(), Some(READ_FIRST));
    let mut seen = Vec::new();
    for _ in 0..5 {
        let want = flow.want_read().expect("a body to read");
        seen.push(want);
        read(&mut flow, want, want);
    }
    assert_eq!(seen, [16 << 10, 32 << 10, 64 << 10, 128 << 10, 128 << 10]);
    assert_eq!(flow.want_read(), Some(READ_MOST));
    read(&mut flow, READ_MOST, 100);
    assert_eq!(flow.want_read(), Some(READ_MOST / 2), "a trickle halves it");
}

#[test]
fn the_buffer_is_shrunk_when_the_message_ends() {
    let mut flow = response_flow();
    let mut buf = BytesMut::with_capacity(READ_MOST);
    buf.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde");
    assert!(flow.step(&mut buf));
    assert!(buf.is_empty() && buf.capacity() <= 2 * READ_FIRST, "{}", buf.capacity());
    assert_eq!(write_all(&mut flow).len(), HEAD.len() + 5, "the pieces outlive the buffer's room");
}

#[test]
fn into_pump_gives_back_the_pump_with_its_status() {
    let mut flow = response_flow();
    let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\r\n\r\nGET"[..]);
    assert!(flow.step(&mut buf));
    write_all(&mut flow);
    assert!(flow.finished().is_some());
    assert_eq!(flow.into_pump().status(), Some(204));
    assert_eq!(&buf[..], b"GET", "bytes past the message stay in the buffer");
}

/// A flow in a chosen state; `keep` is its ending's `keep_alive`, to tell the two ends apart.
#[derive(Debug, Clone, Copy)]
enum State {
    Open { started: bool },
    Ended { keep: bool },
    Frame,
    Read { started: bool },
    Write,
    Drained { keep: bool },
}

fn flow_in(state: State) -> Flow {
    let now = Instant::now();
    let head = |keep: bool| {
        let close = if keep { "" } else { "Connection: close\r\n" };
        BytesMut::from(format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 2\r\n\r\n").as_bytes())
    };
    let mut flow = response_flow();
    let mut buf = head(true);
    match state {
        State::Open { started } | State::Read { started } => {
            assert!(flow.step(&mut buf));
            if started {
                write_all(&mut flow);
            }
            if let State::Read { .. } = state {
                flow.read_failed();
            }
        }
        State::Ended { keep } => {
            let mut buf = head(keep);
            buf.extend_from_slice(b"ab");
            assert!(flow.step(&mut buf));
            write_all(&mut flow);
        }
        State::Frame => {
            let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..]);
            assert!(flow.step(&mut bad));
        }
        State::Write => {
            assert!(flow.step(&mut buf));
            flow.write_failed(now);
        }
        State::Drained { keep } => {
            flow = flow.with_drain(10);
            let mut buf = head(keep);
            buf.extend_from_slice(b"ab");
            assert!(flow.step(&mut buf));
            flow.write_failed(now);
        }
    }
    flow
}

#[test]
fn outcome_follows_the_request_first_rule() {
    use State::*;
    let end = |keep_alive| Ending::Message { keep_alive };
    let bad = Some(FrameError::InvalidContentLength);
    // Written from the rule: the request's end or failure counts first; the response's end decides.
    let table = [
        (Open { started: false }, Open { started: true }, None),
        (Ended { keep: false }, Open { started: true }, None),
        (
            Open { started: true },
            Ended { keep: true },
            Some(Outcome::Done { request: None, response: end(true) }),
        ),
        (
            Ended { keep: false },
            Ended { keep: true },
            Some(Outcome::Done { request: Some(end(false)), response: end(true) }),
        ),
        (Frame, Open { started: true }, Some(Outcome::RequestFailed { frame: bad, response_started: true })),
        (
            Read { started: true },
            Open { started: false },
            Some(Outcome::RequestFailed { frame: None, response_started: false }),
        ),
        (Write, Ended { keep: true }, Some(Outcome::RequestFailed { frame: None, response_started: true })),
        (Frame, Drained { keep: true }, Some(Outcome::RequestFailed { frame: bad, response_started: false })),
        (
            Drained { keep: true },
            Open { started: false },
            Some(Outcome::RequestFailed { frame: None, response_started: false }),
        ),
        (
            Open { started: false },
            Read { started: true },
            Some(Outcome::ResponseFailed { response_started: true }),
        ),
        (Ended { keep: true }, Frame, Some(Outcome::ResponseFailed { response_started: false })),
        (Ended { keep: true }, Write, Some(Outcome::ResponseFailed { response_started: false })),
        (
            Open { started: true },
            Drained { keep: false },
            Some(Outcome::Abandoned { request: None, response: end(false) }),
        ),
        (
            Ended { keep: true },
            Drained { keep: false },
            Some(Outcome::Abandoned { request: Some(end(true)), response: end(false) }),
        ),
    ];
    for (req, resp, expected) in table {
        assert_eq!(outcome(&flow_in(req), &flow_in(resp)), expected, "request {req:?}, response {resp:?}");
    }
}

#[test]
fn a_body_less_request_registers_before_a_response_that_was_already_buffered() {
    let limits = Limits::default();
    let mut dec = crate::http::Decoder::request(&limits);
    let mut down = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
    assert!(matches!(dec.decode(&mut down), Ok(Some(crate::http::Frame::Head(_)))));
    let mut req =
        Flow::new(Pump::request(dec, Bytes::from_static(b"GET / HTTP/1.1\r\nHost: o\r\n\r\n"), false));
    let mut resp = response_flow();
    let mut up = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..]);
    // As the driver goes: the request steps and writes its head, then the response.
    assert!(req.step(&mut down));
    write_all(&mut req);
    assert!(resp.step(&mut up));
    write_all(&mut resp);
    let request = Some(Ending::Message { keep_alive: true });
    assert_eq!(
        outcome(&req, &resp),
        Some(Outcome::Done { request, response: Ending::Message { keep_alive: true } })
    );
}
