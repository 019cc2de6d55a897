//! The OpenAI-compatible API over the real socket: every endpoint streaming and not, the
//! parameters, the errors, stop sequences across tokens, queueing and its limits, runtime errors
//! mid-stream, and 32 clients served in FIFO order. The simulator's trace shows what the runtime
//! was asked to do.

mod common;

use std::time::Duration;

use common::client::sse_data;
use common::{write_model, Client, Daemon, TempDir};
use serde_json::{json, Value};

fn chat(content: &str) -> Value {
    json!({"messages": [{"role": "user", "content": content}]})
}

fn with(mut body: Value, extra: Value) -> Value {
    let Value::Object(extra) = extra else {
        panic!("extra fields must be an object: {extra}");
    };
    for (k, v) in extra {
        body[k] = v;
    }
    body
}

fn events(body: &[u8]) -> Vec<Value> {
    let data = sse_data(body);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]: {data:?}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn streamed_text(evs: &[Value]) -> String {
    evs.iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn slow_daemon(tag: &str, args: &[&str]) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(
        dir.path(),
        "slow",
        &[
            "answer_tokens_min = 300",
            "answer_tokens_max = 300",
            "decode_us_per_token = 10000",
        ],
    );
    Daemon::builder(tag)
        .model(model)
        .args(args.iter().copied())
        .start()
}

#[test]
fn models_lists_the_loaded_model() {
    let d = Daemon::start("models");
    let r = d.client().get("/v1/models");
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "fast");
    assert_eq!(body["data"][0]["object"], "model");
    assert!(body["data"][0]["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(d.client().get("/v1/models/fast").json()["id"], "fast");
    let missing = d.client().get("/v1/models/gpt-4");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["param"], "model");
}

#[test]
fn chat_completion_has_the_schema_fields_and_real_usage() {
    let d = Daemon::start("chat");
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("Describe the NPU."), json!({"model": "fast"})),
    );
    assert_eq!(r.status, 200);
    let b = r.json();
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "fast");
    assert!(b["created"].is_u64());
    let choice = &b["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"].get("refusal").is_some_and(Value::is_null),
        "OpenAI's schema requires refusal, null here: {b}"
    );
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(choice["finish_reason"], "stop");
    let run = d.trace_of("run_end").pop().unwrap();
    assert_eq!(
        b["usage"]["completion_tokens"], run["generate_tokens"],
        "usage from the runtime, not words"
    );
    assert_eq!(b["usage"]["prompt_tokens"], run["prefill_tokens"]);
    let total = b["usage"]["prompt_tokens"].as_u64().unwrap()
        + b["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(b["usage"]["total_tokens"], total);
    assert_eq!(
        d.trace_of("rkllm_run").pop().unwrap()["prompt"],
        "Describe the NPU."
    );
}

#[test]
fn chat_stream_has_role_first_finish_last_and_done() {
    let d = Daemon::start("chatstream");
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("hi"), json!({"stream": true})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let evs = events(&r.body);
    assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
    for e in &evs {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["id"], evs[0]["id"]);
        assert!(e.get("usage").is_none(), "no usage without include_usage");
    }
    let last = evs.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(evs[..evs.len() - 1]
        .iter()
        .all(|e| e["choices"][0]["finish_reason"].is_null()));
    // One chunk per piece of text: as many content chunks as text pieces the runtime produced
    // (a character split across tokens arrives as one piece).
    let pieces = evs
        .iter()
        .filter(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .count() as u64;
    let generated = d.trace_of("run_end").pop().unwrap()["generate_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        pieces > 0 && pieces <= generated,
        "{pieces} pieces for {generated} tokens"
    );
    // The same prompt without streaming gives the same text.
    let full = d
        .client()
        .post_json("/v1/chat/completions", &chat("hi"))
        .json();
    assert_eq!(
        full["choices"][0]["message"]["content"].as_str().unwrap(),
        streamed_text(&evs)
    );
}

