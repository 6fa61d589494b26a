//! Every HTTP limit of [`Limits`] at its value and one past it, at the decoder (SPEC §8: request
//! line 8 KiB → 414, head 64 KiB and 128 fields → 431; chunk-size line and trailer section as
//! `Limits` documents them). Lengths exclude the line's CR LF; the head and trailer sizes include
//! their blank line. Not modelled here: the time limits (the front's tests own those).

use bytes::BytesMut;

use crate::Limits;
use crate::fuzzing::{Event, Outcome, run_decoder};
use crate::http::{Decoder, FrameError, Method, RequestInfo, Role};

const GET: RequestInfo = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };
const KIB: usize = 1024;

fn run(role: Role, input: &[u8], cuts: &[usize]) -> Outcome {
    run_decoder(role, GET, &Limits::default(), input, cuts)
}

/// A request line of exactly `len` bytes.
fn request_line(len: usize) -> String {
    let fixed = "GET / HTTP/1.1".len();
    format!("GET /{} HTTP/1.1", "a".repeat(len - fixed))
}

/// What one `decode` (the peer still sending) says of `input`.
fn partial(input: &[u8]) -> Result<bool, FrameError> {
    let mut dec = Decoder::request(&Limits::default());
    dec.decode(&mut BytesMut::from(input)).map(|f| f.is_some())
}

#[test]
fn limits_are_the_spec_defaults() {
    let l = Limits::default();
    assert_eq!(
        (l.max_request_line, l.max_head, l.max_headers, l.max_chunk_line),
        (8 * KIB, 64 * KIB, 128, 4 * KIB)
    );
}

#[test]
fn request_line_at_limit_passes_one_past_is_414() {
    for (len, want) in [(8 * KIB, None), (8 * KIB + 1, Some(FrameError::RequestLineTooLong))] {
        let input = format!("{}\r\nHost: a\r\n\r\n", request_line(len));
        // The verdict does not depend on where the bytes were split.
        for cuts in [&[][..], &[len - 1, len, len + 1, len + 2]] {
            let o = run(Role::Request, input.as_bytes(), cuts);
            assert_eq!(o.error, want, "line of {len}, cuts {cuts:?}");
            assert_eq!(o.events.is_empty(), want.is_some(), "line of {len}");
        }
        assert_eq!(FrameError::RequestLineTooLong.status(Role::Request), 414);
    }
    // Refused as soon as the line is known to be too long, not only once it ends.
    let at = format!("\r\n{}\r", request_line(8 * KIB));
    assert_eq!(partial(at.as_bytes()), Ok(false), "a line at the limit with its CR is still waited for");
    let past = format!("\r\n{}\r", request_line(8 * KIB + 1));
    assert_eq!(partial(past.as_bytes()), Err(FrameError::RequestLineTooLong));
    let unterminated = request_line(8 * KIB + 2);
    assert_eq!(partial(unterminated.as_bytes()), Err(FrameError::RequestLineTooLong));
}

/// A request head of exactly `len` bytes, blank line included.
fn head_of_len(len: usize) -> String {
    let start = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    let end = "\r\n\r\n";
    format!("{start}{}{end}", "v".repeat(len - start.len() - end.len()))
}

#[test]
fn head_at_limit_passes_one_past_is_431() {
    let at = head_of_len(64 * KIB);
    let o = run(Role::Request, at.as_bytes(), &[]);
    assert_eq!((o.error, o.events.len()), (None, 2));
    // The next pipelined request sharing the buffer does not count against this head.
    let pipelined = format!("{at}GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(run(Role::Request, pipelined.as_bytes(), &[]).error, None);
    let past = head_of_len(64 * KIB + 1);
    let o = run(Role::Request, past.as_bytes(), &[]);
    assert_eq!((o.error, o.events.len()), (Some(FrameError::HeadTooLarge), 0));
    assert_eq!(FrameError::HeadTooLarge.status(Role::Request), 431);
    // Refused once 64 KiB have come without a blank line, without waiting for more.
    assert_eq!(partial(&at.as_bytes()[..64 * KIB - 1]), Ok(false));
    assert_eq!(partial(&past.as_bytes()[..64 * KIB]), Err(FrameError::HeadTooLarge));
    assert_eq!(
        run(Role::Response, past.replace("GET / HTTP/1.1", "HTTP/1.1 200 OK").as_bytes(), &[]).error,
        Some(FrameError::HeadTooLarge)
    );
}

#[test]
fn header_fields_at_limit_pass_one_past_is_431() {
    let fields = |n: usize| format!("GET / HTTP/1.1\r\nHost: a\r\n{}", "X: 1\r\n".repeat(n - 1));
    let o = run(Role::Request, format!("{}\r\n", fields(128)).as_bytes(), &[]);
    assert_eq!((o.error, o.events.len()), (None, 2));
    let o = run(Role::Request, format!("{}\r\n", fields(129)).as_bytes(), &[]);
    assert_eq!((o.error, o.events.len()), (Some(FrameError::TooManyHeaders), 0));
    assert_eq!(FrameError::TooManyHeaders.status(Role::Request), 431);
    // Refused as the 129th field arrives, before the head is complete.
    assert_eq!(partial(fields(128).as_bytes()), Ok(false));
    assert_eq!(partial(fields(129).as_bytes()), Err(FrameError::TooManyHeaders));
}

/// A chunked message whose one size line is exactly `len` bytes before its line ending `eol`.
fn chunk_line(start: &str, len: usize, eol: &str) -> String {
    let line = format!("1;{}", "e".repeat(len - 2));
    format!("{start}\r\nTransfer-Encoding: chunked\r\n\r\n{line}{eol}x{eol}0{eol}{eol}")
}

#[test]
fn chunk_size_line_at_limit_passes_one_past_is_refused() {
    for (role, start, eol, want) in [
        (Role::Request, "POST / HTTP/1.1\r\nHost: a", "\r\n", 400),
        (Role::Response, "HTTP/1.1 200 OK", "\r\n", 502),
        (Role::Response, "HTTP/1.1 200 OK", "\n", 502),
    ] {
        let o = run(role, chunk_line(start, 4 * KIB, eol).as_bytes(), &[]);
        assert_eq!(o.error, None, "{role:?} {eol:?}");
        assert!(matches!(o.events.last(), Some(Event::End(_))), "{role:?} {eol:?}");
        let o = run(role, chunk_line(start, 4 * KIB + 1, eol).as_bytes(), &[]);
        assert_eq!(o.error, Some(FrameError::ChunkLineTooLong), "{role:?} {eol:?}");
        assert_eq!(FrameError::ChunkLineTooLong.status(role), want);
    }
}

/// A chunked request whose trailer section (after `0\r\n`, final CRLF included) is `len` bytes.
fn trailers_of_len(len: usize) -> String {
    let fill = len - "X: ".len() - 2 * "\r\n".len();
    format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n\r\n",
        "t".repeat(fill)
    )
}

#[test]
fn trailer_section_at_head_limit_passes_one_past_is_431() {
    let o = run(Role::Request, trailers_of_len(64 * KIB).as_bytes(), &[]);
    assert_eq!(o.error, None);
    assert!(matches!(o.events.last(), Some(Event::End(true))));
    let o = run(Role::Request, trailers_of_len(64 * KIB + 1).as_bytes(), &[]);
    assert_eq!(o.error, Some(FrameError::TrailersTooLarge));
    assert_eq!(FrameError::TrailersTooLarge.status(Role::Request), 431);
}
