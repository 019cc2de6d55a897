//! Per-model settings (`[model NAME]` sections of the config file), aliases, and reloading
//! the configuration and the models directory on SIGHUP. What a model was loaded with is read
//! from the simulator's trace (`rkllm_init`'s parameters).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::models::{answer, builder, ollama_chat};
use common::Daemon;
use serde_json::Value;

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
    let out = Command::new(common::daemon_bin())
        .args(["--config", conf.to_str().unwrap()])
        .args(["--models-dir", models.to_str().unwrap()])
        .args(["--socket", dir.path().join("s.sock").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3: [model charlie]: no model of that name is served"),
        "{err}"
    );
}
