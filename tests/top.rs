//! `rkllmd top` in a real terminal: tmux runs it in a pane against a daemon reading a fake
//! RK3588 tree, and the pane must show the daemon's figures and follow them as they change.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::board::{self, put};
use common::{daemon_bin, Daemon, TempDir};
use serde_json::json;

/// tmux, installed from Debian's packages when missing; the test fails if it cannot be.
fn tmux_available() {
    if Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "tmux"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "tmux is missing and 'apt-get install tmux' failed"
    );
}

/// A tmux server of the test's own (its socket in `dir`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &Path, width: u16, command: &[String]) -> Tmux {
        tmux_available();
        std::fs::create_dir_all(dir).unwrap();
        let t = Tmux {
            socket: dir.join("tmux.sock").display().to_string(),
        };
        let status = Command::new("tmux")
            .args(["-S", &t.socket, "new-session", "-d", "-s", "top"])
            .args(["-x", &width.to_string(), "-y", "30"])
            .args(command)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["-S", &self.socket, "capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows every one of `wanted`; panics with the pane after 20 s.
    fn wait_for(&self, wanted: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pane = self.capture();
            if wanted.iter().all(|w| pane.contains(w)) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {wanted:?}:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "kill-server"])
            .status();
    }
}

fn top_command(args: &[&str]) -> Vec<String> {
    std::iter::once(daemon_bin().display().to_string())
        .chain(std::iter::once("top".to_owned()))
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect()
}

#[test]
fn top_shows_the_daemon_and_follows_it() {
    let tree = TempDir::new("top-tree");
    board::rk3588(tree.path());
    let d = Daemon::builder("top")
        .model(common::demo_model())
        .args(["--root", &tree.path().display().to_string()])
        .start();
    let socket = d.socket.display().to_string();
    let tmux = Tmux::start(d.dir.path(), 110, &top_command(&["--socket", &socket]));
    tmux.wait_for(&[
        "model    demo  (ok, ABI",
        "queue    0 waiting  0 running",
        "request  idle",
        "NPU      core0  35%  core1   7%  core2   0%  1000 MHz",
        "CPU      policy0 1800 MHz  policy4 2256 MHz  policy6 2304 MHz",
        "npu 44.3 °C",
        "memory   11.8 GiB available of 15.5 GiB",
    ]);

    // The board changes: the next frames show it.
    put(
        tree.path(),
        "sys/kernel/debug/rknpu/load",
        "NPU load:  Core0: 100%, Core1: 98%, Core2: 97%,\n",
    );
    put(
        tree.path(),
        "sys/class/thermal/thermal_zone6/temp",
        "71500\n",
    );
    tmux.wait_for(&["core0 100%  core1  98%  core2  97%", "npu 71.5 °C"]);

    // A generation runs: its tokens and rate appear, then the minute's rate.
    let mut stream = d.client();
    stream.send_post(
        "/v1/chat/completions",
        &json!({"stream": true, "max_tokens": 400,
                "messages": [{"role": "user", "content": "Tell me a long story"}]}),
    );
    let pane = tmux.wait_for(&["1 running", " tokens at ", " tokens/s"]);
    assert!(!pane.contains("request  idle"), "{pane}");
    drop(stream);
    tmux.wait_for(&["request  idle", "0 running"]);
}

#[test]
fn top_over_tcp_uses_the_api_key() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::builder("top-tcp")
        .args(["--tcp", &addr, "--api-key", "s3cret"])
        .start();
    let dir = d.dir.path();
    let with_key = Tmux::start(
        &dir.join("a"),
        100,
        &top_command(&["--tcp", &addr, "--api-key", "s3cret"]),
    );
    with_key.wait_for(&["model    fast  (ok, ABI", &format!("http://{addr}")]);
    let without = Tmux::start(&dir.join("b"), 100, &top_command(&["--tcp", &addr]));
    without.wait_for(&["/health answered 401", "/metrics answered 401"]);
}
