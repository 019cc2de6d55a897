//! LoRA adapters (issue #14): the files in `<stem>.lora/` beside a model are loaded with it
//! (`rkllm_load_lora`), a request selects one as `MODEL:ADAPTER`, every run names its adapter
//! (`lora` in the simulator's `rkllm_run` trace line), and a change of adapter clears the KV
//! cache first: the simulator marks a run that reuses another adapter's keys and values
//! `stale_lora_kv`, which must never appear.

mod common;

use std::path::{Path, PathBuf};

use common::{write_model, Daemon, DaemonBuilder};
use serde_json::{json, Value};

/// `chat` with adapters `knowledge` and `style`; `other` with adapters `kept` and `gone`.
fn models_dir(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    let model = [
        "prefill_us_per_token = 0",
        "decode_us_per_token = 0",
        "answer_tokens_min = 8",
        "answer_tokens_max = 16",
    ];
    std::fs::create_dir_all(&models).unwrap();
    write_model(&models, "chat", &model);
    write_model(&models, "other", &model);
    for (dir, adapter, weights) in [
        ("chat.lora", "knowledge", "facts"),
        ("chat.lora", "style", "tone"),
        ("other.lora", "kept", "kept"),
        ("other.lora", "gone", "gone"),
    ] {
        let dir = models.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{adapter}.rkllm")), weights).unwrap();
    }
    models
}

fn builder(tag: &str, template: &str) -> (DaemonBuilder, PathBuf) {
    let b = Daemon::builder(tag).no_model();
    let dir = models_dir(b.dir());
    let b = b
        .arg("--models-dir")
        .arg(dir.to_str().unwrap())
        .args(["--chat-template", template]);
    (b, dir)
}

fn chat(d: &Daemon, model: &str, messages: &[Value]) -> (u16, Value) {
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"model": model, "messages": messages}),
    );
    (r.status, r.json())
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer in {v}"))
        .to_owned()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// The adapter each `rkllm_run` named (`None`: none), in order.
fn run_adapters(d: &Daemon) -> Vec<Option<String>> {
    d.trace_of("rkllm_run")
        .iter()
        .map(|l| l["lora"].as_str().map(str::to_owned))
        .collect()
}

fn stale_runs(d: &Daemon) -> Vec<Value> {
    d.trace_of("run_end")
        .into_iter()
        .filter(|l| l["stale_lora_kv"] == json!(true))
        .collect()
}

#[test]
fn a_request_selects_its_adapter_and_each_adapter_answers_its_own_text() {
    let (b, _dir) = builder("lora-select", "qwen2.5");
    let d = b.start();
    let loaded: Vec<(String, f64)> = d
        .trace_of("rkllm_load_lora")
        .iter()
        .map(|l| {
            (
                l["lora_adapter_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                l["scale"].as_f64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        loaded,
        [("knowledge".to_owned(), 1.0), ("style".to_owned(), 1.0)],
        "the default model's adapters load with it"
    );

    let question = [user("Tell me about the river.")];
    let mut answers = Vec::new();
    for model in [
        "chat",
        "chat:knowledge",
        "chat:style",
        "chat:knowledge",
        "chat:latest",
    ] {
        let (status, body) = chat(&d, model, &question);
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["model"], model, "the answer names what was asked for");
        answers.push(content(&body));
    }
    let adapters = run_adapters(&d);
    let expected: Vec<Option<String>> = [
        None,
        Some("knowledge"),
        Some("style"),
        Some("knowledge"),
        None,
    ]
    .into_iter()
    .map(|a| a.map(str::to_owned))
    .collect();
    assert_eq!(adapters, expected, "each run names the request's adapter");
    assert_ne!(answers[0], answers[1], "an adapter changes the answer");
    assert_ne!(answers[1], answers[2], "adapters differ from each other");
    assert_ne!(answers[0], answers[2]);
    assert_eq!(answers[1], answers[3], "the same adapter answers the same");
    assert_eq!(answers[0], answers[4], "MODEL:latest is the model alone");

    // Embeddings run with the adapter too.
    let r = d.client().post_json(
        "/v1/embeddings",
        &json!({"model": "chat:style", "input": "a text to embed"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "chat:style");
    assert_eq!(run_adapters(&d).last(), Some(&Some("style".to_owned())));
    assert!(stale_runs(&d).is_empty(), "{:?}", stale_runs(&d));
}

#[test]
fn adapters_are_listed_and_an_unknown_one_is_a_404_naming_it() {
    let (b, _dir) = builder("lora-list", "qwen2.5");
    let d = b.start();
    let ids: Vec<Value> = d.client().get("/v1/models").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!("chat"),
            json!("chat:knowledge"),
            json!("chat:style"),
            json!("other"),
            json!("other:gone"),
            json!("other:kept"),
        ]
    );
    let tags = d.client().get("/api/tags").json();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "chat:latest",
            "chat:knowledge",
            "chat:style",
            "other:latest",
            "other:gone",
            "other:kept"
        ]
    );
    let r = d.client().get("/v1/models/chat:style");
    assert_eq!(
        (r.status, r.json()["id"].clone()),
        (200, json!("chat:style"))
    );

    let (status, body) = chat(&d, "chat:poetry", &[user("Hello")]);
    assert_eq!(status, 404, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'poetry'") && message.contains("'chat'"),
        "{message}"
    );
    assert!(message.contains("knowledge, style"), "{message}");
    assert_eq!(body["error"]["param"], "model");
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "chat:poetry", "stream": false, "messages": [user("Hello")]}),
    );
    assert_eq!(r.status, 404);
    let message = r.json()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("'poetry'"), "{message}");
    let r = d.client().get("/v1/models/chat:poetry");
    assert_eq!(r.status, 404);
    assert!(run_adapters(&d).is_empty(), "nothing ran");
}

