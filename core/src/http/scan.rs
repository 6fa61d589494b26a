//! Finding where a head ends, incrementally, before anything parses it.
//!
//! [`HeadScan`] looks for the blank line that ends a head, line by line, remembering where it
//! stopped, so a head that arrives a byte at a time costs O(n) and not O(n²). It enforces the size
//! limits and the line-ending rules before httparse ever runs. It does not parse fields: that is
//! [`Head::parse`](super::head::Head::parse), once, on the complete head.

use super::{FrameError, Role};
use crate::limits::Limits;

/// Finds the end of a head, incrementally, enforcing size and line rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeadScan {
    /// Bytes already examined.
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    /// The start line has ended.
    seen_start: bool,
    /// Header lines seen.
    fields: usize,
}

impl HeadScan {
    /// Examines new bytes of `buf`; `Some(len)` once the head (blank line included) is `buf[..len]`.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        role: Role,
        limits: &Limits,
    ) -> Result<Option<usize>, FrameError> {
        let strict = role == Role::Request;
        let window = buf.len().min(limits.max_head);
        while self.scanned < window {
            let Some(at) = find_lf(&buf[self.scanned..window]) else {
                self.scanned = window;
                break;
            };
            let i = self.scanned + at;
            self.scanned = i + 1;
            let has_cr = i > self.line_start && buf[i - 1] == b'\r';
            let content_end = if has_cr { i - 1 } else { i };
            let line = &buf[self.line_start..content_end];
            // Judged before the line ending, as the partial check below must be: same verdict at any split.
            if strict && !self.seen_start && line.len() > limits.max_request_line {
                return Err(FrameError::RequestLineTooLong);
            }
            if strict && !has_cr {
                return Err(FrameError::BareLf);
            }
            self.line_start = i + 1;
            if line.is_empty() {
                if self.seen_start {
                    return Ok(Some(i + 1));
                }
                continue; // RFC 9112 §2.2: empty lines before the start line are skipped.
            }
            if !self.seen_start {
                self.seen_start = true;
            } else if line[0] == b' ' || line[0] == b'\t' {
                return Err(FrameError::ObsFold);
            } else {
                self.fields += 1;
                if self.fields > limits.header_slots() {
                    return Err(FrameError::TooManyHeaders);
                }
            }
        }
        // The start line so far (empty lines before it were passed over); +1: the CR of a line
        // exactly at the limit may already be here.
        if strict && !self.seen_start && self.scanned - self.line_start > limits.max_request_line + 1 {
            return Err(FrameError::RequestLineTooLong);
        }
        // No blank line within the first `max_head` bytes: the head is over the limit.
        if buf.len() >= limits.max_head {
            return Err(FrameError::HeadTooLarge);
        }
        Ok(None)
    }
}

/// Where the first `\n` of `hay` is. Eight bytes at a time: a head's lines are tens of bytes
/// long, and a byte loop was the largest cost of reading one.
fn find_lf(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    for chunk in hay.chunks_exact(8) {
        let word =
            u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or([0; 8])) ^ (ONES * u64::from(b'\n'));
        // Some byte of `word` is zero, i.e. some byte of the chunk is `\n` (exact for "some").
        if word.wrapping_sub(ONES) & !word & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    hay[at..].iter().position(|&b| b == b'\n').map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::find_lf;
    use proptest::prelude::*;

    proptest! {
        /// The word scan finds the first `\n` a byte loop finds, at every length and alignment,
        /// with the bytes next to `\n` in value (which a carry in the word trick could confuse).
        #[test]
        fn finds_the_first_line_feed(hay in prop::collection::vec(prop::sample::select(vec![
            b'\n', b'\r', b'a', 0x0b, 0x09, 0x8a, 0x00, 0xff, 0x80, 0x01,
        ]), 0..40), skip in 0usize..8) {
            let hay = &hay[skip.min(hay.len())..];
            prop_assert_eq!(find_lf(hay), hay.iter().position(|&b| b == b'\n'));
        }
    }
}
