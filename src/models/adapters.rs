//! A model's LoRA adapters: the files in the directory beside it named after it
//! (`<models-dir>/<stem>.lora/<adapter>.rkllm` for `<stem>.rkllm`), and the names requests
//! select them by, `MODEL:ADAPTER` (Ollama's tag syntax; `MODEL:latest` stays the model alone).

use std::path::{Path, PathBuf};

pub use crate::engine::{AdapterId, LoraAdapter as Adapter};

/// The extension of adapter files, as the RKLLM toolkit exports them.
const EXTENSION: &str = "rkllm";

/// The tag that names the model alone, never an adapter.
pub const LATEST: &str = "latest";

/// The scale an adapter found as a file applies at (upstream's demo uses 1.0).
const DEFAULT_SCALE: f32 = 1.0;

/// The directory a model's adapters are looked for in: `qwen.rkllm` → `qwen.lora`.
pub fn dir_of(model: &Path) -> PathBuf {
    model.with_extension("lora")
}

/// The adapters beside `model`, by name; none when it has no adapter directory. A file that
/// cannot be an adapter's (named `latest`, which selects the model alone) is skipped with a
/// warning, as is a directory that cannot be read: the model serves without them.
pub fn beside(model: &Path) -> Vec<Adapter> {
    let dir = dir_of(model);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::warn!(
                "cannot read the LoRA adapters in {}: {e}; the model serves without them",
                dir.display()
            );
            return Vec::new();
        }
    };
    let mut found: Vec<Adapter> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(EXTENSION))
        // Followed through symlinks, as the runtime would open them.
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            if name == LATEST {
                log::warn!(
                    "{}: an adapter cannot be named '{LATEST}' (MODEL:{LATEST} is the model \
                     alone); skipped",
                    path.display()
                );
                return None;
            }
            Some(Adapter {
                name,
                path,
                scale: DEFAULT_SCALE,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// A model's adapters: the ones its config section names (`lora`), then those found beside
/// its file (`beside`) under a name the section does not already use.
pub fn configured_then_beside(configured: &[Adapter], model: &Path) -> Vec<Adapter> {
    let mut all = configured.to_vec();
    for found in beside(model) {
        if !all.iter().any(|a| a.name == found.name) {
            all.push(found);
        }
    }
    all
}

/// The adapter `tag` names among `adapters`: `None` for the model alone (no tag or `latest`),
/// `Some(None)` for a tag that is no adapter of it.
pub fn by_tag(adapters: &[Adapter], tag: Option<&str>) -> Option<Option<AdapterId>> {
    match tag {
        None | Some(LATEST) => Some(None),
        Some(tag) => adapters.iter().position(|a| a.name == tag).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_are_the_rkllm_files_of_the_directory_named_after_the_model() {
        let dir = std::env::temp_dir().join(format!("rkllmd-adapters-{}", std::process::id()));
        let model = dir.join("qwen.rkllm");
        assert_eq!(dir_of(&model), dir.join("qwen.lora"));
        assert!(beside(&model).is_empty(), "no directory: no adapters");
        let lora = dir.join("qwen.lora");
        std::fs::create_dir_all(lora.join("sub.rkllm")).unwrap();
        for f in [
            "style.rkllm",
            "knowledge.rkllm",
            "latest.rkllm",
            "notes.txt",
        ] {
            std::fs::write(lora.join(f), b"weights").unwrap();
        }
        let found = beside(&model);
        let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["knowledge", "style"]);
        assert_eq!(found[1].path, lora.join("style.rkllm"));
        assert!((found[1].scale - 1.0).abs() < f32::EPSILON);

        assert_eq!(by_tag(&found, None), Some(None));
        assert_eq!(by_tag(&found, Some("latest")), Some(None));
        assert_eq!(by_tag(&found, Some("style")), Some(Some(1)));
        assert_eq!(by_tag(&found, Some("other")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
