//! Conversations rendered by rkllmd with the model's chat template, and KV-cache reuse across
//! turns, checked through the simulator's trace of what the runtime was asked to prefill.

mod common;

use std::time::Duration;

use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

fn im(role: &str, text: &str) -> String {
    format!("<|im_start|>{role}\n{text}<|im_end|>\n")
}

const GEN: &str = "<|im_start|>assistant\n";
const SYSTEM: &str = "You answer briefly.";

fn ask(d: &Daemon, messages: &[Value]) -> String {
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn qwen_daemon(tag: &str, extra: &[&str]) -> Daemon {
    qwen_daemon_with(tag, "add_bos = 0", extra)
}

/// `model_line`: one more line of the model file.
fn qwen_daemon_with(tag: &str, model_line: &str, extra: &[&str]) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(
        dir.path(),
        "m",
        &[
            "answer_tokens_min = 15",
            "answer_tokens_max = 25",
            model_line,
        ],
    );
    Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .args(extra.iter().copied())
        .start()
}

#[test]
fn ten_turns_prefill_only_what_each_turn_adds() {
    let d = qwen_daemon("tenturns", &[]);
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    for turn in 1..=10 {
        let question = format!("Question number {turn}: what else should I know?");
        messages.push(json!({"role": "user", "content": question}));
        let answer = ask(&d, &messages);
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    let runs = d.trace_of("rkllm_run");
    let ends = d.trace_of("run_end");
    assert_eq!(runs.len(), 10);
    assert_eq!(
        runs[0]["prompt"],
        format!(
            "{}{}{GEN}",
            im("system", SYSTEM),
            im("user", "Question number 1: what else should I know?")
        )
    );
    for (n, run) in runs.iter().enumerate().skip(1) {
        let question = format!("Question number {}: what else should I know?", n + 1);
        assert_eq!(
            run["prompt"],
            format!("<|im_end|>\n{}{GEN}", im("user", &question)),
            "turn {}",
            n + 1
        );
        assert_eq!(run["keep_history"], 1);
    }
    let prefill: Vec<u64> = ends
        .iter()
        .map(|e| e["prefill_tokens"].as_u64().unwrap())
        .collect();
    let later = &prefill[1..];
    let (lo, hi) = (*later.iter().min().unwrap(), *later.iter().max().unwrap());
    assert!(
        hi <= lo + 2,
        "turns 2..10 prefill about the same: {prefill:?}"
    );
    let cached = ends.last().unwrap()["cache_tokens"].as_u64().unwrap();
    assert!(
        prefill[9] * 10 < cached,
        "turn 10 prefilled {} of {cached} cached tokens",
        prefill[9]
    );
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
    let template = &d.trace_of("rkllm_set_chat_template")[0];
    assert_eq!(
        (
            template["system_prompt"].as_str(),
            template["prompt_postfix"].as_str()
        ),
        (Some(""), Some(""))
    );
}

#[test]
fn two_interleaved_conversations_both_keep_their_context() {
    // Without snapshots (tests/snapshots.rs has the switch with them).
    let d = qwen_daemon("interleave", &["--kv-snapshot-limit", "0"]);
    let mut a = vec![json!({"role": "system", "content": SYSTEM})];
    let mut b = vec![json!({"role": "system", "content": "You are a pirate."})];
    for turn in 1..=3 {
        for (conv, who) in [(&mut a, "alice"), (&mut b, "bob")] {
            conv.push(json!({"role": "user", "content": format!("{who} turn {turn}")}));
            let answer = ask(&d, conv);
            conv.push(json!({"role": "assistant", "content": answer}));
        }
    }
    let runs = d.trace_of("rkllm_run");
    // Every switch of conversation clears the cache and sends that conversation whole.
    assert_eq!(d.trace_of("rkllm_clear_kv_cache").len(), 5);
    let last_b = runs.last().unwrap()["prompt"].as_str().unwrap().to_owned();
    assert!(
        last_b.starts_with(&im("system", "You are a pirate.")),
        "{last_b}"
    );
    for turn in 1..=3 {
        assert!(
            last_b.contains(&format!("bob turn {turn}")),
            "bob's context kept: {last_b}"
        );
    }
    assert!(!last_b.contains("alice"), "no leak between conversations");
}

/// The edited conversation is sent whole, without history kept and without a clear: the
/// runtime reuses what it shares with the cache (up to the edit) and prefills the rest
/// (tests/reuse.rs checks the counts).
#[test]
fn an_edited_history_is_sent_whole_for_the_runtimes_prefix_reuse() {
    let d = qwen_daemon("edited", &[]);
    let mut messages = vec![
        json!({"role": "system", "content": SYSTEM}),
        json!({"role": "user", "content": "first"}),
    ];
    let answer = ask(&d, &messages);
    messages.push(json!({"role": "assistant", "content": format!("(edited) {answer}")}));
    messages.push(json!({"role": "user", "content": "second"}));
    ask(&d, &messages);
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
    let run = &d.trace_of("rkllm_run")[1];
    assert_eq!(run["keep_history"], 0, "{run}");
    let prompt = run["prompt"].as_str().unwrap().to_owned();
    assert!(
        prompt.starts_with(&im("system", SYSTEM)) && prompt.contains("(edited)"),
        "{prompt}"
    );
}

#[test]
fn ollama_chat_reuses_the_cache_too() {
    let d = qwen_daemon("ollamaturns", &[]);
    let mut messages = vec![json!({"role": "user", "content": "hello"})];
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "stream": false, "messages": messages}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    messages.push(r.json()["message"].clone());
    messages.push(json!({"role": "user", "content": "again"}));
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "stream": false, "messages": messages}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        d.trace_of("rkllm_run")[1]["prompt"],
        format!("<|im_end|>\n{}{GEN}", im("user", "again"))
    );
}

