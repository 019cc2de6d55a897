//! Several models resident at once (`--max-loaded-models`): the least recently used idle model
//! is unloaded to make room, for the count, for the board's memory (a fake `/proc/meminfo`
//! under `--root`) and when the runtime refuses a further handle (the simulator's
//! `RKLLM_SIM_MAX_HANDLES`); each resident model has its own keep_alive and NPU memory domain.
//! Which handle the simulator created or destroyed, and for which model, is read from its trace.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::models::{answer, copy_model, inits, model_metric, ollama_chat};
use common::{fast_model, write_model, Daemon, DaemonBuilder};
use serde_json::{json, Value};

/// `alpha`, `bravo` and `charlie`, copies of the shipped `fast.rkllm` that answer their name
/// (each `extra` line added), and `broken`, which fails to load.
fn resident_dir(dir: &Path, extra: &[&str]) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    for name in ["alpha", "bravo", "charlie"] {
        copy_model(&models, &fast_model(), name, extra);
    }
    write_model(&models, "broken", &["fail_init = 1"]);
    models
}

/// A daemon serving `resident_dir` with up to `max` models resident; its `--root` has no
/// `/proc/meminfo` (no memory budget) until a test writes one.
fn builder(tag: &str, max: usize, extra: &[&str]) -> DaemonBuilder {
    let b = Daemon::builder(tag).no_model();
    let models = resident_dir(b.dir(), extra);
    let root = b.dir().join("root");
    std::fs::create_dir_all(root.join("proc")).unwrap();
    b.args(["--models-dir", models.to_str().unwrap()])
        .args(["--max-loaded-models", &max.to_string()])
        .args(["--root", root.to_str().unwrap()])
}

fn chat(d: &Daemon, model: &str) -> String {
    let (status, body) = ollama_chat(d, model);
    assert_eq!(status, 200, "{body}");
    answer(&body)
}

fn chat_keep(d: &Daemon, model: &str, keep_alive: Value) -> String {
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": model, "stream": false, "keep_alive": keep_alive,
                "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    answer(&r.json())
}

/// `/health`'s resident models, most recently used first.
fn loaded(d: &Daemon) -> Value {
    d.client().get("/health").json()["loaded_models"].clone()
}

/// The model of each handle the simulator created (failed inits included).
fn handles(d: &Daemon) -> HashMap<i64, String> {
    d.trace_of("rkllm_init")
        .iter()
        .zip(inits(d))
        .map(|(l, model)| (l["handle"].as_i64().unwrap(), model))
        .collect()
}

/// The models whose handles were destroyed, in order.
fn destroyed(d: &Daemon) -> Vec<String> {
    let handles = handles(d);
    d.trace_of("rkllm_destroy")
        .iter()
        .map(|l| handles[&l["handle"].as_i64().unwrap()].clone())
        .collect()
}

/// Each init's model and NPU memory domain, in order.
fn domains(d: &Daemon) -> Vec<(String, i64)> {
    d.trace_of("rkllm_init")
        .iter()
        .zip(inits(d))
        .map(|(l, model)| (model, l["base_domain_id"].as_i64().unwrap()))
        .collect()
}

