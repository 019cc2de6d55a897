//! Interactive first, through the real daemon: a streamed request goes ahead of queued
//! non-streamed (background) ones and takes the NPU back from a background run that has
//! produced nothing yet; that request is run again and its client gets one whole answer.
//! (Queue order, the push-back bound and runs that already have output: tests/engine.rs.)

mod common;

use std::time::Duration;

use common::client::sse_data;
use common::{wait_until, write_model, Daemon, TempDir};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);

fn daemon(tag: &str, model_lines: &[&str], args: &[&str]) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(dir.path(), "m", model_lines);
    Daemon::builder(tag)
        .model(model)
        .args(args.iter().copied())
        .start()
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// The content of a streamed chat completion.
fn streamed_content(body: &[u8]) -> String {
    sse_data(body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let v: Value = serde_json::from_str(d).ok()?;
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn content(r: &common::client::Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The trace's `rkllm_run`, `rkllm_abort` and `run_end` lines as short words, in order:
/// `run:PROMPT`, `abort`, `end:REASON`.
fn runs(d: &Daemon) -> Vec<String> {
    d.trace()
        .iter()
        .filter_map(|l| match l["fn"].as_str()? {
            "rkllm_run" => Some(format!("run:{}", l["prompt"].as_str()?)),
            "rkllm_abort" => Some("abort".to_owned()),
            "run_end" => Some(format!("end:{}", l["reason"].as_str()?)),
            _ => None,
        })
        .collect()
}

fn queue_depth(d: &Daemon) -> u64 {
    d.client().get("/health").json()["queue_depth"]
        .as_u64()
        .unwrap()
}

/// A title request as Open WebUI writes one: long, so its prefill takes a few seconds here.
fn title_prompt() -> String {
    format!(
        "Generate a concise title for the chat history below. {}",
        "the user asked about rivers and mountains and the assistant answered ".repeat(12)
    )
}

#[test]
fn a_streamed_request_goes_ahead_of_queued_unstreamed_ones() {
    let d = daemon(
        "prio-order",
        &[
            "decode_us_per_token = 20000",
            "answer_tokens_min = 150",
            "answer_tokens_max = 150",
        ],
        &[],
    );
    // A streamed answer keeps the NPU busy for about three seconds.
    let mut first = d.client();
    first.send_post("/v1/chat/completions", &chat("alpha", true));
    assert_eq!(first.read_head().unwrap().0, 200);
    assert!(first.read_chunk().is_some());
    let mut title = d.client();
    title.send_post("/v1/chat/completions", &chat("bravo", false));
    wait_until(LONG, "the title request queued", || queue_depth(&d) == 1);
    let mut user = d.client();
    user.send_post("/v1/chat/completions", &chat("charlie", true));
    wait_until(LONG, "the user's request queued", || queue_depth(&d) == 2);

    while first.read_chunk().is_some() {}
    assert!(!streamed_content(&user.read_response().body).is_empty());
    assert!(!content(&title.read_response()).is_empty());
    let order: Vec<String> = runs(&d)
        .into_iter()
        .filter(|w| w.starts_with("run:"))
        .collect();
    assert_eq!(order, ["run:alpha", "run:charlie", "run:bravo"]);
    assert_eq!(d.metric("rkllmd_preemptions_total"), 0);
}

/// Starts the background (title) request and returns its client once the runtime is
/// prefilling it.
fn start_title(d: &Daemon) -> common::client::Client {
    let mut title = d.client();
    title.send_post("/v1/chat/completions", &chat(&title_prompt(), false));
    wait_until(LONG, "the title run to start", || {
        runs(d).iter().any(|w| w.starts_with("run:Generate"))
    });
    title
}

const SLOW_PREFILL: &[&str] = &[
    "prefill_us_per_token = 20000",
    "answer_tokens_min = 16",
    "answer_tokens_max = 16",
];

#[test]
fn a_background_run_with_no_output_yet_is_preempted_and_its_client_gets_one_whole_answer() {
    let d = daemon("prio-preempt", SLOW_PREFILL, &[]);
    let mut title = start_title(&d);
    let mut user = d.client();
    user.send_post("/v1/chat/completions", &chat("Hello!", true));
    let answer = streamed_content(&user.read_response().body);
    let title_answer = content(&title.read_response());

    let t = title_prompt();
    let title_run = format!("run:{t}");
    assert_eq!(
        runs(&d),
        [
            title_run.as_str(),
            "abort",
            "end:abort",
            "run:Hello!",
            "end:eos",
            title_run.as_str(),
            "end:eos"
        ]
    );
    assert_eq!(d.metric("rkllmd_preemptions_total"), 1);
    // Nothing lost, nothing twice: each answer is the one its request gets alone.
    assert_eq!(
        content(
            &d.client()
                .post_json("/v1/chat/completions", &chat(&t, false))
        ),
        title_answer
    );
    assert_eq!(
        content(
            &d.client()
                .post_json("/v1/chat/completions", &chat("Hello!", false))
        ),
        answer
    );
}

#[test]
fn a_stream_that_follows_a_background_request_within_the_hold_goes_first_without_an_abort() {
    // Open WebUI's pattern: the title request, then the chat ~100 ms later. The hold is long
    // here so that the stream surely arrives within it on a loaded machine.
    let d = daemon("prio-hold", SLOW_PREFILL, &["--background-hold", "3000"]);
    let mut title = d.client();
    title.send_post("/v1/chat/completions", &chat(&title_prompt(), false));
    wait_until(LONG, "the title request queued", || queue_depth(&d) == 1);
    assert!(runs(&d).is_empty(), "the title started within the hold");
    let mut user = d.client();
    user.send_post("/v1/chat/completions", &chat("Hello!", true));
    assert!(!streamed_content(&user.read_response().body).is_empty());
    assert!(!content(&title.read_response()).is_empty());
    let title_run = format!("run:{}", title_prompt());
    assert_eq!(
        runs(&d),
        ["run:Hello!", "end:eos", title_run.as_str(), "end:eos"]
    );
    assert_eq!(d.metric("rkllmd_preemptions_total"), 0);
}

#[test]
fn a_background_request_alone_starts_when_the_hold_ends() {
    let d = daemon(
        "prio-hold-alone",
        SLOW_PREFILL,
        &["--background-hold", "200"],
    );
    let r = d
        .client()
        .post_json("/v1/chat/completions", &chat("alone", false));
    assert!(!content(&r).is_empty());
    assert_eq!(runs(&d), ["run:alone", "end:eos"]);
}

#[test]
fn with_background_none_requests_run_in_arrival_order() {
    let d = daemon("prio-none", SLOW_PREFILL, &["--background", "none"]);
    let mut title = start_title(&d);
    let mut user = d.client();
    user.send_post("/v1/chat/completions", &chat("Hello!", true));
    assert!(!content(&title.read_response()).is_empty());
    assert!(!streamed_content(&user.read_response().body).is_empty());
    let title_run = format!("run:{}", title_prompt());
    assert_eq!(
        runs(&d),
        [title_run.as_str(), "end:eos", "run:Hello!", "end:eos"]
    );
    assert_eq!(d.metric("rkllmd_preemptions_total"), 0);
}

#[test]
fn an_ollama_request_is_background_only_when_it_asks_not_to_stream() {
    let d = daemon("prio-ollama", SLOW_PREFILL, &[]);
    let mut title = d.client();
    let t = title_prompt();
    title.send_post(
        "/api/chat",
        &json!({"stream": false, "messages": [{"role": "user", "content": t}]}),
    );
    wait_until(LONG, "the title run to start", || {
        runs(&d).iter().any(|w| w.starts_with("run:Generate"))
    });
    // Ollama streams unless told not to.
    let mut user = d.client();
    user.send_post(
        "/api/chat",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(user.read_response().status, 200);
    let r = title.read_response();
    assert_eq!(r.status, 200);
    assert!(!r.json()["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(d.metric("rkllmd_preemptions_total"), 1);
}
