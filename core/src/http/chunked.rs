//! Strict validation of a chunked body (RFC 9112 §7.1) that passes it through verbatim.
//!
//! ```text
//! Size ──hex──▶ Size ──CR LF──▶ Data(n) ──n bytes──▶ DataEnd ──CR LF──▶ Size ...
//!   └── ";"/BWS ──▶ Ext ──CR LF──┘            size 0 ──▶ Trailer ──field CR LF──▶ Trailer
//!                                                             └──CR LF──▶ Done
//! ```
//!
//! Sizes are 1–16 hex digits; an extension is `;` and visible ASCII, never a
//! control byte; data must end in CRLF; trailers are field lines. The scanner
//! reports how far the body has been validated at an element boundary
//! (`safe`), so a size line or trailer line is only released once it is whole
//! and valid. Strict mode (requests) refuses bare LF; lenient mode (responses)
//! accepts it. It never de-chunks or re-chunks.

use super::FrameError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a size line (`digits` so far).
    Size { digits: u8, value: u64 },
    /// After the digits: optional whitespace and extensions, up to the line end.
    SizeTail { value: u64, ext: bool },
    /// Saw CR at the end of a size line.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Chunk data done: CR must follow.
    DataCr,
    /// Chunk data done and CR seen: LF must follow.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line; `colon` once the name has ended.
    TrailerLine { colon: bool },
    /// Saw CR in the trailer section; `empty` if it ends the final empty line.
    TrailerLf { empty: bool },
    /// The body is complete.
    Done,
}

/// Result of one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Bytes examined in total, from the start of the buffer.
    pub examined: usize,
    /// Bytes that form whole, valid elements and may be released.
    pub safe: usize,
    /// The terminating empty line has been read: the body ends at `safe`.
    pub done: bool,
}

