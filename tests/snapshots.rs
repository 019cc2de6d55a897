//! KV-cache snapshots: a conversation's cache saved (the runtime's prompt-cache file) before
//! another request replaces it, and restored when the conversation continues, so its next turn
//! prefills about what it would have with no request in between. Faults: a save that fails as
//! on a full disk, a torn file. Checked through the simulator's trace (prefill counts, the
//! prompt-cache calls) over a real socket.

mod common;

use std::path::Path;

use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

/// A prefill slow enough (8 ms a token, an RK3588 with a 3.8B model) that every save here is
/// expected to pay by a wide margin, however slow this shared machine makes a save.
const MODEL: &[&str] = &[
    "prefill_us_per_token = 8000",
    "decode_us_per_token = 1000",
    "answer_tokens_min = 12",
    "answer_tokens_max = 12",
    "prompt_cache_save_us_per_token = 20",
    "prompt_cache_load_us_per_token = 10",
];

const FIRST: &str = "Tell me about the rivers and the mountains of the north, the weather \
                     there in the evening, the gardens by the water and the music of the towns.";

fn start(tag: &str, extra_model: &[&str], args: &[&str]) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let mut lines = MODEL.to_vec();
    lines.extend_from_slice(extra_model);
    let model = write_model(dir.path(), "m", &lines);
    let snaps = dir.path().join("snaps");
    let mut all = vec!["--chat-template", "qwen2.5", "--kv-snapshot-dir"];
    all.push(snaps.to_str().unwrap());
    all.extend_from_slice(args);
    let d = Daemon::builder(tag).model(model).args(all).start();
    (dir, d)
}

fn chat(d: &Daemon, messages: &[Value]) -> String {
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The prefill count of the last run.
fn last_prefill(d: &Daemon) -> u64 {
    d.trace_of("run_end").pop().unwrap()["prefill_tokens"]
        .as_u64()
        .unwrap()
}

/// Turn 1, then (when `title`) a request of another conversation, then turn 2. Returns turn 2's
/// answer and prefill count.
fn conversation(d: &Daemon, title: bool) -> (String, u64) {
    let mut messages = vec![json!({"role": "user", "content": FIRST})];
    let answer = chat(d, &messages);
    if title {
        chat(
            d,
            &[json!({"role": "user", "content": "### Task: a title for this chat, please."})],
        );
    }
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "And in winter?"}));
    let second = chat(d, &messages);
    (second, last_prefill(d))
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

#[test]
fn a_turn_after_another_request_prefills_what_it_would_without_it() {
    let (_dir, plain) = start("snap-plain", &[], &[]);
    let (plain_answer, plain_prefill) = conversation(&plain, false);

    let (dir, d) = start("snap-restore", &[], &[]);
    let (answer, prefill) = conversation(&d, true);
    let saves: Vec<Value> = d
        .trace_of("rkllm_run")
        .into_iter()
        .filter(|r| r["save_prompt_cache"].is_string())
        .collect();
    // Turn 1's cache before the title request, the title's before turn 2.
    assert_eq!(saves.len(), 2, "{saves:?}");
    assert_eq!(d.trace_of("rkllm_load_prompt_cache").len(), 1);
    assert!(
        prefill <= plain_prefill + 2,
        "turn 2 prefilled {prefill}, {plain_prefill} without the title request"
    );
    assert_eq!(answer, plain_answer, "the same answer");
    assert_eq!(files_in(&dir.path().join("snaps")), 2);
    // /metrics says the same: both saves, turn 2 served from a snapshot, two held.
    assert_eq!(d.metric("rkllmd_kv_snapshots_saved_total"), 2);
    assert_eq!(d.metric("rkllmd_kv_snapshots_restored_total"), 1);
    assert_eq!(d.metric("rkllmd_kv_snapshots"), 2);
    // Without a request between the turns nothing is saved or restored.
    assert_eq!(plain.metric("rkllmd_kv_snapshots_saved_total"), 0);
    assert_eq!(plain.metric("rkllmd_kv_snapshots_restored_total"), 0);
}