#[test]
fn include_usage_adds_a_usage_chunk_with_empty_choices() {
    let d = Daemon::start("usage");
    let body = with(
        chat("hi"),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let evs = events(&d.client().post_json("/v1/chat/completions", &body).body);
    let last = evs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let run = d.trace_of("run_end").pop().unwrap();
    assert_eq!(last["usage"]["completion_tokens"], run["generate_tokens"]);
    assert_eq!(evs[evs.len() - 2]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn a_run_cut_short_by_a_full_context_ends_with_length() {
    let dir = TempDir::new("ctxfull");
    let model = write_model(
        dir.path(),
        "long",
        &["answer_tokens_min = 500", "answer_tokens_max = 500"],
    );
    // The runtime's template (a prompt without history) and ours (a conversation kept in the
    // KV cache) measure the context differently.
    for template in ["runtime", "qwen2.5"] {
        let d = Daemon::builder("ctxfull")
            .model(model.clone())
            .args(["--max-context-len", "96", "--max-new-tokens", "400"])
            .args(["--chat-template", template])
            .start();
        let requests = [
            ("/v1/chat/completions", chat("a short question")),
            ("/v1/completions", json!({"prompt": "Once upon a time"})),
        ];
        for (path, body) in requests {
            for stream in [false, true] {
                let r = d
                    .client()
                    .post_json(path, &with(body.clone(), json!({"stream": stream})));
                assert_eq!(r.status, 200, "{}", r.text());
                let end = d.trace_of("run_end").pop().unwrap();
                let generated = end["generate_tokens"].as_u64().unwrap();
                assert!(generated > 0 && generated < 96, "{end}");
                let reason = if stream {
                    events(&r.body).last().unwrap()["choices"][0]["finish_reason"].clone()
                } else {
                    r.json()["choices"][0]["finish_reason"].clone()
                };
                assert_eq!(reason, "length", "{template} {path} stream={stream}");
            }
        }
        // Ollama says the same.
        let r = d.client().post_json(
            "/api/chat",
            &json!({"model": "long", "stream": false,
                    "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(
            r.json()["done_reason"],
            "length",
            "{template}: {}",
            r.text()
        );
    }
}

#[test]
fn completions_stream_and_not() {
    let d = Daemon::start("completions");
    let r = d.client().post_json(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 5}),
    );
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["object"], "text_completion");
    assert!(b["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(b["choices"][0]["finish_reason"], "length");
    assert_eq!(b["usage"]["completion_tokens"], 5);
    let r = d.client().post_json(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 5, "stream": true}),
    );
    let evs = events(&r.body);
    let text: String = evs
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, b["choices"][0]["text"].as_str().unwrap());
    assert_eq!(evs.last().unwrap()["choices"][0]["finish_reason"], "length");
    assert_eq!(
        d.client()
            .post_json("/v1/completions", &json!({"max_tokens": 5}))
            .status,
        400
    );
}

#[test]
fn max_tokens_reaches_the_runtime_and_ends_with_length() {
    let d = Daemon::start("maxtok");
    for field in ["max_tokens", "max_completion_tokens"] {
        let r = d.client().post_json(
            "/v1/chat/completions",
            &with(chat("count"), json!({field: 4})),
        );
        let b = r.json();
        assert_eq!(b["choices"][0]["finish_reason"], "length", "{field}");
        assert_eq!(b["usage"]["completion_tokens"], 4, "{field}");
        assert_eq!(d.trace_of("run_end").pop().unwrap()["generate_tokens"], 4);
    }
}

#[test]
fn sampling_is_per_request_on_1_3_and_a_warning_on_1_2() {
    let d = Daemon::start("sampling");
    let body = with(
        chat("hi"),
        json!({"temperature": 0.2, "top_p": 0.5, "top_k": 7, "frequency_penalty": 0.5}),
    );
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    let run = d.trace_of("rkllm_run").pop().unwrap();
    if env!("RKLLMD_ABI") == "1.3" {
        assert!(r.header("x-rkllmd-warning").is_none());
        let s = &run["sampling"];
        assert!(
            (s["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6,
            "{run}"
        );
        assert_eq!(s["top_k"], 7);
        assert!(
            (s["repeat_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6,
            "unset fields keep the daemon's value"
        );
    } else {
        let w = r.header("x-rkllmd-warning").expect("a warning on ABI 1.2");
        assert!(w.contains("ABI 1.2"), "{w}");
        assert!(run.get("sampling").is_none_or(Value::is_null), "{run}");
    }
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("hi"), json!({"seed": 42})),
    );
    assert!(r.header("x-rkllmd-warning").unwrap().contains("seed"));
}

#[test]
fn a_stop_sequence_split_across_tokens_ends_the_answer_before_it() {
    // A little decode time, so the run is still going when the stop matches.
    let dir = TempDir::new("stop");
    let model = write_model(
        dir.path(),
        "m",
        &[
            "answer_tokens_min = 60",
            "answer_tokens_max = 60",
            "decode_us_per_token = 3000",
        ],
    );
    let d = Daemon::builder("stop").model(model).start();
    let evs = events(
        &d.client()
            .post_json(
                "/v1/chat/completions",
                &with(chat("tell me"), json!({"stream": true})),
            )
            .body,
    );
    let pieces: Vec<String> = evs
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|s| s.len() >= 2)
        .map(str::to_owned)
        .collect();
    // A stop made of the end of one piece and the start of the next one.
    let (a, b) = (&pieces[3], &pieces[4]);
    let tail: String = a
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = b.chars().take(2).collect();
    let stop = format!("{tail}{head}");
    let full = streamed_text(&evs);
    let cut = full.find(&stop).unwrap();
    for stream in [false, true] {
        let body = with(
            chat("tell me"),
            json!({"stream": stream, "stop": [stop.clone(), "zzzz-never"]}),
        );
        let r = d.client().post_json("/v1/chat/completions", &body);
        let (text, reason) = if stream {
            let evs = events(&r.body);
            (
                streamed_text(&evs),
                evs.last().unwrap()["choices"][0]["finish_reason"].clone(),
            )
        } else {
            let b = r.json();
            (
                b["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                b["choices"][0]["finish_reason"].clone(),
            )
        };
        assert_eq!(text, full[..cut], "stream={stream}");
        assert_eq!(reason, "stop");
    }
    let run = d.trace_of("run_end").pop().unwrap();
    let full_run = d.trace_of("run_end")[0].clone();
    assert!(
        run["generate_tokens"].as_u64() < full_run["generate_tokens"].as_u64(),
        "the run was ended early"
    );
}

#[test]
fn bad_requests_get_400_naming_the_field_in_openai_shape() {
    let d = Daemon::start("bad");
    let cases = [
        (json!({"messages": []}), "messages"),
        (json!({}), "messages"),
        (json!({"messages": "hi"}), "messages"),
        (with(chat("x"), json!({"stream": "yes"})), "stream"),
        (with(chat("x"), json!({"max_tokens": -3})), "max_tokens"),
        (
            with(chat("x"), json!({"temperature": "hot"})),
            "temperature",
        ),
        (with(chat("x"), json!({"stop": 5})), "stop"),
        (with(chat("x"), json!({"n": 3})), "n"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let r = d.client().post_json("/v1/chat/completions", &body);
        assert_eq!(r.status, 400, "{body}");
        let e = r.json();
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(e["error"]["message"].as_str().unwrap().contains(param));
    }
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("x"), json!({"model": "gpt-4o", "unknown_field": 1})),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["param"], "model");
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("x"), json!({"unknown_field": {"a": 1}})),
    );
    assert_eq!(r.status, 200, "unknown fields are ignored");
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let d = slow_daemon("qfull", &["--queue-size", "1"]);
    let mut running = d.client();
    running.send_post(
        "/v1/chat/completions",
        &with(chat("one"), json!({"stream": true})),
    );
    assert_eq!(running.read_head().unwrap().0, 200);
    let mut queued = d.client();
    queued.send_post("/v1/chat/completions", &chat("two"));
    common::wait_until(Duration::from_secs(5), "one queued", || {
        d.client().get("/health").json()["queue_depth"] == 1
    });
    let r = d.client().post_json("/v1/chat/completions", &chat("three"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "server_busy");
    let metrics = String::from_utf8(d.client().get("/metrics").body).unwrap();
    assert!(
        metrics.contains("rkllmd_queue_rejections_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_request_waits_at_most_the_queue_timeout() {
    let d = slow_daemon("qtimeout", &["--queue-timeout", "0.3"]);
    let mut running = d.client();
    running.send_post(
        "/v1/chat/completions",
        &with(chat("one"), json!({"stream": true})),
    );
    assert_eq!(running.read_head().unwrap().0, 200);
    let t = std::time::Instant::now();
    let r = d.client().post_json("/v1/chat/completions", &chat("two"));
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue"));
    assert!(
        t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    assert!(
        !d.trace_of("rkllm_run").iter().any(|r| r["prompt"] == "two"),
        "never reached the runtime"
    );
}

#[test]
fn the_request_timeout_ends_a_runaway_generation_with_an_error_event() {
    let d = slow_daemon("rtimeout", &["--request-timeout", "0.3"]);
    let evs = events(
        &d.client()
            .post_json(
                "/v1/chat/completions",
                &with(chat("go"), json!({"stream": true})),
            )
            .body,
    );
    // The answer was cut short: it must not look complete.
    let last = evs.last().unwrap();
    assert_eq!(last["error"]["type"], "timeout_error", "{last}");
    assert!(
        evs.iter()
            .all(|e| e["choices"][0]["finish_reason"].is_null()),
        "{evs:?}"
    );
    assert_eq!(d.trace_of("rkllm_abort").len(), 1);
}

#[test]
fn a_runtime_error_mid_stream_ends_it_with_an_error_event_and_service_goes_on() {
    let dir = TempDir::new("rterr");
    let model = write_model(dir.path(), "err", &["error_after_tokens = 5"]);
    let d = Daemon::builder("rterr").model(model).start();
    let evs = events(
        &d.client()
            .post_json(
                "/v1/chat/completions",
                &with(chat("hi"), json!({"stream": true})),
            )
            .body,
    );
    assert!(
        !streamed_text(&evs).is_empty(),
        "tokens before the error arrive"
    );
    let last = evs.last().unwrap();
    assert_eq!(last["error"]["type"], "runtime_error", "{last}");
    // Not streaming: nothing was sent yet, so it is a plain 500.
    let r = d.client().post_json("/v1/chat/completions", &chat("hi"));
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "runtime_error");
    assert_eq!(d.client().get("/health").json()["status"], "ok");
    let metrics = String::from_utf8(d.client().get("/metrics").body).unwrap();
    assert!(
        metrics.contains("rkllmd_runtime_errors_total 2"),
        "{metrics}"
    );
}

#[test]
fn thirty_two_clients_are_served_in_fifo_order_with_complete_streams() {
    let dir = TempDir::new("fifo");
    let model = write_model(
        dir.path(),
        "m",
        &[
            "answer_tokens_min = 20",
            "answer_tokens_max = 40",
            "decode_us_per_token = 1000",
        ],
    );
    let d = Daemon::builder("fifo")
        .model(model)
        .args(["--queue-size", "32"])
        .start();
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..32 {
        let mut c = d.client();
        c.send_post(
            "/v1/chat/completions",
            &with(chat(&format!("client {i}")), json!({"stream": true})),
        );
        // Arrival order is the FIFO order: make sure each request is queued before the next.
        common::wait_until(Duration::from_secs(5), "request registered", || {
            d.trace_of("rkllm_run").len()
                + d.client().get("/health").json()["queue_depth"]
                    .as_u64()
                    .unwrap() as usize
                > i
        });
        clients.push(c);
    }
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.read_response()))
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        let evs = events(&r.body);
        assert_eq!(evs.last().unwrap()["choices"][0]["finish_reason"], "stop");
        assert!(!streamed_text(&evs).is_empty());
    }
    let order: Vec<String> = d
        .trace_of("rkllm_run")
        .iter()
        .map(|r| r["prompt"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..32).map(|i| format!("client {i}")).collect();
    assert_eq!(order, expected);
}

#[test]
fn metrics_are_prometheus_text_with_real_counts() {
    let d = Daemon::start("metrics");
    d.client().post_json("/v1/chat/completions", &chat("one"));
    d.client().post_json(
        "/v1/chat/completions",
        &with(chat("two"), json!({"stream": true})),
    );
    d.client().get("/nope");
    let r = d.client().get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(
        value("rkllmd_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"),
        2
    );
    assert_eq!(
        value("rkllmd_requests_total{endpoint=\"other\",status=\"404\"}"),
        1
    );
    let generated: u64 = d
        .trace_of("run_end")
        .iter()
        .map(|r| r["generate_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(value("rkllmd_tokens_generated_total"), generated);
    assert_eq!(value("rkllmd_prefill_seconds_count"), 2);
    assert_eq!(value("rkllmd_queue_depth"), 0);
    // This request's own connection is open; earlier ones may not be reaped yet.
    assert!(value("rkllmd_connections") >= 1);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample {line}");
        assert!(name.starts_with("rkllmd_"), "{line}");
    }
}

#[test]
fn chat_over_tcp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _d = Daemon::builder("tcpchat")
        .args(["--tcp".to_owned(), format!("127.0.0.1:{port}")])
        .start();
    let r = Client::tcp(&format!("127.0.0.1:{port}")).post_json(
        "/v1/chat/completions",
        &with(chat("hi"), json!({"stream": true})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        events(&r.body).last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_a_400_with_the_counts() {
    let d = Daemon::builder("context")
        .args(["--max-context-len", "64"])
        .start();
    // Calibrate on a prompt that fits, as real traffic would.
    assert_eq!(
        d.client()
            .post_json("/v1/chat/completions", &chat("a short question"))
            .status,
        200
    );
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat(&"lorem ipsum ".repeat(100)), json!({"stream": true})),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json();
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    let msg = e["error"]["message"].as_str().unwrap();
    // OpenAI's wording, which client libraries (litellm's ContextWindowExceededError) match.
    assert!(
        msg.starts_with(
            "This model's maximum context length is 64 tokens. However, your messages resulted in "
        ),
        "{msg}"
    );
    assert!(msg.contains("1200 bytes"), "{msg}");
    assert_eq!(
        d.client()
            .post_json("/v1/chat/completions", &chat("still fine"))
            .status,
        200
    );
}

#[test]
fn a_nul_in_the_prompt_is_the_clients_error_not_a_runtime_error() {
    let d = Daemon::start("nulprompt");
    let body = json!({"max_tokens": 3, "messages": [{"role": "user", "content": "a\u{0}b"}]});
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "messages");
    let r = d
        .client()
        .post_json("/v1/completions", &json!({"prompt": "x\u{0}"}));
    assert_eq!(r.status, 400);
    let r = d.client().post_json(
        "/api/generate",
        &json!({"model": "fast", "prompt": "x\u{0}", "stream": false}),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("NUL"));
    let m = d.client().get("/metrics").text();
    assert!(
        m.lines().any(|l| l == "rkllmd_runtime_errors_total 0"),
        "{m}"
    );
    assert!(
        d.trace_of("rkllm_run").is_empty(),
        "the runtime was never asked"
    );
}

#[test]
fn response_format_json_is_answered_with_a_warning_that_it_is_not_enforced() {
    let d = Daemon::start("respformat");
    for format in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
    ] {
        for stream in [false, true] {
            let r = d.client().post_json(
                "/v1/chat/completions",
                &with(
                    chat("hi"),
                    json!({"response_format": format, "stream": stream}),
                ),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let w = r.header("x-rkllmd-warning").unwrap_or_default();
            assert!(w.contains("response_format"), "{format} {stream}: {w:?}");
        }
    }
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("hi"), json!({"response_format": {"type": "text"}})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-rkllmd-warning"),
        None,
        "plain text is what we give"
    );
    let r = d.client().post_json(
        "/v1/chat/completions",
        &with(chat("hi"), json!({"response_format": "json"})),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "response_format");
}

#[test]
fn the_root_answers_as_ollama_does_for_clients_that_probe_it() {
    let d = Daemon::start("root");
    let r = d.client().get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Ollama is running");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let mut c = d.client();
    c.send_raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-length") && v == "17"),
        "{headers:?}"
    );
    assert_eq!(d.client().get("/v1/chat/completions").status, 405);
}

