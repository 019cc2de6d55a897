//! Re-seating the KV cache between the turns of a thinking conversation (issue #19): after a run
//! whose answer the next request renders without its reasoning, the daemon feeds the runtime the
//! conversation as that request renders it, while the NPU is idle, so the next turn prefills only
//! its new user turn. Checked in the simulator's trace.

mod common;

use std::time::Duration;

use common::{turns, wait_until, write_model, Daemon, TempDir};
use serde_json::{json, Value};

const SYSTEM: &str = "You are a helpful assistant.";

fn daemon(tag: &str, template: &str, lines: &[&str], args: &[&str]) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let mut all = vec!["thinking = 1"];
    all.extend_from_slice(lines);
    let model = write_model(dir.path(), "m", &all);
    let d = Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", template])
        .args(args.iter().copied())
        .start();
    (dir, d)
}

fn question(turn: usize) -> String {
    format!("Question {turn}: tell me about the rivers of the north.")
}

/// A re-seat leaves the runtime's cache alone for a moment after the response: the trace may
/// not show it yet when the next request is sent, which then waits for it. For checking the
/// trace of the conversation as a whole, wait until no run is going on.
fn settle(d: &Daemon) {
    wait_until(Duration::from_secs(30), "the runtime to be idle", || {
        d.trace_of("rkllm_run").len() == d.trace_of("run_end").len()
    });
}

/// 8 turns with answers as clients send them back; every turn after the first sends the runtime
/// exactly its new user turn (template markers and generation prompt included) on top of the
/// cache, which is never cleared; the answers are the same as a daemon's that reuses nothing.
fn eight_turns(tag: &str, template: &str, user_turn: impl Fn(&str) -> String) {
    let lines = ["answer_tokens_min = 10", "answer_tokens_max = 20"];
    let (_dir, d) = daemon(tag, template, &lines, &[]);
    let answers = turns::content_only_turns(&d, Some(SYSTEM), 8, question);
    settle(&d);
    let runs = turns::runs(&d);
    let clients: Vec<_> = runs.iter().filter(|r| !turns::is_reseat(r)).collect();
    assert_eq!(clients.len(), 8, "{runs:?}");
    for (i, (run, end)) in clients.iter().enumerate().skip(1) {
        let turn = i + 1;
        assert_eq!(run["keep_history"], 1, "turn {turn}: {run}");
        assert_eq!(run["prompt"], user_turn(&question(turn)), "turn {turn}");
        assert!(end["prefill_tokens"].as_u64().unwrap() > 0, "{end}");
    }
    let reseats = runs.iter().filter(|r| turns::is_reseat(r)).count();
    assert!(reseats >= 7, "{reseats} re-seats: {runs:?}");
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
    turns::assert_runtime_holds_the_first_turn(&d, &answers);
    // The re-seats are no client's: not in the token counters, the queue nor the running job.
    let client_prefill: u64 = clients
        .iter()
        .map(|(_, end)| end["prefill_tokens"].as_u64().unwrap())
        .sum();
    let metrics = d.client().get("/metrics").text();
    assert!(
        metrics.contains(&format!("rkllmd_tokens_prefilled_total {client_prefill}\n")),
        "{metrics}"
    );
    let health = d.client().get("/health").json();
    assert_eq!(
        (&health["queue_depth"], &health["running"]),
        (&json!(0), &json!(false)),
        "{health}"
    );

    // The same conversation on a daemon that clears the cache before every run.
    let (_dir2, plain) = daemon(
        &format!("{tag}-plain"),
        template,
        &lines,
        &["--kv-cache-reuse", "false"],
    );
    let expected = turns::content_only_turns(&plain, Some(SYSTEM), 8, question);
    for (turn, (a, b)) in answers.iter().zip(&expected).enumerate() {
        assert_eq!(a.message(), b.message(), "turn {}", turn + 1);
    }
    assert!(plain
        .trace_of("rkllm_run")
        .iter()
        .all(|r| r["keep_history"] == 1));
}

#[test]
fn qwen3_thinking_turns_prefill_only_the_new_user_turn() {
    eight_turns("reseat-qwen3", "qwen3", |q| {
        format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
    });
}

#[test]
fn deepseek_r1_turns_prefill_only_the_new_user_turn() {
    eight_turns("reseat-r1", "deepseek-r1", |q| {
        format!("<｜User｜>{q}<｜Assistant｜><think>\n")
    });
}

/// A job that is queued when a run ends goes first: no re-seat runs between the two; the
/// re-seat follows the last run, when nothing waits.
#[test]
fn no_reseat_runs_while_a_job_is_queued() {
    let (_dir, d) = daemon(
        "reseat-queued",
        "qwen3",
        &[
            "answer_tokens_min = 60",
            "answer_tokens_max = 60",
            "decode_us_per_token = 50000",
        ],
        &[],
    );
    let mut a = d.client();
    a.send_post(
        "/v1/chat/completions",
        &json!({"stream": true, "messages": [{"role": "user", "content": "First?"}]}),
    );
    let (status, _) = a.read_head().unwrap();
    assert_eq!(status, 200);
    assert!(a.read_chunk().is_some(), "the first run streams");
    let mut b = d.client();
    b.send_post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Second?"}]}),
    );
    let queued = || d.client().get("/health").json()["queue_depth"] == 1;
    wait_until(Duration::from_secs(30), "the second job to queue", queued);
    while a.read_chunk().is_some() {}
    assert_eq!(b.read_response().status, 200);
    settle(&d);
    let runs = turns::runs(&d);
    let kinds: Vec<bool> = runs.iter().map(turns::is_reseat).collect();
    // The first run's re-seat was given up for the queued job; the second's ran.
    assert_eq!(kinds, [false, false, true], "{runs:?}");
    let second: &Value = &runs[1].0;
    assert!(
        second["prompt"].as_str().unwrap().contains("Second?"),
        "{second}"
    );
}

/// With the runtime's prefix reuse off (`prefix_reuse = 0`), the first re-seat prefills the
/// whole conversation and shows it: no other follows.
#[test]
fn without_the_runtimes_prefix_reuse_one_reseat_shows_it_and_none_follows() {
    let (_dir, d) = daemon(
        "reseat-no-prefix",
        "qwen3",
        &[
            "answer_tokens_min = 10",
            "answer_tokens_max = 20",
            "prefix_reuse = 0",
        ],
        &[],
    );
    turns::content_only_turns(&d, Some(SYSTEM), 5, question);
    settle(&d);
    let runs = turns::runs(&d);
    let reseats: Vec<_> = runs.iter().filter(|r| turns::is_reseat(r)).collect();
    assert_eq!(reseats.len(), 1, "{runs:?}");
    assert_eq!(
        reseats[0].1["prefill_tokens"], reseats[0].1["cache_tokens"],
        "nothing reused"
    );
}

/// KV-cache reuse off: no re-seat.
#[test]
fn without_kv_cache_reuse_nothing_is_reseated() {
    let (_dir, d) = daemon(
        "reseat-no-reuse",
        "qwen3",
        &["answer_tokens_min = 10", "answer_tokens_max = 20"],
        &["--kv-cache-reuse", "false"],
    );
    turns::content_only_turns(&d, Some(SYSTEM), 3, question);
    settle(&d);
    let runs = turns::runs(&d);
    assert_eq!(runs.len(), 3, "{runs:?}");
}