#[test]
fn without_snapshots_the_turn_prefills_the_whole_conversation() {
    let (_dir, plain) = start("snap-off-plain", &[], &[]);
    let (_, plain_prefill) = conversation(&plain, false);
    let (_dir2, d) = start("snap-off", &[], &["--kv-snapshot-limit", "0"]);
    let (_, prefill) = conversation(&d, true);
    assert!(
        prefill > plain_prefill * 3,
        "{prefill} vs {plain_prefill}: the measure above shows a difference"
    );
    assert!(d.trace_of("rkllm_load_prompt_cache").is_empty());
    for name in [
        "rkllmd_kv_snapshots_saved_total",
        "rkllmd_kv_snapshots_restored_total",
        "rkllmd_kv_snapshots",
    ] {
        assert_eq!(d.metric(name), 0, "{name}");
    }
}

#[test]
fn a_save_that_fails_as_on_a_full_disk_serves_the_request_without_a_snapshot() {
    let (_dir, reference) = start("snap-full-ref", &[], &["--kv-snapshot-limit", "0"]);
    let (want, full_prefill) = conversation(&reference, true);
    let (dir, d) = start("snap-full", &["prompt_cache_write_fails = 1"], &[]);
    let (answer, prefill) = conversation(&d, true);
    assert_eq!(answer, want);
    assert_eq!(
        prefill, full_prefill,
        "prefilled whole, as without snapshots"
    );
    assert!(d.trace_of("rkllm_load_prompt_cache").is_empty());
    assert_eq!(files_in(&dir.path().join("snaps")), 0, "no file left");
    let log = d.stderr();
    assert!(
        log.contains("no snapshot of the conversation's KV cache"),
        "{log}"
    );
}

#[test]
fn a_torn_snapshot_is_discarded_and_the_conversation_prefilled() {
    let (_dir, reference) = start("snap-torn-ref", &[], &["--kv-snapshot-limit", "0"]);
    let (want, full_prefill) = conversation(&reference, true);
    let (dir, d) = start("snap-torn", &["prompt_cache_torn = 1"], &[]);
    let (answer, prefill) = conversation(&d, true);
    assert_eq!(answer, want, "the answer is the one a full prefill gives");
    assert_eq!(prefill, full_prefill);
    assert_eq!(d.trace_of("rkllm_load_prompt_cache").len(), 1, "tried once");
    assert_eq!(
        files_in(&dir.path().join("snaps")),
        1,
        "turn 1's discarded; the title's (as torn) never loaded"
    );
    let log = d.stderr();
    assert!(log.contains("could not load snapshot"), "{log}");
}

#[test]
fn snapshots_are_removed_at_shutdown() {
    let (dir, mut d) = start("snap-shutdown", &[], &[]);
    conversation(&d, true);
    let snaps = dir.path().join("snaps");
    assert_eq!(files_in(&snaps), 2);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(std::time::Duration::from_secs(30));
    assert!(!snaps.exists(), "the directory is gone");
}

fn topic(d: &Daemon, what: &str) -> Vec<Value> {
    let mut messages =
        vec![json!({"role": "user", "content": format!("{FIRST} And about the {what}?")})];
    let answer = chat(d, &messages);
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "And in winter?"}));
    messages
}

/// Room for one snapshot, not two: the least recently used goes, never the one about to be
/// restored.
#[test]
fn past_the_limit_the_least_recently_used_snapshot_goes() {
    // One snapshot's size, from a daemon with room for many.
    let (dir, probe) = start("snap-evict-probe", &[], &[]);
    topic(&probe, "rivers");
    topic(&probe, "forest");
    let one: u64 = std::fs::read_dir(dir.path().join("snaps"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let limit = (one * 3 / 2).to_string();

    let (dir, d) = start("snap-evict", &[], &["--kv-snapshot-limit", &limit]);
    let a = topic(&d, "rivers");
    let b = topic(&d, "forest"); // saves A
    topic(&d, "castle"); // saves B, evicts A
    assert_eq!(files_in(&dir.path().join("snaps")), 1);
    chat(&d, &b); // restores B (saving C first evicts C, not B)
    assert_eq!(d.trace_of("rkllm_load_prompt_cache").len(), 1);
    let b_prefill = last_prefill(&d);
    chat(&d, &a); // A's snapshot is gone: prefilled whole
    assert_eq!(
        d.trace_of("rkllm_load_prompt_cache").len(),
        1,
        "nothing to load for A"
    );
    let a_prefill = last_prefill(&d);
    assert!(
        a_prefill > b_prefill * 3,
        "A prefilled {a_prefill}, B after its restore {b_prefill}"
    );
}
