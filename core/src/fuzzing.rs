//! Fuzz target bodies, shared by the cargo-fuzz crate (`fuzz/`) and the tests.
//!
//! Each target takes arbitrary bytes, drives one machine, and panics on any
//! broken invariant. The cargo-fuzz targets are one-line calls into these, so
//! stable `cargo test` replays the committed seeds through the same code.

use bytes::{Bytes, BytesMut};

#[cfg(feature = "drive")]
pub use crate::drive::sim::ops::{Counts as DriveCounts, drive_ops};

use crate::Limits;
use crate::handshake::{HelloDecoder, VerdictDecoder};
use crate::http::oracle::{self, Verdict};
use crate::http::{BodyKind, Decoder, Frame, FrameError, Head, Method, RequestInfo, Role};

/// A decoded frame with body bytes owned, so runs with different splits can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A head's raw bytes (request, or final response).
    Head(Bytes),
    /// An interim response head's raw bytes.
    Interim(Bytes),
    /// Body bytes (adjacent bodies merged).
    Body(Vec<u8>),
    /// End of a message.
    End(bool),
    /// Protocol switch.
    Switched,
}

/// Everything a decoder produced from one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Frames in order, adjacent bodies merged.
    pub events: Vec<Event>,
    /// The error that stopped decoding, if any.
    pub error: Option<FrameError>,
    /// Bytes the frames account for.
    pub consumed: usize,
}

/// Feeds `input` to a decoder in pieces cut at `cuts`, decoding after each piece, then signals EOF.
///
/// After each `End` it readies the decoder for the next message, as a
/// connection would. Panics if a call consumed bytes without a frame, if the
/// frames do not account for exactly the bytes consumed, if an error is not
/// sticky, or if the buffer ever holds more than the input.
pub fn run_decoder(role: Role, req: RequestInfo, limits: &Limits, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut dec = match role {
        Role::Request => Decoder::request(limits),
        Role::Response => Decoder::response(limits, req),
    };
    let mut out = Outcome { events: Vec::new(), error: None, consumed: 0 };
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    points.push(input.len());
    points.sort_unstable();
    for (i, &point) in points.iter().enumerate() {
        buf.extend_from_slice(&input[fed..point.max(fed)]);
        fed = point.max(fed);
        let eof = i == points.len() - 1;
        loop {
            let before = buf.len();
            let result = if eof { dec.decode_eof(&mut buf) } else { dec.decode(&mut buf) };
            match result {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    out.consumed += used;
                    let len = record(&mut out.events, frame, &mut dec, req);
                    assert_eq!(used, len, "frame does not account for the bytes it consumed");
                    if out.events.last() == Some(&Event::Switched) {
                        return out;
                    }
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "decode consumed bytes without a frame");
                    break;
                }
                Err(e) => {
                    assert_eq!(dec.decode(&mut buf), Err(e), "errors are sticky");
                    out.error = Some(e);
                    return out;
                }
            }
            assert_eq!(out.consumed + buf.len(), fed, "bytes fed are either framed or still buffered");
        }
    }
    out
}

fn record(events: &mut Vec<Event>, frame: Frame, dec: &mut Decoder, req: RequestInfo) -> usize {
    let (event, len) = match frame {
        Frame::Head(h) => (Event::Head(h.raw().clone()), h.raw().len()),
        Frame::Interim(h) => (Event::Interim(h.raw().clone()), h.raw().len()),
        Frame::Body(b) => {
            assert!(!b.is_empty(), "empty body frame");
            if let Some(Event::Body(prev)) = events.last_mut() {
                prev.extend_from_slice(&b);
                return b.len();
            }
            (Event::Body(b.to_vec()), b.len())
        }
        Frame::End { keep_alive } => {
            match dec.role() {
                Role::Request => dec.reset(),
                Role::Response => dec.expect_response(req),
            }
            (Event::End(keep_alive), 0)
        }
        Frame::Switched => (Event::Switched, 0),
    };
    events.push(event);
    len
}

