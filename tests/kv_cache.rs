//! The daemon's hold on the runtime's KV cache: after a run that was cut short (any API, the
//! completions included) the cache is cleared before the next run, and a cache whose size after
//! a run is not what the daemon expects (before + prefilled + generated: a context shift, a BOS,
//! anything unknown) is cleared too and its reuse forgotten. Checked through the simulator's
//! trace of the calls the runtime received.

mod common;

use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

/// The runtime calls that matter here, in order.
fn calls(d: &Daemon) -> Vec<String> {
    d.trace()
        .iter()
        .filter_map(|l| l["fn"].as_str().map(str::to_owned))
        .filter(|f| ["rkllm_run", "run_end", "rkllm_clear_kv_cache"].contains(&f.as_str()))
        .collect()
}

/// Whether the last run was preceded by a clear of the cache (after the run before it).
fn last_run_started_cleared(d: &Daemon) -> bool {
    let calls = calls(d);
    let last = calls.iter().rposition(|f| f == "rkllm_run").unwrap();
    calls[..last].last().map(String::as_str) == Some("rkllm_clear_kv_cache")
}

fn chat(d: &Daemon, messages: &[Value]) -> String {
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 6}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A completion with no token cap (under ABI 1.2 the daemon enforces a cap by a pause, after
/// which the cache is cleared).
fn completion(d: &Daemon) {
    let r = d
        .client()
        .post_json("/v1/completions", &json!({"prompt": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Turn 2 holds 170 ". " pairs: 340 tokens for the simulator, far more than the daemon's
/// estimate from bytes, so the cache plus the turn overflow the context of 400 and the runtime
/// shifts it (deletes a span) instead of failing. The daemon notices the size and starts over.
#[test]
fn a_context_shift_is_noticed_and_the_cache_starts_over() {
    let dir = TempDir::new("shift");
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 5", "answer_tokens_max = 5"],
    );
    let d = Daemon::builder("shift")
        .model(model)
        .args(["--chat-template", "qwen2.5", "--max-context-len", "400"])
        .start();
    let first = "Tell me something about the rivers and the mountains of the north, please, \
                 and about the weather there in the evening.";
    let mut messages = vec![json!({"role": "user", "content": first})];
    let answer = chat(&d, &messages);
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": ". ".repeat(170)}));
    chat(&d, &messages);
    let end = d.trace_of("run_end").pop().unwrap();
    assert!(
        end["shifted_tokens"].as_u64().unwrap() > 0,
        "no shift: {end}"
    );
    assert!(
        d.stderr().contains("the KV cache holds"),
        "no word of the mismatch: {}",
        d.stderr()
    );
    // Whatever comes next starts from a cleared cache.
    completion(&d);
    assert!(last_run_started_cleared(&d), "{:?}", calls(&d));
}

/// The same two kinds of request with no surprise in between: no clear, and the second turn of
/// the conversation prefills only what it adds.
#[test]
fn without_a_surprise_the_cache_is_kept() {
    let dir = TempDir::new("noshift");
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 5", "answer_tokens_max = 5"],
    );
    let d = Daemon::builder("noshift")
        .model(model)
        .args(["--chat-template", "qwen2.5", "--max-context-len", "4096"])
        .start();
    let mut messages = vec![json!({"role": "user", "content": "Tell me about rivers."})];
    let answer = chat(&d, &messages);
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": ". ".repeat(170)}));
    chat(&d, &messages);
    assert!(!last_run_started_cleared(&d), "{:?}", calls(&d));
    let end = d.trace_of("run_end").pop().unwrap();
    assert_eq!(end["shifted_tokens"], 0, "{end}");
    assert!(!d.stderr().contains("the KV cache holds"), "{}", d.stderr());
    completion(&d);
    assert!(!last_run_started_cleared(&d), "{:?}", calls(&d));
}

/// A completion (OpenAI or Ollama, the runtime given one prompt) whose client hangs up mid-stream
/// is aborted; the next run, of either kind, starts from a cleared cache, whether the runtime
/// sends FINISH after an abort or not.
#[test]
fn a_run_after_a_cut_completion_starts_from_a_cleared_cache() {
    for abort_finish in ["abort_finish = 0", "abort_finish = 1"] {
        let dir = TempDir::new("cutcompl");
        let model = write_model(
            dir.path(),
            "m",
            &[
                "answer_tokens_min = 30",
                "answer_tokens_max = 30",
                "decode_us_per_token = 10000",
                abort_finish,
            ],
        );
        let d = Daemon::builder("cutcompl").model(model).start();
        let cut = [
            (
                "/v1/completions",
                json!({"prompt": "Once upon a time", "stream": true}),
            ),
            (
                "/api/generate",
                json!({"model": "m", "prompt": "Once upon a time"}),
            ),
        ];
        for (path, body) in cut {
            let mut c = d.client();
            c.send_post(path, &body);
            assert_eq!(c.read_head().unwrap().0, 200, "{path}");
            c.read_chunk().expect("a first chunk");
            drop(c);
            let runs = d.trace_of("rkllm_run").len();
            common::wait_until(
                std::time::Duration::from_secs(5),
                "the cut run ended",
                || d.trace_of("run_end").len() == runs,
            );
            completion(&d);
            assert!(
                last_run_started_cleared(&d),
                "{abort_finish} {path}: {:?}",
                calls(&d)
            );
            // A run that ended normally leaves nothing to clear.
            completion(&d);
            assert!(
                !last_run_started_cleared(&d),
                "{abort_finish} {path}: {:?}",
                calls(&d)
            );
        }
    }
}