fn ps_names(d: &Daemon) -> Vec<String> {
    d.client().get("/api/ps").json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn with_two_resident_the_least_recently_used_idle_model_makes_room_for_a_third() {
    let d = builder("resident-lru", 2, &[]).start();
    assert_eq!(loaded(&d), json!(["alpha"]));

    // Loaded beside alpha: nothing unloaded.
    assert_eq!(chat(&d, "bravo"), "bravo says hi");
    assert_eq!(loaded(&d), json!(["bravo", "alpha"]));
    assert!(destroyed(&d).is_empty());
    // Resident: no load, and alpha is now the most recently used.
    assert_eq!(chat(&d, "alpha"), "alpha says hi");
    assert_eq!(inits(&d), ["alpha", "bravo"]);
    assert_eq!(d.client().get("/health").json()["loaded"], "alpha");

    // A third: bravo, least recently used, goes; alpha stays.
    assert_eq!(chat(&d, "charlie"), "charlie says hi");
    assert_eq!(destroyed(&d), ["bravo"]);
    assert_eq!(loaded(&d), json!(["charlie", "alpha"]));
    assert_eq!(ps_names(&d), ["charlie:latest", "alpha:latest"]);
    assert_eq!(chat(&d, "alpha"), "alpha says hi");
    assert_eq!(inits(&d), ["alpha", "bravo", "charlie"]);

    // Each resident handle has its own domain: base-domain-id (0) + its slot; charlie took
    // bravo's slot.
    assert_eq!(
        domains(&d),
        [
            ("alpha".to_owned(), 0),
            ("bravo".to_owned(), 1),
            ("charlie".to_owned(), 1)
        ]
    );
    assert!((model_metric(&d, "rkllmd_model_unloads_total", "bravo") - 1.0).abs() < f64::EPSILON);
    assert!(d
        .stderr()
        .contains("model 'bravo' unloaded to make room for 'charlie' (max-loaded-models is 2)"));
}

/// `base-domain-id` is where the slots start.
#[test]
fn resident_handles_take_domains_from_base_domain_id_on() {
    let d = builder("resident-domains", 3, &[])
        .args(["--base-domain-id", "4"])
        .start();
    chat(&d, "bravo");
    chat(&d, "charlie");
    let got: Vec<i64> = domains(&d).into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, [4, 5, 6]);
}

/// The size of each model file, padded so that it counts next to the budget's fixed margin.
const PADDED_BYTES: usize = 600 * 1024;

fn set_mem_available(d: &Daemon, bytes: u64) {
    let text = format!(
        "MemTotal:  16203020 kB\nMemFree:  1000 kB\nMemAvailable:  {} kB\n",
        bytes / 1024
    );
    std::fs::write(d.dir.path().join("root/proc/meminfo"), text).unwrap();
}

/// What the budget asks of a model file of `size` bytes: the file, a fifth more and 256 MiB.
fn needed(size: u64) -> u64 {
    size + size / 5 + (256 << 20)
}

#[test]
fn a_load_beyond_the_boards_memory_unloads_least_recently_used_models_until_it_fits() {
    let pad = format!("# {}", "p".repeat(1000));
    let lines: Vec<&str> = std::iter::repeat_n(pad.as_str(), PADDED_BYTES / 1003).collect();
    let d = builder("resident-memory", 3, &lines).start();
    let size = |name: &str| {
        std::fs::metadata(d.dir.path().join(format!("models/{name}.rkllm")))
            .unwrap()
            .len()
    };
    set_mem_available(&d, 8 << 30);
    assert_eq!(chat(&d, "bravo"), "bravo says hi");
    assert_eq!(loaded(&d), json!(["bravo", "alpha"]));

    // Short by half of alpha's file: unloading alpha (least recently used) makes it fit.
    set_mem_available(&d, needed(size("charlie")) - size("alpha") / 2);
    assert_eq!(chat(&d, "charlie"), "charlie says hi");
    assert_eq!(destroyed(&d), ["alpha"]);
    assert_eq!(loaded(&d), json!(["charlie", "bravo"]));
    assert!(
        d.stderr()
            .contains("model 'alpha' unloaded to make room for 'charlie' ("),
        "{}",
        d.stderr()
    );

    // Nothing would make it fit: every model goes, least recently used first, and the load is
    // tried anyway.
    set_mem_available(&d, 1 << 20);
    assert_eq!(chat(&d, "alpha"), "alpha says hi");
    assert_eq!(destroyed(&d), ["alpha", "bravo", "charlie"]);
    assert_eq!(loaded(&d), json!(["alpha"]));
    assert!(d.stderr().contains("model 'alpha' may not fit"));

    // Unreadable: no budget.
    std::fs::remove_file(d.dir.path().join("root/proc/meminfo")).unwrap();
    assert_eq!(chat(&d, "bravo"), "bravo says hi");
    assert_eq!(loaded(&d), json!(["bravo", "alpha"]));
    assert_eq!(destroyed(&d).len(), 3);
}