/// One conversation whose turns switch between the model alone and two adapters, sent whole
/// each turn as clients do: every run names its turn's adapter and none reuses keys and values
/// another adapter computed. With `rendered` (rkllmd renders the conversation), a turn on the
/// same adapter as the one before reuses the cache, and a switch prefills it all again.
fn alternating_turns(tag: &str, template: &str, rendered: bool) {
    let (b, _dir) = builder(tag, template);
    let d = b.start();
    let order = [
        "chat",
        "chat:knowledge",
        "chat:knowledge",
        "chat:style",
        "chat",
        "chat",
        "chat:knowledge",
    ];
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    let mut last_prefills = Vec::new();
    for (turn, model) in order.iter().enumerate() {
        messages.push(user(&format!("Question {turn}: and then what happened?")));
        let before = d.trace_of("run_end").len();
        let (status, body) = chat(&d, model, &messages);
        assert_eq!(status, 200, "turn {turn} ({model}): {body}");
        messages.push(json!({"role": "assistant", "content": content(&body)}));
        let ends = d.trace_of("run_end");
        assert!(ends.len() > before, "turn {turn} ran");
        last_prefills.push(ends[ends.len() - 1]["prefill_tokens"].as_u64().unwrap());
        if turn == 1 {
            // An embedding of the model alone between two turns of an adapter leaves that
            // adapter's cache to it.
            let r = d.client().post_json(
                "/v1/embeddings",
                &json!({"model": "chat", "input": "a text to embed"}),
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    assert!(stale_runs(&d).is_empty(), "{:?}", stale_runs(&d));
    let named: Vec<Option<String>> = run_adapters(&d);
    for (turn, model) in order.iter().enumerate() {
        let adapter = model.split_once(':').map(|(_, a)| a.to_owned());
        assert!(
            named.contains(&adapter),
            "turn {turn}: no run named {adapter:?}: {named:?}"
        );
    }
    if !rendered {
        return;
    }
    // Turns 2 and 5 continue the adapter of the turn before: longer prompts, less prefilled.
    // Turns 3 and 6 switch: the whole conversation again.
    for (same, switched) in [(2, 3), (5, 6)] {
        assert!(
            last_prefills[same] < last_prefills[same - 1],
            "turn {same} reuses its adapter's cache: {last_prefills:?}"
        );
        assert!(
            last_prefills[switched] > last_prefills[switched - 1] + 20,
            "turn {switched} switched adapter and prefilled it all: {last_prefills:?}"
        );
    }
}

#[test]
fn alternating_adapters_in_one_conversation_never_reuse_another_adapters_cache() {
    alternating_turns("lora-alternate", "qwen2.5", true);
}

#[test]
fn alternating_adapters_under_the_runtime_template_never_reuse_another_adapters_cache() {
    alternating_turns("lora-alternate-rt", "runtime", false);
}

#[test]
fn an_adapter_that_fails_to_load_fails_its_requests_and_the_rest_serve() {
    let (b, dir) = builder("lora-failing", "qwen2.5");
    let d = b.start();
    // Listed at start, gone when its model loads on demand: rkllm_load_lora cannot read it.
    std::fs::remove_file(dir.join("other.lora").join("gone.rkllm")).unwrap();
    let question = [user("Hello")];

    let (status, body) = chat(&d, "other:gone", &question);
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'gone'") && message.contains("'other'"),
        "{message}"
    );
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "other:gone", "stream": false, "messages": question}),
    );
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("'gone'"));

    for model in ["other", "other:kept", "chat:style"] {
        let (status, body) = chat(&d, model, &question);
        assert_eq!(status, 200, "{model}: {body}");
        assert!(!content(&body).is_empty());
    }
    assert!(
        !run_adapters(&d).contains(&Some("gone".to_owned())),
        "no run named the adapter that failed"
    );
    assert!(
        d.stderr().contains("'gone'"),
        "the failed load is logged:\n{}",
        d.stderr()
    );
}

