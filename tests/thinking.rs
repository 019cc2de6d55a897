//! Qwen3-style thinking through the real daemon: the simulator model thinks unless the rendered
//! prompt ends with the empty think block, and rkllmd returns the reasoning apart from the
//! content (`reasoning_content` for OpenAI, `thinking` for Ollama).

mod common;

use common::client::sse_data;
use std::time::Duration;

use common::{turns, wait_until, write_model, Daemon, TempDir};
use serde_json::{json, Value};

const GEN: &str = "<|im_start|>assistant\n";
const NO_THINK: &str = "<think>\n\n</think>\n\n";
const QUESTION: &str = "Is 17 prime?";

fn qwen3_daemon(tag: &str) -> Daemon {
    qwen3_daemon_with(tag, &[])
}

fn qwen3_daemon_with(tag: &str, args: &[&str]) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(
        dir.path(),
        "m",
        &[
            "thinking = 1",
            "answer_tokens_min = 10",
            "answer_tokens_max = 20",
        ],
    );
    Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", "qwen3"])
        .args(args.iter().copied())
        .start()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// A well-formed answer: something said, and no trace of the think block in it.
fn assert_clean_content(content: &str) {
    assert!(!content.is_empty(), "empty content");
    assert!(
        !content.contains("<think>") && !content.contains("</think>"),
        "{content:?}"
    );
    assert!(!content.starts_with(char::is_whitespace), "{content:?}");
}

fn assert_reasoning(reasoning: &str) {
    assert!(!reasoning.trim().is_empty(), "no reasoning");
    assert!(!reasoning.contains("think>"), "{reasoning:?}");
}

