//! `models-dir`: the models a directory holds, read once at start.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The extension a model file has.
const EXTENSION: &str = "rkllm";

/// Every regular `*.rkllm` file in `dir` (not below it), as (file stem, path), by name: the
/// order `/api/tags` lists them in and the default is chosen by. An empty directory is an
/// error: a daemon with nothing to serve is a mistake better reported at start.
pub(super) fn scan(dir: &Path) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let unreadable = |source| ConfigError::ModelsDirUnreadable {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        // Followed through symlinks, as the runtime would open them.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        found.push((stem.to_owned(), path));
    }
    if found.is_empty() {
        return Err(ConfigError::NoModelsIn {
            path: dir.to_owned(),
        });
    }
    found.sort();
    Ok(found)
}

/// The catalog: the default model first, then the directory's others (a file or a name the
/// default already has is not listed twice).
pub(super) fn catalog(
    default: (String, PathBuf),
    listed: Vec<(String, PathBuf)>,
) -> Vec<(String, PathBuf)> {
    let mut all = vec![default];
    for (name, path) in listed {
        if all.iter().all(|(n, p)| *n != name && !same_file(p, &path)) {
            all.push((name, path));
        }
    }
    all
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_lists_its_model_files_by_name() {
        let dir = std::env::temp_dir().join(format!("rkllmd-models-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.rkllm")).unwrap();
        for f in ["b.rkllm", "a.rkllm", "notes.txt", "c.rkllm.part"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let found = scan(&dir).unwrap();
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(found[1].1, dir.join("b.rkllm"));

        let all = catalog(("b".into(), dir.join("b.rkllm")), found.clone());
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        let all = catalog(("a".into(), PathBuf::from("/elsewhere/a.rkllm")), found);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);

        std::fs::remove_dir_all(dir.join("sub.rkllm")).unwrap();
        for f in ["b.rkllm", "a.rkllm"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        assert!(matches!(scan(&dir), Err(ConfigError::NoModelsIn { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            scan(&dir),
            Err(ConfigError::ModelsDirUnreadable { .. })
        ));
    }
}
