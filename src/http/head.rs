//! The request head: finding where it ends, parsing it with httparse, and checking the
//! framing headers before any body byte is kept.

use super::error::HttpError;
use super::request::{Method, Request, Version};
use super::{Limits, MAX_HEADERS};

/// A parsed head, owned so its bytes can be drained from the read buffer.
#[derive(Debug)]
pub(super) struct Head {
    method: Method,
    path: String,
    query: Option<String>,
    version: Version,
    headers: Vec<(String, String)>,
    keep_alive: bool,
    content_length: usize,
    expect_continue: bool,
}

impl Head {
    pub(super) fn content_length(&self) -> usize {
        self.content_length
    }

    /// 100-continue is only for 1.1 clients: RFC 9110 says to ignore it from HTTP/1.0.
    pub(super) fn wants_continue(&self) -> bool {
        self.expect_continue && self.version == Version::Http11
    }

    /// A copy of the head as a request with an empty body.
    pub(super) fn to_request(&self) -> Request {
        Request {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            version: self.version,
            headers: self.headers.clone(),
            body: Vec::new(),
            keep_alive: self.keep_alive,
        }
    }

    pub(super) fn into_request(self, body: Vec<u8>) -> Request {
        Request {
            method: self.method,
            path: self.path,
            query: self.query,
            version: self.version,
            headers: self.headers,
            body,
            keep_alive: self.keep_alive,
        }
    }
}

/// Length of the empty lines before a request line. RFC 9112 asks servers to ignore at least
/// one, which old clients send after a POST body. A trailing lone CR waits for its LF.
pub(super) fn leading_blank_len(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match buf.get(at..) {
            Some([b'\r', b'\n', ..]) => at += 2,
            Some([b'\n', ..]) => at += 1,
            _ => return at,
        }
    }
}

/// The index just past the blank line that ends the head, searching `buf` from `from` (where
/// an earlier search stopped). A bare LF counts as a line end, as httparse also accepts it.
pub(super) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let lf = at + offset;
        match buf.get(..lf) {
            Some([.., b'\n'] | [.., b'\n', b'\r']) => return Some(lf + 1),
            _ => at = lf + 1,
        }
    }
    None
}

/// Parses exactly one head (`bytes` ends with its blank line) and applies the framing rules.
pub(super) fn parse_head(bytes: &[u8], limits: &Limits) -> Result<Head, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        // The caller found a blank line, so a partial parse means it sits inside the grammar.
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Malformed {
                reason: "the request head is incomplete",
            })
        }
        Err(err) => return Err(parse_error(err, bytes)),
    }
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::Malformed {
            reason: "the request line is incomplete",
        });
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    };

    let mut framing = Framing::default();
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field.name.to_ascii_lowercase();
        let Some(value) = header_text(field.value) else {
            return Err(HttpError::InvalidHeaderValue { name });
        };
        framing.note(&name, value)?;
        headers.push((name, value.to_string()));
    }

    let content_length = framing.check(limits)?;
    let keep_alive = match version {
        Version::Http11 => !framing.close,
        Version::Http10 => framing.keep_alive && !framing.close,
    };
    Ok(Head {
        method: Method::from_token(method),
        path,
        query,
        version,
        headers,
        keep_alive,
        content_length,
        expect_continue: framing.expect == Expect::Continue,
    })
}

/// What the headers say about message framing and the connection, gathered in one pass.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    expect: Expect,
}

/// What the `Expect` fields asked for; any other expectation than `100-continue` wins.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Expect {
    #[default]
    Nothing,
    Continue,
    Other,
}

impl Framing {
    fn note(&mut self, name: &str, value: &str) -> Result<(), HttpError> {
        match name {
            // A list of equal values is allowed by RFC 9110; it means one length.
            "content-length" => {
                for item in value.split(',') {
                    let length = parse_length(item)?;
                    match self.content_length {
                        Some(seen) if seen != length => {
                            return Err(HttpError::ConflictingContentLength)
                        }
                        _ => self.content_length = Some(length),
                    }
                }
            }
            "transfer-encoding" => self.transfer_encoding = true,
            "connection" => {
                for option in value.split(',').map(trim_ows) {
                    if option.eq_ignore_ascii_case("close") {
                        self.close = true;
                    } else if option.eq_ignore_ascii_case("keep-alive") {
                        self.keep_alive = true;
                    }
                }
            }
            "expect" => {
                if !value.eq_ignore_ascii_case("100-continue") {
                    self.expect = Expect::Other;
                } else if self.expect == Expect::Nothing {
                    self.expect = Expect::Continue;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The body length, once the headers as a whole are known to be acceptable. Smuggling
    /// (both framings) is refused before the unsupported-encoding answer.
    fn check(&self, limits: &Limits) -> Result<usize, HttpError> {
        if self.transfer_encoding && self.content_length.is_some() {
            return Err(HttpError::TransferEncodingWithContentLength);
        }
        if self.transfer_encoding {
            return Err(HttpError::TransferEncodingNotSupported);
        }
        let length = self.content_length.unwrap_or(0);
        let too_large = HttpError::BodyTooLarge {
            length,
            limit: limits.max_body_bytes,
        };
        let length = usize::try_from(length).map_err(|_| too_large.clone())?;
        if length > limits.max_body_bytes {
            return Err(too_large);
        }
        if self.expect == Expect::Other {
            return Err(HttpError::ExpectationFailed);
        }
        Ok(length)
    }
}

/// Digits only: `str::parse` would also take a leading `+`.
fn parse_length(item: &str) -> Result<u64, HttpError> {
    let digits = trim_ows(item);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::InvalidContentLength);
    }
    digits
        .parse::<u64>()
        .map_err(|_| HttpError::InvalidContentLength)
}

/// A header value as text: UTF-8 without control characters other than tab. httparse already
/// refuses NUL, CR, LF and C0 bytes but lets any byte from 0x80 through.
fn header_text(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    Some(trim_ows(text))
}

fn trim_ows(text: &str) -> &str {
    text.trim_matches(|c| c == ' ' || c == '\t')
}

fn parse_error(err: httparse::Error, head: &[u8]) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders { limit: MAX_HEADERS },
        httparse::Error::Version if names_an_http_version(head) => HttpError::VersionNotSupported,
        httparse::Error::Version => HttpError::Malformed {
            reason: "the request line has no HTTP version",
        },
        httparse::Error::HeaderName => HttpError::Malformed {
            reason: "a header name has an invalid byte",
        },
        httparse::Error::HeaderValue => HttpError::Malformed {
            reason: "a header value has an invalid byte",
        },
        httparse::Error::NewLine => HttpError::Malformed {
            reason: "a line does not end where it should",
        },
        httparse::Error::Token | httparse::Error::Status => HttpError::Malformed {
            reason: "the request line is invalid",
        },
    }
}

