//! Hostile and malformed requests over the real socket, as one table: every case names the
//! bytes a client sends and what the daemon must answer (the statuses, then whether the
//! connection stays usable or is closed; or a close without any answer). After each case the
//! daemon must still answer `/health` and a small chat, so one bad client never costs the next.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::client::Response;
use common::{Client, Daemon};
use serde_json::{json, Value};

/// The daemon runs with this header timeout, so slow clients are cut off quickly.
const HEADER_TIMEOUT: &str = "0.5";
/// How long any one read may wait: far above every timeout the cases rely on.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The default `--max-body-bytes` (1M).
const BODY_CAP: usize = 1024 * 1024;

/// What the daemon must do with one case's bytes.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// These responses in order, then the same connection answers another request.
    KeepOpen(&'static [u16]),
    /// These responses in order, then the daemon closes the connection.
    Close(&'static [u16]),
    /// The daemon closes the connection without answering.
    ClosedSilently,
}

/// An extra check on the last response.
#[derive(Clone, Copy, Debug)]
enum Check {
    None,
    /// `{"error":{"message": string, "type": string, ...}}`, with `param` when given.
    OpenAi(Option<&'static str>),
    /// `{"error": string}` and nothing else.
    Ollama,
    /// A response header and its exact value.
    Header(&'static str, &'static str),
    /// A response header that must be present.
    HasHeader(&'static str),
    /// An OpenAI error whose message names this (for nested fields, whose `param` may be
    /// their top-level field).
    OpenAiNames(&'static str),
    /// An OpenAI error with this `code`.
    OpenAiCode(&'static str),
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
    /// Shut our write side down after sending (the client sends EOF).
    half_close: bool,
    check: Check,
}

impl Case {
    fn new(name: &'static str, raw: impl Into<Vec<u8>>, expect: Expect) -> Case {
        Case {
            name,
            raw: raw.into(),
            expect,
            half_close: false,
            check: Check::None,
        }
    }

    fn half_close(mut self) -> Case {
        self.half_close = true;
        self
    }

    fn check(mut self, check: Check) -> Case {
        self.check = check;
        self
    }
}

use Expect::{Close, ClosedSilently, KeepOpen};

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn post_json(path: &str, body: &Value) -> Vec<u8> {
    post(path, body.to_string().as_bytes())
}

/// A POST whose head carries `headers` verbatim (framing included) and then `body`.
fn post_with(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\n{headers}\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn small_chat() -> Value {
    json!({"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
}

/// A valid OpenAI chat body with `field` set to `value`.
fn chat_with(field: &str, value: Value) -> Vec<u8> {
    let mut body = small_chat();
    body[field] = value;
    post_json("/v1/chat/completions", &body)
}

/// A valid Ollama chat body with `field` set to `value`.
fn ollama_chat_with(field: &str, value: Value) -> Vec<u8> {
    let mut body = json!({"stream": false, "messages": [{"role": "user", "content": "hi"}]});
    body[field] = value;
    post_json("/api/chat", &body)
}

fn cases() -> Vec<Case> {
    let chat = small_chat().to_string();
    let chat_len = chat.len();
    let nested = "[".repeat(100_000);
    let filler_headers: String = (0..)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "v".repeat(100)))
        .take_while({
            let mut total = 0;
            move |line: &String| {
                total += line.len();
                total <= 1_000_000
            }
        })
        .collect();
    let many_headers: String = (0..65).map(|i| format!("X-H{i}: v\r\n")).collect();
    // Many small messages, the body just under the cap; only the last user turn is the prompt.
    let turn = json!({"role": "assistant", "content": "x".repeat(90)}).to_string();
    let turns = (BODY_CAP - 200) / (turn.len() + 1);
    let mut many = String::from(r#"{"max_tokens":3,"messages":["#);
    for _ in 0..turns {
        many.push_str(&turn);
        many.push(',');
    }
    many.push_str(r#"{"role":"user","content":"hi"}]}"#);
    assert!(many.len() < BODY_CAP && many.len() > BODY_CAP - 1000);
    let over_cap = json!({"messages": [{"role": "user", "content": "x".repeat(BODY_CAP)}]});
    let huge_prompt = json!({"messages": [{"role": "user", "content": "x".repeat(900_000)}]});
    // Stop lists over the limits (64 sequences, 8 KiB in all), and the largest allowed one.
    let decoys: Vec<String> = (0..60_000).map(|i| format!("decoy {i}")).collect();
    let stops_65: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let stops_9k = vec!["x".repeat(4096), "y".repeat(4096), "z".repeat(1000)];
    let stops_max: Vec<String> = (0..64).map(|i| format!("{i:0>128}")).collect();

    vec![
        // ---- request lines ---------------------------------------------------------------
        Case::new("blank line then EOF", "\r\n", ClosedSilently).half_close(),
        Case::new("truncated request line then EOF", "GET /hea", ClosedSilently).half_close(),
        Case::new("truncated request line then silence", "GET /health HTT", Close(&[408])),
        Case::new(
            "truncated headers then silence",
            "GET /health HTTP/1.1\r\nHost: x\r\n",
            Close(&[408]),
        ),
        Case::new("garbage request line", "HELLO\r\n\r\n", Close(&[400]))
            .check(Check::OpenAi(None)),
        Case::new(
            "binary garbage",
            (1u8..=255).filter(|b| *b != b'\n').chain(*b"\r\n\r\n").collect::<Vec<u8>>(),
            Close(&[400]),
        ),
        Case::new("request line without a version", "GET /health\r\n\r\n", Close(&[400])),
        Case::new(
            "request line with doubled spaces",
            "GET  /health  HTTP/1.1\r\n\r\n",
            Close(&[400]),
        ),
        Case::new("NUL in the target", "GET /hea\0lth HTTP/1.1\r\n\r\n", Close(&[400])),
        Case::new("NUL in the method", "GE\0T /health HTTP/1.1\r\n\r\n", Close(&[400])),
        Case::new("invalid UTF-8 in the target", b"GET /\xff\xfe HTTP/1.1\r\n\r\n".to_vec(), Close(&[400])),
        Case::new("bare CR in the request line", "GET /health\rX HTTP/1.1\r\n\r\n", Close(&[400])),
        Case::new("lowercase method", "get /health HTTP/1.1\r\n\r\n", KeepOpen(&[405])),
        Case::new(
            "blank lines before the request line are skipped",
            "\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
            KeepOpen(&[200]),
        ),
        // ---- header fields ---------------------------------------------------------------
        Case::new("NUL in a header value", "GET /health HTTP/1.1\r\nX-A: a\0b\r\n\r\n", Close(&[400])),
        Case::new("NUL in a header name", "GET /health HTTP/1.1\r\nX-\0A: b\r\n\r\n", Close(&[400])),
        Case::new(
            "invalid UTF-8 in a header value",
            b"GET /health HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n".to_vec(),
            Close(&[400]),
        ),
        Case::new(
            "Latin-1 byte in a header value",
            b"GET /health HTTP/1.1\r\nX-A: caf\xe9\r\n\r\n".to_vec(),
            Close(&[400]),
        ),
        Case::new(
            "invalid UTF-8 in a header name",
            b"GET /health HTTP/1.1\r\nX-\xffA: b\r\n\r\n".to_vec(),
            Close(&[400]),
        ),
        Case::new(
            "bare CR injecting a header",
            "GET /health HTTP/1.1\r\nX-A: a\rConnection: close\r\n\r\n",
            Close(&[400]),
        ),
        Case::new(
            "obs-fold continuation line",
            "GET /health HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
            Close(&[400]),
        ),
        Case::new("space before the colon", "GET /health HTTP/1.1\r\nHost : x\r\n\r\n", Close(&[400])),
        Case::new("header line without a colon", "GET /health HTTP/1.1\r\nNoColon\r\n\r\n", Close(&[400])),
        Case::new(
            "bare LF line ends are tolerated",
            "GET /health HTTP/1.1\nHost: x\n\n",
            KeepOpen(&[200]),
        ),
        Case::new(
            "1 MB of headers",
            format!("GET /health HTTP/1.1\r\n{filler_headers}\r\n"),
            Close(&[431]),
        ),
        Case::new(
            "one 1 MB header line",
            format!("GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)),
            Close(&[431]),
        ),
        Case::new("65 header fields", format!("GET /health HTTP/1.1\r\n{many_headers}\r\n"), Close(&[431])),
        Case::new(
            "10 KB query on /health",
            format!("GET /health?q={} HTTP/1.1\r\n\r\n", "q".repeat(10_000)),
            KeepOpen(&[200]),
        ),
        Case::new(
            "10 KB path",
            format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(10_000)),
            KeepOpen(&[404]),
        )
        .check(Check::OpenAi(None)),
        Case::new(
            "20 KB URL, over the head limit",
            format!("GET /health?q={} HTTP/1.1\r\n\r\n", "q".repeat(20_000)),
            Close(&[431]),
        ),
        // ---- Content-Length -----------------------------------------------------------------
        Case::new(
            "duplicate identical Content-Length",
            post_with(
                "/v1/chat/completions",
                &format!("Content-Length: {chat_len}\r\nContent-Length: {chat_len}\r\n"),
                chat.as_bytes(),
            ),
            KeepOpen(&[200]),
        ),
        Case::new(
            "Content-Length list of equal values",
            post_with(
                "/v1/chat/completions",
                &format!("Content-Length: {chat_len}, {chat_len}\r\n"),
                chat.as_bytes(),
            ),
            KeepOpen(&[200]),
        ),
        Case::new(
            "conflicting Content-Length",
            post_with(
                "/v1/chat/completions",
                &format!("Content-Length: {chat_len}\r\nContent-Length: {}\r\n", chat_len + 1),
                chat.as_bytes(),
            ),
            Close(&[400]),
        ),
        Case::new(
            "conflicting Content-Length in one list",
            post_with(
                "/v1/chat/completions",
                &format!("Content-Length: {chat_len}, 1\r\n"),
                chat.as_bytes(),
            ),
            Close(&[400]),
        ),
        Case::new(
            "negative Content-Length",
            post_with("/v1/chat/completions", "Content-Length: -1\r\n", b""),
            Close(&[400]),
        ),
        Case::new(
            "non-numeric Content-Length",
            post_with("/v1/chat/completions", "Content-Length: ten\r\n", b""),
            Close(&[400]),
        ),
        Case::new(
            "plus-signed Content-Length",
            post_with("/v1/chat/completions", "Content-Length: +2\r\n", b"{}"),
            Close(&[400]),
        ),
        Case::new(
            "hexadecimal Content-Length",
            post_with("/v1/chat/completions", "Content-Length: 0x2\r\n", b"{}"),
            Close(&[400]),
        ),
        Case::new(
            "empty Content-Length",
            post_with("/v1/chat/completions", "Content-Length:\r\n", b""),
            Close(&[400]),
        ),
        Case::new(
            "Content-Length beyond u64",
            post_with("/v1/chat/completions", "Content-Length: 18446744073709551616\r\n", b""),
            Close(&[400]),
        ),
        Case::new(
            "Content-Length of u64::MAX",
            post_with("/v1/chat/completions", "Content-Length: 18446744073709551615\r\n", b""),
            Close(&[413]),
        ),
        Case::new(
            "body one byte over the cap, sent whole",
            post_json("/v1/chat/completions", &over_cap),
            Close(&[413]),
        ),
        // ---- Transfer-Encoding ---------------------------------------------------------------
        Case::new(
            "chunked body",
            post_with(
                "/v1/chat/completions",
                "Transfer-Encoding: chunked\r\n",
                format!("{chat_len:x}\r\n{chat}\r\n0\r\n\r\n").as_bytes(),
            ),
            Close(&[501]),
        ),
        Case::new(
            "Transfer-Encoding and Content-Length together",
            post_with(
                "/v1/chat/completions",
                &format!("Transfer-Encoding: chunked\r\nContent-Length: {chat_len}\r\n"),
                chat.as_bytes(),
            ),
            Close(&[400]),
        ),
        Case::new(
            "Transfer-Encoding gzip",
            post_with("/v1/chat/completions", "Transfer-Encoding: gzip\r\n", b""),
            Close(&[501]),
        ),
        // ---- slow and vanishing bodies -----------------------------------------------------
        Case::new(
            "body shorter than announced, then silence",
            post_with("/v1/chat/completions", "Content-Length: 100\r\n", b"{\"messages\""),
            Close(&[408]),
        ),
        Case::new(
            "head announcing a body, then silence",
            post_with("/v1/chat/completions", "Content-Length: 100\r\n", b""),
            Close(&[408]),
        ),
        Case::new(
            "Expect 100-continue, then no body",
            post_with(
                "/v1/chat/completions",
                "Expect: 100-continue\r\nContent-Length: 100\r\n",
                b"",
            ),
            Close(&[408]),
        ),
        Case::new(
            "body shorter than announced, then EOF",
            post_with("/v1/chat/completions", "Content-Length: 100\r\n", b"{\"messages\""),
            ClosedSilently,
        )
        .half_close(),
        Case::new(
            "a partial request pipelined behind a good one, then silence",
            "GET /health HTTP/1.1\r\n\r\nGET /hea",
            Close(&[200, 408]),
        ),
        Case::new(
            "a whole request, then EOF, is still answered",
            "GET /health HTTP/1.1\r\n\r\n",
            Close(&[200]),
        )
        .half_close(),
        // ---- versions, methods, expectations --------------------------------------------
        Case::new("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Close(&[505])),
        Case::new("HTTP/1.2", "GET /health HTTP/1.2\r\n\r\n", Close(&[505])),
        Case::new("HTTP/1.0 without keep-alive", "GET /health HTTP/1.0\r\n\r\n", Close(&[200])),
        Case::new(
            "HTTP/1.0 with keep-alive",
            "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            KeepOpen(&[200]),
        )
        .check(Check::Header("connection", "keep-alive")),
        Case::new(
            "HTTP/1.1 with Connection: close",
            "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
            Close(&[200]),
        ),
        Case::new("PUT /health", "PUT /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", KeepOpen(&[405]))
            .check(Check::Header("allow", "GET, HEAD")),
        Case::new(
            "GET on a POST endpoint",
            "GET /v1/chat/completions HTTP/1.1\r\n\r\n",
            KeepOpen(&[405]),
        )
        .check(Check::Header("allow", "POST")),
        Case::new("DELETE on an Ollama endpoint", "DELETE /api/chat HTTP/1.1\r\n\r\n", KeepOpen(&[405]))
            .check(Check::Ollama),
        Case::new("OPTIONS *", "OPTIONS * HTTP/1.1\r\n\r\n", KeepOpen(&[404])),
        Case::new(
            "Expect: something-else",
            post_with(
                "/v1/chat/completions",
                &format!("Expect: something-else\r\nContent-Length: {chat_len}\r\n"),
                chat.as_bytes(),
            ),
            Close(&[417]),
        ),
        // ---- pipelining ------------------------------------------------------------------
        Case::new(
            "garbage pipelined after a good GET",
            "GET /health HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n",
            Close(&[200, 400]),
        ),
        Case::new(
            "garbage pipelined after a good chat",
            [
                post("/v1/chat/completions", chat.as_bytes()),
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            ]
            .concat(),
            Close(&[200, 400]),
        ),
        Case::new(
            "body longer than announced: the rest is the next request",
            post_with("/v1/chat/completions", "Content-Length: 2\r\n", b"{}}}}\r\n\r\n"),
            Close(&[400, 400]),
        ),
        // ---- JSON bodies -----------------------------------------------------------------
        Case::new("empty body", post("/v1/chat/completions", b""), KeepOpen(&[400]))
            .check(Check::OpenAi(None)),
        Case::new("truncated JSON", post("/v1/chat/completions", b"{\"messages\": [{"), KeepOpen(&[400]))
            .check(Check::OpenAi(None)),
        Case::new(
            "100k nested arrays (OpenAI)",
            post("/v1/chat/completions", nested.as_bytes()),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(None)),
        Case::new("100k nested arrays (Ollama)", post("/api/chat", nested.as_bytes()), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new(
            "100k nested arrays inside messages",
            post(
                "/v1/chat/completions",
                format!("{{\"messages\": {nested}").as_bytes(),
            ),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(None)),
        Case::new("body is a bare string", post("/v1/chat/completions", b"\"hi\""), KeepOpen(&[400]))
            .check(Check::OpenAi(None)),
        Case::new("body is a bare number", post("/v1/chat/completions", b"42"), KeepOpen(&[400]))
            .check(Check::OpenAi(None)),
        Case::new("body is null", post("/v1/chat/completions", b"null"), KeepOpen(&[400]))
            .check(Check::OpenAi(None)),
        Case::new("body is an array", post("/v1/chat/completions", b"[]"), KeepOpen(&[400]))
            .check(Check::OpenAi(None)),
        Case::new(
            "invalid UTF-8 inside a JSON string",
            post(
                "/v1/chat/completions",
                b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}",
            ),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(None)),
        Case::new(
            "lone surrogate escape in a JSON string",
            post(
                "/v1/chat/completions",
                br#"{"messages":[{"role":"user","content":"\ud800"}]}"#,
            ),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(None)),
        Case::new(
            "trailing garbage after the JSON",
            post("/v1/chat/completions", format!("{chat} x").as_bytes()),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(None)),
        // ---- wrong types, OpenAI -------------------------------------------------------------
        Case::new("messages is a string", chat_with("messages", json!("hi")), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("messages"))),
        Case::new("messages is empty", chat_with("messages", json!([])), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("messages"))),
        Case::new("messages holds a number", chat_with("messages", json!([1])), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("messages"))),
        Case::new(
            "content is a number",
            chat_with("messages", json!([{"role": "user", "content": 5}])),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAiNames("messages[].content")),
        Case::new(
            "role is a number",
            chat_with("messages", json!([{"role": 1, "content": "hi"}])),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(Some("messages"))),
        Case::new("model is a number", chat_with("model", json!(7)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("model"))),
        Case::new("stream is a string", chat_with("stream", json!("yes")), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("stream"))),
        Case::new("max_tokens is a string", chat_with("max_tokens", json!("3")), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("max_tokens"))),
        Case::new("max_tokens is zero", chat_with("max_tokens", json!(0)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("max_tokens"))),
        Case::new("max_tokens is negative", chat_with("max_tokens", json!(-1)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("max_tokens"))),
        Case::new("max_tokens is fractional", chat_with("max_tokens", json!(1.5)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("max_tokens"))),
        Case::new(
            "max_tokens is u64::MAX: capped with a warning",
            chat_with("max_tokens", json!(u64::MAX)),
            KeepOpen(&[200]),
        )
        .check(Check::HasHeader("x-rkllmd-warning")),
        Case::new(
            "max_tokens beyond u64",
            post(
                "/v1/chat/completions",
                br#"{"max_tokens":100000000000000000000,"messages":[{"role":"user","content":"hi"}]}"#,
            ),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(Some("max_tokens"))),
        Case::new("temperature is a string", chat_with("temperature", json!("hot")), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("temperature"))),
        Case::new("temperature out of range", chat_with("temperature", json!(5)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("temperature"))),
        Case::new("top_p is an object", chat_with("top_p", json!({})), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("top_p"))),
        Case::new("stop is a number", chat_with("stop", json!(1)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("stop"))),
        Case::new("stop holds a number", chat_with("stop", json!(["a", 1])), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("stop"))),
        Case::new("60k decoy stops", chat_with("stop", json!(decoys)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("stop"))),
        Case::new("65 stops", chat_with("stop", json!(stops_65)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("stop"))),
        Case::new("stops of 9 KB in all", chat_with("stop", json!(stops_9k)), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("stop"))),
        Case::new("64 stops of 8 KiB in all", chat_with("stop", json!(stops_max)), KeepOpen(&[200])),
        Case::new(
            "Ollama: 65 stops",
            ollama_chat_with("options", json!({"stop": stops_65})),
            KeepOpen(&[400]),
        )
        .check(Check::Ollama),
        Case::new(
            "stream_options is a string",
            chat_with("stream_options", json!("usage")),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAi(Some("stream_options"))),
        Case::new("n is a string", chat_with("n", json!("2")), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("n"))),
        Case::new("seed is a string", chat_with("seed", json!("42")), KeepOpen(&[400]))
            .check(Check::OpenAi(Some("seed"))),
        Case::new("unknown model (OpenAI)", chat_with("model", json!("gpt-4")), KeepOpen(&[404]))
            .check(Check::OpenAi(Some("model"))),
        Case::new(
            "many messages, the body just under the cap",
            post("/v1/chat/completions", many.as_bytes()),
            KeepOpen(&[200]),
        ),
        Case::new(
            "one message far over the context",
            post_json("/v1/chat/completions", &huge_prompt),
            KeepOpen(&[400]),
        )
        .check(Check::OpenAiCode("context_length_exceeded")),
        // ---- Ollama --------------------------------------------------------------------------
        Case::new("invalid JSON on /api/chat", post("/api/chat", b"{nope"), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new("invalid JSON on /api/generate", post("/api/generate", b"{\"prompt\":"), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new("invalid JSON on /api/show", post("/api/show", b"}"), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new("bare number on /api/chat", post("/api/chat", b"1"), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new("unknown model (Ollama)", ollama_chat_with("model", json!("llama3")), KeepOpen(&[404]))
            .check(Check::Ollama),
        Case::new("Ollama messages is a string", ollama_chat_with("messages", json!("hi")), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new("Ollama options is an array", ollama_chat_with("options", json!([1])), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new(
            "Ollama num_predict is a string",
            ollama_chat_with("options", json!({"num_predict": "5"})),
            KeepOpen(&[400]),
        )
        .check(Check::Ollama),
        Case::new("Ollama stream is a string", ollama_chat_with("stream", json!("no")), KeepOpen(&[400]))
            .check(Check::Ollama),
        Case::new(
            "Ollama prompt is a number",
            post_json("/api/generate", &json!({"prompt": 1})),
            KeepOpen(&[400]),
        )
        .check(Check::Ollama),
    ]
}

/// Sends one case and checks what comes back; Err says what differed.
fn run_case(d: &Daemon, case: &Case) -> Result<(), String> {
    let stream = UnixStream::connect(&d.socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    // A separate writer, so a daemon that answers before reading everything cannot deadlock us;
    // write errors are expected when it has closed.
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let raw = case.raw.clone();
    let half_close = case.half_close;
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&raw);
        if half_close {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let mut c = Client::from_stream(stream);
    let expected: &[u16] = match case.expect {
        KeepOpen(s) | Close(s) => s,
        ClosedSilently => &[],
    };
    let mut got: Vec<Response> = Vec::new();
    for _ in expected {
        match c.read_response_or_close() {
            Some(r) => got.push(r),
            None => break,
        }
    }
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    if statuses != expected {
        return Err(format!("expected statuses {expected:?}, got {statuses:?}"));
    }
    let _ = writing.join();
    match case.expect {
        KeepOpen(_) => {
            let r = c.get("/health");
            if r.status != 200 {
                return Err(format!(
                    "connection not reusable: /health gave {}",
                    r.status
                ));
            }
        }
        Close(_) | ClosedSilently => {
            if !c.is_closed() {
                return Err("the connection was not closed".into());
            }
        }
    }
    match got.last() {
        Some(r) => check_response(case.check, r),
        None => Ok(()),
    }
}

fn check_response(check: Check, r: &Response) -> Result<(), String> {
    let body = || serde_json::from_slice::<Value>(&r.body).map_err(|e| format!("body: {e}"));
    let text = String::from_utf8_lossy(&r.body);
    let ok = match check {
        Check::None => true,
        Check::OpenAi(param) => {
            let b = body()?;
            b["error"]["message"].is_string()
                && b["error"]["type"].is_string()
                && param.is_none_or(|p| b["error"]["param"] == p)
        }
        Check::OpenAiNames(field) => body()?["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("'{field}'"))),
        Check::OpenAiCode(code) => body()?["error"]["code"] == code,
        Check::Ollama => {
            let b = body()?;
            b["error"].is_string() && b.as_object().is_some_and(|o| o.len() == 1)
        }
        Check::Header(name, value) => r.header(name) == Some(value),
        Check::HasHeader(name) => r.header(name).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{check:?} does not hold: {:?} {text}", r.headers))
    }
}

/// The daemon serves normally: `/health` and a small chat with exactly 3 tokens.
fn still_serving(d: &Daemon) -> Result<(), String> {
    let health = d.client().get("/health");
    if health.status != 200 || health.json()["status"] != "ok" {
        return Err(format!("/health: {} {}", health.status, health.text()));
    }
    let r = d.client().post_json("/v1/chat/completions", &small_chat());
    let b = r.json();
    if r.status != 200
        || b["usage"]["completion_tokens"] != 3
        || b["choices"][0]["finish_reason"] != "length"
        || !b["choices"][0]["message"]["content"].is_string()
    {
        return Err(format!("small chat: {} {b}", r.status));
    }
    Ok(())
}

#[test]
fn hostile_requests_get_their_answer_and_the_daemon_keeps_serving() {
    let mut d = Daemon::builder("badinput")
        .args(["--header-timeout", HEADER_TIMEOUT])
        .start();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            run_case(&d, case).map_err(|e| format!("answer: {e}"))?;
            still_serving(&d).map_err(|e| format!("afterwards: {e}"))
        }));
        let outcome = outcome.unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        });
        if let Err(e) = outcome {
            failures.push(format!(
                "case {:?} ({:?}): {e}",
                case.name,
                started.elapsed()
            ));
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            panic!(
                "rkllmd exited ({status}) after case {:?}; earlier failures: {failures:#?}\n{}",
                case.name,
                d.stderr()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every answer is counted, the 408s of slow clients too.
    let timeouts = cases
        .iter()
        .filter_map(|c| match c.expect {
            KeepOpen(s) | Close(s) => Some(s.iter().filter(|&&s| s == 408).count()),
            ClosedSilently => None,
        })
        .sum::<usize>();
    let metrics = d.client().get("/metrics").text();
    let line = format!("rkllmd_requests_total{{endpoint=\"other\",status=\"408\"}} {timeouts}");
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in\n{metrics}"
    );
    // Every hostile connection was reaped: only the one asking is left.
    common::wait_until(Duration::from_secs(5), "connections reaped", || {
        d.client().get("/health").json()["connections"] == 1
    });
}
