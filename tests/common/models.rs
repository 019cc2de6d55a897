//! Several models on one daemon: the directory of simulator models `tests/models.rs` and
//! `tests/models_reload.rs` start with, and reading which model answered and what loaded.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{write_model, Daemon, DaemonBuilder};

/// A directory of three models: `alpha` and `bravo` answer their name, `broken` fails to load;
/// and a file that is not a model.
pub fn models_dir(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    write_model(
        &models,
        "alpha",
        &["answer = alpha says hi", "load_ms = 20"],
    );
    write_model(
        &models,
        "bravo",
        &[
            "answer = bravo says hi",
            "load_ms = 60",
            "decode_us_per_token = 2000",
        ],
    );
    write_model(&models, "broken", &["fail_init = 1"]);
    std::fs::write(models.join("README.txt"), "not a model").unwrap();
    models
}

pub fn builder(tag: &str) -> DaemonBuilder {
    let b = Daemon::builder(tag).no_model();
    let dir = models_dir(b.dir());
    b.arg("--models-dir").arg(dir.to_str().unwrap())
}

pub fn ollama_chat(d: &Daemon, model: &str) -> (u16, Value) {
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": model, "stream": false,
                "messages": [{"role": "user", "content": "Hello"}]}),
    );
    (r.status, r.json())
}

pub fn answer(v: &Value) -> String {
    v["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The model files `rkllm_init` was called with, in order.
pub fn inits(d: &Daemon) -> Vec<String> {
    d.trace_of("rkllm_init")
        .iter()
        .map(|l| {
            let path = l["model_path"].as_str().unwrap_or_default();
            Path::new(path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// A labelled sample of `/metrics`.
pub fn model_metric(d: &Daemon, name: &str, model: &str) -> f64 {
    let text = d.client().get("/metrics").text();
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}
