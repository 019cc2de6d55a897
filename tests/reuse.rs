//! Partial reuse of the runtime's KV cache (issue #19), checked in the simulator's trace: a
//! conversation whose rendering diverges from what the cache holds (a thinking model whose
//! reasoning the template drops from past turns, an edited history, a new conversation with the
//! same system prompt) prefills only what follows the common prefix, and the runtime keeps the
//! conversation's beginning.

mod common;

use common::{turns, write_model, Daemon, TempDir};
use serde_json::{json, Value};

fn daemon(tag: &str, template: &str, lines: &[&str]) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let model = write_model(dir.path(), "m", lines);
    let d = Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", template])
        .start();
    (dir, d)
}

fn chat(d: &Daemon, messages: &[Value]) -> Value {
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn prefilled(d: &Daemon) -> u64 {
    turns::last_prefill(d)
}

/// 8 turns of a thinking model, each answer sent back with its content only (as clients do):
/// turn 8 prefills at most half of its prompt, the cache is never cleared nor shifted, and
/// turn 8 reuses at least turn 1's whole prompt (the runtime still holds it).
fn eight_thinking_turns(tag: &str, template: &str) {
    let (_dir, d) = daemon(
        tag,
        template,
        &[
            "thinking = 1",
            "answer_tokens_min = 10",
            "answer_tokens_max = 20",
        ],
    );
    let answers = turns::content_only_turns(&d, Some("You are a helpful assistant."), 8, question);
    assert_every_turn_thought(&answers);
    turns::assert_last_turn_prefilled_at_most_half(&d, &answers, template);
    turns::assert_runtime_holds_the_first_turn(&d, &answers);
}

fn question(turn: usize) -> String {
    format!("Question {turn}: tell me about the rivers of the north.")
}

fn assert_every_turn_thought(answers: &[turns::Answer]) {
    for (turn, a) in answers.iter().enumerate() {
        assert!(
            a.message()["reasoning_content"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "turn {} did not think: {}",
            turn + 1,
            a.body
        );
    }
}

#[test]
fn qwen3_thinking_turns_prefill_only_the_last_answer_and_the_new_turn() {
    eight_thinking_turns("reuse-qwen3", "qwen3");
}

#[test]
fn deepseek_r1_thinking_turns_prefill_only_the_last_answer_and_the_new_turn() {
    eight_thinking_turns("reuse-r1", "deepseek-r1");
}

/// Issue 19's done-means, with the shipped demo models as a newcomer starts them: 8 turns, each
/// answer sent back with its content only; turn 8 prefills at most half of its context and the
/// runtime still holds turn 1.
fn eight_demo_turns(tag: &str, model: &str, args: &[&str]) -> Vec<turns::Answer> {
    let d = Daemon::builder(tag)
        .model(common::repo_path(model))
        .args(args.iter().copied())
        .start();
    let answers = turns::content_only_turns(&d, None, 8, question);
    for a in &answers {
        assert_eq!(a.warning, None, "{}", a.body);
    }
    turns::assert_last_turn_prefilled_at_most_half(&d, &answers, tag);
    turns::assert_runtime_holds_the_first_turn(&d, &answers);
    answers
}

#[test]
fn eight_turns_with_the_demo_model_started_with_no_options() {
    eight_demo_turns("done-demo", "vendor/rkllm-sim/models/demo.rkllm", &[]);
}

#[test]
fn eight_turns_with_the_thinking_demo_model_under_qwen3() {
    let answers = eight_demo_turns(
        "done-qwen3",
        "vendor/rkllm-sim/models/demo-qwen3-think.rkllm",
        &["--chat-template", "qwen3"],
    );
    assert_every_turn_thought(&answers);
}

#[test]
fn eight_turns_with_the_demo_model_under_the_runtime_s_template() {
    eight_demo_turns(
        "done-runtime",
        "vendor/rkllm-sim/models/demo.rkllm",
        &["--chat-template", "runtime"],
    );
}

#[test]
fn an_edited_history_prefills_only_from_the_edit() {
    let (_dir, d) = daemon(
        "reuse-edit",
        "qwen2.5",
        &["answer_tokens_min = 5", "answer_tokens_max = 5"],
    );
    let long = "Tell me about the rivers and the mountains of the north, and the weather there.";
    let mut messages = vec![json!({"role": "user", "content": long})];
    let a = chat(&d, &messages);
    messages.push(a["choices"][0]["message"].clone());
    messages.push(json!({"role": "user", "content": "And the south?"}));
    chat(&d, &messages);
    // Regenerate the last answer with another question: everything before it is reused.
    messages[2] = json!({"role": "user", "content": "And the east?"});
    let b = chat(&d, &messages);
    let whole = b["usage"]["prompt_tokens"].as_u64().unwrap();
    let prefill = prefilled(&d);
    assert!(prefill > 0 && prefill * 2 < whole, "{prefill} of {whole}");
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
}

#[test]
fn a_new_conversation_with_the_same_system_prompt_prefills_only_what_follows_it() {
    let (_dir, d) = daemon(
        "reuse-system",
        "qwen2.5",
        &["answer_tokens_min = 5", "answer_tokens_max = 5"],
    );
    let system = json!({"role": "system", "content": "You are a careful assistant. ".repeat(10)});
    chat(
        &d,
        &[
            system.clone(),
            json!({"role": "user", "content": "Hello there."}),
        ],
    );
    let second = chat(
        &d,
        &[
            system,
            json!({"role": "user", "content": "Something else."}),
        ],
    );
    let whole = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 50,
        "the system prompt was prefilled again: {second}"
    );
    assert_eq!(prefilled(&d) + cached, whole);
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
}

/// A runtime that does not reuse a prefix without history (`prefix_reuse = 0`, not measured on
/// a board yet) costs prefills but nothing else: every turn still thinks, answers from the
/// whole conversation, and counts its prompt consistently; no cache is cleared.
#[test]
fn without_the_runtimes_prefix_reuse_the_conversation_still_holds() {
    let (_dir, d) = daemon(
        "reuse-off",
        "qwen3",
        &[
            "thinking = 1",
            "answer_tokens_min = 10",
            "answer_tokens_max = 20",
            "prefix_reuse = 0",
        ],
    );
    let mut messages = vec![];
    for turn in 1..=4 {
        messages.push(json!({"role": "user", "content": format!("Question {turn}?")}));
        let r = chat(&d, &messages);
        let message = &r["choices"][0]["message"];
        assert!(message["reasoning_content"].is_string(), "{r}");
        let usage = &r["usage"];
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert_eq!(
            prefilled(&d) + cached,
            usage["prompt_tokens"].as_u64().unwrap(),
            "{r}"
        );
        messages.push(json!({"role": "assistant", "content": message["content"]}));
    }
    // Turn 3 goes by prefix reuse (turn 2 kept history on top of the one re-seat, which showed
    // that the runtime reuses no prefix: see tests/reseat.rs): it is sent whole, turn 1
    // included.
    let runs = turns::client_runs(&d);
    let (third, end) = &runs[2];
    assert_eq!(third["keep_history"], 0, "{third}");
    assert!(third["prompt"].as_str().unwrap().contains("Question 1?"));
    assert_eq!(
        end["prefill_tokens"], end["cache_tokens"],
        "nothing reused: {end}"
    );
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
}
