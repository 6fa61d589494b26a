use super::*;
use crate::http::Method;

fn get() -> RequestInfo {
    RequestInfo { method: Method::Get, upgrade: false, keep_alive: true }
}

#[test]
fn a_batch_gives_its_pieces_in_order_until_cleared() {
    let mut batch = Batch::default();
    assert!(batch.is_empty());
    for i in 0..BATCH {
        assert!(!batch.is_full());
        batch.push(Bytes::from(vec![b'a' + i as u8; i + 1]));
        assert!(!batch.is_empty(), "a batch holding a piece has something to write");
    }
    assert!(batch.is_full());
    let joined = |batch: &Batch| {
        let mut out = [std::io::IoSlice::new(&[]); BATCH];
        let n = batch.slices(&mut out);
        out[..n].iter().flat_map(|s| s.iter().copied()).collect::<Vec<u8>>()
    };
    let all = joined(&batch);
    assert_eq!(all.len(), (1..=BATCH).sum::<usize>());
    assert!(all.starts_with(b"abbccc"), "{all:?}");
    batch.clear();
    assert!(batch.is_empty() && !batch.is_full());
    batch.push(Bytes::from_static(b"z"));
    assert_eq!(joined(&batch), b"z");
}

#[test]
fn a_batch_consumes_a_partial_write_across_its_pieces() {
    let joined = |batch: &Batch| {
        let mut out = [std::io::IoSlice::new(&[]); BATCH];
        let n = batch.slices(&mut out);
        out[..n].iter().map(|s| s.to_vec()).collect::<Vec<_>>()
    };
    let mut batch = Batch::default();
    for piece in [&b"abc"[..], b"de", b"fghi"] {
        batch.push(Bytes::copy_from_slice(piece));
    }
    batch.consume(0);
    assert_eq!(joined(&batch), [&b"abc"[..], b"de", b"fghi"]);
    batch.consume(1);
    assert_eq!(joined(&batch), [&b"bc"[..], b"de", b"fghi"], "within the first piece");
    batch.consume(2);
    assert_eq!(joined(&batch), [&b"de"[..], b"fghi"], "exactly the first piece");
    batch.consume(3);
    assert_eq!(joined(&batch), [&b"ghi"[..]], "across a boundary");
    assert!(!batch.is_full());
    batch.push(Bytes::from_static(b"j"));
    assert_eq!(joined(&batch), [&b"ghi"[..], b"j"], "a piece pushed after goes behind");
    batch.consume(4);
    assert!(batch.is_empty());
    batch.push(Bytes::from_static(b"k"));
    batch.consume(5);
    assert!(batch.is_empty(), "more than it holds empties it");
}

#[test]
fn read_size_grows_while_reads_fill_and_shrinks_when_they_stop() {
    let mut size = ReadSize::default();
    assert_eq!(size.next(), READ_FIRST);
    // Short reads (a head, a small body) never grow it.
    size.read(READ_FIRST, 900);
    assert_eq!(size.next(), READ_FIRST);
    for _ in 0..10 {
        let room = size.next();
        size.read(room, room);
    }
    assert_eq!(size.next(), READ_MOST);
    // An end of stream or a trickle brings it back down, never below the first size.
    size.read(READ_MOST, 0);
    assert_eq!(size.next(), READ_MOST / 2);
    for _ in 0..10 {
        size.read(size.next(), 10);
    }
    assert_eq!(size.next(), READ_FIRST);
}

#[test]
fn reads_start_at_16_kib_and_grow_to_at_most_128_kib() {
    // The module's figures: one 16 KiB read holds a head; bulk reads stop growing at 128 KiB.
    let mut size = ReadSize::default();
    assert_eq!(size.next(), 16 * 1024);
    let mut seen = vec![size.next()];
    for _ in 0..10 {
        let room = size.next();
        size.read(room, room);
        seen.push(size.next());
    }
    assert_eq!(seen[..5], [16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024, 128 * 1024]);
    assert!(seen.iter().all(|&s| s <= 128 * 1024), "{seen:?}");
}

