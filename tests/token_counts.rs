//! Token counts as clients expect them (issue #19): the prompt count is the whole prompt, the
//! part the runtime reused from its KV cache included, and the reused part is reported apart
//! (OpenAI's `cached_tokens`, Ollama's `prompt_eval_cached_count`). Checked against the
//! simulator's trace of what each run prefilled and what the cache held.

mod common;

use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

fn daemon(tag: &str) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 5", "answer_tokens_max = 5"],
    );
    let d = Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .start();
    (dir, d)
}

fn post(d: &Daemon, path: &str, body: &Value) -> Value {
    let r = d.client().post_json(path, body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The last two runs: (cache size after the first, prefill of the second).
fn cached_then_prefilled(d: &Daemon) -> (u64, u64) {
    let ends = d.trace_of("run_end");
    let [.., first, second] = ends.as_slice() else {
        panic!("fewer than two runs: {ends:?}");
    };
    (
        first["cache_tokens"].as_u64().unwrap(),
        second["prefill_tokens"].as_u64().unwrap(),
    )
}

#[test]
fn a_continued_chat_counts_the_whole_prompt_and_the_cached_part() {
    let (_dir, d) = daemon("tc-openai");
    let mut messages = vec![json!({"role": "user", "content": "Tell me about rivers."})];
    let first = post(&d, "/v1/chat/completions", &json!({"messages": messages}));
    let answer = first["choices"][0]["message"]["content"].clone();
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "And mountains?"}));
    let second = post(&d, "/v1/chat/completions", &json!({"messages": messages}));
    let (cached, prefilled) = cached_then_prefilled(&d);
    assert!(cached > 0 && prefilled > 0, "{cached} {prefilled}");
    let usage = &second["usage"];
    assert_eq!(usage["prompt_tokens"], cached + prefilled, "{usage}");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], cached);
    assert_eq!(
        usage["total_tokens"],
        cached + prefilled + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[test]
fn a_repeated_completion_prompt_counts_the_whole_prompt_not_zero() {
    let (_dir, d) = daemon("tc-compl");
    let body = json!({"prompt": "The rivers of the north are", "max_tokens": 50});
    let first = post(&d, "/v1/completions", &body);
    let second = post(&d, "/v1/completions", &body);
    let whole = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(whole > 0, "{first}");
    let end = d.trace_of("run_end").pop().unwrap();
    assert_eq!(end["prefill_tokens"], 0, "the runtime reused it all: {end}");
    assert_eq!(second["usage"]["prompt_tokens"], whole, "{second}");
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        whole
    );
}

#[test]
fn the_responses_api_counts_cached_input_tokens() {
    let (_dir, d) = daemon("tc-resp");
    let first = post(
        &d,
        "/v1/responses",
        &json!({"input": "Tell me about rivers."}),
    );
    let answer = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .map(|i| i["content"][0]["text"].clone())
        .unwrap();
    let input = json!([
        {"role": "user", "content": "Tell me about rivers."},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And mountains?"},
    ]);
    let second = post(&d, "/v1/responses", &json!({"input": input}));
    let (cached, prefilled) = cached_then_prefilled(&d);
    assert!(cached > 0, "the second turn reused nothing");
    assert_eq!(
        second["usage"]["input_tokens"],
        cached + prefilled,
        "{second}"
    );
    assert_eq!(
        second["usage"]["input_tokens_details"]["cached_tokens"],
        cached
    );
}

#[test]
fn ollama_counts_the_whole_prompt_and_the_cached_part_as_ollama_does() {
    let (_dir, d) = daemon("tc-ollama");
    let mut messages = vec![json!({"role": "user", "content": "Tell me about rivers."})];
    let first = post(
        &d,
        "/api/chat",
        &json!({"model": "m", "messages": messages, "stream": false}),
    );
    assert!(
        first.get("prompt_eval_cached_count").is_none(),
        "nothing was cached: {first}"
    );
    messages.push(first["message"].clone());
    messages.push(json!({"role": "user", "content": "And mountains?"}));
    let second = post(
        &d,
        "/api/chat",
        &json!({"model": "m", "messages": messages, "stream": false}),
    );
    let (cached, prefilled) = cached_then_prefilled(&d);
    assert!(cached > 0, "the second turn reused nothing");
    assert_eq!(second["prompt_eval_count"], cached + prefilled, "{second}");
    assert_eq!(second["prompt_eval_cached_count"], cached);
}