/// A model's config section names adapters too (`lora = NAME PATH [SCALE]`, the path relative
/// to the model's directory): loaded with the model at their scale, before the ones found
/// beside it, and selected as `MODEL:NAME` like them.
#[test]
fn a_config_section_names_an_adapter_with_its_scale() {
    let (b, dir) = builder("lora-config", "qwen2.5");
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    std::fs::write(dir.join("shared/legal.rkllm"), "statutes").unwrap();
    let conf = b.dir().join("rkllmd.conf");
    std::fs::write(&conf, "[model chat]\nlora = legal shared/legal.rkllm 0.5\n").unwrap();
    let d = b.arg("--config").arg(conf.to_str().unwrap()).start();
    let loaded: Vec<(String, f64)> = d
        .trace_of("rkllm_load_lora")
        .iter()
        .map(|l| {
            let name = l["lora_adapter_name"].as_str().unwrap_or_default();
            (name.to_owned(), l["scale"].as_f64().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        loaded,
        [
            ("legal".to_owned(), 0.5),
            ("knowledge".to_owned(), 1.0),
            ("style".to_owned(), 1.0)
        ]
    );
    let question = [user("Tell me about the river.")];
    let (status, legal) = chat(&d, "chat:legal", &question);
    assert_eq!(status, 200, "{legal}");
    let (_, base) = chat(&d, "chat", &question);
    assert_ne!(
        content(&legal),
        content(&base),
        "the adapter changes the text"
    );
    assert_eq!(
        run_adapters(&d),
        [Some("legal".to_owned()), None],
        "each run names its adapter"
    );
}

/// A `lora` key that names no file, or says too little, ends the start with the file's line.
#[test]
fn a_bad_lora_key_ends_the_start_with_its_line() {
    for (value, says) in [
        ("legal missing.rkllm", "an adapter file that exists"),
        ("legal", "NAME PATH [SCALE]"),
        ("latest chat.lora/style.rkllm", "NAME PATH [SCALE]"),
        ("legal chat.lora/style.rkllm 9", "NAME PATH [SCALE]"),
    ] {
        let dir = common::TempDir::new("lora-badkey");
        let models = models_dir(dir.path());
        let conf = dir.path().join("rkllmd.conf");
        std::fs::write(
            &conf,
            format!("queue-size = 4\n[model chat]\nlora = {value}\n"),
        )
        .unwrap();
        let (code, err) = common::models::start_refused(dir.path(), &conf, &models);
        assert_eq!(code, Some(2), "{value}: {err}");
        assert!(
            err.contains("line 3") && err.contains(says),
            "{value}: {err}"
        );
    }
}