#[test]
fn read_size_keeps_its_size_between_a_quarter_and_a_full_read() {
    let grown = |steps: usize| {
        let mut size = ReadSize::default();
        for _ in 0..steps {
            size.read(size.next(), size.next());
        }
        size
    };
    let mut size = grown(2);
    assert_eq!(size.next(), 64 * 1024);
    size.read(64 * 1024, 20 * 1024);
    assert_eq!(size.next(), 64 * 1024, "a read between a quarter and full keeps the size");
    size.read(64 * 1024, 64 * 1024 - 1);
    assert_eq!(size.next(), 64 * 1024, "one byte short of full is not full");
    let mut size = grown(1);
    size.read(32 * 1024, 8 * 1024);
    assert_eq!(size.next(), 32 * 1024, "exactly a quarter is not less than a quarter");
    size.read(32 * 1024, 8 * 1024 - 1);
    assert_eq!(size.next(), 16 * 1024, "less than a quarter halves it");
    // A read given no room that brought nothing says nothing about more waiting.
    let mut size = ReadSize::default();
    size.read(0, 0);
    assert_eq!(size.next(), 16 * 1024);
}

#[test]
fn shrink_keeps_up_to_twice_the_first_read_size() {
    for (cap, kept) in [(16 * 1024, true), (20 * 1024, true), (32 * 1024, true), (32 * 1024 + 1, false)] {
        let mut buf = BytesMut::with_capacity(cap);
        assert_eq!(buf.capacity(), cap, "precondition");
        shrink(&mut buf);
        assert_eq!(buf.capacity() == cap, kept, "an empty buffer of {cap} bytes");
        assert_eq!(buf.capacity() == 0, !kept);
    }
}

#[test]
fn shrink_frees_only_an_empty_grown_buffer() {
    let mut big = BytesMut::with_capacity(READ_MOST);
    big.extend_from_slice(b"x");
    shrink(&mut big);
    assert!(big.capacity() >= READ_MOST, "a buffer holding bytes keeps them");
    big.clear();
    shrink(&mut big);
    assert_eq!(big.capacity(), 0);
    let mut small = BytesMut::with_capacity(READ_FIRST);
    shrink(&mut small);
    assert_eq!(small.capacity(), READ_FIRST);
}

/// Runs a pump over `input` fed in pieces of `split` bytes; returns the written bytes and ending.
fn run(mut pump: Pump, input: &[u8], split: usize) -> Result<(Vec<u8>, Ending), FrameError> {
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut out = Vec::new();
    loop {
        match pump.step(&mut buf, rest.is_empty())? {
            Step::Write(b) => out.extend_from_slice(&b),
            Step::Read => {
                let n = split.min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            Step::Done(end) => return Ok((out, end)),
        }
    }
}

#[test]
fn response_to_the_visitor_is_rewritten_and_to_a_peer_passed_through() {
    let resp =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nKeep-Alive: 5\r\nContent-Length: 3\r\n\r\nabc";
    for split in [1, 7, 1000] {
        let (out, end) = run(Pump::response(&Limits::default(), get(), Sink::Peer), resp, split).unwrap();
        assert_eq!(out, resp.to_vec());
        assert_eq!(end, Ending::Message { keep_alive: true });
        let mut pump = Pump::response(&Limits::default(), get(), Sink::Visitor);
        let mut buf = BytesMut::from(&resp[..]);
        let mut out = Vec::new();
        while let Step::Write(b) = pump.step(&mut buf, false).unwrap() {
            out.extend_from_slice(&b);
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{text}");
        assert!(!text.contains("Keep-Alive") && text.ends_with("abc"), "{text}");
        assert_eq!((pump.visitor_keep_alive(), pump.status()), (Some(true), Some(200)));
    }
}

#[test]
fn close_delimited_response_ends_at_eof_and_closes_both() {
    let resp = b"HTTP/1.1 200 OK\r\n\r\nstream until close";
    let mut pump = Pump::response(&Limits::default(), get(), Sink::Visitor);
    let (mut buf, mut out) = (BytesMut::from(&resp[..]), Vec::new());
    let end = loop {
        match pump.step(&mut buf, true).unwrap() {
            Step::Write(b) => out.extend_from_slice(&b),
            Step::Read => unreachable!("eof was given"),
            Step::Done(end) => break end,
        }
    };
    assert!(String::from_utf8(out).unwrap().ends_with("\r\n\r\nstream until close"));
    assert_eq!(pump.visitor_keep_alive(), Some(false));
    assert_eq!(settle(Some(Ending::Message { keep_alive: true }), end, false).upstream, After::Close);
}

#[test]
fn eof_before_a_response_is_an_error_not_a_hang() {
    let mut pump = Pump::response(&Limits::default(), get(), Sink::Visitor);
    assert_eq!(pump.step(&mut BytesMut::new(), false), Ok(Step::Read));
    assert_eq!(pump.step(&mut BytesMut::new(), true), Err(FrameError::UnexpectedEof));
    assert!(!pump.started());
}

#[test]
fn request_body_pump_continues_after_the_head() {
    let mut dec = Decoder::request(&Limits::default());
    let mut buf = BytesMut::from(
        &b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET"[..],
    );
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Head(_)))));
    let mut pump = Pump::request_body(dec);
    let mut out = Vec::new();
    let end = loop {
        match pump.step(&mut buf, false).unwrap() {
            Step::Write(b) => out.extend_from_slice(&b),
            Step::Read => panic!("all bytes were there"),
            Step::Done(end) => break end,
        }
    };
    assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(end, Ending::Message { keep_alive: true });
    assert_eq!(&buf[..], b"GET", "the next request stays in the buffer");
}

