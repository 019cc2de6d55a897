//! Per-model settings (`[model NAME]` sections of the config file), aliases, and reloading
//! the configuration and the models directory on SIGHUP. What a model was loaded with is read
//! from the simulator's trace (`rkllm_init`'s parameters).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::models::{answer, builder, ollama_chat};
use common::{write_model, Daemon};
use serde_json::{json, Value};

/// `rkllm_init`'s trace line for each load of the model file `stem`.
fn inits_of(d: &Daemon, stem: &str) -> Vec<Value> {
    d.trace_of("rkllm_init")
        .into_iter()
        .filter(|l| {
            let path = l["model_path"].as_str().unwrap_or_default();
            Path::new(path).file_stem().and_then(|s| s.to_str()) == Some(stem)
        })
        .collect()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let conf = dir.join("rkllmd.conf");
    std::fs::write(&conf, text).unwrap();
    conf
}

const SECTIONS: &str = "max-context-len = 1024\ntemperature = 0.25\n\
    [model bravo]\nmax-context-len = 2048\nmax-new-tokens = 77\ntop-k = 5\n\
    base-domain-id = 2\nalias = small\n";

#[test]
fn each_model_is_loaded_with_its_own_settings() {
    let b = builder("reload-settings");
    let conf = write_config(b.dir(), SECTIONS);
    let d = b.arg("--config").arg(conf.to_str().unwrap()).start();
    let (status, body) = ollama_chat(&d, "bravo");
    assert_eq!(status, 200, "{body}");

    let alpha = &inits_of(&d, "alpha")[0];
    assert_eq!(alpha["max_context_len"], 1024, "{alpha}");
    assert_eq!(alpha["base_domain_id"], 0, "{alpha}");
    assert_eq!(alpha["sampling"]["top_k"], 1, "{alpha}");
    let bravo = &inits_of(&d, "bravo")[0];
    assert_eq!(bravo["max_context_len"], 2048, "{bravo}");
    assert_eq!(bravo["max_new_tokens"], 77, "{bravo}");
    assert_eq!(bravo["base_domain_id"], 2, "{bravo}");
    assert_eq!(bravo["sampling"]["top_k"], 5, "{bravo}");
    assert_eq!(bravo["sampling"]["temperature"], 0.25, "{bravo}");

    // What handlers tell clients is the model's own too.
    let show = d
        .client()
        .post_json("/api/show", &serde_json::json!({"model": "small"}))
        .json();
    let info = show["model_info"].to_string();
    assert!(info.contains("2048"), "{show}");
}

#[test]
fn an_alias_answers_as_its_model_and_only_canonical_names_are_listed() {
    let b = builder("reload-alias");
    let conf = write_config(b.dir(), SECTIONS);
    let d = b.arg("--config").arg(conf.to_str().unwrap()).start();
    for name in ["small", "small:latest"] {
        let (status, body) = ollama_chat(&d, name);
        assert_eq!(status, 200, "{body}");
        assert_eq!(answer(&body), "bravo says hi", "{name}");
    }
    let tags = d.client().get("/api/tags").json();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("small")), "{names:?}");
    let model = d.client().get("/v1/models/small").json();
    assert_eq!(model["id"], "bravo", "{model}");
}

#[test]
fn a_section_for_a_model_not_served_ends_the_start_with_its_line() {
    let dir = common::TempDir::new("reload-badsection");
    let models = common::models::models_dir(dir.path());
    let conf = write_config(dir.path(), "queue-size = 4\n\n[model charlie]\ntop-k = 3\n");
    let (code, err) = common::models::start_refused(dir.path(), &conf, &models);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 3: [model charlie]: no model of that name is served"),
        "{err}"
    );
}

/// Sends SIGHUP and waits until the daemon has logged its `n`th reload outcome (`what`).
fn hup(d: &Daemon, what: &str, n: usize) {
    d.signal(nix::sys::signal::Signal::SIGHUP);
    common::wait_until(Duration::from_secs(20), what, || {
        d.stderr().matches(what).count() >= n
    });
}