/// From "Also found" in issue 17: each of these was a 500.
#[test]
fn an_empty_completion_prompt_is_a_400() {
    let d = Daemon::builder("emptyprompt")
        .args(["--chat-template", "qwen2.5"])
        .start();
    let r = d
        .client()
        .post_json("/v1/completions", &json!({"prompt": ""}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "prompt");
    assert!(
        d.trace_of("rkllm_run").is_empty(),
        "the runtime was never asked"
    );
}

#[test]
fn thousands_of_tools_beyond_the_context_are_a_400_with_the_runtimes_template_too() {
    let tools: Vec<Value> = (0..4000)
        .map(|i| {
            json!({"type": "function", "function": {"name": format!("tool_{i}"),
            "description": "does one thing", "parameters": {"type": "object", "properties": {}}}})
        })
        .collect();
    for template in ["runtime", "qwen2.5"] {
        // A budget of the whole context: no tool is left out (by default they would be, see
        // tests/tools_budget.rs, and the request answered).
        let d = Daemon::builder("manytools")
            .args(["--chat-template", template, "--tools-budget", "100%"])
            .start();
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools});
        let r = d.client().post_json("/v1/chat/completions", &body);
        assert_eq!(r.status, 400, "{template}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
        let mut body = body;
        body["stream"] = json!(false);
        let r = d.client().post_json("/api/chat", &body);
        assert_eq!(r.status, 400, "{template}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    // With the default budget, most are left out: the warning that names them stays short.
    let d = Daemon::builder("manytools-budget")
        .args(["--chat-template", "qwen2.5"])
        .start();
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools});
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let warning = r.header("x-rkllmd-warning").expect("a warning");
    assert!(warning.len() < 1500, "{} bytes", warning.len());
    let dropped: usize = warning.split(' ').next().unwrap().parse().unwrap();
    assert!((3900..4000).contains(&dropped), "{warning}");
    assert!(warning.ends_with(" more"), "{warning}");
}