fn head_then(raw: &[u8]) -> (Decoder, BytesMut, bool) {
    let mut dec = Decoder::request(&Limits::default());
    let mut buf = BytesMut::from(raw);
    let Ok(Some(Frame::Head(h))) = dec.decode(&mut buf) else { panic!("no head in {raw:?}") };
    (dec, buf, h.expects_continue())
}

#[test]
fn a_held_head_goes_out_with_the_first_valid_element_and_never_before_a_bad_one() {
    let head = Bytes::from_static(b"POST / HTTP/1.1\r\nHost: o\r\n\r\n");
    let (dec, mut buf, cont) =
        head_then(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n");
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Err(FrameError::InvalidChunkSize));
    assert!(!pump.started(), "nothing of a refused request goes upstream");
    let (dec, mut buf, cont) =
        head_then(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n");
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Err(FrameError::MissingChunkCrlf), "a later bad element too");
    assert!(!pump.started());
    // A body that arrived with its head goes out right behind it, in order.
    let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n".to_vec();
    raw.resize(raw.len() + 200_000, b'x');
    let (dec, mut buf, cont) = head_then(&raw);
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Write(head.clone())));
    assert!(matches!(pump.step(&mut buf, false), Ok(Step::Write(b)) if b.len() == 200_000));
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Done(Ending::Message { keep_alive: true })));

    let (dec, mut buf, cont) =
        head_then(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3");
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Read), "the chunk line is not complete yet");
    buf.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Write(head.clone())));
    assert!(matches!(pump.step(&mut buf, false), Ok(Step::Write(_))));

    // A visitor waiting for 100 Continue sends no body until the origin answers: the head goes now.
    let (dec, mut buf, cont) =
        head_then(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(cont);
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Write(head)));
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Read));
}

/// A chunked request head followed by `chunks` valid 1000-byte chunks and then `tail`.
fn chunked_body(chunks: usize, tail: &[u8]) -> Vec<u8> {
    let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..chunks {
        raw.extend_from_slice(b"3e8\r\n");
        raw.resize(raw.len() + 1000, b'x');
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(tail);
    raw
}

#[test]
fn the_head_is_held_for_up_to_64_kib_of_body_and_no_longer() {
    let head = Bytes::from_static(b"POST / HTTP/1.1\r\nHost: o\r\n\r\n");
    // About 60 KiB of valid chunks, then a bad one, all in one read: nothing goes upstream.
    let (dec, mut buf, cont) = head_then(&chunked_body(60, b"zz\r\n"));
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Err(FrameError::InvalidChunkSize));
    assert!(!pump.started(), "a bad element within the first 64 KiB sends nothing upstream");
    // About 70 KiB of valid chunks first: the head and those bytes go out; the error comes after.
    let (dec, mut buf, cont) = head_then(&chunked_body(70, b"zz\r\n"));
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Write(head)), "the hold ends at 64 KiB");
    assert!(pump.started());
    let mut body = 0;
    let err = loop {
        match pump.step(&mut buf, false) {
            Ok(Step::Write(b)) => body += b.len(),
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err, FrameError::InvalidChunkSize);
    assert_eq!(body, 70 * 1007, "every valid chunk before the bad one went out");
}

