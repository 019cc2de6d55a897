//! What Ollama clients ask about models: `/`, `/api/version`, `/api/tags`, `/api/ps` (and, in
//! `show.rs`, `/api/show`).
//! Every model of the catalog is listed from its file; `/api/ps` shows the one on the NPU.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::clock::rfc3339;
use crate::api::ctx::Ctx;
use crate::api::error::{ApiError, Flavor};
use crate::api::full_response::FullResponse;
use crate::engine::State;

/// `GET /` and `HEAD /`: tools probe an Ollama server there and expect its exact answer.
pub fn root() -> FullResponse {
    FullResponse {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        body: b"Ollama is running".to_vec(),
    }
}

/// `/api/pull`, `/api/push`, `/api/create`, `/api/copy`, `/api/delete`: rkllmd has no model
/// store to manage; a model is a file the board's owner puts in the models directory.
pub fn manage(path: &str) -> ApiError {
    let action = path.strip_prefix("/api/").unwrap_or(path);
    let mut e = ApiError::bad_request(
        Flavor::Ollama,
        format!(
            "rkllmd cannot {action} models: a model is an .rkllm file in the models directory \
             (--models-dir); add, copy or remove files there and restart rkllmd"
        ),
        None,
    );
    e.status = 501;
    e
}

pub fn version() -> FullResponse {
    FullResponse::json(200, &json!({"version": env!("CARGO_PKG_VERSION")}))
}

/// Every model on disk, loaded or not (and while the first loads too): what `/api/tags` reports.
pub fn tags(ctx: &Ctx<'_>) -> FullResponse {
    let models: Vec<Value> = ctx
        .catalog
        .selections()
        .map(|sel| {
            let ctx = ctx.for_selection(sel);
            card(&ctx, &ModelFile::stat(&ctx))
        })
        .collect();
    FullResponse::json(200, &json!({"models": models}))
}

/// The models on the NPU, most recently used first; none until the first has loaded (or
/// after it failed to).
pub fn ps(ctx: &Ctx<'_>) -> FullResponse {
    if *ctx.state != State::Ready {
        return FullResponse::json(200, &json!({"models": []}));
    }
    let models: Vec<Value> = ctx
        .resident
        .iter()
        .map(|resident| {
            let ctx = &ctx.for_model(resident.model);
            let file = ModelFile::stat(ctx);
            let mut model = card(ctx, &file);
            // When it unloads if it stays idle (keep_alive); far ahead when it never does.
            let expires = resident.expires.map_or_else(
                || NEVER.to_owned(),
                |at| rfc3339(SystemTime::now() + at.saturating_duration_since(ctx.now)),
            );
            model["expires_at"] = json!(expires);
            // The NPU works from system memory; there is no separate VRAM to report.
            model["size_vram"] = json!(0);
            model["context_length"] = json!(ctx.max_context_len);
            model
        })
        .collect();
    FullResponse::json(200, &json!({"models": models}))
}

/// A time far enough ahead to read as "never" in clients that show when a model unloads.
const NEVER: &str = "2999-12-31T23:59:59Z";

pub(super) struct ModelFile {
    pub(super) size: u64,
    pub(super) modified: SystemTime,
}

