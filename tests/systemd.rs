//! `board/systemd/rkllmd.service`: systemd's own `systemd-analyze verify` accepts it, and the
//! commands it runs do what the unit promises, run for real against the debug build with its
//! paths moved into a temporary directory: the check before the start, readiness to
//! `$NOTIFY_SOCKET`, the exit codes it restarts on or not, and a stop within its timeout.
//!
//! No systemd runs here as PID 1; what the unit asks of systemd itself (User=, `RuntimeDirectory`=,
//! `LimitNOFILE`=) is checked by systemd-analyze, not exercised.
//!
//! Needs systemd-analyze (Debian package `systemd`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{daemon_bin, fast_model, repo_path, Client, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const UNIT: &str = "board/systemd/rkllmd.service";

/// The unit's `[Service]` settings, in order; a key set twice appears twice.
fn service_settings() -> Vec<(String, String)> {
    let text = fs::read_to_string(repo_path(UNIT)).expect("read the unit");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if section == "Service" {
            let (key, value) = line.split_once('=').expect("key=value");
            out.push((key.to_owned(), value.to_owned()));
        }
    }
    out
}

fn setting(key: &str) -> String {
    service_settings()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{UNIT} sets no {key}"))
        .1
}

/// The unit's directories, moved under a test directory.
struct Paths {
    dir: TempDir,
}

impl Paths {
    fn new(tag: &str) -> Paths {
        let dir = TempDir::new(tag);
        // What RuntimeDirectory= and RuntimeDirectoryMode= make.
        let run = dir.path().join("run");
        fs::create_dir(&run).unwrap();
        let mode = u32::from_str_radix(&setting("RuntimeDirectoryMode"), 8).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(mode)).unwrap();
        Paths { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("rkllmd.conf")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/rkllmd.sock")
    }

    /// One of the unit's command lines with its paths replaced, as a Command.
    fn command(&self, key: &str) -> Command {
        let line = setting(key);
        let mut words = line.split_whitespace().map(|w| {
            let w = w.replace("/etc/rkllmd/rkllmd.conf", self.config().to_str().unwrap());
            w.replace(
                "/run/rkllmd/",
                &format!("{}/run/", self.dir.path().display()),
            )
        });
        assert_eq!(words.next().as_deref(), Some("/usr/bin/rkllmd"), "{key}");
        let mut cmd = Command::new(daemon_bin());
        cmd.args(words);
        cmd
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run rkllmd")
}

fn restarts_prevented_for() -> Vec<i32> {
    setting("RestartPreventExitStatus")
        .split_whitespace()
        .map(|c| c.parse().expect("a numeric exit status"))
        .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("systemd-analyze not found: install it (apt-get install -y systemd)");
    // A root holding what the unit names: the binary it runs and systemd's own units.
    let root = TempDir::new("sdverify");
    let r = root.path();
    for dir in ["usr/bin", "usr/lib/systemd", "etc/systemd/system"] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    fs::copy(daemon_bin(), r.join("usr/bin/rkllmd")).unwrap();
    let status = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success(), "copy systemd's units");
    let unit = r.join("etc/systemd/system/rkllmd.service");
    fs::copy(repo_path(UNIT), &unit).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", r.display()))
        .arg(&unit)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // It exits 0 on unknown keys and bad values too, with a warning: silence is the pass.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_check_before_the_start_stops_a_bad_configuration() {
    let p = Paths::new("sdcheck");
    fs::write(p.config(), format!("model = {}\n", fast_model().display())).unwrap();
    let out = run(p.command("ExecStartPre"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    fs::write(p.config(), "model = /nonexistent/model.rkllm\n").unwrap();
    let out = run(p.command("ExecStartPre"));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("/nonexistent/model.rkllm"), "{said}");

    // A config the daemon cannot read at all: usage (2), which the unit does not restart on.
    fs::write(p.config(), "no-such-setting = 1\n").unwrap();
    let out = run(p.command("ExecStart"));
    assert_eq!(out.status.code(), Some(2));
    assert!(restarts_prevented_for().contains(&2));

    // A runtime of the other ABI: 7, which no restart can fix either.
    let other = env!("RKLLMD_OTHER_SIM_LIB");
    assert!(
        Path::new(other).is_file(),
        "build.rs builds the other ABI's simulator: '{other}' is missing"
    );
    fs::write(
        p.config(),
        format!(
            "model = {}\nruntime-library = {other}\n",
            fast_model().display()
        ),
    )
    .unwrap();
    let out = run(p.command("ExecStart"));
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restarts_prevented_for().contains(&7));

    // Another instance holds the NPU: 8, which waits on that instance, not on a restart.
    let npu = p.dir.path().join("npu.lock");
    let held = std::fs::File::create(&npu).unwrap();
    let _held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    fs::write(
        p.config(),
        format!(
            "model = {}\nnpu-lock = {}\n",
            fast_model().display(),
            npu.display()
        ),
    )
    .unwrap();
    let out = run(p.command("ExecStart"));
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restarts_prevented_for().contains(&8));
}

#[test]
fn the_service_notifies_readiness_serves_and_stops_within_its_timeout() {
    let p = Paths::new("sdrun");
    fs::write(p.config(), format!("model = {}\n", fast_model().display())).unwrap();
    assert_eq!(setting("Type"), "notify");
    let notify_path = p.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut cmd = p.command("ExecStart");
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start rkllmd");
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means serving.
    assert_eq!(Client::unix(&p.socket()).get("/health").status, 200);

    // A second start while it runs: already running (3), not restarted either.
    let second = run(p.command("ExecStart"));
    assert_eq!(second.status.code(), Some(3));
    assert!(restarts_prevented_for().contains(&3));

    // systemd stops it with SIGTERM, and SIGKILL after TimeoutStopSec.
    let timeout = Duration::from_secs(setting("TimeoutStopSec").parse().unwrap());
    let sent = Instant::now();
    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(sent.elapsed() < timeout, "still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!p.socket().exists(), "socket left behind");
    // Without --syslog the log is on stderr, for the journal.
    assert!(stderr.contains("ready"), "{stderr}");
}
