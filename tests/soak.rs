//! Issue 7's soak: a few hundred clients, well-behaved and not, against one daemon on
//! fast.rkllm, with SIGHUPs, for `RKLLMD_SOAK_SECS` seconds (default 75, the CI smoke form).
//! It passes when the daemon never dies, every well-behaved client got its whole answer (the
//! simulator's answers are a function of the prompt, so "whole" is checked byte for byte), RSS
//! and open fds are back where they were after a warm-up, and /metrics shows nothing left in
//! flight.
//!
//! Threads stay few for a 2-core machine: a pool of workers each cycling through many short
//! connections, a few slow readers and slowloris clients, and a few holders that keep 300 idle
//! connections open between them.

// Cargo.toml's float_cmp allow, named again (a command-line -W clippy::pedantic overrides
// Cargo's table): /metrics values compared here are whole numbers, exact as floats.
#![allow(clippy::float_cmp)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{post_request, ClientError, Response};
use common::{Client, Daemon};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const DEFAULT_SECS: u64 = 60;
const WARMUP: Duration = Duration::from_secs(20);
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How late a daemon timer may fire on a loaded, shared 2-core machine.
const TIMER_SLACK: Duration = Duration::from_secs(3);
const MAX_BODY: usize = 64 * 1024;
const SIGHUP_EVERY: Duration = Duration::from_millis(250);

const WORKERS: usize = 10;
const SLOW_READERS: usize = 3;
/// Streams a slow reader pipelines on one connection: more output than a Unix socket buffers,
/// so the daemon has to hold the rest and wait for the socket to become writable.
const SLOW_PIPELINE: usize = 14;
const SLOWLORIS: usize = 4;
const IDLE_HOLDERS: usize = 4;
const IDLE_PER_HOLDER: usize = 75;
/// fast.rkllm ends its answers after 24 to 96 tokens.
const ANSWER_TOKENS: std::ops::RangeInclusive<u64> = 24..=96;

/// RSS may end this much above the warm-up figure: allocator arenas and the kernel's
/// accounting move by a few hundred KiB between two quiet moments. A leak of 100 bytes per
/// request over the tens of thousands of requests of even the smoke run is well above it.
const RSS_TOLERANCE_KIB: u64 = 512;

const PROMPTS: [&str; 6] = [
    "hi",
    "What is an NPU?",
    "Tell me about the RK3588 in one line.",
    "Écris une phrase courte.",
    "用一句话介绍你自己",
    "List three colours.",
];

type Res<T> = Result<T, String>;

/// What the clients saw: successes by kind, and the first failures in words.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    failures: Mutex<Vec<String>>,
    failed: AtomicU64,
}

impl Tally {
    fn record(&self, kind: &'static str, outcome: Res<()>) {
        match outcome {
            Ok(()) => *self.counts.lock().unwrap().entry(kind).or_default() += 1,
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut f = self.failures.lock().unwrap();
                if f.len() < 40 {
                    f.push(format!("{kind}: {e}"));
                }
            }
        }
    }

    fn count(&self, kind: &str) -> u64 {
        self.counts.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

struct Shared {
    socket: PathBuf,
    /// The answer to each of `PROMPTS`, fetched once before the load starts.
    answers: Vec<String>,
    stop: AtomicBool,
    tally: Tally,
}

/// xorshift64: reproducible garbage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

// ---- reading with the shared client ---------------------------------------------------------

/// The next response; None when the daemon closes first. Unlike a test, the soak insists that
/// every answer is framed by a length or chunked encoding, never by the connection's end.
fn response(w: &mut Client) -> Result<Option<Response>, ClientError> {
    let Some(r) = w.try_read_response()? else {
        return Ok(None);
    };
    if r.header("content-length").is_none() && r.header("transfer-encoding") != Some("chunked") {
        return Err(ClientError::Http(format!(
            "{} with neither a length nor chunked encoding",
            r.status
        )));
    }
    Ok(Some(r))
}

fn need_response(w: &mut Client) -> Result<Response, ClientError> {
    response(w)?.ok_or_else(|| ClientError::Http("closed before a response".into()))
}

fn messages(prompt: &str) -> Value {
    json!([{"role": "user", "content": prompt}])
}

// ---- what a complete, well-formed answer is ------------------------------------------------

fn expect_status(r: &Response, status: u16) -> Res<()> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!(
            "status {} (wanted {status}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))
    }
}

