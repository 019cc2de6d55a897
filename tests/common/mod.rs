//! Shared helpers for the integration tests: a real `rkllmd` process on a real socket, with the
//! simulator underneath and its trace file, and a small HTTP/1.1 client.
#![allow(dead_code)]

pub mod board;
pub mod client;
pub mod images;
pub mod models;
pub mod tool_catalog;
pub mod turns;

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use client::Client;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rkllmd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The daemon binary the tests start: `RKLLMD_TEST_BIN` when set (board/cross-test.sh points it
/// at a qemu-user wrapper around the aarch64 build), otherwise the one cargo built for this host.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("RKLLMD_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_rkllmd")),
        PathBuf::from,
    )
}

pub fn fast_model() -> PathBuf {
    repo_path("vendor/rkllm-sim/models/fast.rkllm")
}

pub fn demo_model() -> PathBuf {
    repo_path("vendor/rkllm-sim/models/demo.rkllm")
}

/// Writes a simulator model file into `dir` with the given extra `key = value` lines.
pub fn write_model(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(format!("{name}.rkllm"));
    let mut text = String::from("rkllm-sim 1\nname = test\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(&path, text).expect("write model file");
    path
}

pub struct Daemon {
    pub child: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub trace: PathBuf,
    pub stderr_path: PathBuf,
    ready: Option<OwnedFd>,
}

pub struct DaemonBuilder {
    model: PathBuf,
    args: Vec<String>,
    dir: TempDir,
    wait_ready: bool,
    socket: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl DaemonBuilder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, items: I) -> Self {
        self.args.extend(items.into_iter().map(Into::into));
        self
    }

    pub fn model(mut self, model: PathBuf) -> Self {
        self.model = model;
        self
    }

    /// No `--model` (for `--models-dir`).
    pub fn no_model(mut self) -> Self {
        self.model = PathBuf::new();
        self
    }

    /// Don't wait for readiness (for daemons expected to fail or to load slowly).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts on an existing socket path (e.g. another test daemon's).
    pub fn start_at(mut self, socket: &Path) -> Daemon {
        self.socket = Some(socket.to_owned());
        self.start()
    }

    pub fn start_with_env(mut self, key: &str, value: &str) -> Daemon {
        self.env.push((key.to_owned(), value.to_owned()));
        self.start()
    }

    pub fn start(self) -> Daemon {
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| self.dir.path().join("rkllmd.sock"));
        let trace = self.dir.path().join("trace.jsonl");
        let stderr_path = self.dir.path().join("stderr.log");
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let write_fd = write_end.as_raw_fd();
        let mut cmd = Command::new(daemon_bin());
        if !self.model.as_os_str().is_empty() {
            cmd.arg("--model").arg(&self.model);
        }
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--notify-fd", "3"])
            .args(&self.args)
            .env("RKLLM_SIM_TRACE", &trace)
            .env(
                "RUST_LOG",
                std::env::var("RKLLMD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("NOTIFY_SOCKET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr_path).expect("stderr file"));
        // SAFETY: between fork and exec we only call dup2, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn rkllmd");
        drop(write_end);
        let mut d = Daemon {
            child,
            dir: self.dir,
            socket,
            trace,
            stderr_path,
            ready: Some(read_end),
        };
        if self.wait_ready {
            d.wait_ready(Duration::from_secs(20));
        }
        d
    }
}

impl Daemon {
    pub fn builder(tag: &str) -> DaemonBuilder {
        DaemonBuilder {
            model: fast_model(),
            args: Vec::new(),
            dir: TempDir::new(tag),
            wait_ready: true,
            socket: None,
            env: Vec::new(),
        }
    }

    pub fn start(tag: &str) -> Daemon {
        Daemon::builder(tag).start()
    }

    /// Blocks until the daemon writes its readiness newline (or panics with its stderr).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let fd = self.ready.take().expect("readiness pipe already used");
        let raw = fd.as_raw_fd();
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd_ref(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let n =
            nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)).expect("poll readiness");
        assert!(
            n == 1,
            "rkllmd not ready within {timeout:?}; stderr:\n{}",
            self.stderr()
        );
        // SAFETY: `raw` is the pipe's read end, owned by `fd`, which we hand over to the File.
        let mut f = unsafe { fs::File::from_raw_fd(raw) };
        std::mem::forget(fd);
        let mut buf = [0u8; 1];
        let got = f.read(&mut buf).expect("read readiness");
        assert_eq!(
            &buf[..got],
            b"\n",
            "no readiness newline; stderr:\n{}",
            self.stderr()
        );
    }

    pub fn client(&self) -> Client {
        Client::unix(&self.socket)
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("send signal");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rkllmd did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The simulator's trace, one JSON value per line.
    pub fn trace(&self) -> Vec<serde_json::Value> {
        read_trace(&self.trace)
    }

    /// Trace lines of one function.
    pub fn trace_of(&self, function: &str) -> Vec<serde_json::Value> {
        self.trace()
            .into_iter()
            .filter(|v| v["fn"] == function)
            .collect()
    }

    /// One unlabelled value of `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.client().get("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Resident set size in KiB (`VmRSS`), 0 once the process is gone.
    pub fn rss_kib(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, Iterator::count)
    }
}

/// Only whole lines: the simulator may be writing one meanwhile (a background re-seat's run, say),
/// and a read can see part of a write in progress; a line is whole once its newline is written.
pub fn read_trace(path: &Path) -> Vec<serde_json::Value> {
    let bytes = fs::read(path).unwrap_or_default();
    let end = bytes.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let text = String::from_utf8_lossy(&bytes[..end]);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad trace line {l:?}: {e}")))
        .collect()
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// One function tool (`get_weather(city)`), as OpenAI and Ollama requests carry it.
pub fn weather_tools() -> serde_json::Value {
    serde_json::json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }
    }])
}
