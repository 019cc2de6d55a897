//! Rows for several models (`cargo bench -- models`): what a switch between models costs the
//! daemon beside the runtime's load, and what listing models costs in memory while none is
//! loaded.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::models::copy_model;
use super::common::{fast_model, Daemon};
use super::row;

/// The simulated load of the switch rows' models: in the range of a small model on a board.
const LOAD_MS: u64 = 200;
/// Requests per kind in the switch rows (the median is shown).
const ROUNDS: usize = 9;

pub fn model_rows(dir: &Path) {
    switch_rows(dir);
    idle_rss_rows(dir);
}

/// A short non-streamed chat with `model`: its wall time.
fn timed_chat(d: &Daemon, model: &str) -> Duration {
    let t = Instant::now();
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": model, "stream": false,
                "messages": [{"role": "user", "content": "Hi"}]}),
    );
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Requests alternating between two copies of `fast.rkllm` that take `LOAD_MS` to load: with
/// one model resident each request switches (unload, load, run), with two none does. The
/// daemon's share of a switch is the switching request's time minus a request on the resident
/// model's and minus the simulated load.
fn switch_rows(dir: &Path) {
    let models = dir.join("switch-models");
    std::fs::create_dir_all(&models).unwrap();
    let load = format!("load_ms = {LOAD_MS}");
    for name in ["alpha", "bravo"] {
        copy_model(&models, &fast_model(), name, &[&load]);
    }
    let start = |max: &str| {
        Daemon::builder("bench-switch")
            .no_model()
            .args(["--models-dir", models.to_str().unwrap()])
            .args(["--max-loaded-models", max, "--keep-alive", "-1"])
            // Not held back as a background request would be on a free NPU.
            .args(["--background", "none"])
            .start()
    };
    let one = start("1");
    let same = median((0..ROUNDS).map(|_| timed_chat(&one, "alpha")).collect());
    let switching = median(
        (0..ROUNDS)
            .map(|i| timed_chat(&one, if i % 2 == 0 { "bravo" } else { "alpha" }))
            .collect(),
    );
    drop(one);
    let two = start("2");
    timed_chat(&two, "bravo");
    let resident = median(
        (0..ROUNDS)
            .map(|i| timed_chat(&two, if i % 2 == 0 { "bravo" } else { "alpha" }))
            .collect(),
    );
    drop(two);
    let load = Duration::from_millis(LOAD_MS);
    row(
        "request: switch / same model (load 200 ms)",
        format!("{:.1} / {:.1} ms", ms(switching), ms(same)),
        "-",
    );
    row(
        "switch, daemon share (minus load and the run)",
        format!(
            "{:.2} ms",
            ms(switching.saturating_sub(same).saturating_sub(load))
        ),
        "invisible next to the load",
    );
    row(
        "alternating, max-loaded-models 2 (no switch)",
        format!("{:.1} ms", ms(resident)),
        "as same model",
    );
}

/// Idle RSS with one model listed and with three, none loaded (each unloaded by Ollama's
/// unload call once the daemon is ready).
fn idle_rss_rows(dir: &Path) {
    let rss = |count: usize| {
        let models = dir.join(format!("rss-models-{count}"));
        std::fs::create_dir_all(&models).unwrap();
        let names = ["alpha", "bravo", "charlie"];
        for name in &names[..count] {
            copy_model(&models, &fast_model(), name, &[]);
        }
        let d = Daemon::builder("bench-models-rss")
            .no_model()
            .args(["--models-dir", models.to_str().unwrap()])
            .start();
        let r = d
            .client()
            .post_json("/api/generate", &json!({"model": "alpha", "keep_alive": 0}));
        assert_eq!(r.status, 200, "{}", r.text());
        super::common::wait_until(Duration::from_secs(30), "nothing loaded", || {
            d.client().get("/health").json()["loaded"].is_null()
        });
        std::thread::sleep(Duration::from_millis(300));
        d.rss_kib()
    };
    let (one, three) = (rss(1), rss(3));
    row(
        "idle RSS, none loaded: 1 / 3 models listed",
        format!("{one} / {three} KiB"),
        "-",
    );
}