/// Tells `PRI * HTTP/2.0` or `GET / HTTP/1.2` (505) from a request line that is just garbage
/// (400), by looking at the last word of the first line.
fn names_an_http_version(head: &[u8]) -> bool {
    let start = leading_blank_len(head);
    let rest = head.get(start..).unwrap_or_default();
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let word = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    matches!(word, [b'H', b'T', b'T', b'P', b'/', b'0'..=b'9', ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<Head, HttpError> {
        parse_head(bytes, &Limits::default())
    }

    fn err(bytes: &[u8]) -> HttpError {
        match head(bytes) {
            Ok(parsed) => panic!("accepted {parsed:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn blank_lines_before_the_request_line() {
        assert_eq!(leading_blank_len(b""), 0);
        assert_eq!(leading_blank_len(b"GET"), 0);
        assert_eq!(leading_blank_len(b"\r\n\nGET"), 3);
        assert_eq!(leading_blank_len(b"\r\n\r"), 2);
        assert_eq!(leading_blank_len(b"\rX"), 0);
    }

    #[test]
    fn head_end_with_crlf_and_bare_lf() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nA: b\n\r\n", 0), Some(22));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(find_head_end(b"A\r\r\n", 0), None);
        assert_eq!(find_head_end(b"", 0), None);
        // Resuming after a partial search still sees a terminator that straddles it.
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n", 17), Some(18));
    }

    #[test]
    fn content_length_forms() {
        assert_eq!(parse_length("0"), Ok(0));
        assert_eq!(parse_length(" 42\t"), Ok(42));
        assert_eq!(parse_length("007"), Ok(7));
        for bad in [
            "",
            " ",
            "-1",
            "+5",
            "0x10",
            "1e3",
            "1 2",
            "٣",
            "18446744073709551616",
        ] {
            assert_eq!(
                parse_length(bad),
                Err(HttpError::InvalidContentLength),
                "{bad}"
            );
        }
        assert_eq!(parse_length("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn header_values_must_be_text() {
        assert_eq!(header_text(b" a b\t"), Some("a b"));
        assert_eq!(header_text("caf\u{e9}".as_bytes()), Some("caf\u{e9}"));
        assert_eq!(header_text(b"\xff"), None);
        assert_eq!(header_text(b"a\x7f"), None);
        assert_eq!(header_text("a\u{85}".as_bytes()), None);
    }

    #[test]
    fn version_word_decides_between_400_and_505() {
        assert!(names_an_http_version(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(names_an_http_version(b"\r\nGET / HTTP/1.2\r\n\r\n"));
        assert!(names_an_http_version(b"GET / HTTP/3\n\n"));
        assert!(!names_an_http_version(b"GET / FTP/1.1\r\n\r\n"));
        assert!(!names_an_http_version(b"GET / HTTP/\r\n\r\n"));
    }

    #[test]
    fn framing_checks_in_order() {
        let both =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 9999999999\r\n\r\n";
        assert_eq!(err(both), HttpError::TransferEncodingWithContentLength);
        let te_and_expect = b"POST / HTTP/1.1\r\nExpect: x\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(err(te_and_expect), HttpError::TransferEncodingNotSupported);
        let big_and_expect = b"POST / HTTP/1.1\r\nExpect: x\r\nContent-Length: 9999999999\r\n\r\n";
        assert_eq!(
            err(big_and_expect),
            HttpError::BodyTooLarge {
                length: 9_999_999_999,
                limit: 1024 * 1024
            }
        );
    }

    #[test]
    fn expect_is_case_insensitive() {
        let parsed = head(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n");
        assert!(parsed.is_ok_and(|h| h.wants_continue()));
        let parsed = head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(parsed.is_ok_and(|h| !h.wants_continue()));
    }
}