#[test]
fn the_template_is_guessed_from_the_model_file_name_and_runtime_mode_stays_available() {
    let dir = TempDir::new("guess");
    let model = dir.path().join("Qwen2.5-1.5B-Instruct_W8A8_RK3588.rkllm");
    std::fs::copy(common::fast_model(), &model).unwrap();
    let d = Daemon::builder("guess").model(model).start();
    assert!(
        d.stderr()
            .contains("chat template 'qwen2.5' chosen from the model file name"),
        "{}",
        d.stderr()
    );
    ask(&d, &[json!({"role": "user", "content": "hi"})]);
    assert_eq!(d.trace_of("rkllm_set_chat_template").len(), 1);

    // fast.rkllm matches no preset: the runtime templates the newest user message itself.
    let d = Daemon::start("runtime-mode");
    assert!(
        d.stderr().contains("no chat template preset matches"),
        "{}",
        d.stderr()
    );
    ask(
        &d,
        &[
            json!({"role": "system", "content": "S"}),
            json!({"role": "user", "content": "only this"}),
        ],
    );
    assert!(d.trace_of("rkllm_set_chat_template").is_empty());
    assert_eq!(d.trace_of("rkllm_run")[0]["prompt"], "only this");
}

#[test]
fn old_turns_are_left_out_when_the_context_fills_and_a_turn_too_long_is_a_400() {
    // Also with a runtime that adds BOS itself: one token the daemon does not see.
    for bos in ["add_bos = 0", "add_bos = 1"] {
        context_fills(bos);
    }
}