fn expect_eq(what: &str, got: &Value, want: &Value) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got}, wanted {want}"))
    }
}

fn expect_closed(w: &mut Client, after: &str) -> Res<()> {
    if w.try_is_closed()? {
        Ok(())
    } else {
        Err(format!("still open after {after}"))
    }
}

fn expect_answer(got: &str, want: &str) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("answer {got:?} is not the whole answer {want:?}"))
    }
}

fn expect_tokens(what: &str, v: &Value) -> Res<u64> {
    match v.as_u64() {
        Some(n) if ANSWER_TOKENS.contains(&n) => Ok(n),
        _ => Err(format!("{what} is {v}, not within {ANSWER_TOKENS:?}")),
    }
}

fn check_openai(r: &Response, answer: &str) -> Res<()> {
    expect_status(r, 200)?;
    let b = r.try_json()?;
    expect_eq("object", &b["object"], &json!("chat.completion"))?;
    expect_eq(
        "role",
        &b["choices"][0]["message"]["role"],
        &json!("assistant"),
    )?;
    expect_eq(
        "finish_reason",
        &b["choices"][0]["finish_reason"],
        &json!("stop"),
    )?;
    expect_answer(
        b["choices"][0]["message"]["content"].as_str().unwrap_or(""),
        answer,
    )?;
    check_usage(&b["usage"])
}

fn check_usage(u: &Value) -> Res<()> {
    let completion = expect_tokens("usage.completion_tokens", &u["completion_tokens"])?;
    let prompt = u["prompt_tokens"]
        .as_u64()
        .ok_or_else(|| format!("usage without prompt_tokens: {u}"))?;
    expect_eq(
        "usage.total_tokens",
        &u["total_tokens"],
        &json!(prompt + completion),
    )
}

fn check_openai_stream(r: &Response, answer: &str, usage: bool) -> Res<()> {
    expect_status(r, 200)?;
    if r.header("content-type") != Some("text/event-stream") {
        return Err(format!("content type {:?}", r.header("content-type")));
    }
    let text = std::str::from_utf8(&r.body).map_err(|e| format!("stream not UTF-8: {e}"))?;
    let events: Vec<&str> = text
        .strip_suffix("\n\n")
        .ok_or("stream does not end with a blank line")?
        .split("\n\n")
        .collect();
    let mut datas = Vec::new();
    for ev in &events {
        datas.push(
            ev.strip_prefix("data: ")
                .ok_or_else(|| format!("event without data: {ev:?}"))?,
        );
    }
    if datas.last() != Some(&"[DONE]") {
        return Err(format!("stream ends with {:?}, not [DONE]", datas.last()));
    }
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).map_err(|e| format!("event {d:?}: {e}")))
        .collect::<Res<_>>()?;
    let first = chunks.first().ok_or("no chunks")?;
    expect_eq(
        "first delta's role",
        &first["choices"][0]["delta"]["role"],
        &json!("assistant"),
    )?;
    let id = &first["id"];
    let mut content = String::new();
    let mut finish = None;
    let mut usage_seen = None;
    for (i, c) in chunks.iter().enumerate() {
        expect_eq("object", &c["object"], &json!("chat.completion.chunk"))?;
        expect_eq("id", &c["id"], id)?;
        if finish.is_some() && usage_seen.is_none() && c.get("usage").is_none() {
            return Err(format!("chunk {i} after the finish: {c}"));
        }
        if let Some(u) = c.get("usage") {
            expect_eq("usage chunk's choices", &c["choices"], &json!([]))?;
            usage_seen = Some(u.clone());
            continue;
        }
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if !c["choices"][0]["finish_reason"].is_null() {
            finish = Some(c["choices"][0]["finish_reason"].clone());
        }
    }
    expect_eq(
        "finish_reason",
        &finish.unwrap_or(Value::Null),
        &json!("stop"),
    )?;
    expect_answer(&content, answer)?;
    match (usage, usage_seen) {
        (true, Some(u)) => check_usage(&u),
        (false, None) => Ok(()),
        (true, None) => Err("include_usage without a usage chunk".into()),
        (false, Some(u)) => Err(format!("usage chunk not asked for: {u}")),
    }
}

