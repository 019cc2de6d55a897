//! Conversations as clients send them through the stateless OpenAI API (the whole history each
//! turn, each answer sent back with its content only), and what the simulator's trace says the
//! runtime held of them.

use serde_json::{json, Value};

use super::Daemon;

/// One turn's answer.
pub struct Answer {
    /// The response body.
    pub body: Value,
    /// Its `X-Rkllmd-Warning` header.
    pub warning: Option<String>,
}

impl Answer {
    pub fn message(&self) -> &Value {
        &self.body["choices"][0]["message"]
    }

    pub fn prompt_tokens(&self) -> u64 {
        self.body["usage"]["prompt_tokens"].as_u64().unwrap()
    }

    pub fn cached_tokens(&self) -> u64 {
        self.body["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    }
}

/// Sends `messages` to `/v1/chat/completions` (200 expected).
pub fn chat(d: &Daemon, messages: &[Value]) -> Answer {
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(r.status, 200, "{}", r.text());
    Answer {
        warning: r.header("X-Rkllmd-Warning").map(str::to_owned),
        body: r.json(),
    }
}

/// `turns` turns after an optional system prompt, question `question(turn)` (from 1), each
/// answer sent back as the assistant's content only.
pub fn content_only_turns(
    d: &Daemon,
    system: Option<&str>,
    turns: usize,
    question: impl Fn(usize) -> String,
) -> Vec<Answer> {
    let mut messages: Vec<Value> = system
        .map(|s| json!({"role": "system", "content": s}))
        .into_iter()
        .collect();
    let mut answers = Vec::new();
    for turn in 1..=turns {
        messages.push(json!({"role": "user", "content": question(turn)}));
        let answer = chat(d, &messages);
        messages.push(json!({"role": "assistant", "content": answer.message()["content"]}));
        answers.push(answer);
    }
    answers
}

/// The last client run's prefilled tokens, from the trace.
pub fn last_prefill(d: &Daemon) -> u64 {
    client_runs(d).pop().unwrap().1["prefill_tokens"]
        .as_u64()
        .unwrap()
}

/// Every run in the trace in order: its `rkllm_run` line and its `run_end` line (one handle,
/// one run at a time; a run still going has no end yet and is left out).
pub fn runs(d: &Daemon) -> Vec<(Value, Value)> {
    d.trace_of("rkllm_run")
        .into_iter()
        .zip(d.trace_of("run_end"))
        .collect()
}

/// Whether a run is the daemon's re-seat of the KV cache between turns (no client's): sent
/// without history and cut at its first token. Every client answer in these tests is longer.
pub fn is_reseat(run: &(Value, Value)) -> bool {
    run.0["keep_history"] == 0 && run.1["generate_tokens"] == 1
}

/// The runs that answered clients.
pub fn client_runs(d: &Daemon) -> Vec<(Value, Value)> {
    runs(d).into_iter().filter(|r| !is_reseat(r)).collect()
}

/// The runtime still holds the conversation's first turn at its last one, by the trace: its KV
/// cache was never cleared, shifted nor reset by a tools call after the first run, and the last
/// run took from it at least the first turn's whole prompt. Also: the last run's prompt count
/// is what it prefilled plus what it reused.
pub fn assert_runtime_holds_the_first_turn(d: &Daemon, answers: &[Answer]) {
    let trace = d.trace();
    let first_run = trace
        .iter()
        .position(|v| v["fn"] == "rkllm_run")
        .expect("a run");
    let resets: Vec<&Value> = trace[first_run..]
        .iter()
        .filter(|v| v["fn"] == "rkllm_clear_kv_cache" || v["fn"] == "rkllm_set_function_tools")
        .collect();
    assert!(resets.is_empty(), "the cache was reset: {resets:?}");
    let shifted: Vec<&Value> = trace
        .iter()
        .filter(|v| v["fn"] == "run_end" && v["shifted_tokens"] != 0)
        .collect();
    assert!(shifted.is_empty(), "a context shift lost part: {shifted:?}");
    let (first, last) = (&answers[0], answers.last().unwrap());
    assert!(
        last.cached_tokens() >= first.prompt_tokens(),
        "the last turn reused {} tokens, the first turn's prompt has {}",
        last.cached_tokens(),
        first.prompt_tokens()
    );
    assert_eq!(
        last_prefill(d) + last.cached_tokens(),
        last.prompt_tokens(),
        "{}",
        last.body
    );
}

/// The last turn prefilled at most half of its context (its whole prompt); `what` names the
/// setting in the figure printed.
pub fn assert_last_turn_prefilled_at_most_half(d: &Daemon, answers: &[Answer], what: &str) {
    let whole = answers.last().unwrap().prompt_tokens();
    let prefill = last_prefill(d);
    eprintln!(
        "{what}: turn {} prefilled {prefill} of {whole} prompt tokens",
        answers.len()
    );
    assert!(
        prefill * 2 <= whole,
        "turn {} prefilled {prefill} of {whole} tokens",
        answers.len()
    );
}
