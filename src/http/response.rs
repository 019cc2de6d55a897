//! Writing responses into a connection's write buffer. Nothing here allocates except by
//! growing that buffer.

use super::request::Version;

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The standard reason phrase; empty for codes we never send, which RFC 9112 allows.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A complete response with a `Content-Length` body.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
    version: Version,
) {
    write_response_head(out, status, headers, body.len(), keep_alive, version);
    if has_body(status) {
        out.extend_from_slice(body);
    }
}

/// The head of a `Content-Length` response without its body: for HEAD requests, or when the
/// caller writes the body itself.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_length: usize,
    keep_alive: bool,
    version: Version,
) {
    write_status_line(out, status);
    // RFC 9110 forbids Content-Length on 1xx and 204.
    if has_body(status) {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, content_length as u64);
        out.extend_from_slice(b"\r\n");
    }
    write_connection(out, keep_alive, version);
    write_caller_headers(out, headers);
    out.extend_from_slice(b"\r\n");
}

fn has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204
}

/// Always `HTTP/1.1`: RFC 9110 has a server send the highest minor version it speaks, even to
/// HTTP/1.0 clients; what they may receive is governed by the headers instead.
pub(super) fn write_status_line(out: &mut Vec<u8>, status: u16) {
    debug_assert!((100..1000).contains(&status), "status {status}");
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Says what the default would get wrong: close for 1.1, keep-alive for 1.0.
pub(super) fn write_connection(out: &mut Vec<u8>, keep_alive: bool, version: Version) {
    match (keep_alive, version) {
        (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
        (true, Version::Http10) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (true, Version::Http11) => {}
    }
}

/// Caller headers, minus any that would break framing: a CR or LF would inject lines, and
/// the writer owns the length and connection headers. Dropping them is a bug's symptom.
pub(super) fn write_caller_headers(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for &(name, value) in headers {
        let bad_name = name.is_empty() || name.bytes().any(|b| !is_token(b));
        let bad_value = value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        let framing = ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|owned| name.eq_ignore_ascii_case(owned));
        if bad_name || bad_value || framing {
            log::warn!("dropped response header {name:?}: {value:?}");
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::super::error::HttpError;
    use super::*;

    fn response(
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
        version: Version,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        write_response(&mut out, status, headers, body, keep_alive, version);
        out
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn ok_keep_alive_http11() {
        let out = response(
            200,
            &[("Content-Type", "application/json")],
            b"{}",
            true,
            Version::Http11,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
        );
    }

    #[test]
    fn connection_header_by_version() {
        assert_eq!(
            text(&response(404, &[], b"", false, Version::Http11)),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            text(&response(200, &[], b"x", true, Version::Http10)),
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx"
        );
        assert_eq!(
            text(&response(200, &[], b"x", false, Version::Http10)),
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        assert_eq!(
            text(&response(204, &[], b"ignored", true, Version::Http11)),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    #[test]
    fn head_only_announces_the_length() {
        let mut out = Vec::new();
        write_response_head(&mut out, 200, &[], 1_234_567_890, true, Version::Http11);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 1234567890\r\n\r\n"
        );
    }

    #[test]
    fn appends_to_what_is_already_queued() {
        let mut out = b"earlier".to_vec();
        write_response(&mut out, 200, &[], b"", true, Version::Http11);
        assert_eq!(
            text(&out),
            "earlierHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn headers_that_would_break_framing_are_dropped() {
        let out = response(
            200,
            &[
                ("X-Ok", "1"),
                ("X-Inject", "a\r\nSet-Cookie: b"),
                ("Bad Name", "v"),
                ("", "v"),
                ("Content-Length", "99"),
                ("connection", "upgrade"),
                ("Transfer-Encoding", "chunked"),
                ("X-Ok-Too", ""),
            ],
            b"",
            true,
            Version::Http11,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Ok: 1\r\nX-Ok-Too: \r\n\r\n"
        );
    }

    #[test]
    fn reason_phrases() {
        let expected = [
            (100, "Continue"),
            (200, "OK"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (415, "Unsupported Media Type"),
            (417, "Expectation Failed"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, phrase) in expected {
            assert_eq!(reason(status), phrase, "{status}");
        }
        assert_eq!(reason(299), "");
        assert_eq!(
            text(&response(299, &[], b"", true, Version::Http11)),
            "HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn every_error_status_has_a_reason() {
        let errors = [
            HttpError::HeadTooLarge { limit: 1 },
            HttpError::TooManyHeaders { limit: 1 },
            HttpError::BodyTooLarge {
                length: 2,
                limit: 1,
            },
            HttpError::Malformed { reason: "x" },
            HttpError::InvalidContentLength,
            HttpError::TransferEncodingNotSupported,
            HttpError::VersionNotSupported,
            HttpError::ExpectationFailed,
        ];
        for err in errors {
            assert!(!reason(err.status()).is_empty(), "{err:?}");
        }
    }

    #[test]
    fn continue_is_the_interim_status_line() {
        let mut out = Vec::new();
        write_status_line(&mut out, 100);
        out.extend_from_slice(b"\r\n");
        assert_eq!(CONTINUE_100, out.as_slice());
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 100, 4096, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(text(&out), n.to_string());
        }
    }
}