fn listed(d: &Daemon) -> Vec<String> {
    d.client().get("/api/tags").json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

const RELOADED: &str = "SIGHUP: configuration reloaded";

#[test]
fn sighup_adds_and_removes_models_without_breaking_a_running_stream() {
    let b = builder("reload-stream");
    let models = b.dir().join("models");
    write_model(
        &models,
        "slow",
        &[
            "answer_tokens_min = 200",
            "answer_tokens_max = 200",
            "decode_us_per_token = 10000",
        ],
    );
    let d = b.start();
    let body = json!({"model": "slow", "stream": true,
                      "messages": [{"role": "user", "content": "Tell me a story"}]});
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &body);
    assert_eq!(c.read_head().unwrap().0, 200);
    let mut streamed = c.read_chunk().expect("a first event");

    write_model(&models, "delta", &["answer = delta says hi"]);
    std::fs::remove_file(models.join("alpha.rkllm")).unwrap();
    hup(&d, RELOADED, 1);
    let names = listed(&d);
    assert!(names.iter().any(|n| n.starts_with("delta")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("alpha")), "{names:?}");

    while let Some(chunk) = c.read_chunk() {
        streamed.extend_from_slice(&chunk);
    }
    let events = common::client::sse_data(&streamed);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    // The simulator's answer is a function of the prompt: the whole answer came through.
    let whole = d
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "slow", "messages": body["messages"]}),
        )
        .json();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );

    let (status, added) = ollama_chat(&d, "delta");
    assert_eq!((status, answer(&added).as_str()), (200, "delta says hi"));
    let (status, removed) = ollama_chat(&d, "alpha");
    assert_eq!(status, 404, "{removed}");
    assert_eq!(removed["error"], "model 'alpha' not found");
    // Every model's id stayed: bravo still answers as bravo.
    let (_, bravo) = ollama_chat(&d, "bravo");
    assert_eq!(answer(&bravo), "bravo says hi");
}

#[test]
fn an_invalid_config_on_sighup_is_logged_and_the_old_one_kept() {
    let b = builder("reload-invalid");
    let conf = write_config(b.dir(), SECTIONS);
    let d = b.arg("--config").arg(conf.to_str().unwrap()).start();
    std::fs::write(&conf, format!("{SECTIONS}alias = alpha\n")).unwrap();
    hup(&d, "SIGHUP: the configuration is kept as it was", 1);
    assert!(
        d.stderr()
            .contains("alias 'alpha' of model 'bravo' is already a name of model 'alpha'"),
        "{}",
        d.stderr()
    );
    let (status, body) = ollama_chat(&d, "small");
    assert_eq!((status, answer(&body).as_str()), (200, "bravo says hi"));

    // A valid one again is taken: the alias moved.
    std::fs::write(&conf, SECTIONS.replace("alias = small", "alias = tiny")).unwrap();
    hup(&d, RELOADED, 1);
    assert_eq!(ollama_chat(&d, "tiny").0, 200);
    assert_eq!(ollama_chat(&d, "small").0, 404);
}

#[test]
fn a_resident_model_is_reloaded_only_when_its_settings_changed() {
    let b = builder("reload-changed");
    let conf = write_config(b.dir(), "[model alpha]\nmax-context-len = 1024\n");
    let d = b.arg("--config").arg(conf.to_str().unwrap()).start();
    assert_eq!(ollama_chat(&d, "alpha").0, 200);
    // Nothing changed: alpha stays loaded.
    hup(&d, RELOADED, 1);
    assert_eq!(ollama_chat(&d, "alpha").0, 200);
    assert_eq!(inits_of(&d, "alpha").len(), 1, "{}", d.stderr());

    std::fs::write(&conf, "[model alpha]\nmax-context-len = 2048\n").unwrap();
    hup(&d, RELOADED, 2);
    assert_eq!(ollama_chat(&d, "alpha").0, 200);
    let inits = inits_of(&d, "alpha");
    assert_eq!(inits.len(), 2, "{}", d.stderr());
    assert_eq!(inits[1]["max_context_len"], 2048, "{}", inits[1]);
}