#[test]
fn a_context_too_small_for_any_request_is_refused_at_start() {
    let mut d = Daemon::builder("tinyctx")
        .args(["--max-context-len", "1"])
        .no_wait()
        .start();
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(2));
    let err = d.stderr();
    assert!(
        err.contains("--max-context-len") && err.contains("from 64"),
        "{err}"
    );
}

/// From "Also found" in issue 17: one request of a million and a half messages (51 MB, with
/// the body limit raised) left the daemon holding 1.36 GB. What one request takes is given back
/// once it is answered.
#[test]
fn memory_taken_for_one_huge_request_is_given_back() {
    let d = Daemon::builder("bigreq")
        .args(["--max-body-bytes", "64M", "--chat-template", "qwen2.5"])
        .start();
    let mut c = d.client();
    assert_eq!(c.post_json("/v1/chat/completions", &chat("hi")).status, 200);
    let baseline = d.rss_kib();
    let mut body = String::from(r#"{"max_tokens":2,"messages":["#);
    for i in 0..500_000 {
        body.push_str(&format!(
            r#"{{"role":"user","content":"q{i}"}},{{"role":"assistant","content":"a"}},"#
        ));
    }
    body.push_str(r#"{"role":"user","content":"last"}]}"#);
    c.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // 51 MB of JSON: a debug build takes seconds to parse and render it, more while other
    // test binaries run beside this one; the test is about memory, not speed.
    c.try_set_io_timeout(Duration::from_secs(180)).unwrap();
    c.send_raw(body.as_bytes());
    drop(body);
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    // Eventually, with a generous deadline: the memory goes back as the request is finished.
    let bound = baseline + 64 * 1024;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut after = d.rss_kib();
    while after >= bound && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = d.rss_kib();
    }
    assert!(
        after < bound,
        "RSS {after} KiB after the request, {baseline} KiB before"
    );
    eprintln!("RSS {baseline} KiB before the request, {after} KiB after");
}
