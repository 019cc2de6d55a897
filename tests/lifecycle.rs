//! The daemon's socket lifecycle with the real binary: start, signals, stale sockets, second
//! instances, foreign files, privilege drop, readiness, panics, wedged runtime.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{write_model, Daemon, TempDir};
use nix::sys::signal::Signal;
use serde_json::json;

const EXIT_ALREADY_RUNNING: i32 = 3;
const EXIT_DEADLINE: i32 = 5;
const EXIT_FORCED: i32 = 6;

fn chat_body(stream: bool) -> serde_json::Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

#[test]
fn starts_serves_health_and_cleans_up_on_every_shutdown_signal() {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
        let mut d = Daemon::start("signals");
        let meta = std::fs::metadata(&d.socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o660,
            "default socket mode"
        );
        let lock = d.socket.with_extension("sock.lock");
        assert!(lock.exists(), "lock file beside the socket");
        let health = d.client().get("/health");
        assert_eq!(health.status, 200);
        let body = health.json();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["runtime"], "simulator");
        assert_eq!(body["abi"], env!("RKLLMD_ABI"));
        assert_eq!(body["queue_depth"], 0);
        d.signal(sig);
        let status = d.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{sig}: {}", d.stderr());
        assert!(!d.socket.exists(), "{sig}: socket left behind");
        assert!(!lock.exists(), "{sig}: lock file left behind");
        let log = d.stderr();
        assert!(
            log.contains("shutdown after") && log.contains("socket removed"),
            "{log}"
        );
        assert!(log.contains("runtime destroyed"), "{log}");
    }
}

#[test]
fn sighup_is_harmless() {
    let mut d = Daemon::start("hup");
    d.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.client().get("/health").status, 200);
    assert!(d.child.try_wait().unwrap().is_none());
}

#[test]
fn sigkill_leaves_a_stale_socket_that_the_next_start_removes() {
    let mut d = Daemon::start("kill");
    d.signal(Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    assert!(
        d.socket.exists(),
        "SIGKILL cannot clean up: the stale socket stays"
    );
    let second = Daemon::builder("kill2").start_at(&d.socket);
    assert!(
        second.stderr().contains("removed a stale socket"),
        "{}",
        second.stderr()
    );
    assert_eq!(second.client().get("/health").status, 200);
}

#[test]
fn a_second_instance_refuses_and_touches_nothing() {
    let d = Daemon::start("twice");
    let ino = std::fs::metadata(&d.socket).unwrap().ino();
    let out = Command::new(common::daemon_bin())
        .args([
            "--model",
            common::fast_model().to_str().unwrap(),
            "--socket",
            d.socket.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_ALREADY_RUNNING));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("already running (pid {})", d.child.id())),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().ino(),
        ino,
        "their socket is untouched"
    );
    assert_eq!(d.client().get("/health").status, 200);
}

#[test]
fn a_foreign_file_at_the_socket_path_is_never_removed() {
    let dir = TempDir::new("foreign");
    let path = dir.path().join("rkllmd.sock");
    std::fs::write(&path, b"precious").unwrap();
    let out = Command::new(common::daemon_bin())
        .args([
            "--model",
            common::fast_model().to_str().unwrap(),
            "--socket",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn the_guard_never_removes_a_socket_it_did_not_create() {
    let mut d = Daemon::start("inode");
    // Someone replaces the socket file (e.g. an admin or a newer instance after a mistake).
    std::fs::remove_file(&d.socket).unwrap();
    let other = UnixListener::bind(&d.socket).unwrap();
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(d.socket.exists(), "the other socket must survive");
    drop(other);
}

#[test]
fn bad_flags_and_missing_models_exit_before_binding() {
    let dir = TempDir::new("badflag");
    let socket = dir.path().join("s.sock");
    let cases: [&[&str]; 3] = [
        &["--modle", "x"],
        &["--model", "/nonexistent/model.rkllm"],
        &["--model", "MODEL", "--queue-size", "banana"],
    ];
    for args in cases {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "MODEL" {
                    common::fast_model().display().to_string()
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        let out = Command::new(common::daemon_bin())
            .args(&args)
            .args(["--socket", socket.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
        assert!(!socket.exists(), "nothing bound for {args:?}");
    }
}

#[test]
fn version_names_the_abi_and_the_simulator() {
    let out = Command::new(common::daemon_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("ABI {}", env!("RKLLMD_ABI"))),
        "{text}"
    );
    assert!(text.contains("simulator"), "{text}");
    let help = Command::new(common::daemon_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--model",
        "--socket",
        "--tcp",
        "--config",
        "--socket-mode",
        "--allow-uid",
        "--user",
        "--shutdown-timeout",
        "--notify-fd",
        "--syslog",
        "--queue-size",
    ] {
        assert!(help.contains(flag), "--help does not document {flag}");
    }
}

#[test]
fn health_says_loading_before_the_model_is_loaded() {
    let dir = TempDir::new("loading");
    let model = write_model(dir.path(), "slow", &["load_ms = 1500"]);
    let mut d = Daemon::builder("loading").model(model).no_wait().start();
    // The file appears at bind(), just before listen(): wait for a connect to succeed.
    common::wait_until(Duration::from_secs(5), "socket", || {
        std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
    });
    let r = d.client().get("/health");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "loading");
    d.wait_ready(Duration::from_secs(10));
    assert_eq!(d.client().get("/health").status, 200);
}

#[test]
fn sigterm_during_a_stream_ends_it_cleanly_and_exits_zero() {
    let dir = TempDir::new("termstream");
    let model = write_model(
        dir.path(),
        "slow",
        &[
            "answer_tokens_min = 400",
            "answer_tokens_max = 400",
            "decode_us_per_token = 10000",
        ],
    );
    let mut d = Daemon::builder("termstream").model(model).start();
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat_body(true));
    let (status, _) = c.read_head().unwrap();
    assert_eq!(status, 200);
    c.read_chunk().expect("first event");
    d.signal(Signal::SIGTERM);
    let mut rest = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        rest.extend_from_slice(&chunk);
    }
    let events = common::client::sse_data(&rest);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "stream ends properly: {events:?}"
    );
    assert!(c.is_closed(), "connection closed after the final chunk");
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        d.stderr()
    );
    assert!(!d.socket.exists());
    assert!(
        d.trace_of("rkllm_abort").len() == 1,
        "the running generation was aborted"
    );
    assert!(
        d.stderr().contains("1 request(s) aborted"),
        "{}",
        d.stderr()
    );
}

