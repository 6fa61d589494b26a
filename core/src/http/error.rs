//! Why a message could not be framed, and what to answer for it.

use std::fmt;

use super::Role;

/// A framing failure. Once a decoder returns one it keeps returning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The request line is longer than the limit (414).
    RequestLineTooLong,
    /// The head is longer than the limit (431).
    HeadTooLarge,
    /// More header fields than the limit (431).
    TooManyHeaders,
    /// A line ended in LF without CR (400).
    BareLf,
    /// A header line continued onto the next line with leading whitespace (400).
    ObsFold,
    /// The method is not a token (400).
    InvalidMethod,
    /// The request target has bytes a target may not have (400).
    InvalidTarget,
    /// An empty or invalid header name (400).
    InvalidHeaderName,
    /// A header value with forbidden bytes (400).
    InvalidHeaderValue,
    /// A start line that is not `HTTP/1.x` request or status syntax (400).
    InvalidStartLine,
    /// A version other than HTTP/1.0 or HTTP/1.1 (505).
    UnsupportedVersion,
    /// An HTTP/1.1 request without `Host` (400).
    MissingHost,
    /// More than one `Host` (400).
    DuplicateHost,
    /// `Content-Length` is not 1 to 19 digits (400).
    InvalidContentLength,
    /// `Content-Length` values that differ (400).
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` on a request (400).
    LengthWithTransferEncoding,
    /// `chunked` missing from the end of `Transfer-Encoding`, or given twice (400).
    ChunkedNotLast,
    /// `Transfer-Encoding` in an HTTP/1.0 request (400).
    TransferEncodingInHttp10,
    /// A transfer coding this proxy does not know (501).
    UnknownTransferCoding,
    /// A chunk size that is not 1 to 16 hex digits (400).
    InvalidChunkSize,
    /// Bytes after a chunk size that are not a valid extension (400).
    InvalidChunkExtension,
    /// A chunk-size line longer than the limit (400).
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF (400).
    MissingChunkCrlf,
    /// An invalid trailer field line (400).
    InvalidTrailer,
    /// Trailer section longer than the head limit (431).
    TrailersTooLarge,
    /// The connection ended in the middle of a message (400).
    UnexpectedEof,
    /// A 101 response to a request that asked for no upgrade (502).
    UnsolicitedSwitch,
}

impl FrameError {
    /// The status to answer with: the visitor's fault for requests, the origin's (502) for responses.
    pub fn status(self, role: Role) -> u16 {
        if role == Role::Response {
            return 502;
        }
        match self {
            FrameError::RequestLineTooLong => 414,
            FrameError::HeadTooLarge | FrameError::TooManyHeaders | FrameError::TrailersTooLarge => 431,
            FrameError::UnsupportedVersion => 505,
            FrameError::UnknownTransferCoding => 501,
            FrameError::UnsolicitedSwitch => 502,
            _ => 400,
        }
    }

    /// A one-line explanation for whoever sent the message.
    pub fn message(self) -> &'static str {
        match self {
            FrameError::RequestLineTooLong => "request line too long",
            FrameError::HeadTooLarge => "request head too large",
            FrameError::TooManyHeaders => "too many header fields",
            FrameError::BareLf => "line ends in LF without CR",
            FrameError::ObsFold => "obsolete line folding in a header field",
            FrameError::InvalidMethod => "invalid method",
            FrameError::InvalidTarget => "invalid request target",
            FrameError::InvalidHeaderName => "invalid header field name",
            FrameError::InvalidHeaderValue => "invalid header field value",
            FrameError::InvalidStartLine => "invalid start line",
            FrameError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            FrameError::MissingHost => "HTTP/1.1 request without Host",
            FrameError::DuplicateHost => "more than one Host header field",
            FrameError::InvalidContentLength => "invalid Content-Length",
            FrameError::ConflictingContentLength => "conflicting Content-Length values",
            FrameError::LengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            FrameError::ChunkedNotLast => "Transfer-Encoding must end with chunked, once",
            FrameError::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            FrameError::UnknownTransferCoding => "unsupported transfer coding",
            FrameError::InvalidChunkSize => "invalid chunk size",
            FrameError::InvalidChunkExtension => "invalid chunk extension",
            FrameError::ChunkLineTooLong => "chunk-size line too long",
            FrameError::MissingChunkCrlf => "chunk data not followed by CRLF",
            FrameError::InvalidTrailer => "invalid trailer field",
            FrameError::TrailersTooLarge => "trailer section too large",
            FrameError::UnexpectedEof => "connection closed in the middle of a message",
            FrameError::UnsolicitedSwitch => "101 Switching Protocols without an Upgrade request",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant, the status its doc promises a visitor, and a word its message must carry.
    const ALL: [(FrameError, u16, &str); 27] = [
        (FrameError::RequestLineTooLong, 414, "request line"),
        (FrameError::HeadTooLarge, 431, "head"),
        (FrameError::TooManyHeaders, 431, "header fields"),
        (FrameError::BareLf, 400, "LF"),
        (FrameError::ObsFold, 400, "folding"),
        (FrameError::InvalidMethod, 400, "method"),
        (FrameError::InvalidTarget, 400, "target"),
        (FrameError::InvalidHeaderName, 400, "name"),
        (FrameError::InvalidHeaderValue, 400, "value"),
        (FrameError::InvalidStartLine, 400, "start line"),
        (FrameError::UnsupportedVersion, 505, "HTTP/1.1"),
        (FrameError::MissingHost, 400, "Host"),
        (FrameError::DuplicateHost, 400, "Host"),
        (FrameError::InvalidContentLength, 400, "Content-Length"),
        (FrameError::ConflictingContentLength, 400, "Content-Length"),
        (FrameError::LengthWithTransferEncoding, 400, "Transfer-Encoding"),
        (FrameError::ChunkedNotLast, 400, "chunked"),
        (FrameError::TransferEncodingInHttp10, 400, "HTTP/1.0"),
        (FrameError::UnknownTransferCoding, 501, "coding"),
        (FrameError::InvalidChunkSize, 400, "chunk size"),
        (FrameError::InvalidChunkExtension, 400, "extension"),
        (FrameError::ChunkLineTooLong, 400, "chunk-size line"),
        (FrameError::MissingChunkCrlf, 400, "CRLF"),
        (FrameError::InvalidTrailer, 400, "trailer"),
        (FrameError::TrailersTooLarge, 431, "trailer"),
        (FrameError::UnexpectedEof, 400, "closed"),
        (FrameError::UnsolicitedSwitch, 502, "101"),
    ];

    #[test]
    fn statuses_are_the_documented_ones_and_responses_are_the_origins_fault() {
        for (err, status, _) in ALL {
            assert_eq!(err.status(Role::Request), status, "{err:?}");
            assert_eq!(err.status(Role::Response), 502, "{err:?}");
        }
    }

    #[test]
    fn display_names_the_problem() {
        let mut seen = std::collections::HashSet::new();
        for (err, _, word) in ALL {
            let shown = err.to_string();
            assert!(shown.contains(word), "{err:?} shows {shown:?}");
            assert!(seen.insert(shown), "{err:?} reads like another error");
        }
    }
}