impl ModelFile {
    /// The file's size and mtime; if it has gone since it was loaded, size 0 and the start time.
    pub(super) fn stat(ctx: &Ctx<'_>) -> ModelFile {
        let meta = std::fs::metadata(ctx.model_path).ok();
        let started = SystemTime::now()
            .checked_sub(ctx.started.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        ModelFile {
            size: meta.as_ref().map_or(0, std::fs::Metadata::len),
            modified: meta.and_then(|m| m.modified().ok()).unwrap_or(started),
        }
    }
}

/// A model alone is `NAME:latest`; with an adapter, `NAME:ADAPTER` (its file and details are the
/// model's).
fn card(ctx: &Ctx<'_>, file: &ModelFile) -> Value {
    let tag = ctx.adapter_name().unwrap_or("latest");
    let name = format!("{}:{tag}", ctx.model_name);
    json!({
        "name": name,
        "model": name,
        "modified_at": rfc3339(file.modified),
        "size": file.size,
        "digest": digest(if ctx.adapter.is_some() { &name } else { ctx.model_name }, file),
        "details": details(ctx.model_path, ctx.architecture),
    })
}

/// Not a content hash (hashing a multi-GB model on the event loop is out of the question): a
/// 64-bit FNV-1a of the name, size and mtime, so it is stable while the file is unchanged and
/// changes when the file is replaced, which is what clients use the digest for.
fn digest(name: &str, file: &ModelFile) -> String {
    let mtime = file
        .modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = name
        .bytes()
        .chain(file.size.to_le_bytes())
        .chain(mtime.to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The family is the `general.architecture` the file declares (`arch`, read once at start by
/// `chat::architecture`), as Ollama takes it from a GGUF header. The RKLLM toolkit's usual export
/// names carry the size and quantization (`Qwen2.5-1.5B-Instruct_W8A8_RK3588.rkllm`), and the
/// family when the file declares none: they are taken from there when present, and left empty
/// otherwise rather than guessed.
pub(super) fn details(path: &Path, arch: Option<&str>) -> Value {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let words: Vec<&str> = stem
        .split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .collect();
    let find = |pred: fn(&str) -> bool| {
        words
            .iter()
            .find(|w| pred(w))
            .map_or(String::new(), |w| w.to_ascii_uppercase())
    };
    let parameter_size = find(is_parameter_size);
    let quantization_level = find(is_quantization);
    // The first word names the family only in a name that looks like an export name.
    let family = match (arch, words.first()) {
        (Some(arch), _) => arch.to_owned(),
        (None, Some(w)) if !parameter_size.is_empty() => w.to_ascii_lowercase(),
        _ => String::new(),
    };
    let families = if family.is_empty() {
        Value::Null
    } else {
        json!([family])
    };
    json!({
        "parent_model": "",
        "format": "rkllm",
        "family": family,
        "families": families,
        "parameter_size": parameter_size,
        "quantization_level": quantization_level,
    })
}

/// `1.5B`, `7b`, `500M`.
fn is_parameter_size(w: &str) -> bool {
    let Some(num) = w.strip_suffix(['B', 'b', 'M', 'm']) else {
        return false;
    };
    num.starts_with(|c: char| c.is_ascii_digit())
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
        && num.matches('.').count() <= 1
}

/// `W8A8`, `w4a16`, `FP16`.
fn is_quantization(w: &str) -> bool {
    let w = w.to_ascii_lowercase();
    if w == "fp16" || w == "f16" {
        return true;
    }
    let Some(rest) = w.strip_prefix('w') else {
        return false;
    };
    match rest.split_once('a') {
        Some((weights, acts)) => {
            !weights.is_empty()
                && !acts.is_empty()
                && weights
                    .chars()
                    .chain(acts.chars())
                    .all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_come_from_an_export_name() {
        let d = details(
            Path::new("/m/Qwen2.5-1.5B-Instruct_W8A8_RK3588.rkllm"),
            None,
        );
        assert_eq!(
            d,
            json!({
                "parent_model": "", "format": "rkllm", "family": "qwen2.5", "families": ["qwen2.5"],
                "parameter_size": "1.5B", "quantization_level": "W8A8",
            })
        );
        let d = details(Path::new("deepseek-r1-7b_w4a16_g128.rkllm"), None);
        assert_eq!(
            (&d["parameter_size"], &d["quantization_level"]),
            (&json!("7B"), &json!("W4A16"))
        );
    }

    #[test]
    fn details_of_a_plain_name_are_left_empty() {
        let d = details(Path::new("vendor/rkllm-sim/models/fast.rkllm"), None);
        assert_eq!(
            d,
            json!({
                "parent_model": "", "format": "rkllm", "family": "", "families": null,
                "parameter_size": "", "quantization_level": "",
            })
        );
        let d = details(
            Path::new("vendor/rkllm-sim/models/demo.rkllm"),
            Some("qwen2"),
        );
        assert_eq!(
            (&d["family"], &d["families"]),
            (&json!("qwen2"), &json!(["qwen2"]))
        );
        assert!(!is_parameter_size("RK3588"));
        assert!(!is_parameter_size("B"));
        assert!(!is_parameter_size("1.2.3B"));
        assert!(!is_quantization("wa8"));
        assert!(!is_quantization("warm"));
    }

    #[test]
    fn the_digest_is_stable_and_follows_the_file() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = ModelFile {
            size: 10,
            modified: t,
        };
        let d = digest("m", &a);
        assert_eq!(d.len(), 16);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            d,
            digest(
                "m",
                &ModelFile {
                    size: 10,
                    modified: t
                }
            )
        );
        assert_ne!(
            d,
            digest(
                "m",
                &ModelFile {
                    size: 11,
                    modified: t
                }
            )
        );
        assert_ne!(
            d,
            digest(
                "m",
                &ModelFile {
                    size: 10,
                    modified: t + Duration::from_nanos(1)
                }
            )
        );
        assert_ne!(d, digest("n", &a));
    }
}