fn context_fills(bos: &str) {
    let tag = if bos.ends_with('1') {
        "overflow-bos"
    } else {
        "overflow"
    };
    let d = qwen_daemon_with(tag, bos, &["--max-context-len", "300"]);
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    for turn in 1..=8 {
        messages.push(
            json!({"role": "user", "content": format!("turn {turn}: {}", "word ".repeat(30))}),
        );
        let answer = ask(&d, &messages);
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    assert!(
        d.stderr().contains("oldest turn(s) to fit the context"),
        "{}",
        d.stderr()
    );
    let last = d.trace_of("rkllm_run").pop().unwrap()["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !last.contains("turn 1:") && last.contains("turn 8:"),
        "{last}"
    );
    assert!(
        last.starts_with(&im("system", SYSTEM)),
        "the system prompt is kept"
    );
    messages.push(json!({"role": "user", "content": "word ".repeat(2000)}));
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
}

#[test]
fn a_custom_template_from_the_config_file_renders_the_conversation() {
    let dir = TempDir::new("custom");
    let conf = dir.path().join("rkllmd.conf");
    std::fs::write(
        &conf,
        "chat-template = custom\n\
         chat-template-bos = <s>\n\
         chat-template-system-prefix = [SYS]\n\
         chat-template-system-suffix = [/SYS]\\n\n\
         chat-template-user-prefix = [U]\n\
         chat-template-user-suffix = [/U]\\n\n\
         chat-template-assistant-prefix = [A]\n\
         chat-template-assistant-suffix = [/A]\\n\n",
    )
    .unwrap();
    let d = Daemon::builder("custom")
        .args(["--config", conf.to_str().unwrap()])
        .start();
    ask(
        &d,
        &[
            json!({"role": "system", "content": "be kind"}),
            json!({"role": "user", "content": "hi"}),
        ],
    );
    assert_eq!(
        d.trace_of("rkllm_run")[0]["prompt"],
        "<s>[SYS]be kind[/SYS]\n[U]hi[/U]\n[A]"
    );

    std::fs::write(
        &conf,
        "chat-template = custom\nchat-template-user-prefix = bad\\q\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::daemon_bin())
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--model",
            common::fast_model().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chat-template-user-prefix"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A runtime that adds BOS itself (`add_bos = 1`; whether the real one does is unknown) puts one
/// more token in front of a fresh cache, next to the BOS text of templates that write one
/// (llama3). The cache is still reused turn after turn, and its size counts that token.
#[test]
fn the_cache_is_reused_when_the_runtime_adds_bos_itself() {
    for template in ["qwen2.5", "llama3"] {
        let tag = format!("bos-{template}");
        let dir = TempDir::new(&tag);
        let model = write_model(
            dir.path(),
            "m",
            &[
                "answer_tokens_min = 15",
                "answer_tokens_max = 25",
                "add_bos = 1",
            ],
        );
        let d = Daemon::builder(&tag)
            .model(model)
            .args(["--chat-template", template])
            .start();
        let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
        for turn in 1..=4 {
            messages.push(json!({"role": "user", "content": format!("Question {turn}?")}));
            let answer = ask(&d, &messages);
            messages.push(json!({"role": "assistant", "content": answer}));
        }
        let runs = d.trace_of("rkllm_run");
        assert_eq!(runs.len(), 4, "{template}");
        assert!(
            d.trace_of("rkllm_clear_kv_cache").is_empty(),
            "{template}: the cache was never started over"
        );
        for run in &runs[1..] {
            let prompt = run["prompt"].as_str().unwrap();
            assert_eq!(run["keep_history"], 1, "{template}");
            assert!(
                !prompt.contains(SYSTEM),
                "{template}: only the new turn: {prompt}"
            );
        }
        // Everything prefilled and generated is in the cache, the runtime's BOS included.
        let ends = d.trace_of("run_end");
        let total: u64 = ends
            .iter()
            .map(|e| e["prefill_tokens"].as_u64().unwrap() + e["generate_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(ends[3]["cache_tokens"].as_u64(), Some(total), "{template}");
    }
}

/// Finding 7 of issue 17: one prompt of odd markers (64 bytes to a token) taught the daemon a
/// bytes-per-token ratio for the life of the process; afterwards trimming kept too much and
/// the runtime's refusals came back as 500s.
#[test]
fn one_request_of_odd_markers_does_not_break_context_handling_for_the_next() {
    let d = qwen_daemon("poison", &["--max-context-len", "300"]);
    let marker = format!("<|{}|>", "m".repeat(60));
    let poison = marker.repeat(10);
    ask(&d, &[json!({"role": "user", "content": poison})]);

    // A long conversation now: the oldest turns are left out and it is answered.
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    for turn in 1..=12 {
        messages.push(
            json!({"role": "user", "content": format!("turn {turn}: {}", "word ".repeat(20))}),
        );
        messages.push(json!({"role": "assistant", "content": "fine ".repeat(20)}));
    }
    messages.push(json!({"role": "user", "content": "and now?"}));
    ask(&d, &messages);
    assert!(
        d.stderr().contains("oldest turn(s) to fit the context"),
        "{}",
        d.stderr()
    );

    // A prompt far over the context is the client's error, in each API's shape.
    let long = json!([{"role": "user", "content": "word ".repeat(1000)}]);
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": long}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "stream": false, "messages": long}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("This model's maximum context length is"),
        "{}",
        r.text()
    );
}

/// Whatever the learnt ratio, a prompt the runtime refuses for its length is a 400: here one
/// byte per token (punctuation) where the daemon expects about four. (A short answer asked
/// for: with the default reserve the estimate alone already refuses it.)
#[test]
fn a_prompt_denser_than_expected_is_still_a_400_not_a_500() {
    let d = qwen_daemon("dense", &["--max-context-len", "300"]);
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "!".repeat(900)}], "max_tokens": 10}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the runtime refused them"),
        "{}",
        r.text()
    );
    let m = d.client().get("/metrics").text();
    assert!(
        m.lines().any(|l| l == "rkllmd_runtime_errors_total 0"),
        "{m}"
    );
}