#[test]
fn a_held_head_goes_out_before_the_body_that_arrived_with_it() {
    let head = Bytes::from_static(b"POST / HTTP/1.1\r\nHost: o\r\n\r\n");
    // One whole chunk and part of the next: the head, then the whole chunk, then wait for more.
    let (dec, mut buf, cont) = head_then(&chunked_body(1, b"5\r\nab"));
    let mut pump = Pump::request(dec, head.clone(), cont);
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Write(head)), "the head first");
    let mut body = Vec::new();
    let step = loop {
        match pump.step(&mut buf, false) {
            Ok(Step::Write(b)) => body.extend_from_slice(&b),
            other => break other,
        }
    };
    assert_eq!(step, Ok(Step::Read));
    assert!(body.starts_with(b"3e8\r\nxxx") && body.len() >= 1007, "{}", body.len());
    buf.extend_from_slice(b"cde\r\n0\r\n\r\n");
    let (rest, end) = run_on(pump, &mut buf);
    body.extend_from_slice(&rest);
    assert!(body.ends_with(b"\r\n5\r\nabcde\r\n0\r\n\r\n"));
    assert_eq!(end, Ending::Message { keep_alive: true });
}

/// Steps a pump over what `buf` holds (no more will come, no eof) until it is done.
fn run_on(mut pump: Pump, buf: &mut BytesMut) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    loop {
        match pump.step(buf, false) {
            Ok(Step::Write(b)) => out.extend_from_slice(&b),
            Ok(Step::Done(end)) => return (out, end),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_pump_has_started_once_it_handed_out_bytes() {
    let mut pump = Pump::response(&Limits::default(), get(), Sink::Visitor);
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"[..]);
    assert!(!pump.started());
    assert!(matches!(pump.step(&mut buf, false), Ok(Step::Write(_))));
    assert!(pump.started(), "the head went out: a broken exchange can no longer get a 502");
    assert_eq!(pump.step(&mut buf, false), Ok(Step::Read));
    assert!(pump.started(), "and stays so");
}

#[test]
fn only_safe_requests_on_kept_connections_are_retried() {
    let get = Some(Method::Get);
    assert!(may_retry(get, BodyKind::Empty, true, false));
    assert!(may_retry(Some(Method::Head), BodyKind::Empty, true, false));
    assert!(!may_retry(get, BodyKind::Empty, false, false), "a fresh connection failing is real");
    assert!(!may_retry(get, BodyKind::Empty, true, true), "part of a response went out");
    assert!(!may_retry(Some(Method::Other), BodyKind::Empty, true, false), "POST and friends");
    assert!(!may_retry(get, BodyKind::Length(3), true, false), "the body is gone");
}

#[test]
fn settle_reuses_only_after_two_clean_messages() {
    let ok = Ending::Message { keep_alive: true };
    let no = Ending::Message { keep_alive: false };
    assert_eq!(settle(Some(ok), ok, true), Settled { downstream: After::Reuse, upstream: After::Reuse });
    assert_eq!(settle(Some(ok), ok, false), Settled { downstream: After::Close, upstream: After::Reuse });
    assert_eq!(settle(Some(no), ok, true), Settled { downstream: After::Close, upstream: After::Reuse });
    assert_eq!(settle(Some(ok), no, true).upstream, After::Close);
    assert_eq!(settle(None, ok, true), Settled { downstream: After::Close, upstream: After::Close });
    assert_eq!(settle(Some(ok), Ending::Switched, true).upstream, After::Raw);
    // From a response pump: the peer's own keep-alive, and leftover bytes spoil the upstream.
    let peer = Pump::response(&Limits::default(), get(), Sink::Peer);
    assert_eq!(
        peer.settle(Some(ok), ok, false),
        Settled { downstream: After::Reuse, upstream: After::Reuse }
    );
    assert_eq!(
        peer.settle(Some(ok), no, false),
        Settled { downstream: After::Close, upstream: After::Close }
    );
    assert_eq!(peer.settle(Some(ok), ok, true).upstream, After::Close);
    let visitor = Pump::response(&Limits::default(), get(), Sink::Visitor);
    assert_eq!(visitor.settle(Some(ok), ok, false).downstream, After::Close, "no head seen: close");
}