/// The chunked-body validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: State,
    strict: bool,
    line_len: usize,
    max_line: usize,
    trailer_len: usize,
    max_trailers: usize,
    /// An error found after bytes that were still valid: those go out first, then this.
    failed: Option<FrameError>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Chunked {
    /// A validator; `max_line` bounds a size line, `max_trailers` the trailer section.
    pub(crate) fn new(strict: bool, max_line: usize, max_trailers: usize) -> Self {
        Self {
            state: State::Size { digits: 0, value: 0 },
            strict,
            line_len: 0,
            max_line,
            trailer_len: 0,
            max_trailers,
            failed: None,
        }
    }

    fn at_boundary(&self) -> bool {
        matches!(
            self.state,
            State::Size { digits: 0, .. }
                | State::Data { .. }
                | State::DataCr
                | State::DataLf
                | State::TrailerStart
                | State::Done
        )
    }

    /// Examines `buf[from..]` (bytes before `from` were examined by earlier calls).
    ///
    /// An error is reported only once every valid byte before it has been
    /// released, so the frames seen do not depend on how the input was split.
    pub(crate) fn scan(&mut self, buf: &[u8], from: usize) -> Result<Scan, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut i = from;
        let mut safe = if self.at_boundary() { from } else { 0 };
        while i < buf.len() && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let take = remaining.min((buf.len() - i) as u64);
                i += take as usize;
                let remaining = remaining - take;
                self.state = if remaining == 0 { State::DataCr } else { State::Data { remaining } };
                safe = i;
                continue;
            }
            if let Err(e) = self.step(buf[i]) {
                if safe == 0 {
                    return Err(e);
                }
                self.failed = Some(e);
                return Ok(Scan { examined: i, safe, done: false });
            }
            i += 1;
            if self.at_boundary() {
                safe = i;
            }
        }
        // `safe` counted from 0 only when no boundary was passed; bytes before `from` were a partial line.
        Ok(Scan { examined: i, safe, done: self.state == State::Done })
    }

    /// Counts a byte of a size line; its CR LF ending is not part of the length, as for the request line.
    fn line_byte(&mut self, b: u8) -> Result<(), FrameError> {
        if b == b'\r' || b == b'\n' {
            return Ok(());
        }
        self.line_len += 1;
        if self.line_len > self.max_line { Err(FrameError::ChunkLineTooLong) } else { Ok(()) }
    }

    fn trailer_byte(&mut self) -> Result<(), FrameError> {
        self.trailer_len += 1;
        if self.trailer_len > self.max_trailers { Err(FrameError::TrailersTooLarge) } else { Ok(()) }
    }

    fn end_size_line(&mut self, value: u64) {
        self.line_len = 0;
        self.state = if value == 0 { State::TrailerStart } else { State::Data { remaining: value } };
    }

    fn step(&mut self, b: u8) -> Result<(), FrameError> {
        match self.state {
            State::Size { digits, value } => {
                self.line_byte(b)?;
                if let Some(d) = (b as char).to_digit(16) {
                    if digits == 16 {
                        return Err(FrameError::InvalidChunkSize);
                    }
                    self.state = State::Size { digits: digits + 1, value: (value << 4) | u64::from(d) };
                } else if digits == 0 {
                    return Err(FrameError::InvalidChunkSize);
                } else {
                    self.state = State::SizeTail { value, ext: false };
                    return self.tail(b, value, false);
                }
            }
            State::SizeTail { value, ext } => {
                self.line_byte(b)?;
                return self.tail(b, value, ext);
            }
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(FrameError::InvalidChunkExtension);
                }
                self.end_size_line(value);
            }
            State::DataCr => match b {
                b'\r' => self.state = State::DataLf,
                b'\n' if !self.strict => self.state = State::Size { digits: 0, value: 0 },
                _ => return Err(FrameError::MissingChunkCrlf),
            },
            State::DataLf => {
                if b != b'\n' {
                    return Err(FrameError::MissingChunkCrlf);
                }
                self.state = State::Size { digits: 0, value: 0 };
            }
            State::TrailerStart => {
                self.trailer_byte()?;
                match b {
                    b'\r' => self.state = State::TrailerLf { empty: true },
                    b'\n' if !self.strict => self.state = State::Done,
                    _ if is_tchar(b) => self.state = State::TrailerLine { colon: false },
                    _ => return Err(FrameError::InvalidTrailer),
                }
            }
            State::TrailerLine { colon } => {
                self.trailer_byte()?;
                match b {
                    b'\r' if colon => self.state = State::TrailerLf { empty: false },
                    b'\n' if colon && !self.strict => self.state = State::TrailerStart,
                    b':' if !colon => self.state = State::TrailerLine { colon: true },
                    _ if !colon && is_tchar(b) => {}
                    _ if colon && (b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) => {}
                    _ => return Err(FrameError::InvalidTrailer),
                }
            }
            State::TrailerLf { empty } => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(FrameError::InvalidTrailer);
                }
                self.state = if empty { State::Done } else { State::TrailerStart };
            }
            State::Data { .. } | State::Done => unreachable!("handled by scan"),
        }
        Ok(())
    }

    /// A byte after the size digits: whitespace, an extension, or the line end.
    fn tail(&mut self, b: u8, value: u64, ext: bool) -> Result<(), FrameError> {
        match b {
            b'\r' => self.state = State::SizeLf { value },
            b'\n' if !self.strict => self.end_size_line(value),
            b'\n' => return Err(FrameError::BareLf),
            b';' => self.state = State::SizeTail { value, ext: true },
            b' ' | b'\t' => {}
            // Inside an extension: names, values, quotes and escapes are visible ASCII; never a control byte.
            _ if ext && ((b'!'..=b'~').contains(&b) || b >= 0x80) => {}
            _ if ext => return Err(FrameError::InvalidChunkExtension),
            _ => return Err(FrameError::InvalidChunkSize),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans until done or failed, as the decoder does after releasing each valid prefix.
    fn run(input: &[u8], strict: bool) -> Result<Scan, FrameError> {
        let mut c = Chunked::new(strict, 64, 1024);
        let mut released = 0;
        let mut pending = 0;
        loop {
            let scan = c.scan(&input[released..], pending)?;
            pending = scan.examined - scan.safe;
            released += scan.safe;
            if scan.done || scan.safe == 0 {
                return Ok(Scan { examined: released + pending, safe: released, done: scan.done });
            }
        }
    }

    #[test]
    fn accepts_sizes_extensions_and_trailers() {
        let body = b"5;name=value;q=\"x y\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        let scan = run(body, true).unwrap();
        assert!(scan.done);
        assert_eq!(scan.safe, body.len() - 4);
    }

    #[test]
    fn refuses_smuggling_shapes() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"0x5\r\nhello\r\n", FrameError::InvalidChunkSize),
            (b"\r\n", FrameError::InvalidChunkSize),
            (b"-1\r\n", FrameError::InvalidChunkSize),
            (b"5 5\r\n", FrameError::InvalidChunkSize),
            (b"11111111111111111\r\n", FrameError::InvalidChunkSize),
            (b"5;a\nb\r\n", FrameError::BareLf),
            (b"5;a\x01\r\n", FrameError::InvalidChunkExtension),
            (b"5\rx", FrameError::InvalidChunkExtension),
            (b"5\r\nhelloXX", FrameError::MissingChunkCrlf),
            (b"5\r\nhello\n", FrameError::MissingChunkCrlf),
            (b"0\r\nbad trailer\r\n\r\n", FrameError::InvalidTrailer),
            (b"0\r\n folded: x\r\n\r\n", FrameError::InvalidTrailer),
            (b"0\r\n\rX", FrameError::InvalidTrailer),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, true), Err(*want), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn trailer_fields_are_field_lines() {
        let refused: &[(&[u8], bool)] = &[
            (b"0\r\n\n", true),              // bare LF ends the section
            (b"0\r\nX: 1\n\r\n", true),      // bare LF ends a field
            (b"0\r\nNoColon\r\n\r\n", true), // a field line needs a colon
            (b"0\nNoColon\n\n", false),
            (b"0\r\nBad Name: x\r\n\r\n", true), // names are tokens
            (b"0\r\nX: a\x01b\r\n\r\n", true),   // no control bytes in a value
            (b"0\r\nX: a\x7fb\r\n\r\n", true),
        ];
        for (input, strict) in refused {
            assert_eq!(
                run(input, *strict),
                Err(FrameError::InvalidTrailer),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Values may hold tabs, colons and obs-text (RFC 9110 §5.5).
        let scan = run(b"0\r\nX:\ta:b\t\xc3\xa9\r\nY: 2\r\n\r\n", true).unwrap();
        assert!(scan.done);
    }

    #[test]
    fn lenient_mode_takes_bare_lf_but_not_garbage() {
        let scan = run(b"3\nabc\n0\nT: v\n\n", false).unwrap();
        assert!(scan.done);
        assert_eq!(run(b"3\r\nabcX", false), Err(FrameError::MissingChunkCrlf));
    }

    #[test]
    fn limits_hit() {
        let long = format!("1;{}\r\n", "a".repeat(100));
        assert_eq!(run(long.as_bytes(), true), Err(FrameError::ChunkLineTooLong));
        let trailers = format!("0\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(run(trailers.as_bytes(), true), Err(FrameError::TrailersTooLarge));
    }

    #[test]
    fn partial_size_line_is_not_released() {
        let mut c = Chunked::new(true, 64, 1024);
        let scan = c.scan(b"5\r\nhe", 0).unwrap();
        assert_eq!(scan.safe, 5);
        let mut c = Chunked::new(true, 64, 1024);
        let scan = c.scan(b"1f;ext", 0).unwrap();
        assert_eq!((scan.safe, scan.examined, scan.done), (0, 6, false));
        let scan = c.scan(b"1f;ext=1\r\n", 6).unwrap();
        assert_eq!(scan.safe, 10);
    }
}