/// Finding 8 of issue 17: trimming a 32k-turn conversation took seconds on the inference
/// thread (quadratic), and a client that hung up meanwhile made the daemon declare the runtime
/// wedged, though the runtime had not even been called. The wedge grace here is the shortest
/// there is: 0.1 s plus the 1.5 s allowed for an abort during a prefill, the prefill rate
/// learnt from a warm-up run near zero.
#[test]
fn a_32k_turn_conversation_whose_client_hangs_up_does_not_look_like_a_wedged_runtime() {
    let d = qwen_daemon_with(
        "hugeconv",
        "decode_us_per_token = 50000\nprefill_us_per_token = 1",
        &[
            "--max-context-len",
            "4096",
            "--abort-grace",
            "0.1",
            "--max-body-bytes",
            "32M",
        ],
    );
    ask(&d, &[json!({"role": "user", "content": "warm up"})]);
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    for turn in 0..16_000 {
        messages.push(json!({"role": "user", "content": format!("question {turn}: why?")}));
        messages.push(json!({"role": "assistant", "content": "because of the weather"}));
    }
    messages.push(json!({"role": "user", "content": "and now?"}));
    let mut c = d.client();
    c.send_post(
        "/v1/chat/completions",
        &json!({"stream": true, "messages": messages}),
    );
    let mut h = d.client();
    let mut health = || h.get("/health");
    common::wait_until(Duration::from_secs(60), "the request to run", || {
        health().json()["running"] == true
    });
    drop(c);
    let mut samples = Vec::new();
    common::wait_until(Duration::from_secs(120), "the run to end", || {
        let r = health();
        samples.push((r.status, r.text()));
        r.status != 200 || r.json()["running"] == false
    });
    assert!(
        samples.iter().all(|(status, _)| *status == 200),
        "{:?}\n{}",
        samples.last(),
        d.stderr()
    );
    ask(&d, &[json!({"role": "user", "content": "still there?"})]);
}

/// Issue 19: the demo model started as the README's quick start does (no options) resolves to a
/// preset from the architecture its file declares, so a first multi-turn chat remembers: turn 3
/// sends only its new part on top of the kept history.
#[test]
fn the_shipped_demo_model_with_no_options_remembers_the_conversation() {
    let d = Daemon::builder("demo-remembers")
        .model(common::demo_model())
        .start();
    let mut messages = Vec::new();
    let question = |turn: usize| format!("Turn {turn}: tell me about the board.");
    for turn in 1..=3 {
        messages.push(json!({"role": "user", "content": question(turn)}));
        let answer = ask(&d, &messages);
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    let runs = d.trace_of("rkllm_run");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[2]["keep_history"], 1);
    assert_eq!(
        runs[2]["prompt"],
        format!("<|im_end|>\n{}{GEN}", im("user", &question(3)))
    );
    let ends = d.trace_of("run_end");
    let (prefilled, cached) = (
        ends[2]["prefill_tokens"].as_u64().unwrap(),
        ends[2]["cache_tokens"].as_u64().unwrap(),
    );
    assert!(
        prefilled * 2 < cached,
        "turn 3 prefilled {prefilled} of {cached} tokens"
    );
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
    let log = d.stderr();
    assert!(
        log.contains("chat template 'qwen2.5'") && log.contains("general.architecture"),
        "{log}"
    );
}

/// The thinking demo model, started with no options, resolves to the qwen3 preset and thinks.
#[test]
fn the_thinking_demo_model_with_no_options_uses_the_qwen3_preset() {
    let d = Daemon::builder("demo-think")
        .model(common::repo_path(
            "vendor/rkllm-sim/models/demo-qwen3-think.rkllm",
        ))
        .start();
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Is 17 prime?"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let message = &r.json()["choices"][0]["message"];
    assert!(
        message["reasoning_content"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{message}"
    );
    let log = d.stderr();
    assert!(
        log.contains("chat template 'qwen3' chosen from the model file's general.architecture"),
        "{log}"
    );
}
