//! The system root that `rkllmd check` and the board metrics read: `/` on the board, a
//! directory tree in tests or when checking an image.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: &Path) -> Root {
        Root {
            dir: dir.to_owned(),
        }
    }

    /// Whether this is the running system's own root.
    pub fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// `abs` (a path on the target system) inside the root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.dir.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    pub fn read(&self, abs: impl AsRef<Path>) -> io::Result<String> {
        std::fs::read_to_string(self.path(abs))
    }

    /// The names in a directory of the target system, sorted; empty when it cannot be read.
    pub fn list(&self, abs: impl AsRef<Path>) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_land_inside_the_root() {
        let root = Root::new(Path::new("/tmp/fake"));
        assert_eq!(
            root.path("/proc/cpuinfo"),
            Path::new("/tmp/fake/proc/cpuinfo")
        );
        assert_eq!(root.path("etc/x"), Path::new("/tmp/fake/etc/x"));
        assert!(!root.is_host());
        assert!(Root::new(Path::new("/")).is_host());
    }
}
