//! The per-connection request parser: a state machine fed from the connection's read buffer.

use super::error::HttpError;
use super::head::{self, Head};
use super::request::Request;
use super::Limits;

/// What `RequestParser::advance` found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Read more bytes into the buffer and call `advance` again.
    NeedMore,
    /// The client waits for `HTTP/1.1 100 Continue` before sending the body; write
    /// `CONTINUE_100`, then keep reading. Returned at most once per request.
    Continue100,
    /// A whole request; its bytes are gone from the buffer and the parser expects the next.
    Request(Request),
}

/// Where the parser is in the current request.
#[derive(Debug)]
enum State {
    /// Waiting for the blank line that ends the head. The first `scanned` bytes of the buffer
    /// are known not to hold it, so each read is searched once; `skipped` counts the empty
    /// lines dropped before the request line, which count against the head limit.
    Head { scanned: usize, skipped: usize },
    /// The head is parsed and drained; waiting until the buffer holds the whole body.
    Body { head: Head },
    /// A request was refused. The stream's framing is lost, so the connection must close;
    /// until it does, the same error is returned.
    Failed(HttpError),
}

impl Default for State {
    fn default() -> Self {
        State::Head {
            scanned: 0,
            skipped: 0,
        }
    }
}

/// One per connection; keeps the partial request between reads.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    state: State,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            state: State::default(),
        }
    }

    /// True between a request's head and the end of its body. The request has begun then even
    /// when no byte of the body is buffered yet, so the connection's request timer must run.
    pub fn awaiting_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// The head of the request whose body is awaited, as a request without its body: what
    /// the head says (an API key, the path) can be checked before the body is read.
    pub fn pending_head(&self) -> Option<Request> {
        match &self.state {
            State::Body { head } => Some(head.to_request()),
            _ => None,
        }
    }

    /// Parses what `buf` holds, draining the bytes of a finished request from its front; bytes
    /// of a pipelined next request stay. Work per call is proportional to the new bytes, so a
    /// body trickling in byte by byte costs O(total).
    pub fn advance(&mut self, buf: &mut Vec<u8>) -> Result<Progress, HttpError> {
        let result = self.step(buf);
        if let Err(err) = &result {
            self.state = State::Failed(err.clone());
        }
        result
    }

    fn step(&mut self, buf: &mut Vec<u8>) -> Result<Progress, HttpError> {
        loop {
            match std::mem::take(&mut self.state) {
                State::Failed(err) => {
                    self.state = State::Failed(err.clone());
                    return Err(err);
                }
                State::Head { scanned, skipped } => {
                    let Some(head) = self.read_head(buf, scanned, skipped)? else {
                        return Ok(Progress::NeedMore);
                    };
                    let wants_continue = head.wants_continue() && buf.len() < head.content_length();
                    self.state = State::Body { head };
                    if wants_continue {
                        return Ok(Progress::Continue100);
                    }
                }
                State::Body { head } => {
                    let length = head.content_length();
                    let Some(body) = buf.get(..length) else {
                        self.state = State::Body { head };
                        return Ok(Progress::NeedMore);
                    };
                    let body = body.to_vec();
                    buf.drain(..length);
                    // The state was taken, so it is back at Head for the next request.
                    return Ok(Progress::Request(head.into_request(body)));
                }
            }
        }
    }

    /// Drains and returns the head once its blank line is in `buf`; otherwise records how far
    /// it searched in `self.state` and returns `None`.
    fn read_head(
        &mut self,
        buf: &mut Vec<u8>,
        mut scanned: usize,
        mut skipped: usize,
    ) -> Result<Option<Head>, HttpError> {
        let max = self.limits.max_head_bytes;
        let blank = head::leading_blank_len(buf);
        if blank > 0 {
            buf.drain(..blank);
            skipped = skipped.saturating_add(blank);
            scanned = 0;
        }
        if skipped > max {
            return Err(HttpError::HeadTooLarge { limit: max });
        }
        // Search no further than the limit allows, so a flood costs at most `max` bytes of work.
        let room = max - skipped;
        let window = buf.get(..room).unwrap_or(buf.as_slice());
        let Some(end) = head::find_head_end(window, scanned) else {
            if !buf.is_empty() && buf.len() >= room {
                return Err(HttpError::HeadTooLarge { limit: max });
            }
            self.state = State::Head {
                scanned: window.len(),
                skipped,
            };
            return Ok(None);
        };
        let head = head::parse_head(&buf[..end], &self.limits)?;
        buf.drain(..end);
        Ok(Some(head))
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::{Method, Version};
    use super::*;

    fn limits(max_head_bytes: usize, max_body_bytes: usize) -> Limits {
        Limits {
            max_head_bytes,
            max_body_bytes,
        }
    }

    /// Runs `advance` until it wants more bytes or fails, collecting what it returned.
    fn drive(parser: &mut RequestParser, buf: &mut Vec<u8>) -> Result<Vec<Progress>, HttpError> {
        let mut seen = Vec::new();
        loop {
            match parser.advance(buf)? {
                Progress::NeedMore => return Ok(seen),
                other => seen.push(other),
            }
        }
    }

    fn one_request(bytes: &[u8]) -> Request {
        let mut buf = bytes.to_vec();
        let mut parser = RequestParser::new(Limits::default());
        match parser.advance(&mut buf) {
            Ok(Progress::Request(request)) => {
                assert!(buf.is_empty(), "left over: {buf:?}");
                request
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn error_of(bytes: &[u8]) -> HttpError {
        error_with(Limits::default(), bytes)
    }

    fn error_with(limits: Limits, bytes: &[u8]) -> HttpError {
        let mut buf = bytes.to_vec();
        let mut parser = RequestParser::new(limits);
        match drive(&mut parser, &mut buf) {
            Err(err) => err,
            Ok(seen) => panic!("expected an error, got {seen:?}"),
        }
    }

    fn get(path: &str, version: Version, keep_alive: bool) -> Request {
        Request {
            method: Method::Get,
            path: path.to_string(),
            query: None,
            version,
            headers: Vec::new(),
            body: Vec::new(),
            keep_alive,
        }
    }

    #[test]
    fn simple_get() {
        let request = one_request(b"GET /v1/models?limit=2&x HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\n\r\n");
        assert_eq!(
            request,
            Request {
                method: Method::Get,
                path: "/v1/models".to_string(),
                query: Some("limit=2&x".to_string()),
                version: Version::Http11,
                headers: vec![
                    ("host".to_string(), "localhost".to_string()),
                    ("user-agent".to_string(), "curl/8.5.0".to_string()),
                ],
                body: Vec::new(),
                keep_alive: true,
            }
        );
        assert_eq!(request.header("Host"), Some("localhost"));
    }

    #[test]
    fn minimal_get_and_other_methods() {
        assert_eq!(
            one_request(b"GET / HTTP/1.1\r\n\r\n"),
            get("/", Version::Http11, true)
        );
        assert_eq!(
            one_request(b"get / HTTP/1.1\r\n\r\n").method,
            Method::Other("get".to_string())
        );
        assert_eq!(
            one_request(b"OPTIONS * HTTP/1.1\r\n\r\n").path,
            "*".to_string()
        );
        assert_eq!(
            one_request(b"GET /? HTTP/1.1\r\n\r\n").query,
            Some(String::new())
        );
    }

    #[test]
    fn post_body_in_one_read() {
        let request =
            one_request(b"POST /api/chat HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"model\":\"x\"}");
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.path, "/api/chat");
        assert_eq!(request.body, b"{\"model\":\"x\"}".to_vec());
        assert_eq!(request.header("content-length"), Some("13"));
    }

    #[test]
    fn post_body_one_byte_at_a_time() {
        let bytes = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let mut parser = RequestParser::new(Limits::default());
        let mut buf = Vec::new();
        for (i, &byte) in bytes.iter().enumerate() {
            buf.push(byte);
            let progress = parser.advance(&mut buf);
            if i + 1 < bytes.len() {
                assert_eq!(progress, Ok(Progress::NeedMore), "at byte {i}");
            } else {
                let Ok(Progress::Request(request)) = progress else {
                    panic!("no request at the end: {progress:?}");
                };
                assert_eq!(request.body, b"hello".to_vec());
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn large_head_and_body_trickled_in() {
        let mut bytes = b"POST /p HTTP/1.1\r\n".to_vec();
        for i in 0..50 {
            bytes.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(300)).as_bytes());
        }
        bytes.extend_from_slice(b"Content-Length: 65536\r\n\r\n");
        let head_len = bytes.len();
        bytes.extend(std::iter::repeat_n(b'b', 65536));
        let mut parser = RequestParser::new(limits(16 * 1024, 65536));
        let mut buf = Vec::new();
        let mut requests = Vec::new();
        for chunk in bytes.chunks(3) {
            buf.extend_from_slice(chunk);
            requests.extend(drive(&mut parser, &mut buf).expect("valid"));
        }
        assert!(head_len < 16 * 1024);
        assert_eq!(requests.len(), 1);
        let Progress::Request(request) = &requests[0] else {
            panic!("{requests:?}");
        };
        assert_eq!(request.headers.len(), 51);
        assert_eq!(request.body.len(), 65536);
    }

    #[test]
    fn awaiting_body_from_the_head_to_the_end_of_the_body() {
        let mut parser = RequestParser::new(Limits::default());
        let mut buf = b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\n".to_vec();
        assert!(!parser.awaiting_body());
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        assert!(buf.is_empty() && parser.awaiting_body());
        buf.extend_from_slice(b"ok");
        assert!(matches!(parser.advance(&mut buf), Ok(Progress::Request(_))));
        assert!(!parser.awaiting_body());
    }

    #[test]
    fn the_head_is_readable_while_its_body_is_awaited() {
        let mut parser = RequestParser::new(Limits::default());
        let mut buf = b"POST /p HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-".to_vec();
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        assert_eq!(parser.pending_head(), None);
        buf.extend_from_slice(b"Length: 9\r\n\r\n");
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        let head = parser.pending_head().expect("the head");
        assert_eq!(head.path, "/p");
        assert_eq!(head.header("authorization"), Some("Bearer k"));
        assert!(head.body.is_empty());
        buf.extend_from_slice(b"123456789");
        assert!(matches!(parser.advance(&mut buf), Ok(Progress::Request(_))));
        assert_eq!(parser.pending_head(), None);
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let mut buf =
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nGET /c HT"
                .to_vec();
        let mut parser = RequestParser::new(Limits::default());
        let Ok(Progress::Request(first)) = parser.advance(&mut buf) else {
            panic!("first request missing");
        };
        assert_eq!(first.path, "/a");
        assert_eq!(first.body, b"abc".to_vec());
        assert_eq!(buf, b"GET /b HTTP/1.1\r\n\r\nGET /c HT".to_vec());
        assert_eq!(
            parser.advance(&mut buf),
            Ok(Progress::Request(get("/b", Version::Http11, true)))
        );
        assert_eq!(buf, b"GET /c HT".to_vec());
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        buf.extend_from_slice(b"TP/1.0\r\n\r\n");
        assert_eq!(
            parser.advance(&mut buf),
            Ok(Progress::Request(get("/c", Version::Http10, false)))
        );
        assert!(buf.is_empty());
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
    }

    #[test]
    fn keep_alive_rules() {
        let cases: [(&[u8], bool); 8] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\nConnection: upgrade\r\n\r\n", false),
        ];
        for (bytes, keep_alive) in cases {
            let request = one_request(bytes);
            assert_eq!(
                request.keep_alive,
                keep_alive,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn expect_100_continue_once_then_request() {
        let mut buf =
            b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".to_vec();
        let mut parser = RequestParser::new(Limits::default());
        assert_eq!(parser.advance(&mut buf), Ok(Progress::Continue100));
        assert!(buf.is_empty());
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        buf.extend_from_slice(b"da");
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        buf.extend_from_slice(b"ta");
        let Ok(Progress::Request(request)) = parser.advance(&mut buf) else {
            panic!("no request");
        };
        assert_eq!(request.body, b"data".to_vec());
        assert_eq!(request.header("expect"), Some("100-continue"));
    }

    #[test]
    fn no_100_continue_when_not_needed() {
        let cases: [&[u8]; 4] = [
            // HTTP/1.0 clients do not know 100 Continue.
            b"POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            // The body already arrived with the head.
            b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
            // There is no body to wait for.
            b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        ];
        for bytes in cases {
            let mut buf = bytes.to_vec();
            let mut parser = RequestParser::new(Limits::default());
            let seen = drive(&mut parser, &mut buf).expect("valid");
            assert!(
                !seen.contains(&Progress::Continue100),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        assert_eq!(
            one_request(b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n"),
            get("/", Version::Http11, true)
        );
        // Some clients send CRLF after a POST body; it must not break the next request.
        let mut buf =
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET /b HTTP/1.1\r\n\r\n".to_vec();
        let mut parser = RequestParser::new(Limits::default());
        let seen = drive(&mut parser, &mut buf).expect("valid");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], Progress::Request(get("/b", Version::Http11, true)));
    }

    #[test]
    fn empty_lines_count_against_the_head_limit() {
        let mut bytes = b"\r\n".repeat(40);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            error_with(limits(64, 0), &bytes),
            HttpError::HeadTooLarge { limit: 64 }
        );
        // A lone CR at the end waits for its LF rather than failing.
        let mut parser = RequestParser::new(limits(64, 0));
        let mut buf = b"\r\n\r".to_vec();
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        assert_eq!(buf, b"\r".to_vec());
        buf.extend_from_slice(b"\nGET / HTTP/1.1\r\n\r\n");
        assert!(matches!(parser.advance(&mut buf), Ok(Progress::Request(_))));
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let request = one_request(b"POST /p HTTP/1.1\nHost: x\nContent-Length: 2\n\nhi");
        assert_eq!(request.header("host"), Some("x"));
        assert_eq!(request.body, b"hi".to_vec());
        assert_eq!(
            one_request(b"GET / HTTP/1.1\nA: b\n\r\n").header("a"),
            Some("b")
        );
    }

    #[test]
    fn head_at_the_limit_is_accepted_one_more_byte_is_not() {
        let head = b"GET /xxxxxxxxxx HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let mut parser = RequestParser::new(limits(head.len(), 0));
        let mut buf = head.to_vec();
        assert!(matches!(parser.advance(&mut buf), Ok(Progress::Request(_))));
        assert_eq!(
            error_with(limits(head.len() - 1, 0), head),
            HttpError::HeadTooLarge {
                limit: head.len() - 1
            }
        );
    }

    #[test]
    fn head_over_the_limit_without_terminator_is_431() {
        let mut parser = RequestParser::new(limits(64, 0));
        let mut buf = b"GET /".to_vec();
        buf.extend(std::iter::repeat_n(b'a', 58));
        assert_eq!(buf.len(), 63);
        assert_eq!(parser.advance(&mut buf), Ok(Progress::NeedMore));
        buf.push(b'a');
        assert_eq!(
            parser.advance(&mut buf),
            Err(HttpError::HeadTooLarge { limit: 64 })
        );
    }

    #[test]
    fn a_megabyte_of_headers_is_431() {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        while bytes.len() < 1024 * 1024 {
            bytes.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let unterminated = error_of(&bytes);
        bytes.extend_from_slice(b"\r\n");
        let terminated = error_of(&bytes);
        for err in [unterminated, terminated] {
            assert_eq!(err, HttpError::HeadTooLarge { limit: 16 * 1024 });
            assert_eq!(err.status(), 431);
        }
    }

    #[test]
    fn sixty_four_headers_fit_sixty_five_do_not() {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..64 {
            bytes.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut ok = bytes.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(one_request(&ok).headers.len(), 64);
        bytes.extend_from_slice(b"X-64: v\r\n\r\n");
        let err = error_of(&bytes);
        assert_eq!(err, HttpError::TooManyHeaders { limit: 64 });
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn malformed_heads_are_400() {
        let cases: [&[u8]; 12] = [
            b"hello world\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n",
            // Obsolete line folding.
            b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        ];
        for bytes in cases {
            let err = error_of(bytes);
            assert_eq!(
                err.status(),
                400,
                "{:?}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn bad_header_values_are_400() {
        let cases: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
            // Header injection: a bare CR that a lax peer might treat as a line end.
            b"GET / HTTP/1.1\r\nX-A: a\rInjected: yes\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\u{85}b\r\n\r\n".as_bytes(),
        ];
        for bytes in cases {
            let err = error_of(bytes);
            assert_eq!(
                err.status(),
                400,
                "{:?}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            error_of(b"GET / HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n"),
            HttpError::InvalidHeaderValue {
                name: "x-a".to_string()
            }
        );
        // Non-ASCII text is fine.
        assert_eq!(
            one_request("GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n".as_bytes()).header("x-a"),
            Some("caf\u{e9}")
        );
    }

    #[test]
    fn content_length_errors() {
        let invalid: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1.5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ];
        for bytes in invalid {
            assert_eq!(error_of(bytes), HttpError::InvalidContentLength);
        }
        let conflicting: [&[u8]; 2] = [
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab",
        ];
        for bytes in conflicting {
            assert_eq!(error_of(bytes), HttpError::ConflictingContentLength);
        }
        let agreeing =
            one_request(b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nab");
        assert_eq!(agreeing.body, b"ab".to_vec());
    }

    #[test]
    fn body_over_the_limit_is_413_before_the_body_arrives() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        let err = error_with(limits(1024, 10), head);
        assert_eq!(
            err,
            HttpError::BodyTooLarge {
                length: 11,
                limit: 10
            }
        );
        assert_eq!(err.status(), 413);
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(error_of(huge).status(), 413);
        let mut exact = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n".to_vec();
        exact.extend_from_slice(b"0123456789");
        let mut parser = RequestParser::new(limits(1024, 10));
        assert!(matches!(
            parser.advance(&mut exact),
            Ok(Progress::Request(_))
        ));
    }

    #[test]
    fn transfer_encoding_is_refused() {
        for te in ["chunked", "gzip, chunked", "identity"] {
            let bytes = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
            let err = error_of(bytes.as_bytes());
            assert_eq!(err, HttpError::TransferEncodingNotSupported);
            assert_eq!(err.status(), 501);
        }
        let cases: [&[u8]; 2] = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        ];
        for bytes in cases {
            let err = error_of(bytes);
            assert_eq!(err, HttpError::TransferEncodingWithContentLength);
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn other_http_versions_are_505() {
        let cases: [&[u8]; 4] = [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
        ];
        for bytes in cases {
            let err = error_of(bytes);
            assert_eq!(err, HttpError::VersionNotSupported);
            assert_eq!(err.status(), 505);
        }
    }

    #[test]
    fn unknown_expectation_is_417() {
        let err = error_of(b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(err, HttpError::ExpectationFailed);
        assert_eq!(err.status(), 417);
        assert_eq!(error_of(b"GET / HTTP/1.0\r\nExpect:\r\n\r\n").status(), 417);
    }

    #[test]
    fn an_error_sticks_until_the_connection_closes() {
        let mut parser = RequestParser::new(Limits::default());
        let mut buf = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let first = parser.advance(&mut buf);
        assert_eq!(first, Err(HttpError::TransferEncodingNotSupported));
        let mut next = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(parser.advance(&mut next), first);
    }

    /// SplitMix64: a deterministic source of split points, so failures reproduce.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    #[test]
    fn any_split_of_a_pipelined_stream_yields_the_same_requests() {
        let stream: &[u8] = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /v1/chat/completions?stream=1 HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"messages\":[{}]}\
            \r\nPOST /api/generate HTTP/1.1\nExpect: 100-continue\nContent-Length: 5\n\nhello\
            GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
            DELETE /x HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let mut whole = stream.to_vec();
        let expected: Vec<Request> = drive(&mut RequestParser::new(Limits::default()), &mut whole)
            .expect("valid stream")
            .into_iter()
            .filter_map(|p| match p {
                Progress::Request(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(expected.len(), 5);
        assert!(whole.is_empty());

        let mut rng = SplitMix(0x5eed);
        for round in 0..500 {
            let mut parser = RequestParser::new(Limits::default());
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut continues = 0;
            let mut at = 0;
            while at < stream.len() {
                let max_piece = if round % 2 == 0 { 4 } else { 64 };
                let end = (at + 1 + rng.below(max_piece)).min(stream.len());
                buf.extend_from_slice(&stream[at..end]);
                at = end;
                for progress in drive(&mut parser, &mut buf).expect("valid stream") {
                    match progress {
                        Progress::Request(r) => got.push(r),
                        Progress::Continue100 => continues += 1,
                        Progress::NeedMore => unreachable!(),
                    }
                }
            }
            assert_eq!(got, expected, "round {round}");
            assert!(continues <= 1, "round {round}");
            assert!(buf.is_empty(), "round {round}");
        }
    }
}