/// Small limits so that arbitrary inputs reach them.
pub fn small_limits() -> Limits {
    Limits { max_request_line: 64, max_head: 256, max_headers: 8, max_chunk_line: 32, ..Limits::default() }
}

/// One `framing` input, decoded: what byte 0 picked, the message bytes, and the decoder's outcome.
#[derive(Debug)]
pub struct FramingRun<'a> {
    /// The role decoded.
    pub role: Role,
    /// The request a response answers.
    pub req: RequestInfo,
    /// The limits in force.
    pub limits: Limits,
    /// The message bytes (after byte 0 and the cut bytes).
    pub input: &'a [u8],
    /// The outcome of decoding `input` whole.
    pub outcome: Outcome,
}

/// Fuzz target `framing`: both decoders on arbitrary bytes, whole and split, must agree with each other and with the oracle.
///
/// Byte 0 picks the role, the request the response answers, and the limits;
/// bytes 1..4 pick up to three cut points; the rest is the input.
pub fn framing(data: &[u8]) -> Option<FramingRun<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (cut_bytes, input) = rest.split_at(rest.len().min(3));
    let role = if flags & 1 == 0 { Role::Request } else { Role::Response };
    let method = [Method::Get, Method::Head, Method::Connect, Method::Other][usize::from(flags >> 1 & 3)];
    let req = RequestInfo { method, upgrade: flags & 8 != 0, keep_alive: flags & 16 != 0 };
    let limits = if flags & 32 != 0 { small_limits() } else { Limits::default() };
    let cuts: Vec<usize> = cut_bytes.iter().map(|&c| usize::from(c) * input.len() / 255).collect();
    let whole = run_decoder(role, req, &limits, input, &[]);
    let split = run_decoder(role, req, &limits, input, &cuts);
    let bytewise: Vec<usize> = (0..input.len()).collect();
    let tiny = run_decoder(role, req, &limits, input, &bytewise);
    assert_eq!(whole, split, "splits changed the result");
    assert_eq!(whole, tiny, "byte-at-a-time changed the result");
    agrees_with_oracle(role, req, &limits, input, &whole);
    Some(FramingRun { role, req, limits, input, outcome: whole })
}

/// Every head the decoder framed, and the head it refused, classified by the oracle where it can read them.
fn agrees_with_oracle(role: Role, req: RequestInfo, limits: &Limits, input: &[u8], out: &Outcome) {
    let mut events = out.events.iter().peekable();
    while let Some(event) = events.next() {
        let (Event::Head(raw) | Event::Interim(raw)) = event else { continue };
        let Some(verdict) = oracle::classify_head(raw, role, req) else { continue };
        match (event, verdict) {
            (Event::Interim(_), Verdict::Interim) => {}
            (Event::Head(_), Verdict::Switched) => {
                assert_eq!(events.peek(), Some(&&Event::Switched), "oracle: switched")
            }
            (Event::Head(_), Verdict::Message { body, keep_alive }) => {
                let head = Head::parse(raw.clone(), role, limits).expect("a framed head parses");
                let kind = if role == Role::Request { head.body() } else { head.response_body(&req) };
                let kind = match kind {
                    BodyKind::Empty | BodyKind::Length(0) => oracle::Body::None,
                    BodyKind::Length(n) => oracle::Body::Length(n),
                    BodyKind::Chunked => oracle::Body::Chunked,
                    BodyKind::UntilClose => oracle::Body::UntilClose,
                };
                assert_eq!(kind, body, "oracle: body kind of {raw:?}");
                // The message's own End, if it came before the input (or an error) stopped it.
                let end =
                    events.clone().find(|e| matches!(e, Event::End(_) | Event::Head(_) | Event::Interim(_)));
                if let Some(Event::End(k)) = end {
                    assert_eq!(*k, keep_alive, "oracle: keep-alive of {raw:?}");
                }
            }
            (_, v) => panic!("oracle says {v:?} for the head {raw:?} the decoder framed as {event:?}"),
        }
    }
    // An error with no message open came from reading a head: the one at `consumed`.
    let (Some(error), None | Some(Event::End(_) | Event::Interim(_))) = (out.error, out.events.last()) else {
        return;
    };
    let rest = &input[out.consumed..];
    let skip = if role == Role::Request {
        rest.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
    } else {
        0
    };
    let Some(end) = rest[skip..].windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let head = &rest[..skip + end + 4];
    let lines = head[skip..].windows(2).filter(|w| w == b"\r\n").count();
    let start_line = head[skip..].windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    if head.len() > limits.max_head || lines > limits.max_headers || start_line > limits.max_request_line {
        return;
    }
    if let Some(verdict) = oracle::classify_head(head, role, req) {
        assert_eq!(
            verdict,
            Verdict::Refuse(error.status(role)),
            "oracle disagrees with {error:?} on {head:?}"
        );
    }
}