#[test]
fn a_wedged_runtime_cannot_hold_shutdown_past_the_deadline() {
    let dir = TempDir::new("wedged");
    let model = write_model(dir.path(), "hang", &["hang_after_tokens = 2"]);
    let mut d = Daemon::builder("wedged")
        .model(model)
        .args(["--shutdown-timeout", "1", "--abort-grace", "0.3"])
        .start();
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat_body(true));
    assert_eq!(c.read_head().unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(EXIT_DEADLINE), "{}", d.stderr());
    assert!(took < Duration::from_millis(2500), "shutdown took {took:?}");
    assert!(!d.socket.exists(), "socket removed even when wedged");
    assert!(d.stderr().contains("left wedged"), "{}", d.stderr());
}

#[test]
fn a_second_signal_during_shutdown_exits_at_once() {
    let dir = TempDir::new("second");
    let model = write_model(dir.path(), "hang", &["hang_after_tokens = 2"]);
    let mut d = Daemon::builder("second")
        .model(model)
        .args(["--shutdown-timeout", "30", "--abort-grace", "20"])
        .start();
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat_body(true));
    assert_eq!(c.read_head().unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(100));
    d.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    d.signal(Signal::SIGINT);
    assert_eq!(
        d.wait_exit(Duration::from_secs(3)).code(),
        Some(EXIT_FORCED)
    );
    assert!(!d.socket.exists());
}

#[test]
fn a_panic_still_removes_the_socket() {
    // The hook fires only for the socket it names, in debug and release builds alike.
    let b = Daemon::builder("panic").no_wait();
    let socket = b.dir().join("rkllmd.sock");
    let mut d = b.start_with_env("RKLLMD_TEST_PANIC_AFTER_READY", socket.to_str().unwrap());
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(70), "{}", d.stderr());
    assert!(!d.socket.exists(), "socket removed while unwinding");
    assert!(d.stderr().contains("panicked"), "{}", d.stderr());
}

#[test]
fn the_test_panic_hook_cannot_fire_by_accident() {
    for value in ["1", "/run/rkllmd/rkllmd.sock", ""] {
        let d = Daemon::builder("nopanic").start_with_env("RKLLMD_TEST_PANIC_AFTER_READY", value);
        assert_eq!(d.client().get("/health").status, 200, "{value:?}");
        assert!(
            !d.stderr().contains("panicked"),
            "{value:?}: {}",
            d.stderr()
        );
    }
}

#[test]
fn notify_socket_receives_ready() {
    let dir = TempDir::new("notify");
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _d = Daemon::builder("notify").start_with_env("NOTIFY_SOCKET", notify.to_str().unwrap());
    let mut buf = [0u8; 64];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
}

#[test]
fn user_drops_privileges_after_binding_and_still_cleans_up() {
    // The socket gets a directory of its own: the daemon hands it to the user it becomes.
    let b = Daemon::builder("user").args(["--user", "nobody"]);
    let socket = b.dir().join("run/rkllmd.sock");
    let mut d = b.start_at(&socket);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    assert_eq!(d.client().get("/health").status, 200);
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        d.stderr()
    );
    assert!(!d.socket.exists());
}