#[test]
fn each_resident_model_expires_on_its_own_keep_alive() {
    let d = builder("resident-keepalive", 2, &[]).start();
    assert_eq!(chat_keep(&d, "alpha", json!(-1)), "alpha says hi");
    assert_eq!(chat_keep(&d, "bravo", json!("2s")), "bravo says hi");
    let ps = d.client().get("/api/ps").json();
    let expiry = |i: usize| ps["models"][i]["expires_at"].clone();
    assert_eq!(ps["models"][0]["name"], "bravo:latest", "{ps}");
    assert_ne!(expiry(0), "2999-12-31T23:59:59Z", "{ps}");
    assert_eq!(ps["models"][1]["name"], "alpha:latest", "{ps}");
    assert_eq!(expiry(1), "2999-12-31T23:59:59Z", "{ps}");

    common::wait_until(Duration::from_secs(30), "bravo to expire", || {
        loaded(&d) == json!(["alpha"])
    });
    assert_eq!(destroyed(&d), ["bravo"]);
    assert_eq!(ps_names(&d), ["alpha:latest"]);
    assert!(d.stderr().contains("model 'bravo' unloaded (keep_alive)"));
    // alpha answers without a load.
    assert_eq!(chat(&d, "alpha"), "alpha says hi");
    assert_eq!(inits(&d), ["alpha", "bravo"]);
}

/// A model that fails to load costs the others at most one unload (the retry, in case the
/// runtime refused it for the others' sake); after that its failures unload nothing.
#[test]
fn a_model_that_fails_to_load_leaves_the_resident_ones_serving() {
    let d = builder("resident-broken", 3, &[]).start();
    chat(&d, "bravo");
    let (status, body) = ollama_chat(&d, "broken");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("model 'broken' could not be loaded"),
        "{body}"
    );
    assert_eq!(destroyed(&d), ["alpha"]);
    assert_eq!(loaded(&d), json!(["bravo"]));

    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"model": "broken", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "model_unavailable");
    assert_eq!(destroyed(&d), ["alpha"]);
    assert_eq!(inits(&d), ["alpha", "bravo", "broken", "broken", "broken"]);

    assert_eq!(d.client().get("/health").status, 200);
    assert_eq!(chat(&d, "bravo"), "bravo says hi");
    assert_eq!(chat(&d, "alpha"), "alpha says hi");
    assert_eq!(loaded(&d), json!(["alpha", "bravo"]));
}

/// Whether the runtime lets several handles live in one process is unclear (the simulator's
/// `RKLLM_SIM_MAX_HANDLES`): where it does not, a refused load unloads the least recently
/// used model and is tried again, so requests are served either way, and the daemon keeps no
/// more models than the runtime held from then on, so later switches pay no refused load.
#[test]
fn a_runtime_that_holds_one_handle_still_serves_every_model() {
    let one = builder("resident-one-handle", 2, &[]).start_with_env("RKLLM_SIM_MAX_HANDLES", "1");
    assert_eq!(chat(&one, "bravo"), "bravo says hi");
    assert_eq!(inits(&one), ["alpha", "bravo", "bravo"]);
    assert_eq!(destroyed(&one), ["alpha"]);
    assert_eq!(loaded(&one), json!(["bravo"]));
    assert!(one
        .stderr()
        .contains("model 'bravo' did not load beside 1 other(s)"));
    assert!(
        one.stderr()
            .contains("the runtime holds at most 1 model(s) at once here"),
        "{}",
        one.stderr()
    );
    // Learned: the next switches unload first, with no refused load in between.
    assert_eq!(chat(&one, "alpha"), "alpha says hi");
    assert_eq!(chat(&one, "charlie"), "charlie says hi");
    assert_eq!(destroyed(&one), ["alpha", "bravo", "alpha"]);
    assert_eq!(inits(&one), ["alpha", "bravo", "bravo", "alpha", "charlie"]);
    assert!((model_metric(&one, "rkllmd_model_load_failures_total", "bravo")).abs() < f64::EPSILON);

    let many = builder("resident-many-handles", 2, &[]).start();
    assert_eq!(chat(&many, "bravo"), "bravo says hi");
    assert_eq!(chat(&many, "alpha"), "alpha says hi");
    assert_eq!(inits(&many), ["alpha", "bravo"]);
    assert!(destroyed(&many).is_empty());
}