/// Fuzz target `handshake`: the hello and verdict decoders on arbitrary bytes, whole, split and
/// byte at a time.
///
/// The result, and the bytes left for the tunnel after a complete line, must not depend on the
/// pieces; those bytes are exactly what follows the first newline; and a hello the decoder accepts
/// encodes back to the line it came from, so no two lines are read as the same hello.
pub fn handshake(data: &[u8]) {
    let Some((&cut, input)) = data.split_first() else { return };
    let (a, b) = input.split_at(usize::from(cut) * input.len() / 255);
    let limits = Limits::default();
    let now = std::time::Instant::now();
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    for legacy in [false, true] {
        let run = |pieces: &[&[u8]]| {
            let mut dec = HelloDecoder::new(now, &limits, legacy);
            let (result, buf) = feed(pieces, |buf| dec.decode(buf));
            // What is left is the input's tail: the decoder takes a prefix, never rewrites bytes.
            assert!(input.ends_with(&buf), "the bytes left are not the input's tail");
            (result, buf)
        };
        let whole = run(&[input]);
        let split = run(&[a, b]);
        let tiny = run(&bytewise);
        assert_eq!(whole.0, split.0, "splits changed the handshake result");
        assert_eq!(whole.0, tiny.0, "byte-at-a-time changed the handshake result");
        if let Ok(Some(hello)) = &whole.0 {
            let nl = input.iter().position(|&c| c == b'\n').expect("a hello is a whole line");
            assert_eq!(&whole.1[..], &input[nl + 1..], "the bytes after the line are the tunnel's");
            assert_eq!(whole.1, split.1, "splits changed the bytes left after the line");
            assert_eq!(whole.1, tiny.1, "byte-at-a-time changed the bytes left after the line");
            let mut again = BytesMut::new();
            crate::handshake::encode_hello(hello, &mut again);
            let line = input[..nl].strip_suffix(b"\r").unwrap_or(&input[..nl]);
            assert_eq!(&again[..again.len() - 1], line, "the hello does not encode back to its line");
        }
    }
    let verdict = |pieces: &[&[u8]]| {
        let mut dec = VerdictDecoder::new(&limits);
        feed(pieces, |buf| dec.decode(buf)).0
    };
    let first = verdict(&[input]);
    assert_eq!(first, verdict(&[a, b]), "splits changed the verdict");
    assert_eq!(first, verdict(&bytewise), "byte-at-a-time changed the verdict");
}

/// Feeds `pieces` one after another into a buffer, decoding after each until the first result that
/// is not "need more"; the rest still arrives in the buffer. The result and what is left.
fn feed<T: PartialEq, E: PartialEq>(
    pieces: &[&[u8]],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> (Result<Option<T>, E>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut result = Ok(None);
    for piece in pieces {
        buf.extend_from_slice(piece);
        if result == Ok(None) {
            result = decode(&mut buf);
        }
    }
    (result, buf)
}

/// Fuzz target `hub_ops`: a decoded sequence of server inputs and time steps against the Hub and its model.
pub fn hub_ops(data: &[u8]) {
    crate::hub::fuzz_ops(data);
}

/// Fuzz target `supervisor_ops`: a decoded conversation between the client supervisor and a simulated world.
pub fn supervisor_ops(data: &[u8]) {
    crate::supervisor::fuzz_ops(data);
}

/// The committed seeds of one fuzz target (`fuzz/seeds/<target>`), each with its file name, by name.
#[cfg(test)]
pub(crate) fn committed_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seed_dir(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[cfg(test)]
fn seed_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target)
}

