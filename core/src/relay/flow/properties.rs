//! A [`Flow`] driven through random reads, partial writes and failures, against a model that
//! predicts what it does from the bare [`Pump`] stepped straight through.
//!
//! The reference steps the pump over the same reads and notes where today's loop writes: before
//! each read, when eight pieces are waiting, and at the end (a framing error drops what waits).
//! The model then plays the write sizes and failures over those notes: the bytes that reach the
//! sink, each batch as first offered, the ending, and a drain's verdict (the bytes read after the
//! failed write against the budget).

use std::io::IoSlice;
use std::time::Instant;

use bytes::BytesMut;
use proptest::prelude::*;

use super::cases::{Case, case};
use super::*;
use crate::relay::READ_FIRST;

/// What the reference saw, in order.
#[derive(Debug)]
enum Note {
    /// Today's loop writes these pieces together.
    Batch(Vec<Vec<u8>>),
    /// It reads this many bytes (0: the source closed).
    Read(usize),
}

/// The bare pump over the same reads: the notes, every byte it handed out, its end, and the
/// buffer left behind.
fn reference(case: &Case) -> (Vec<Note>, Vec<u8>, Result<Ending, FrameError>, BytesMut) {
    let (mut pump, mut buf, reads) = case.start();
    let (mut notes, mut all, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    let mut reads = reads.into_iter();
    let mut eof = false;
    let flush = |batch: &mut Vec<Vec<u8>>, notes: &mut Vec<Note>| {
        if !batch.is_empty() {
            notes.push(Note::Batch(std::mem::take(batch)));
        }
    };
    for _ in 0..100_000 {
        match pump.step(&mut buf, eof) {
            Ok(Step::Write(piece)) => {
                all.extend_from_slice(&piece);
                batch.push(piece.to_vec());
                if batch.len() == BATCH {
                    flush(&mut batch, &mut notes);
                }
            }
            Ok(Step::Read) => {
                flush(&mut batch, &mut notes);
                let read = reads.next().unwrap_or_default();
                notes.push(Note::Read(read.len()));
                eof = read.is_empty();
                buf.extend_from_slice(&read);
            }
            Ok(Step::Done(ending)) => {
                flush(&mut batch, &mut notes);
                return (notes, all, Ok(ending), buf);
            }
            Err(e) => return (notes, all, Err(e), buf),
        }
    }
    panic!("the reference pump never ended");
}

/// What a flow did (or, from the model, should do).
#[derive(Debug)]
struct Run {
    written: Vec<u8>,
    /// Each batch as it was first offered to the sink.
    batches: Vec<Vec<Vec<u8>>>,
    end: Result<Ending, FlowError>,
    /// Room asked for before each read.
    wants: Vec<usize>,
    /// Write calls made (a failed one included).
    calls: usize,
}

impl Run {
    /// Nothing yet; `end` is always set before a run is returned.
    fn empty() -> Self {
        Self {
            written: Vec::new(),
            batches: Vec::new(),
            end: Err(FlowError::Read),
            wants: Vec::new(),
            calls: 0,
        }
    }
}

impl Run {
    /// Where `self` first differs from `expected`, briefly (bodies are random bytes).
    fn differs(&self, expected: &Run) -> Option<String> {
        let first = |a: &[u8], b: &[u8]| a.iter().zip(b).position(|(x, y)| x != y);
        let lens =
            |r: &Run| r.batches.iter().map(|b| b.iter().map(Vec::len).collect()).collect::<Vec<Vec<_>>>();
        if (self.end, self.calls, &self.wants) != (expected.end, expected.calls, &expected.wants) {
            let (got, want) =
                ((self.end, self.calls, &self.wants), (expected.end, expected.calls, &expected.wants));
            return Some(format!("(end, write calls, wants): got {got:?}, expected {want:?}"));
        }
        if self.batches != expected.batches {
            return Some(format!("batch piece lengths: got {:?}, expected {:?}", lens(self), lens(expected)));
        }
        (self.written != expected.written).then(|| {
            let (got, want) = (self.written.len(), expected.written.len());
            let at = first(&self.written, &expected.written);
            format!("written: {got} bytes, expected {want}, first differing at {at:?}")
        })
    }
}

/// How many bytes write call `call` takes of `left`.
fn take(case: &Case, call: usize, left: usize) -> usize {
    let size = case.writes.get(call % case.writes.len().max(1)).copied().unwrap_or(left);
    size.clamp(1, left)
}

/// The model: plays the case's writes and failures over the reference's notes.
fn predict(case: &Case, notes: &[Note], end: Result<Ending, FrameError>) -> Run {
    let mut run = Run::empty();
    let (mut call, mut reads, mut size) = (0, 0, ReadSize::default());
    // Bytes read since the sink was lost, once it was.
    let mut drained: Option<usize> = None;
    for note in notes {
        match note {
            Note::Batch(_) if drained.is_some() => {}
            Note::Batch(pieces) => {
                run.batches.push(pieces.clone());
                let bytes = pieces.concat();
                let mut off = 0;
                while off < bytes.len() {
                    if case.write_fail == Some(call) {
                        call += 1;
                        if case.drain.is_none() {
                            run.end = Err(FlowError::Write);
                            run.calls = call;
                            return run;
                        }
                        drained = Some(0);
                        break;
                    }
                    let n = take(case, call, bytes.len() - off);
                    run.written.extend_from_slice(&bytes[off..off + n]);
                    (off, call) = (off + n, call + 1);
                }
                run.calls = call;
            }
            Note::Read(n) => {
                run.wants.push(size.next());
                if case.read_fail == Some(reads) {
                    run.end = Err(FlowError::Read);
                    return run;
                }
                reads += 1;
                if let (Some(d), Some(budget)) = (&mut drained, case.drain) {
                    *d += n;
                    if *d > budget {
                        run.end = Err(FlowError::Write);
                        return run;
                    }
                }
                size.read(size.next(), *n);
            }
        }
    }
    run.end = match end {
        Ok(ending) if drained.is_some() => Err(FlowError::Drained(ending)),
        Ok(ending) => Ok(ending),
        Err(e) => Err(FlowError::Frame(e)),
    };
    run
}

/// Drives a flow over the case as a runtime would; also returns `started` and the buffer left.
fn drive(case: &Case) -> (Run, bool, BytesMut) {
    let (pump, mut buf, reads) = case.start();
    let mut flow = Flow::new(pump);
    if let Some(budget) = case.drain {
        flow = flow.with_drain(budget);
    }
    let now = Instant::now();
    let mut run = Run::empty();
    let (mut call, mut reads_done, mut fresh) = (0, 0, true);
    for _ in 0..100_000 {
        if let Some(end) = flow.finished() {
            run.end = end;
            run.calls = call;
            return (run, flow.started(), buf);
        }
        if flow.pending() {
            assert_eq!(flow.want_read(), None, "nothing is read while pieces wait");
            let mut slices = [IoSlice::new(&[]); BATCH];
            let k = flow.slices(&mut slices);
            let pieces: Vec<Vec<u8>> = slices[..k].iter().map(|s| s.to_vec()).collect();
            if fresh {
                run.batches.push(pieces.clone());
            }
            if case.write_fail == Some(call) {
                call += 1;
                flow.write_failed(now);
                fresh = true;
                continue;
            }
            let bytes = pieces.concat();
            assert!(!bytes.is_empty(), "pieces pending, yet nothing to write");
            let n = take(case, call, bytes.len());
            run.written.extend_from_slice(&bytes[..n]);
            call += 1;
            flow.wrote(n);
            fresh = !flow.pending();
            continue;
        }
        if let Some(want) = flow.want_read() {
            run.wants.push(want);
            if case.read_fail == Some(reads_done) {
                flow.read_failed();
                continue;
            }
            let read = reads.get(reads_done).map_or(&[][..], Vec::as_slice);
            reads_done += 1;
            assert!(read.len() <= want, "a read never brings more than its room");
            buf.reserve(want);
            buf.extend_from_slice(read);
            flow.read(&mut buf, want, read.len(), now);
            continue;
        }
        assert!(flow.step(&mut buf), "a flow neither finished, writing, reading nor stepping");
    }
    panic!("the flow never finished");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_flow_does_what_the_model_predicts_from_the_bare_pump(case in case()) {
        let (notes, all, end, left) = reference(&case);
        let expected = predict(&case, &notes, end);
        let (run, started, buf) = drive(&case);
        if let Some(diff) = run.differs(&expected) {
            prop_assert!(false, "{}", diff);
        }
        prop_assert_eq!(started, !run.written.is_empty(), "started iff a byte reached the sink");
        let untroubled = case.write_fail.is_none() && case.read_fail.is_none();
        if untroubled && let Ok(ending) = end {
            prop_assert_eq!(&run.written, &all, "straight through: every byte the pump handed out");
            prop_assert_eq!(run.end, Ok(ending));
            prop_assert_eq!(&buf[..], &left[..], "the bytes after the message stay buffered");
        }
        if matches!(run.end, Ok(_) | Err(FlowError::Drained(_))) && buf.is_empty() {
            prop_assert!(buf.capacity() <= 2 * READ_FIRST, "shrunk at the end: {}", buf.capacity());
        }
    }

    #[test]
    fn a_drained_flow_ends_with_the_message_iff_the_rest_fits_the_budget(
        case in case(), budget in 0..4000usize, fail in 0..4usize,
    ) {
        let case = Case { write_fail: Some(fail), read_fail: None, drain: Some(budget), ..case };
        let (notes, _, end, _) = reference(&case);
        let (run, _, _) = drive(&case);
        // Where the write fails: the nth write call, counted as the model counts them.
        let model = predict(&Case { drain: None, ..case.clone() }, &notes, end);
        let failed = model.end == Err(FlowError::Write);
        // The bytes read after the failed write: every read after the batch it hit.
        let mut seen_batches = 0;
        let mut rest = 0;
        for note in &notes {
            match note {
                Note::Batch(_) => seen_batches += 1,
                Note::Read(n) if seen_batches >= model.batches.len() => rest += n,
                Note::Read(_) => {}
            }
        }
        match (failed, end) {
            (true, Ok(ending)) => prop_assert_eq!(
                run.end == Err(FlowError::Drained(ending)),
                rest <= budget,
                "rest {} budget {}: {:?}", rest, budget, run.end
            ),
            // The read that brings the error is counted before it is decoded.
            (true, Err(e)) => prop_assert_eq!(
                run.end,
                Err(if rest <= budget { FlowError::Frame(e) } else { FlowError::Write })
            ),
            (false, _) => prop_assert!(!matches!(run.end, Err(FlowError::Drained(_)))),
        }
    }
}

/// The generator reaches every kind of run the properties speak of, so they are not vacuous.
#[test]
fn the_cases_cover_every_ending_full_batches_and_partial_writes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner =
        TestRunner::new(Config { rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..Config::default() });
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..2000 {
        let case = case().new_tree(&mut runner).expect("a case").current();
        let (run, _, _) = drive(&case);
        let kind = match run.end {
            Ok(_) => "ok",
            Err(FlowError::Frame(_)) => "frame",
            Err(FlowError::Read) => "read",
            Err(FlowError::Write) if case.drain.is_some() => "over budget",
            Err(FlowError::Write) => "write",
            Err(FlowError::Drained(_)) => "drained",
        };
        *seen.entry(kind).or_default() += 1;
        if run.batches.iter().any(|b| b.len() == BATCH) {
            *seen.entry("full batch").or_default() += 1;
        }
        if run.batches.iter().any(|b| b.len() > 1) {
            *seen.entry("pieces together").or_default() += 1;
        }
        if run.calls > run.batches.len() {
            *seen.entry("partial writes").or_default() += 1;
        }
    }
    eprintln!("{seen:?}");
    for kind in [
        "ok",
        "frame",
        "read",
        "write",
        "over budget",
        "drained",
        "full batch",
        "pieces together",
        "partial writes",
    ] {
        assert!(seen.get(kind).copied().unwrap_or(0) >= 10, "{kind} in {seen:?}");
    }
}