#[test]
fn allow_uid_answers_everyone_else_with_403() {
    let d = Daemon::builder("allow")
        .args(["--allow-uid", "4242", "--socket-mode", "0666"])
        .start();
    let sock = d.socket.to_str().unwrap().to_owned();
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'GET /health HTTP/1.1\\r\\n\\r\\n')\nprint(s.recv(200).split(b'\\r\\n')[0].decode())";
    let run_as = |uid: u32| {
        use std::os::unix::process::CommandExt;
        let out = Command::new("/usr/bin/python3")
            .args(["-c", script, &sock])
            .uid(uid)
            .gid(65534)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(run_as(65534), "HTTP/1.1 403 Forbidden");
    assert_eq!(run_as(4242), "HTTP/1.1 200 OK");
}

#[test]
fn syslog_gets_the_log_lines() {
    let dir = TempDir::new("syslog");
    let path = dir.path().join("log.sock");
    let sink = UnixDatagram::bind(&path).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Daemon::builder("syslog")
        .arg("--syslog")
        .start_with_env("RKLLMD_SYSLOG_SOCKET", path.to_str().unwrap());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(n) = sink.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let pid = d.child.id();
    // <30> = facility daemon (3) * 8 + info (6).
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("<30>rkllmd[{pid}]: ")) && l.contains("ready")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("socket removed")),
        "{lines:?}"
    );
    assert!(
        !d.stderr().contains("socket removed"),
        "logs went to syslog, not stderr"
    );
}

#[test]
fn with_no_syslog_at_start_lines_go_to_stderr_until_it_appears() {
    let dir = TempDir::new("nosyslog");
    let path = dir.path().join("log.sock");
    let mut d = Daemon::builder("nosyslog")
        .arg("--syslog")
        .start_with_env("RKLLMD_SYSLOG_SOCKET", path.to_str().unwrap());
    let stderr = d.stderr();
    assert!(
        stderr.contains("logging to stderr until one appears") && stderr.contains("ready"),
        "{stderr}"
    );
    // syslogd comes up: within a second the daemon finds it.
    let sink = UnixDatagram::bind(&path).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    d.signal(Signal::SIGHUP);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sink.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        lines.iter().any(|l| l.contains("socket removed")),
        "{lines:?}\nstderr: {}",
        d.stderr()
    );
    assert!(!d.stderr().contains("socket removed"), "{}", d.stderr());
}

#[test]
fn a_wedged_runtime_is_reported_by_health_and_refuses_new_work() {
    let dir = TempDir::new("wedgehealth");
    let model = write_model(dir.path(), "hang", &["hang_after_tokens = 2"]);
    let mut d = Daemon::builder("wedgehealth")
        .model(model)
        .args(["--abort-grace", "0.3", "--shutdown-timeout", "1"])
        .start();
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat_body(true));
    assert_eq!(c.read_head().unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(100));
    drop(c); // the client leaves: abort, which the hung run ignores
    common::wait_until(Duration::from_secs(5), "health says wedged", || {
        let r = d.client().get("/health");
        r.status == 503 && r.json()["status"] == "wedged"
    });
    let r = d
        .client()
        .post_json("/v1/chat/completions", &chat_body(false));
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restart"),
        "{}",
        r.text()
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(5)).code(),
        Some(EXIT_DEADLINE)
    );
    assert!(!d.socket.exists());
}

#[test]
fn a_run_that_ends_after_being_declared_wedged_brings_the_daemon_back() {
    let dir = TempDir::new("latewedge");
    let model = write_model(
        dir.path(),
        "late",
        // Mid-answer (an abort in the prefill gets a longer grace): the next token comes a
        // second later and the abort takes 1.5 s.
        &[
            "decode_us_per_token = 1000000",
            "abort_delay_ms = 1500",
            "answer_tokens_min = 5",
            "answer_tokens_max = 5",
        ],
    );
    let d = Daemon::builder("latewedge")
        .model(model)
        .args(["--abort-grace", "0.3"])
        .start();
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat_body(true));
    assert_eq!(c.read_head().unwrap().0, 200);
    c.read_chunk().expect("a first event");
    drop(c);
    common::wait_until(Duration::from_secs(5), "wedged", || {
        d.client().get("/health").json()["status"] == "wedged"
    });
    common::wait_until(Duration::from_secs(5), "run ended", || {
        !d.trace_of("run_end").is_empty()
    });
    common::wait_until(Duration::from_secs(2), "serving again", || {
        d.client().get("/health").status == 200
    });
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