/// The committed seeds of `target` are exactly the `fixed` inputs by name, and each passes `check`
/// (given its name and bytes). With `AETHER_WRITE_SEEDS` set, the files are written first.
#[cfg(test)]
pub(crate) fn seeds_are_the_fixed_inputs(
    target: &str,
    fixed: &[(&str, Vec<u8>)],
    check: impl Fn(&str, &[u8]),
) {
    if std::env::var_os("AETHER_WRITE_SEEDS").is_some() {
        let dir = seed_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in fixed {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    let committed = committed_seeds(target);
    for (name, data) in &committed {
        check(name, data);
    }
    let names: Vec<&str> = committed.iter().map(|(n, _)| n.as_str()).collect();
    let mut want: Vec<&str> = fixed.iter().map(|(n, _)| *n).collect();
    want.sort_unstable();
    assert_eq!(names, want, "the committed {target} seeds are not the fixed inputs");
}

#[cfg(test)]
mod tests {
    use super::Event;
    use super::committed_seeds as seeds;

    /// Each committed framing seed, with the outcome its name promises:
    /// `ok-*` decodes whole, every message ended (or switched); `smuggle-<status>-*` is refused
    /// with that status before any head comes out; `bad-chunk-<status>-*` is refused inside a
    /// body, its message never ended; `refuse-<status>-*` is refused with that status.
    #[test]
    fn framing_seeds_replay() {
        let mut kinds = [0; 4];
        for (name, data) in seeds("framing") {
            let run = super::framing(&data).unwrap_or_else(|| panic!("{name}: empty seed"));
            let out = &run.outcome;
            let (kind, rest) =
                name.split_once('-').unwrap_or_else(|| panic!("{name}: no outcome in the name"));
            let status =
                || -> u16 { rest[..3].parse().unwrap_or_else(|_| panic!("{name}: no status in the name")) };
            let refused = out.error.map(|e| e.status(run.role));
            let heads = out.events.iter().filter(|e| matches!(e, Event::Head(_))).count();
            match kind {
                "ok" => {
                    kinds[0] += 1;
                    assert_eq!(out.error, None, "{name}");
                    match out.events.last() {
                        // Past a switch the bytes are opaque: they stay for the caller.
                        Some(Event::Switched) => {
                            assert!(heads > 0 && out.consumed < run.input.len(), "{name}")
                        }
                        Some(Event::End(_)) => {
                            assert_eq!(out.consumed, run.input.len(), "{name}: not all framed")
                        }
                        _ => panic!("{name}: the last message did not end: {out:?}"),
                    }
                }
                "smuggle" => {
                    kinds[1] += 1;
                    assert_eq!(refused, Some(status()), "{name}: {out:?}");
                    assert_eq!(heads, 0, "{name}: a head came out");
                }
                "bad" => {
                    kinds[2] += 1;
                    let status: u16 = name
                        .rsplit_once("chunk-")
                        .and_then(|(_, r)| r.get(..3)?.parse().ok())
                        .expect("bad-chunk-<status>");
                    assert_eq!(refused, Some(status), "{name}: {out:?}");
                    assert!(!matches!(out.events.last(), Some(Event::End(_))), "{name}: the message ended");
                }
                "refuse" => {
                    kinds[3] += 1;
                    assert_eq!(refused, Some(status()), "{name}: {out:?}");
                }
                _ => panic!("{name}: unknown outcome prefix"),
            }
        }
        assert!(kinds.iter().all(|&k| k > 0), "every outcome kind has seeds: {kinds:?}");
    }

    #[test]
    fn handshake_seeds_replay() {
        for (_, data) in seeds("handshake") {
            super::handshake(&data);
        }
    }
}