/// The prompt of the last run that answered a client (not a re-seat of the KV cache).
fn last_prompt(d: &Daemon) -> String {
    turns::client_runs(d).pop().unwrap().0["prompt"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// OpenAI chat without streaming: (`reasoning_content` or None, content).
fn openai_ask(d: &Daemon, body: &Value) -> (Option<String>, String) {
    let r = d.client().post_json("/v1/chat/completions", body);
    assert_eq!(r.status, 200, "{}", r.text());
    let message = r.json()["choices"][0]["message"].clone();
    let reasoning = message
        .get("reasoning_content")
        .map(|v| v.as_str().unwrap().to_owned());
    (reasoning, message["content"].as_str().unwrap().to_owned())
}

#[test]
fn openai_returns_the_reasoning_as_reasoning_content() {
    let d = qwen3_daemon("think-openai");
    let (reasoning, content) = openai_ask(&d, &json!({"messages": [user(QUESTION)]}));
    assert_reasoning(&reasoning.unwrap());
    assert_clean_content(&content);
    assert!(last_prompt(&d).ends_with(&format!("{QUESTION}<|im_end|>\n{GEN}")));
}

#[test]
fn openai_streams_reasoning_deltas_before_content_deltas() {
    let d = qwen3_daemon("think-openai-stream");
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [user(QUESTION)], "stream": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let deltas: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"].clone())
        .collect();
    let (mut reasoning, mut content) = (String::new(), String::new());
    let mut reasoning_deltas = 0;
    for delta in &deltas {
        if let Some(t) = delta.get("reasoning_content") {
            assert!(content.is_empty(), "reasoning after content: {deltas:?}");
            assert!(delta.get("content").is_none(), "{delta}");
            reasoning.push_str(t.as_str().unwrap());
            reasoning_deltas += 1;
        }
        if let Some(t) = delta.get("content") {
            content.push_str(t.as_str().unwrap());
        }
    }
    assert!(reasoning_deltas > 1, "reasoning is streamed as it arrives");
    assert_reasoning(&reasoning);
    assert_clean_content(&content);
}

#[test]
fn ollama_returns_the_reasoning_as_thinking() {
    let d = qwen3_daemon("think-ollama");
    let c = |body: Value| {
        let r = d.client().post_json("/api/chat", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };
    let r = c(json!({"model": "m", "stream": false, "messages": [user(QUESTION)]}));
    let message = &r.json()["message"];
    assert_reasoning(message["thinking"].as_str().unwrap());
    assert_clean_content(message["content"].as_str().unwrap());

    let r = c(json!({"model": "m", "messages": [user(QUESTION)]}));
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let field = |key: &str| -> String {
        lines
            .iter()
            .filter_map(|l| l["message"][key].as_str())
            .collect()
    };
    let thinking_lines = lines
        .iter()
        .filter(|l| l["message"].get("thinking").is_some())
        .count();
    assert!(thinking_lines > 1, "thinking is streamed as it arrives");
    assert_reasoning(&field("thinking"));
    assert_clean_content(&field("content"));
    assert_eq!(lines.last().unwrap()["done"], true);

    let r = d.client().post_json(
        "/api/generate",
        &json!({"model": "m", "stream": false, "prompt": QUESTION}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_reasoning(v["thinking"].as_str().unwrap());
    assert_clean_content(v["response"].as_str().unwrap());
}

#[test]
fn thinking_switched_off_renders_the_empty_block_and_answers_without_reasoning() {
    let d = qwen3_daemon("think-off");
    for body in [
        json!({"messages": [user(QUESTION)], "enable_thinking": false}),
        json!({"messages": [user(QUESTION)], "chat_template_kwargs": {"enable_thinking": false}}),
    ] {
        let (reasoning, content) = openai_ask(&d, &body);
        assert_eq!(reasoning, None);
        assert_clean_content(&content);
        assert!(last_prompt(&d).ends_with(&format!("{GEN}{NO_THINK}")));
    }
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "stream": false, "think": false, "messages": [user(QUESTION)]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let message = &r.json()["message"];
    assert!(message.get("thinking").is_none(), "{message}");
    assert_clean_content(message["content"].as_str().unwrap());
    assert!(last_prompt(&d).ends_with(&format!("{GEN}{NO_THINK}")));
}

#[test]
fn reasoning_effort_none_switches_thinking_off_and_a_level_on() {
    let d = qwen3_daemon("think-effort");
    let (reasoning, content) = openai_ask(
        &d,
        &json!({"messages": [user(QUESTION)], "reasoning_effort": "none"}),
    );
    assert_eq!(reasoning, None);
    assert_clean_content(&content);
    assert!(last_prompt(&d).ends_with(&format!("{GEN}{NO_THINK}")));
    for level in ["low", "medium", "high"] {
        let (reasoning, _) = openai_ask(
            &d,
            &json!({"messages": [user(QUESTION)], "reasoning_effort": level, "enable_thinking": null}),
        );
        assert_reasoning(&reasoning.unwrap());
        assert!(last_prompt(&d).ends_with(GEN), "{level}");
    }
    // An explicit switch wins over the effort.
    let (reasoning, _) = openai_ask(
        &d,
        &json!({"messages": [user(QUESTION)], "reasoning_effort": "high", "enable_thinking": false}),
    );
    assert_eq!(reasoning, None);
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [user(QUESTION)], "reasoning_effort": "extreme"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "reasoning_effort");
}

#[test]
fn the_turn_after_a_thought_answer_reuses_all_before_its_reasoning() {
    let d = qwen3_daemon("think-turns");
    let mut messages = vec![user(QUESTION)];
    for turn in 2..=3 {
        let (reasoning, content) = openai_ask(&d, &json!({"messages": messages}));
        assert_reasoning(&reasoning.unwrap());
        assert_clean_content(&content);
        messages.push(json!({"role": "assistant", "content": content}));
        messages.push(user(&format!("And question {turn}?")));
    }
    let (reasoning, content) = openai_ask(&d, &json!({"messages": messages}));
    assert_reasoning(&reasoning.unwrap());
    assert_clean_content(&content);

    // The runtime's cache holds the answer with its think block; the next request's history
    // has the content alone. Right after the run the daemon re-seats the cache: the
    // conversation as the next request renders it, up to the answer, sent whole without
    // history kept (no clear); the runtime reuses what precedes the think block and prefills
    // the answer. Each next turn then extends the cache exactly: history kept, only its new
    // user turn sent. tests/reseat.rs counts the prefills over 8 turns.
    wait_until(Duration::from_secs(30), "the last re-seat", || {
        turns::runs(&d).len() == 6
    });
    let runs = turns::runs(&d);
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
    let prompt = |n: usize| runs[n].0["prompt"].as_str().unwrap().to_owned();
    let reseats: Vec<bool> = runs.iter().map(turns::is_reseat).collect();
    assert_eq!(reseats, [false, true, false, true, false, true]);
    assert_eq!(
        prompt(0),
        format!("<|im_start|>user\n{QUESTION}<|im_end|>\n{GEN}")
    );
    let first_answer = messages[1]["content"].as_str().unwrap();
    assert_eq!(
        prompt(1),
        format!("<|im_start|>user\n{QUESTION}<|im_end|>\n{GEN}{first_answer}<|im_end|>\n")
    );
    assert_eq!(
        prompt(2),
        format!("<|im_start|>user\nAnd question 2?<|im_end|>\n{GEN}")
    );
    assert_eq!(
        prompt(4),
        format!("<|im_start|>user\nAnd question 3?<|im_end|>\n{GEN}")
    );
    let keep: Vec<_> = runs.iter().map(|r| r.0["keep_history"].clone()).collect();
    assert_eq!(keep, [1, 0, 1, 0, 1, 0]);
    let (first, prefill, cached) = (
        runs[0].1["prefill_tokens"].as_u64().unwrap(),
        runs[1].1["prefill_tokens"].as_u64().unwrap(),
        runs[1].1["cache_tokens"].as_u64().unwrap(),
    );
    assert_eq!(
        prefill + first,
        cached,
        "the re-seat reused turn 1's prompt and prefilled the rest of its {cached}"
    );
}

/// Whether the daemon asked the model to think for a request that did not say: (OpenAI
/// streamed, OpenAI not streamed, Ollama streamed by default, Ollama with `stream: false`).
fn thinks_by_default(d: &Daemon) -> [bool; 4] {
    let asked = |path: &str, body: Value| {
        let r = d.client().post_json(path, &body);
        assert_eq!(r.status, 200, "{}", r.text());
        !last_prompt(d).ends_with(NO_THINK)
    };
    let messages = json!([user(QUESTION)]);
    [
        asked(
            "/v1/chat/completions",
            json!({"stream": true, "messages": messages}),
        ),
        asked("/v1/chat/completions", json!({"messages": messages})),
        asked("/api/chat", json!({"messages": messages})),
        asked("/api/chat", json!({"stream": false, "messages": messages})),
    ]
}

#[test]
fn think_default_decides_for_requests_that_do_not_say() {
    for (setting, expected) in [
        // auto: as before, the qwen3 template thinks unless told not to.
        ("auto", [true; 4]),
        ("on", [true; 4]),
        ("off", [false; 4]),
        ("interactive", [true, false, true, false]),
    ] {
        let d = qwen3_daemon_with(
            &format!("think-default-{setting}"),
            &["--think-default", setting],
        );
        assert_eq!(thinks_by_default(&d), expected, "think-default = {setting}");
    }
}

#[test]
fn a_request_that_says_is_not_overridden_by_think_default() {
    let d = qwen3_daemon_with("think-default-says", &["--think-default", "interactive"]);
    openai_ask(
        &d,
        &json!({"enable_thinking": true, "messages": [user(QUESTION)]}),
    );
    assert!(!last_prompt(&d).ends_with(NO_THINK));
    let r = d.client().post_json(
        "/api/chat",
        &json!({"think": false, "messages": [user(QUESTION)]}),
    );
    assert_eq!(r.status, 200);
    assert!(last_prompt(&d).ends_with(NO_THINK));
}
