//! The board in `/metrics`: a daemon started with `--root` on fake system trees of an RK3588 and
//! an RK3576 shows every reading of the tree, read on scrape; missing files leave gauges out;
//! token rates and the KV cache come from what the daemon saw; and scraping starts no polling.

// Cargo.toml's float_cmp allow, named again (a command-line -W clippy::pedantic overrides
// Cargo's table): the gauges compared here are exact readings of the fake tree.
#![allow(clippy::float_cmp)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::board::{self, put, samples};
use common::{Daemon, TempDir};
use serde_json::json;

fn scrape(d: &Daemon) -> (String, BTreeMap<String, f64>) {
    let r = d.client().get("/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let s = samples(&text);
    (text, s)
}

/// The board's samples, sorted, and the families that carry a HELP and TYPE line.
fn board_samples(s: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    s.iter()
        .filter(|(k, _)| k.starts_with("rkllmd_board_"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn expect(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_documented(text: &str, s: &BTreeMap<String, f64>) {
    for key in s.keys() {
        let family = key.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| family.strip_suffix(suffix))
            .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
            .unwrap_or(family);
        assert!(
            text.contains(&format!("# HELP {family} "))
                && text.contains(&format!("# TYPE {family} ")),
            "{family} has no HELP/TYPE:\n{text}"
        );
    }
}

#[test]
fn an_rk3588_board_in_metrics() {
    let tree = TempDir::new("rk3588-tree");
    board::rk3588(tree.path());
    let d = Daemon::builder("board-rk3588")
        .args(["--root", &tree.path().display().to_string()])
        .start();
    let (text, s) = scrape(&d);
    assert_eq!(
        board_samples(&s),
        expect(&[
            (r#"rkllmd_board_npu_load_ratio{core="0"}"#, 0.35),
            (r#"rkllmd_board_npu_load_ratio{core="1"}"#, 0.07),
            (r#"rkllmd_board_npu_load_ratio{core="2"}"#, 0.0),
            (
                r#"rkllmd_board_npu_devfreq_load_ratio{device="fdab0000.npu"}"#,
                0.35
            ),
            (
                r#"rkllmd_board_npu_frequency_hertz{device="fdab0000.npu"}"#,
                1e9
            ),
            (r#"rkllmd_board_cpu_frequency_hertz{policy="0"}"#, 1.8e9),
            (r#"rkllmd_board_cpu_frequency_hertz{policy="4"}"#, 2.256e9),
            (r#"rkllmd_board_cpu_frequency_hertz{policy="6"}"#, 2.304e9),
            (
                r#"rkllmd_board_temperature_celsius{zone="0",type="soc-thermal"}"#,
                41.6
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="1",type="bigcore0-thermal"}"#,
                42.5
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="2",type="bigcore1-thermal"}"#,
                42.4
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="3",type="littlecore-thermal"}"#,
                41.7
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="4",type="center-thermal"}"#,
                40.8
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="5",type="gpu-thermal"}"#,
                40.7
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="6",type="npu-thermal"}"#,
                44.3
            ),
            ("rkllmd_board_memory_available_bytes", 12_345_678.0 * 1024.0),
            ("rkllmd_board_memory_total_bytes", 16_203_020.0 * 1024.0),
        ])
    );
    assert_documented(&text, &s);

    // Read on scrape: what the kernel says now, not at start.
    put(
        tree.path(),
        "sys/kernel/debug/rknpu/load",
        "NPU load:  Core0: 100%, Core1: 99%, Core2:  1%,\n",
    );
    put(
        tree.path(),
        "sys/class/thermal/thermal_zone6/temp",
        "85000\n",
    );
    put(
        tree.path(),
        "sys/devices/system/cpu/cpufreq/policy4/scaling_cur_freq",
        "408000\n",
    );
    let (_, s) = scrape(&d);
    assert_eq!(s[r#"rkllmd_board_npu_load_ratio{core="0"}"#], 1.0);
    assert_eq!(s[r#"rkllmd_board_npu_load_ratio{core="1"}"#], 0.99);
    assert_eq!(s[r#"rkllmd_board_npu_load_ratio{core="2"}"#], 0.01);
    assert_eq!(
        s[r#"rkllmd_board_temperature_celsius{zone="6",type="npu-thermal"}"#],
        85.0
    );
    assert_eq!(s[r#"rkllmd_board_cpu_frequency_hertz{policy="4"}"#], 4.08e8);
}

#[test]
fn an_rk3576_board_in_metrics() {
    let tree = TempDir::new("rk3576-tree");
    board::rk3576(tree.path());
    let d = Daemon::builder("board-rk3576")
        .args(["--root", &tree.path().display().to_string()])
        .start();
    let (text, s) = scrape(&d);
    assert_eq!(
        board_samples(&s),
        expect(&[
            (r#"rkllmd_board_npu_load_ratio{core="0"}"#, 0.5),
            (r#"rkllmd_board_npu_load_ratio{core="1"}"#, 0.12),
            (
                r#"rkllmd_board_npu_frequency_hertz{device="27700000.npu"}"#,
                9.5e8
            ),
            (r#"rkllmd_board_cpu_frequency_hertz{policy="0"}"#, 2.016e9),
            (r#"rkllmd_board_cpu_frequency_hertz{policy="4"}"#, 2.208e9),
            (
                r#"rkllmd_board_temperature_celsius{zone="0",type="package-thermal"}"#,
                38.0
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="1",type="bigcore-thermal"}"#,
                39.25
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="2",type="littlecore-thermal"}"#,
                38.5
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="3",type="gpu-thermal"}"#,
                37.9
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="4",type="npu-thermal"}"#,
                40.1
            ),
            (
                r#"rkllmd_board_temperature_celsius{zone="5",type="ddr-thermal"}"#,
                36.0
            ),
            ("rkllmd_board_memory_available_bytes", 6_000_000.0 * 1024.0),
            ("rkllmd_board_memory_total_bytes", 8_039_268.0 * 1024.0),
        ])
    );
    assert_documented(&text, &s);
}

#[test]
fn missing_or_unreadable_board_files_leave_their_gauges_out() {
    let tree = TempDir::new("bare-tree");
    // What a board without root access or drivers may show: no load file, a load file in a
    // format the driver does not write, a zone without a temperature, a policy in kHz garbage.
    put(tree.path(), "proc/rknpu/load", "NPU load: busy\n");
    put(
        tree.path(),
        "sys/class/thermal/thermal_zone0/type",
        "soc-thermal\n",
    );
    put(
        tree.path(),
        "sys/class/thermal/thermal_zone1/type",
        "gpu-thermal\n",
    );
    put(
        tree.path(),
        "sys/class/thermal/thermal_zone1/temp",
        "40000\n",
    );
    put(
        tree.path(),
        "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq",
        "<unsupported>\n",
    );
    let d = Daemon::builder("board-bare")
        .args(["--root", &tree.path().display().to_string()])
        .start();
    let (text, s) = scrape(&d);
    assert_eq!(
        board_samples(&s),
        expect(&[(
            r#"rkllmd_board_temperature_celsius{zone="1",type="gpu-thermal"}"#,
            40.0
        )])
    );
    for absent in [
        "npu_load",
        "cpu_frequency",
        "memory_available",
        "npu_frequency",
    ] {
        assert!(!text.contains(&format!("rkllmd_board_{absent}")), "{text}");
    }
    // The rest of /metrics is there as always.
    assert!(s.contains_key("rkllmd_queue_depth"), "{text}");
}

#[test]
fn token_rate_and_kv_cache_come_from_what_the_daemon_saw() {
    // Rendered with rkllmd's own template, so the engine follows the cache; the answer ends at
    // its end of sequence, under the cap (a run cut at the cap leaves the cache unknown on ABI
    // 1.2, which has no per-run cap in the runtime).
    let dir = TempDir::new("board-tokens-model");
    let model = common::write_model(
        dir.path(),
        "short",
        &["answer_tokens_min = 9", "answer_tokens_max = 9"],
    );
    let d = Daemon::builder("board-tokens")
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .start();
    let (_, s) = scrape(&d);
    assert_eq!(s["rkllmd_tokens_per_second"], 0.0);
    assert_eq!(s["rkllmd_context_length_tokens"], 4096.0);
    assert!(!s.contains_key("rkllmd_generation_tokens"));
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hello there"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let usage = &r.json()["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    let (_, s) = scrape(&d);
    // Every generated token is in the last minute's count, which is divided by 60 s.
    assert_eq!(s["rkllmd_tokens_per_second"] * 60.0, completion as f64);
    // The conversation's first turn kept: the cache holds its prompt and answer (one sample, of
    // the one model resident).
    let kv: Vec<(&String, &f64)> = s
        .iter()
        .filter(|(k, _)| k.starts_with("rkllmd_kv_cache_tokens{model=\""))
        .collect();
    assert_eq!(kv.len(), 1, "{kv:?}");
    assert_eq!(*kv[0].1, (prompt + completion) as f64);
    assert!(
        !s.contains_key("rkllmd_generation_tokens"),
        "nothing runs now"
    );
    // One first token, after at least the demo model's prefill.
    assert_eq!(s["rkllmd_ttft_seconds_count"], 1.0);
    assert!(s["rkllmd_ttft_seconds_sum"] > 0.0);
}

#[test]
fn the_running_generation_shows_its_tokens_and_rate() {
    let d = Daemon::builder("board-running")
        .model(common::demo_model())
        .start();
    let mut stream = d.client();
    stream.send_post(
        "/v1/chat/completions",
        &json!({"stream": true, "max_tokens": 400,
                "messages": [{"role": "user", "content": "Tell me a long story"}]}),
    );
    let (status, _) = stream.read_head().unwrap();
    assert_eq!(status, 200);
    let mut seen = 0;
    while seen < 6 {
        let chunk = stream.read_chunk().expect("a chunk");
        seen += common::client::sse_data(&chunk)
            .iter()
            .filter(|e| e.contains("\"content\""))
            .count();
    }
    let (_, s) = scrape(&d);
    assert!(s["rkllmd_generation_tokens"] >= 5.0, "{s:?}");
    assert!(s["rkllmd_generation_tokens_per_second"] > 0.0, "{s:?}");
    assert_eq!(s["rkllmd_running"], 1.0);
}

/// Context switches of every thread of `pid`: each is a wakeup.
fn switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn scraping_the_board_starts_no_polling() {
    let tree = TempDir::new("idle-tree");
    board::rk3588(tree.path());
    let d = Daemon::builder("board-idle")
        .args(["--root", &tree.path().display().to_string()])
        .start();
    for _ in 0..3 {
        scrape(&d);
    }
    // Let the connections' lingering close and the loop go back to sleep.
    std::thread::sleep(Duration::from_millis(500));
    let before = switches(d.child.id());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        switches(d.child.id()) - before,
        0,
        "the idle daemon woke up"
    );
}