fn check_ollama(r: &Response, answer: &str) -> Res<()> {
    expect_status(r, 200)?;
    let b = r.try_json()?;
    expect_eq("done", &b["done"], &json!(true))?;
    expect_eq("done_reason", &b["done_reason"], &json!("stop"))?;
    expect_answer(b["message"]["content"].as_str().unwrap_or(""), answer)?;
    expect_tokens("eval_count", &b["eval_count"]).map(drop)
}

fn check_ollama_stream(r: &Response, answer: &str) -> Res<()> {
    expect_status(r, 200)?;
    let text = std::str::from_utf8(&r.body).map_err(|e| format!("stream not UTF-8: {e}"))?;
    let lines: Vec<Value> = text
        .strip_suffix('\n')
        .ok_or("NDJSON does not end with a newline")?
        .split('\n')
        .map(|l| serde_json::from_str(l).map_err(|e| format!("line {l:?}: {e}")))
        .collect::<Res<_>>()?;
    let (last, parts) = lines.split_last().ok_or("no lines")?;
    let mut content = String::new();
    for p in parts {
        expect_eq("done", &p["done"], &json!(false))?;
        content.push_str(
            p["message"]["content"]
                .as_str()
                .ok_or("part without content")?,
        );
    }
    expect_eq("last done", &last["done"], &json!(true))?;
    expect_eq("done_reason", &last["done_reason"], &json!("stop"))?;
    content.push_str(last["message"]["content"].as_str().unwrap_or(""));
    expect_answer(&content, answer)?;
    expect_tokens("eval_count", &last["eval_count"]).map(drop)
}

/// An error answer in the OpenAI shape with one of `statuses`.
fn check_error(r: &Response, statuses: &[u16]) -> Res<()> {
    if !statuses.contains(&r.status) {
        return Err(format!(
            "status {} not one of {statuses:?}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let b = r.try_json()?;
    if b["error"]["message"].is_string() {
        Ok(())
    } else {
        Err(format!("not an error body: {b}"))
    }
}

// ---- the clients ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    OpenAi,
    OpenAiStream,
    OpenAiStreamUsage,
    Ollama,
    OllamaStream,
    KeepAlive,
    AbortAfterFirstChunk,
    AbortAtOnce,
    Garbage,
    Oversized,
    BadJson,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::OpenAi,
        Kind::OpenAiStream,
        Kind::OpenAiStreamUsage,
        Kind::Ollama,
        Kind::OllamaStream,
        Kind::KeepAlive,
        Kind::AbortAfterFirstChunk,
        Kind::AbortAtOnce,
        Kind::Garbage,
        Kind::Oversized,
        Kind::BadJson,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::OpenAiStream => "openai-stream",
            Kind::OpenAiStreamUsage => "openai-stream-usage",
            Kind::Ollama => "ollama",
            Kind::OllamaStream => "ollama-stream",
            Kind::KeepAlive => "keep-alive x4",
            Kind::AbortAfterFirstChunk => "abort after 1st chunk",
            Kind::AbortAtOnce => "abort after sending",
            Kind::Garbage => "garbage",
            Kind::Oversized => "oversized body (413)",
            Kind::BadJson => "bad JSON (400, kept open)",
        }
    }
}

