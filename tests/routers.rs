//! What a router in front of several rkllmd sees, with the real binary: the drain on SIGQUIT
//! (`/health` says `draining`, new generations get a clean 503, what was running and queued
//! finishes, then exit 0 with the socket removed), `/health`'s answers for routers (503 with the
//! queue full, the queue depth in a header) and unbuffered streams. The same with real routers
//! in front: `tests/fleet/`.

mod common;

use std::time::Duration;

use common::client::sse_data;
use common::{wait_until, write_model, Client, Daemon, TempDir};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// 40 tokens at 25 ms: a second per answer, long enough to signal during one.
const STEADY: &[&str] = &[
    "load_ms = 0",
    "prefill_us_per_token = 0",
    "answer_tokens_min = 40",
    "answer_tokens_max = 40",
    "decode_us_per_token = 25000",
];

fn openai_chat(stream: bool) -> Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

fn ollama_chat(stream: bool) -> Value {
    json!({"model": "test", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn health(d: &Daemon) -> (u16, Value, Option<String>) {
    let r = d.client().get("/health");
    let depth = r.header("X-Rkllmd-Queue-Depth").map(str::to_owned);
    (r.status, r.json(), depth)
}

fn steady_daemon(tag: &str, extra: &[&str]) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let model = write_model(dir.path(), "steady", STEADY);
    let d = Daemon::builder(tag)
        .model(model)
        .args(["--model-name", "test"])
        .args(extra.iter().copied())
        .start();
    (dir, d)
}

/// The rest of a chunked stream whose head was read.
fn rest_of_stream(c: &mut Client) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        body.extend_from_slice(&chunk);
    }
    body
}

#[test]
fn sigquit_drains_running_and_queued_requests_then_exits_0() {
    let (_dir, mut d) = steady_daemon("drain", &["--queue-size", "4"]);
    let lock = d.socket.with_extension("sock.lock");
    let mut running = d.client();
    running.send_post("/v1/chat/completions", &openai_chat(true));
    assert_eq!(running.read_head().unwrap().0, 200);
    let mut queued = d.client();
    queued.send_post("/api/chat", &ollama_chat(false));
    wait_until(Duration::from_secs(10), "a queued request", || {
        health(&d).1["queue_depth"] == 1
    });

    d.signal(Signal::SIGQUIT);
    wait_until(Duration::from_secs(10), "/health to say draining", || {
        health(&d).0 == 503
    });
    let (_, body, depth) = health(&d);
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(depth.as_deref(), Some("1"), "queue depth header");

    // New generations are refused in each API's shape, with Retry-After; the rest answers.
    let refused = d
        .client()
        .post_json("/v1/chat/completions", &openai_chat(true));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"]["type"], "server_draining");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(refused.header("Connection"), Some("close"));
    let refused = d
        .client()
        .post_json("/api/generate", &json!({"model": "test", "prompt": "hi"}));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("draining"));
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(d.client().get("/v1/models").status, 200);
    assert_eq!(d.client().get("/metrics").status, 200);

    // What was running and queued finishes whole.
    let stream = sse_data(&rest_of_stream(&mut running));
    assert_eq!(stream.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&stream[stream.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
    let answer = queued.read_response();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["done"], true);

    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
    assert!(!d.socket.exists(), "socket left behind");
    assert!(!lock.exists(), "lock file left behind");
    assert!(d.trace_of("rkllm_abort").is_empty(), "nothing was aborted");
    assert_eq!(d.trace_of("rkllm_destroy").len(), 1);
    assert!(d.stderr().contains("drained"), "{}", d.stderr());
}

#[test]
fn a_drain_past_its_timeout_stops_as_on_sigterm() {
    let (_dir, mut d) = steady_daemon("draintimeout", &["--drain-timeout", "0.3"]);
    let mut running = d.client();
    running.send_post("/v1/chat/completions", &openai_chat(true));
    assert_eq!(running.read_head().unwrap().0, 200);
    d.signal(Signal::SIGQUIT);
    let stream = sse_data(&rest_of_stream(&mut running));
    let last: Value = serde_json::from_str(&stream[stream.len() - 2]).unwrap();
    assert_eq!(last["error"]["type"], "server_shutting_down", "{last}");
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(!d.socket.exists(), "socket left behind");
    assert_eq!(d.trace_of("rkllm_abort").len(), 1);
    assert!(
        d.stderr().contains("drain timeout passed"),
        "{}",
        d.stderr()
    );
}

