//! Shared set-up for the tests of several models (`--models-dir`): a directory of simulator
//! models that say their name, and reading which model answered, loaded or unloaded from the
//! answers, the trace and `/metrics`.

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

/// A daemon serving `models_dir`.
pub fn builder(tag: &str) -> DaemonBuilder {
    let b = Daemon::builder(tag).no_model();
    let dir = models_dir(b.dir());
    b.arg("--models-dir").arg(dir.to_str().unwrap())
}

/// A copy of a shipped simulator model (`vendor/rkllm-sim/models/`) named `name` in `dir`,
/// scripted to answer `NAME says hi`, with `extra` lines (a `key = value` one in place of the
/// shipped file's line of that key).
pub fn copy_model(dir: &Path, shipped: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let key = |line: &str| line.split_once('=').map(|(k, _)| k.trim().to_owned());
    let replaced: Vec<String> = extra.iter().filter_map(|l| key(l)).collect();
    let shipped = std::fs::read_to_string(shipped).expect("read the shipped model");
    let mut text = String::new();
    for line in shipped.lines() {
        let comment = line.trim_start().starts_with('#');
        if comment || !key(line).is_some_and(|k| replaced.contains(&k) || k == "answer") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!("answer = {name} says hi\n"));
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    let path = dir.join(format!("{name}.rkllm"));
    std::fs::write(&path, text).expect("write model file");
    path
}

/// A non-streamed Ollama chat with `model`: the status and the body.
pub fn ollama_chat(d: &Daemon, model: &str) -> (u16, Value) {
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": model, "stream": false,
                "messages": [{"role": "user", "content": "Hello"}]}),
    );
    (r.status, r.json())
}

/// The text of an Ollama chat answer.
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

/// Starts the daemon with the config file `conf` on the models in `models`, for a start that
/// must be refused: its exit code and its stderr. A daemon that starts instead is killed after
/// 10 s and reported as no exit code, so the test fails instead of hanging.
pub fn start_refused(dir: &Path, conf: &Path, models: &Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(super::daemon_bin())
        .arg("--config")
        .arg(conf)
        .arg("--models-dir")
        .arg(models)
        .arg("--socket")
        .arg(dir.join("refused.sock"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rkllmd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for rkllmd") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut err).expect("read rkllmd's stderr");
    }
    (code, err)
}