/// A well-behaved chat of `kind` on `w`: the request, the whole answer, its check.
fn chat(w: &mut Client, kind: Kind, prompt: usize, sh: &Shared) -> Res<()> {
    let (p, answer) = (PROMPTS[prompt], sh.answers[prompt].as_str());
    match kind {
        Kind::OpenAi => {
            w.try_send(&post_request(
                "/v1/chat/completions",
                &json!({"messages": messages(p)}),
            ))?;
            check_openai(&need_response(w)?, answer)
        }
        Kind::OpenAiStream | Kind::OpenAiStreamUsage => {
            let usage = matches!(kind, Kind::OpenAiStreamUsage);
            w.try_send(&post_request(
                "/v1/chat/completions",
                &json!({"stream": true, "stream_options": {"include_usage": usage}, "messages": messages(p)}),
            ))?;
            check_openai_stream(&need_response(w)?, answer, usage)
        }
        Kind::Ollama => {
            w.try_send(&post_request(
                "/api/chat",
                &json!({"model": "fast", "stream": false, "messages": messages(p)}),
            ))?;
            check_ollama(&need_response(w)?, answer)
        }
        Kind::OllamaStream => {
            w.try_send(&post_request(
                "/api/chat",
                &json!({"model": "fast", "messages": messages(p)}),
            ))?;
            check_ollama_stream(&need_response(w)?, answer)
        }
        _ => unreachable!("not a chat"),
    }
}