/// A client that hangs up has its run aborted on the model it runs on, not on the model
/// loaded last.
#[test]
fn a_hang_up_aborts_the_run_of_a_model_loaded_before_the_last() {
    let b = builder("resident-abort", 2, &[]);
    write_model(
        &b.dir().join("models"),
        "alpha",
        &[
            "decode_us_per_token = 20000",
            "answer_tokens_min = 5000",
            "answer_tokens_max = 5000",
        ],
    );
    let d = b.start();
    assert_eq!(chat(&d, "bravo"), "bravo says hi");
    let mut c = d.client();
    c.send_post(
        "/api/chat",
        &json!({"model": "alpha", "messages": [{"role": "user", "content": "Hello"}]}),
    );
    let (status, _) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert!(c.read_chunk().is_some());
    drop(c);
    // 5000 tokens take 100 s; an abort that reaches alpha's handle ends the run at once.
    common::wait_until(Duration::from_secs(30), "alpha's run to be aborted", || {
        d.trace_of("run_end").iter().any(|l| l["reason"] == "abort")
    });
    assert_eq!(destroyed(&d), Vec::<String>::new());
}

/// The Ollama chat of `model` with `content`: its answer's prompt plus generated tokens, what
/// the model's KV cache holds after it.
fn chat_tokens(d: &Daemon, model: &str, content: &str) -> f64 {
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": model, "stream": false,
                "messages": [{"role": "user", "content": content}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let n = v["prompt_eval_count"].as_u64().unwrap() + v["eval_count"].as_u64().unwrap();
    n as f64
}

/// The `rkllmd_kv_cache_tokens` samples, by model.
fn kv_cache_tokens(d: &Daemon) -> HashMap<String, f64> {
    let text = d.client().get("/metrics").text();
    text.lines()
        .filter_map(|l| l.strip_prefix("rkllmd_kv_cache_tokens{model=\""))
        .map(|l| {
            let (model, value) = l.split_once("\"} ").unwrap();
            (model.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn each_resident_model_shows_its_own_kv_cache_until_it_is_unloaded() {
    let d = builder("resident-kv", 2, &[])
        .args(["--chat-template", "qwen2.5"])
        .start();
    let alpha = chat_tokens(
        &d,
        "alpha",
        "Hello, tell me about the mountains in the north.",
    );
    let bravo = chat_tokens(&d, "bravo", "Hi");
    assert!(alpha != bravo, "the test needs two sizes: {alpha}");
    let kv = kv_cache_tokens(&d);
    assert_eq!(kv.len(), 2, "{kv:?}");
    assert_eq!(kv["alpha"], alpha);
    assert_eq!(kv["bravo"], bravo);
    // Charlie takes alpha's place (least recently used): alpha's sample goes with it.
    let charlie = chat_tokens(&d, "charlie", "Good morning");
    assert_eq!(destroyed(&d), ["alpha"]);
    let kv = kv_cache_tokens(&d);
    assert_eq!(kv.len(), 2, "{kv:?}");
    assert_eq!((kv["bravo"], kv["charlie"]), (bravo, charlie));
}