#[test]
fn sigterm_during_a_drain_is_the_prompt_stop() {
    let (_dir, mut d) = steady_daemon("drainterm", &[]);
    let mut running = d.client();
    running.send_post("/v1/chat/completions", &openai_chat(true));
    assert_eq!(running.read_head().unwrap().0, 200);
    d.signal(Signal::SIGQUIT);
    wait_until(Duration::from_secs(10), "/health to say draining", || {
        health(&d).0 == 503
    });
    d.signal(Signal::SIGTERM);
    let stream = sse_data(&rest_of_stream(&mut running));
    let last: Value = serde_json::from_str(&stream[stream.len() - 2]).unwrap();
    assert_eq!(last["error"]["type"], "server_shutting_down", "{last}");
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn health_is_503_with_the_queue_full_and_carries_its_depth() {
    let (_dir, d) = steady_daemon("healthfull", &["--queue-size", "1"]);
    let (status, body, depth) = health(&d);
    assert_eq!((status, depth.as_deref()), (200, Some("0")), "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["queue_size"], 1);
    let mut running = d.client();
    running.send_post("/v1/chat/completions", &openai_chat(true));
    assert_eq!(running.read_head().unwrap().0, 200);
    assert_eq!(
        health(&d).0,
        200,
        "running, nothing queued: still takes one"
    );
    let mut queued = d.client();
    queued.send_post("/v1/chat/completions", &openai_chat(false));
    wait_until(Duration::from_secs(10), "the queue to fill", || {
        health(&d).1["queue_depth"] == 1
    });
    let (status, body, depth) = health(&d);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "queue_full");
    assert_eq!(depth.as_deref(), Some("1"));
    // What /health promised: a generation now would be refused.
    let r = d
        .client()
        .post_json("/v1/chat/completions", &openai_chat(false));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(queued.read_response().status, 200);
    wait_until(Duration::from_secs(10), "the queue to empty", || {
        health(&d).0 == 200
    });
}

#[test]
fn streams_ask_proxies_not_to_buffer() {
    let (_dir, d) = steady_daemon("unbuffered", &[]);
    for (path, body) in [
        ("/v1/chat/completions", openai_chat(true)),
        ("/v1/completions", json!({"stream": true, "prompt": "hi"})),
        ("/v1/responses", json!({"stream": true, "input": "hi"})),
        ("/api/chat", ollama_chat(true)),
        ("/api/generate", json!({"model": "test", "prompt": "hi"})),
    ] {
        let r = d.client().post_json(path, &body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("X-Accel-Buffering"), Some("no"), "{path}");
    }
}

/// CPU time the process has used (user + system), in clock ticks.
fn cpu_ticks(pid: nix::unistd::Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_drain_past_its_timeout_waits_for_the_abort_without_spinning() {
    let dir = TempDir::new("drainspin");
    let model = write_model(
        dir.path(),
        "slowabort",
        &[
            "answer_tokens_min = 400",
            "answer_tokens_max = 400",
            "decode_us_per_token = 25000",
            "abort_delay_ms = 3000",
        ],
    );
    let mut d = Daemon::builder("drainspin")
        .model(model)
        .args(["--drain-timeout", "0.2", "--abort-grace", "20"])
        .start();
    let mut running = d.client();
    running.send_post("/v1/chat/completions", &openai_chat(true));
    assert_eq!(running.read_head().unwrap().0, 200);
    d.signal(Signal::SIGQUIT);
    // The drain timed out after 0.2 s; the abort takes 3 s to take effect. Meanwhile the loop
    // waits for it: a second of that costs next to no CPU (a spinning loop takes most of one).
    std::thread::sleep(Duration::from_millis(800));
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(d.pid()) - before;
    assert!(used < 30, "{used} ticks of CPU in a second of waiting");
    let stream = sse_data(&rest_of_stream(&mut running));
    let last: Value = serde_json::from_str(&stream[stream.len() - 2]).unwrap();
    assert_eq!(last["error"]["type"], "server_shutting_down", "{last}");
    assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(0));
}
