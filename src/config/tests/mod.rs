//! Tests of `parse`: the command line and config file together, against real files.

mod flags;
mod model_sections;
mod sources;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{parse, Command, Config, Env};

/// A scratch directory holding a model file; removed on drop.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/rkllmd-cfgtest-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("qwen2.5-1.5b.rkllm"), b"model").unwrap();
        Scratch(dir)
    }
    pub(super) fn model(&self) -> String {
        self.path("qwen2.5-1.5b.rkllm")
    }
    pub(super) fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
    pub(super) fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.0.join(name), text).unwrap();
        self.path(name)
    }
    /// An environment as root whose default config file does not exist.
    pub(super) fn env(&self) -> Env {
        Env {
            euid: 0,
            xdg_runtime_dir: None,
            default_config: self.0.join("absent.conf"),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The arguments after the program name, as `parse` takes them.
pub(super) fn argv(args: &[&str]) -> Vec<String> {
    args.iter().copied().map(String::from).collect()
}

pub(super) fn run(args: &[&str], env: &Env) -> Config {
    match parse(&argv(args), env) {
        Ok(Command::Run(config)) => config,
        other => panic!("expected Run, got {other:?}"),
    }
}

pub(super) fn fail(args: &[&str], env: &Env) -> String {
    match parse(&argv(args), env) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}