fn client(kind: Kind, sh: &Shared, rng: &mut Rng) -> Res<()> {
    let prompt = rng.below(PROMPTS.len());
    let mut w = Client::try_unix(&sh.socket)?;
    match kind {
        Kind::OpenAi
        | Kind::OpenAiStream
        | Kind::OpenAiStreamUsage
        | Kind::Ollama
        | Kind::OllamaStream => chat(&mut w, kind, prompt, sh),
        Kind::KeepAlive => {
            for (i, k) in [
                Kind::OpenAiStream,
                Kind::Ollama,
                Kind::OllamaStream,
                Kind::OpenAi,
            ]
            .into_iter()
            .enumerate()
            {
                chat(&mut w, k, (prompt + i) % PROMPTS.len(), sh)
                    .map_err(|e| format!("request {i} on one connection: {e}"))?;
            }
            w.try_send(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")?;
            expect_status(&need_response(&mut w)?, 200)?;
            expect_closed(&mut w, "Connection: close")
        }
        Kind::AbortAfterFirstChunk => {
            w.try_send(&post_request(
                "/v1/chat/completions",
                &json!({"stream": true, "messages": messages(PROMPTS[prompt])}),
            ))?;
            let (status, _) = w.try_read_head()?.ok_or("closed before the head")?;
            if status != 200 {
                return Err(format!("status {status}"));
            }
            w.try_read_chunk()?
                .ok_or("stream ended before its first chunk")?;
            Ok(())
        }
        Kind::AbortAtOnce => Ok(w.try_send(&post_request(
            "/api/chat",
            &json!({"messages": messages(PROMPTS[prompt])}),
        ))?),
        Kind::Garbage => garbage(w, rng),
        Kind::Oversized => {
            // The head announces four times the limit; a part of the body follows before the
            // answer is read, as a client that does not wait for it would send.
            w.try_send(
                format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    4 * MAX_BODY
                )
                .as_bytes(),
            )?;
            w.try_send(&vec![b'{'; 3 * MAX_BODY / 2])?;
            check_error(&need_response(&mut w)?, &[413])?;
            expect_closed(&mut w, "a 413")
        }
        Kind::BadJson => {
            w.try_send(&post_request(
                "/v1/chat/completions",
                &json!("not an object"),
            ))?;
            check_error(&need_response(&mut w)?, &[400])?;
            w.try_send(
                b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 8\r\n\r\n{\"messag",
            )?;
            check_error(&need_response(&mut w)?, &[400])?;
            chat(&mut w, Kind::OpenAi, prompt, sh)
                .map_err(|e| format!("after two 400s on one connection: {e}"))
        }
    }
}

/// Random bytes, half the time with our write side shut. The daemon answers with a 4xx (a
/// 408 when the bytes stop mid-request) or just closes; it must not take longer than its
/// header timeout to do either.
fn garbage(mut w: Client, rng: &mut Rng) -> Res<()> {
    let len = 1 + rng.below(2048);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let t = Instant::now();
    w.try_send(&bytes)?;
    if rng.below(2) == 0 {
        w.try_shutdown_write()?;
    }
    let outcome = match response(&mut w)? {
        Some(r) => check_error(&r, &[400, 408, 413, 414, 431, 501, 505]),
        None => Ok(()),
    };
    if t.elapsed() > HEADER_TIMEOUT + TIMER_SLACK {
        return Err(format!("garbage answered after {:?}", t.elapsed()));
    }
    outcome
}

fn worker(sh: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    while !sh.stop.load(Ordering::Relaxed) {
        let kind = Kind::ALL[rng.below(Kind::ALL.len())];
        sh.tally.record(kind.name(), client(kind, sh, &mut rng));
    }
}

/// Pipelines a batch of streams (OpenAI and Ollama), then reads the answers a byte per read.
fn slow_reader(sh: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    while !sh.stop.load(Ordering::Relaxed) {
        let outcome = (|| {
            let mut w = Client::try_unix(&sh.socket)?;
            let prompts: Vec<usize> = (0..SLOW_PIPELINE)
                .map(|_| rng.below(PROMPTS.len()))
                .collect();
            let mut raw = Vec::new();
            for (i, &p) in prompts.iter().enumerate() {
                raw.extend(if i % 2 == 0 {
                    post_request(
                        "/v1/chat/completions",
                        &json!({"stream": true, "messages": messages(PROMPTS[p])}),
                    )
                } else {
                    post_request("/api/chat", &json!({"messages": messages(PROMPTS[p])}))
                });
            }
            w.try_send(&raw)?;
            w.read_slowly(1, 32);
            for (i, &p) in prompts.iter().enumerate() {
                let r = need_response(&mut w)?;
                if i % 2 == 0 {
                    check_openai_stream(&r, &sh.answers[p], false)
                } else {
                    check_ollama_stream(&r, &sh.answers[p])
                }
                .map_err(|e| format!("pipelined answer {i}: {e}"))?;
            }
            Ok(())
        })();
        sh.tally.record("slow reader x14", outcome);
    }
}

/// Dribbles a request a byte every 100 ms (headers, or a body after whole headers). The
/// daemon must answer 408, or close, within its header timeout of the first byte.
fn slowloris(sh: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    while !sh.stop.load(Ordering::Relaxed) {
        let in_body = rng.below(2) == 0;
        let outcome = (|| -> Res<&'static str> {
            let mut w = Client::try_unix(&sh.socket)?;
            let (head, dribble): (Vec<u8>, &[u8]) = if in_body {
                (
                    b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec(),
                    b"{\"messages\": [{\"role\": \"user\", \"content\": \"slow\"}]}",
                )
            } else {
                (
                    Vec::new(),
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: rkllmd\r\nX-Slow: aaaaaaaaaaaaa",
                )
            };
            let t = Instant::now();
            if !head.is_empty() {
                w.try_send(&head)?;
            }
            w.try_set_nonblocking(true)?;
            let mut cut = false;
            for &b in dribble {
                if w.try_send(&[b]).is_err() {
                    cut = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                // Whatever arrives stays in the buffer for the response read below.
                match w.try_fill() {
                    Err(e) if e.is_would_block() => {}
                    Ok(_) | Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            let took = t.elapsed();
            if !cut {
                return Err(format!("still open after {took:?} of dribbling"));
            }
            if took > HEADER_TIMEOUT + TIMER_SLACK {
                return Err(format!("cut off only after {took:?}"));
            }
            w.try_set_nonblocking(false)?;
            match response(&mut w) {
                Ok(Some(r)) => check_error(&r, &[408]).map(|()| "slowloris got 408"),
                Ok(None) => Ok("slowloris closed"),
                // Our later bytes may reset the connection once the daemon has closed it.
                Err(e) if e.is_reset() => Ok("slowloris closed"),
                Err(e) => Err(e.into()),
            }
        })();
        match outcome {
            Ok(kind) => sh.tally.record(kind, Ok(())),
            Err(e) => sh.tally.record("slowloris", Err(e)),
        }
    }
}

/// Keeps `IDLE_PER_HOLDER` connections open: each does one /health a second after it opens,
/// then idles; past the keep-alive timeout it must have been closed by the daemon, and is
/// replaced.
fn idle_holder(sh: &Shared) {
    struct Held {
        w: Client,
        opened: Instant,
        used: Option<Instant>,
    }
    let open = || -> Res<Held> {
        Ok(Held {
            w: Client::try_unix(&sh.socket)?,
            opened: Instant::now(),
            used: None,
        })
    };
    let mut held: Vec<Held> = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) {
        while held.len() < IDLE_PER_HOLDER {
            match open() {
                Ok(h) => held.push(h),
                Err(e) => {
                    sh.tally.record("idle connection", Err(e));
                    break;
                }
            }
        }
        let mut i = 0;
        while i < held.len() && !sh.stop.load(Ordering::Relaxed) {
            let h = &mut held[i];
            let outcome = match h.used {
                None if h.opened.elapsed() >= Duration::from_secs(1) => {
                    h.used = Some(Instant::now());
                    (|| {
                        h.w.try_send(b"GET /health HTTP/1.1\r\n\r\n")?;
                        let r = need_response(&mut h.w)?;
                        expect_status(&r, 200)?;
                        expect_eq("health", &r.try_json()?["status"], &json!("ok"))
                    })()
                    .map(|()| false)
                }
                Some(used) if used.elapsed() > KEEPALIVE + TIMER_SLACK => {
                    let _ = h.w.try_set_nonblocking(true);
                    match h.w.try_is_closed() {
                        Ok(true) => Ok(true),
                        Ok(false) => Err("sent bytes while idle".into()),
                        Err(e) if e.is_would_block() => Err(format!(
                            "open {:?} after its keep-alive timeout",
                            used.elapsed()
                        )),
                        Err(e) => Err(e.into()),
                    }
                }
                _ => Ok(false),
            };
            match outcome {
                Ok(false) => i += 1,
                Ok(true) => {
                    sh.tally.record("idle, closed at keep-alive", Ok(()));
                    held.swap_remove(i);
                }
                Err(e) => {
                    sh.tally.record("idle connection", Err(e));
                    held.swap_remove(i);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the run -------------------------------------------------------------------------------

/// Runs every client kind until `secs` have passed, sending SIGHUP meanwhile; prints progress.
fn load(d: &mut Daemon, sh: &Arc<Shared>, secs: Duration, label: &str) {
    sh.stop.store(false, Ordering::Relaxed);
    let mut threads = Vec::new();
    let mut spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        threads.push(
            std::thread::Builder::new()
                .name(name)
                .stack_size(256 * 1024)
                .spawn(f)
                .expect("spawn a client thread"),
        );
    };
    let salt = if label == "warm-up" { 0 } else { 1000 };
    for i in 0..WORKERS {
        let sh = Arc::clone(sh);
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + salt);
        spawn(format!("worker{i}"), Box::new(move || worker(&sh, seed)));
    }
    for i in 0..SLOW_READERS {
        let sh = Arc::clone(sh);
        let seed = 0x5151_5151 + i as u64 + salt;
        spawn(format!("slow{i}"), Box::new(move || slow_reader(&sh, seed)));
    }
    for i in 0..SLOWLORIS {
        let sh = Arc::clone(sh);
        let seed = 0x7777 + i as u64 + salt;
        spawn(format!("loris{i}"), Box::new(move || slowloris(&sh, seed)));
    }
    for i in 0..IDLE_HOLDERS {
        let sh = Arc::clone(sh);
        spawn(format!("idle{i}"), Box::new(move || idle_holder(&sh)));
    }
    let start = Instant::now();
    let mut next_report = start;
    let mut hups = 0u64;
    while start.elapsed() < secs {
        std::thread::sleep(SIGHUP_EVERY);
        d.signal(Signal::SIGHUP);
        hups += 1;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(15);
            println!(
                "soak {label} {:>4.0} s: RSS {} KiB, {} fds, {} client failures, {hups} SIGHUPs",
                start.elapsed().as_secs_f64(),
                d.rss_kib(),
                d.fd_count(),
                sh.tally.failed.load(Ordering::Relaxed),
            );
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            sh.stop.store(true, Ordering::Relaxed);
            panic!(
                "rkllmd died during the soak ({status}); stderr tail:\n{}",
                tail(&d.stderr())
            );
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a client thread panicked");
    }
}

/// Waits until only `probe` is connected and nothing is queued or running; then returns
/// (RSS KiB, open fds) with the probe still connected, so both counts include it.
fn quiet_figures(d: &Daemon, probe: &mut Client) -> (u64, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        probe
            .try_send(b"GET /health HTTP/1.1\r\n\r\n")
            .expect("probe /health");
        let h = need_response(probe)
            .and_then(|r| r.try_json())
            .expect("probe /health answer");
        if h["connections"] == 1 && h["queue_depth"] == 0 && h["running"] == false {
            // Let allocator and kernel settle a moment after the last reaping.
            std::thread::sleep(Duration::from_millis(200));
            return (d.rss_kib(), d.fd_count());
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never got back to idle: {h}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(probe: &mut Client) -> BTreeMap<String, f64> {
    probe
        .try_send(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("/metrics");
    let r = need_response(probe).expect("/metrics answer");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body)
        .expect("UTF-8 metrics")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, v) = l.rsplit_once(' ').expect("sample line");
            (name.to_owned(), v.parse().expect("sample value"))
        })
        .collect()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn soak() {
    let secs: u64 = match std::env::var("RKLLMD_SOAK_SECS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("RKLLMD_SOAK_SECS={v:?} is not a number of seconds")),
        Err(_) => DEFAULT_SECS,
    };
    let mut d = Daemon::builder("soak")
        .args([
            "--max-connections".to_owned(),
            "1000".into(),
            "--queue-size".into(),
            "256".into(),
            "--header-timeout".into(),
            HEADER_TIMEOUT.as_secs_f64().to_string(),
            "--keepalive-timeout".into(),
            KEEPALIVE.as_secs_f64().to_string(),
            "--max-body-bytes".into(),
            MAX_BODY.to_string(),
        ])
        .start();

    // The reference answers, each checked to be the same in both APIs.
    let answers: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            let mut c = d.client();
            let b = c
                .post_json("/v1/chat/completions", &json!({"messages": messages(p)}))
                .json();
            let answer = b["choices"][0]["message"]["content"]
                .as_str()
                .expect("an answer")
                .to_owned();
            let o = c
                .post_json(
                    "/api/chat",
                    &json!({"stream": false, "messages": messages(p)}),
                )
                .json();
            assert_eq!(o["message"]["content"], answer, "same answer in both APIs");
            answer
        })
        .collect();
    let sh = Arc::new(Shared {
        socket: d.socket.clone(),
        answers,
        stop: AtomicBool::new(false),
        tally: Tally::default(),
    });

    load(&mut d, &sh, WARMUP, "warm-up");
    let mut probe = Client::try_unix(&d.socket).expect("probe connection");
    let (rss0, fds0) = quiet_figures(&d, &mut probe);
    let before = metrics(&mut probe);
    drop(probe);
    println!("soak: after the warm-up: RSS {rss0} KiB, {fds0} fds; now {secs} s of load");

    let t = Instant::now();
    load(&mut d, &sh, Duration::from_secs(secs), "load");
    let loaded = t.elapsed();
    let mut probe = Client::try_unix(&d.socket).expect("probe connection");
    let (rss1, fds1) = quiet_figures(&d, &mut probe);
    let m = metrics(&mut probe);

    let counts = sh.tally.counts.lock().unwrap().clone();
    let total: u64 = counts.values().sum();
    println!(
        "soak: {total} clients done in {:.0} s (warm-up included):",
        loaded.as_secs_f64() + WARMUP.as_secs_f64()
    );
    for (kind, n) in &counts {
        println!("  {kind:<28} {n:>7}");
    }
    let served =
        m["rkllmd_generations_submitted_total"] - before["rkllmd_generations_submitted_total"];
    println!(
        "soak: RSS {rss0} KiB after the warm-up, {rss1} KiB at the end ({:+} KiB); fds {fds0} -> {fds1}; {served} generations in the main run",
        rss1 as i64 - rss0 as i64
    );
    let trace = d.trace();
    let count = |f: &str| trace.iter().filter(|l| l["fn"] == f).count();
    let aborted_runs = trace
        .iter()
        .filter(|l| l["fn"] == "run_end" && l["reason"] == "abort")
        .count();
    println!(
        "soak: trace: {} runs, {} run ends ({aborted_runs} aborted), {} rkllm_abort calls; /metrics aborts {}",
        count("rkllm_run"),
        count("run_end"),
        count("rkllm_abort"),
        m["rkllmd_aborts_total"]
    );

    let failures = sh.tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} client(s) failed; the first:\n{}",
        sh.tally.failed.load(Ordering::Relaxed),
        failures.join("\n")
    );
    for kind in Kind::ALL.iter().map(|k| k.name()).chain([
        "slow reader x14",
        "slowloris got 408",
        "idle, closed at keep-alive",
    ]) {
        assert!(sh.tally.count(kind) > 0, "no '{kind}' client completed");
    }

    // Flat: the same fds, RSS within the allocator's noise.
    assert_eq!(fds1, fds0, "open fds after the soak vs after the warm-up");
    assert!(
        rss1 <= rss0 + RSS_TOLERANCE_KIB,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );

    // Nothing left in flight, and the books balance.
    let get = |name: &str| -> f64 {
        *m.get(name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(
        get("rkllmd_connections"),
        1.0,
        "only the probe is connected"
    );
    assert_eq!(get("rkllmd_queue_depth"), 0.0);
    assert_eq!(get("rkllmd_running"), 0.0);
    assert_eq!(
        get("rkllmd_connections_accepted_total") - get("rkllmd_connections_closed_total"),
        1.0,
        "accepted - closed = the probe"
    );
    assert_eq!(
        get("rkllmd_generations_submitted_total"),
        get("rkllmd_generations_ended_total"),
        "every generation ended"
    );
    assert!(get("rkllmd_generations_submitted_total") > 0.0);
    assert_eq!(get("rkllmd_connections_refused_total"), 0.0);
    assert_eq!(get("rkllmd_runtime_errors_total"), 0.0);
    assert_eq!(get("rkllmd_queue_rejections_total"), 0.0);
    let by_status = |status: u16| -> f64 {
        m.iter()
            .filter(|(k, _)| k.ends_with(&format!("status=\"{status}\"}}")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(by_status(500), 0.0, "internal errors");
    assert_eq!(by_status(503), 0.0, "refusals");
    assert!(by_status(413) >= sh.tally.count("oversized body (413)") as f64);
    assert!(by_status(408) >= sh.tally.count("slowloris got 408") as f64);
    assert_eq!(
        count("rkllm_run"),
        count("run_end"),
        "every run the runtime started ended"
    );

    // No crash: alive and serving, then a clean exit on SIGTERM with the socket removed.
    probe.try_send(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let h = need_response(&mut probe).unwrap();
    assert_eq!(h.status, 200);
    drop(probe);
    let stderr = d.stderr();
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("panicked"),
        "errors logged:\n{}",
        tail(&stderr)
    );
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", tail(&d.stderr()));
    assert!(!d.socket.exists(), "socket removed at exit");
}
