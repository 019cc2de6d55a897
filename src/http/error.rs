//! Why a request was refused, and the one mapping from that to an HTTP status.

use std::fmt;

/// A request the parser refuses. Every variant ends the connection: once framing is in
/// doubt, nothing after it in the stream can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The head did not end within `Limits::max_head_bytes`.
    HeadTooLarge { limit: usize },
    /// The head has more header fields than we keep room for.
    TooManyHeaders { limit: usize },
    /// `Content-Length` is larger than `Limits::max_body_bytes`.
    BodyTooLarge { length: u64, limit: usize },
    /// The request line or a header line does not follow the grammar.
    Malformed { reason: &'static str },
    /// A header value is not UTF-8 text or holds a control character.
    InvalidHeaderValue { name: String },
    /// `Content-Length` is not a plain decimal number that fits in 64 bits.
    InvalidContentLength,
    /// Several `Content-Length` values that disagree.
    ConflictingContentLength,
    /// Both framings at once: the classic request smuggling shape.
    TransferEncodingWithContentLength,
    /// Any `Transfer-Encoding`; request bodies must come with `Content-Length`.
    TransferEncodingNotSupported,
    /// An HTTP version other than 1.0 and 1.1, such as the HTTP/2 preface.
    VersionNotSupported,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
}

impl HttpError {
    /// The status code to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::Malformed { .. }
            | HttpError::InvalidHeaderValue { .. }
            | HttpError::InvalidContentLength
            | HttpError::ConflictingContentLength
            | HttpError::TransferEncodingWithContentLength => 400,
            HttpError::TransferEncodingNotSupported => 501,
            HttpError::VersionNotSupported => 505,
            HttpError::ExpectationFailed => 417,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::HeadTooLarge { limit } => {
                write!(f, "the request head is larger than {limit} bytes")
            }
            HttpError::TooManyHeaders { limit } => {
                write!(f, "the request has more than {limit} header fields")
            }
            HttpError::BodyTooLarge { length, limit } => write!(
                f,
                "the request body of {length} bytes is larger than the limit of {limit} bytes \
                 (the daemon's max-body-bytes; an image sent base64 takes a third more than its \
                 file)"
            ),
            HttpError::Malformed { reason } => write!(f, "the request is malformed: {reason}"),
            HttpError::InvalidHeaderValue { name } => {
                write!(f, "the value of header field {name} is not valid text")
            }
            HttpError::InvalidContentLength => {
                f.write_str("the Content-Length header is not a valid decimal length")
            }
            HttpError::ConflictingContentLength => {
                f.write_str("the request has conflicting Content-Length values")
            }
            HttpError::TransferEncodingWithContentLength => {
                f.write_str("the request has both Transfer-Encoding and Content-Length")
            }
            HttpError::TransferEncodingNotSupported => f.write_str(
                "request bodies with Transfer-Encoding are not supported, send Content-Length",
            ),
            HttpError::VersionNotSupported => {
                f.write_str("only HTTP/1.0 and HTTP/1.1 are supported")
            }
            HttpError::ExpectationFailed => {
                f.write_str("only the expectation 100-continue is supported")
            }
        }
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<(HttpError, u16)> {
        vec![
            (HttpError::HeadTooLarge { limit: 16 }, 431),
            (HttpError::TooManyHeaders { limit: 64 }, 431),
            (
                HttpError::BodyTooLarge {
                    length: 10,
                    limit: 5,
                },
                413,
            ),
            (HttpError::Malformed { reason: "x" }, 400),
            (
                HttpError::InvalidHeaderValue {
                    name: "x-a".to_string(),
                },
                400,
            ),
            (HttpError::InvalidContentLength, 400),
            (HttpError::ConflictingContentLength, 400),
            (HttpError::TransferEncodingWithContentLength, 400),
            (HttpError::TransferEncodingNotSupported, 501),
            (HttpError::VersionNotSupported, 505),
            (HttpError::ExpectationFailed, 417),
        ]
    }

    #[test]
    fn status_of_every_variant() {
        let cases = every_variant();
        assert_eq!(cases.len(), 11);
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            // No wildcard: adding a variant breaks this until the table above is extended.
            match err {
                HttpError::HeadTooLarge { .. }
                | HttpError::TooManyHeaders { .. }
                | HttpError::BodyTooLarge { .. }
                | HttpError::Malformed { .. }
                | HttpError::InvalidHeaderValue { .. }
                | HttpError::InvalidContentLength
                | HttpError::ConflictingContentLength
                | HttpError::TransferEncodingWithContentLength
                | HttpError::TransferEncodingNotSupported
                | HttpError::VersionNotSupported
                | HttpError::ExpectationFailed => {}
            }
        }
    }

    #[test]
    fn display_is_a_sentence_fragment() {
        for (err, _) in every_variant() {
            let text = err.to_string();
            assert!(!text.is_empty());
            assert!(!text.ends_with('.'), "{text}");
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
        }
        assert_eq!(
            HttpError::BodyTooLarge {
                length: 10,
                limit: 5
            }
            .to_string(),
            "the request body of 10 bytes is larger than the limit of 5 bytes (the daemon's \
             max-body-bytes; an image sent base64 takes a third more than its file)"
        );
        assert_eq!(
            HttpError::HeadTooLarge { limit: 16384 }.to_string(),
            "the request head is larger than 16384 bytes"
        );
    }
}
