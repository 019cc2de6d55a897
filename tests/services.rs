//! The service scripts under board/, run for real against the debug build and the simulator:
//! `board/init.d/S95rkllmd` with BusyBox's sh and start-stop-daemon (as on a buildroot image)
//! and with dash and Debian's start-stop-daemon, and `board/openrc/rkllmd` under OpenRC's
//! openrc-run and supervise-daemon.
//!
//! Each test runs the scripts in a private mount namespace: a fresh tmpfs on /run (with the
//! state directory OpenRC keeps there) and /etc/passwd, /etc/group, /etc/shadow and
//! /etc/default replaced by copies that add the service's user `rkllmd` and group `rkllm`. So
//! the scripts run with their shipped paths (/run/rkllmd, /var/run/rkllmd.pid, ...) as that
//! user, and nothing reaches the host: the namespace and its files vanish with the test. The
//! test reaches the namespace's /run through /proc/PID/root of a process that lives in it.
//!
//! Needs root, util-linux (unshare, nsenter), busybox, openrc and shellcheck.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{repo_path, wait_until, write_model, Client, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const DAEMON: &str = env!("CARGO_BIN_EXE_rkllmd");

/// The tests run one at a time: each starts daemons, and this machine has two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A program the tests need, found on PATH, or a failure that says which package to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("'{name}' not found: install it (apt-get install -y {package})"))
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the service tests need root (mount namespaces, chown, start-stop-daemon --chuid)"
    );
}

/// Whether `pid` still runs (a zombie, waiting for init to reap it, does not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn status_ids(pid: u32) -> (u32, u32) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read process status");
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("Uid:"), field("Gid:"))
}

fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Two ids free in both /etc/passwd and /etc/group, for the service's user and group.
fn free_ids() -> (u32, u32) {
    let used: Vec<u32> = ["/etc/passwd", "/etc/group"]
        .iter()
        .flat_map(|f| {
            fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    let mut free = (64000..65000).filter(|id| !used.contains(id));
    (free.next().unwrap(), free.next().unwrap())
}

/// What a script printed and how it ended.
struct Run {
    status: ExitStatus,
    output: String,
    took: Duration,
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n{}",
            self.status,
            self.output
        );
        self
    }
}

/// A private mount namespace held open by a sleeping process, with the service's user and
/// group, a fresh /run and a syslog socket the daemons log to.
struct Sandbox {
    dir: TempDir,
    holder: Child,
    ns: PathBuf,
    uid: u32,
    gid: u32,
    syslog: UnixDatagram,
    log: Vec<String>,
}

impl Sandbox {
    fn new(tag: &str) -> Sandbox {
        require_root();
        let unshare = tool("unshare", "util-linux");
        tool("nsenter", "util-linux");
        assert_eq!(
            fs::canonicalize("/var/run").ok().as_deref(),
            Some(Path::new("/run")),
            "/var/run must lead to /run, or pid files would land outside the sandbox"
        );
        let dir = TempDir::new(tag);
        let (uid, gid) = free_ids();
        let add = |file: &str, line: String| {
            let mut text = fs::read_to_string(format!("/etc/{file}")).expect("read /etc file");
            text.push_str(&line);
            fs::write(dir.path().join(file), text).expect("write /etc copy");
        };
        add(
            "passwd",
            format!("rkllmd:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\n"),
        );
        add("group", format!("rkllm:x:{gid}:\n"));
        // supervise-daemon opens a PAM session for command_user: it needs a shadow entry.
        add("shadow", "rkllmd:!:19000::::::\n".into());
        fs::create_dir(dir.path().join("default")).unwrap();

        let syslog_path = dir.path().join("syslog.sock");
        let syslog = UnixDatagram::bind(&syslog_path).expect("bind the syslog socket");
        syslog.set_nonblocking(true).unwrap();
        fs::set_permissions(&syslog_path, fs::Permissions::from_mode(0o666)).unwrap();

        let d = dir.path().display();
        let setup = format!(
            "set -e
            mount -t tmpfs -o mode=0755 tmpfs /run
            mkdir /run/openrc && cd /run/openrc
            mkdir daemons exclusive failed hotplugged inactive options scheduled started \
                starting stopping tmp wasinactive
            touch softlevel
            for f in passwd group shadow default; do mount --bind {d}/$f /etc/$f; done
            echo ready
            exec sleep 100000"
        );
        let mut holder = Command::new(unshare)
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(setup)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read from the namespace holder");
        assert_eq!(
            line.trim(),
            "ready",
            "setting up the mount namespace failed"
        );
        let ns = PathBuf::from(format!("/proc/{}", holder.id()));
        Sandbox {
            dir,
            holder,
            ns,
            uid,
            gid,
            syslog,
            log: Vec::new(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the namespace (its /run is not the host's), seen from the test.
    fn inside(&self, path: &str) -> PathBuf {
        self.ns.join("root").join(path.trim_start_matches('/'))
    }

    /// Runs `program args` inside the namespace with exactly the environment `env`.
    fn run(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out_path = self.dir().join("script.out");
        let out = fs::File::create(&out_path).unwrap();
        let started = Instant::now();
        let mut child = Command::new(tool("nsenter", "util-linux"))
            .arg(format!("--mount={}/ns/mnt", self.ns.display()))
            .arg("--")
            .arg(program)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn nsenter");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > SCRIPT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} {args:?} still running after {SCRIPT_TIMEOUT:?}:\n{}",
                    program.display(),
                    fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Run {
            status,
            output: fs::read_to_string(&out_path).unwrap_or_default(),
            took: started.elapsed(),
        }
    }

    /// Every line logged to our syslog socket so far.
    fn syslog(&mut self) -> &[String] {
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.syslog.recv(&mut buf) {
            self.log
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        &self.log
    }

    fn wait_logged(&mut self, timeout: Duration, what: &str, pid: u32, needle: &str) {
        let tag = format!("rkllmd[{pid}]: ");
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .syslog()
                .iter()
                .any(|l| l.starts_with('<') && l.contains(&tag) && l.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no syslog line from pid {pid} with {needle:?}; got:\n{}",
                self.log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid in a pid file inside the namespace. Give /run paths: /var/run is a symlink
    /// to /run (checked in `new`), and an absolute symlink seen from the test would lead to
    /// the host's /run.
    fn pid_file(&self, path: &str) -> u32 {
        let mut pid = None;
        // Read until whole: the writer may be between creating the file and writing it.
        wait_until(Duration::from_secs(5), &format!("a pid in {path}"), || {
            pid = self.try_pid_file(path);
            pid.is_some()
        });
        pid.unwrap()
    }

    fn try_pid_file(&self, path: &str) -> Option<u32> {
        let text = fs::read_to_string(self.inside(path)).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    }

    /// rkllmd processes running in this namespace.
    fn daemons(&self) -> Vec<u32> {
        let ours = fs::read_link(self.ns.join("ns/mnt")).ok();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ours
                    && exe(pid).as_deref() == Some(Path::new(DAEMON))
                    && alive(pid)
            })
            .collect()
    }

    /// Waits until the daemon on `socket` (inside the namespace) answers /health with 200.
    fn healthy(&self, socket: &str) -> serde_json::Value {
        let path = self.inside(socket);
        let mut body = json!(null);
        wait_until(
            Duration::from_secs(15),
            &format!("health on {socket}"),
            || {
                let Ok(stream) = UnixStream::connect(&path) else {
                    return false;
                };
                let resp = Client::from_stream(stream).get("/health");
                body = serde_json::from_slice(&resp.body).unwrap_or(json!(null));
                resp.status == 200
            },
        );
        body
    }

    /// Checks that the daemon runs unprivileged and that its directory and socket let the
    /// group in and nobody else.
    fn check_ownership(&self, pid: u32, socket: &str) {
        assert_eq!(
            status_ids(pid),
            (self.uid, self.gid),
            "daemon's uid and gid"
        );
        let dir = fs::metadata(self.inside("/run/rkllmd")).expect("run dir");
        assert_eq!(
            (dir.uid(), dir.gid()),
            (self.uid, self.gid),
            "run dir owner"
        );
        assert_eq!(dir.mode() & 0o7777, 0o750, "run dir mode");
        let sock = fs::metadata(self.inside(socket)).expect("socket");
        assert_eq!(
            (sock.uid(), sock.gid()),
            (self.uid, self.gid),
            "socket owner"
        );
        assert_eq!(sock.mode() & 0o777, 0o660, "socket mode");
    }

    fn assert_cleaned_up(&self, files: &[&str]) {
        for f in files {
            assert!(!self.inside(f).exists(), "{f} left behind after stop");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A failed test may leave services running: end everything in the namespace.
        let ours = fs::read_link(self.ns.join("ns/mnt")).ok();
        let holder = self.holder.id();
        if let Ok(entries) = fs::read_dir("/proc") {
            for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
                if pid != holder && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ours {
                    let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
                }
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A model whose answers go on for minutes and whose runs take 1.5 s to abort: a daemon
/// stopped during a generation needs that long to exit.
fn slow_abort_model(dir: &Path) -> PathBuf {
    write_model(
        dir,
        "slowabort",
        &[
            "decode_us_per_token = 20000",
            "answer_tokens_min = 100000",
            "answer_tokens_max = 100000",
            "abort_delay_ms = 1500",
        ],
    )
}

/// A streamed chat capped at `tokens` (the slow model's answers otherwise go on for minutes).
fn capped_chat(tokens: u32) -> serde_json::Value {
    json!({"stream": true, "max_tokens": tokens,
           "messages": [{"role": "user", "content": "go on"}]})
}

/// Reads the rest of an OpenAI stream; its last choice's finish reason.
fn finish_reason(client: &mut Client) -> String {
    let mut body = Vec::new();
    while let Some(chunk) = client.read_chunk() {
        body.extend_from_slice(&chunk);
    }
    let events = common::client::sse_data(&body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    last["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no finish reason: {last}"))
        .to_owned()
}

/// How the init.d script is run: the shell and start-stop-daemon it finds on PATH.
enum InitSystem {
    /// BusyBox's sh with only BusyBox's applets on PATH, as on a buildroot image.
    Busybox,
    /// dash with Debian's own start-stop-daemon (dpkg), as on a Debian board with sysvinit.
    Debian,
}

struct InitScript {
    shell: PathBuf,
    path: String,
    syslog: String,
}

impl InitScript {
    fn new(sb: &Sandbox, system: InitSystem) -> InitScript {
        let (shell, path) = match system {
            InitSystem::Busybox => {
                let busybox = tool("busybox", "busybox");
                let bin = sb.dir().join("bin");
                fs::create_dir(&bin).unwrap();
                let ok = Command::new(&busybox)
                    .arg("--install")
                    .arg("-s")
                    .arg(&bin)
                    .status()
                    .expect("run busybox --install");
                assert!(ok.success(), "busybox --install -s failed");
                (bin.join("sh"), bin.display().to_string())
            }
            InitSystem::Debian => {
                tool("start-stop-daemon", "dpkg");
                (
                    tool("dash", "dash"),
                    "/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                )
            }
        };
        InitScript {
            shell,
            path,
            syslog: sb.dir().join("syslog.sock").display().to_string(),
        }
    }

    fn run(&self, sb: &Sandbox, action: &str) -> Run {
        let script = repo_path("board/init.d/S95rkllmd");
        sb.run(
            &self.shell,
            &[script.to_str().unwrap(), action],
            &[("PATH", &self.path), ("RKLLMD_SYSLOG_SOCKET", &self.syslog)],
        )
    }
}

/// Writes /etc/default/rkllmd in the sandbox: the shipped example plus `extra`.
fn write_defaults(sb: &Sandbox, extra: &str) {
    let mut text = fs::read_to_string(repo_path("board/default/rkllmd")).unwrap();
    text.push_str(extra);
    fs::write(sb.dir().join("default/rkllmd"), text).unwrap();
}

const SOCKET: &str = "/run/rkllmd/rkllmd.sock";
const INIT_D_LEFTOVERS: [&str; 3] = [
    "/run/rkllmd/rkllmd.sock",
    "/run/rkllmd/rkllmd.sock.lock",
    "/run/rkllmd.pid",
];

fn init_d_lifecycle(system: InitSystem, tag: &str) {
    let _serial = serial();
    let mut sb = Sandbox::new(tag);
    let model = slow_abort_model(sb.dir());
    let conf = sb.dir().join("rkllmd.conf");
    fs::write(
        &conf,
        format!("model = {}\nmodel-name = svc\n", model.display()),
    )
    .unwrap();
    write_defaults(
        &sb,
        &format!(
            "RKLLMD_BIN=\"{DAEMON}\"\nRKLLMD_ARGS=\"--config {}\"\n",
            conf.display()
        ),
    );
    let init = InitScript::new(&sb, system);

    let run = init.run(&sb, "start").ok("start");
    assert_eq!(run.output, "Starting rkllmd: OK\n");
    let pid = sb.pid_file("/run/rkllmd.pid");
    assert_eq!(exe(pid).as_deref(), Some(Path::new(DAEMON)));
    assert_eq!(sb.healthy(SOCKET)["model"], "svc");
    sb.check_ownership(pid, SOCKET);
    sb.wait_logged(
        Duration::from_secs(5),
        "start",
        pid,
        "listening on /run/rkllmd/rkllmd.sock",
    );

    let run = init.run(&sb, "start").ok("second start");
    assert_eq!(run.output, "Starting rkllmd: already running\n");
    assert_eq!(sb.pid_file("/run/rkllmd.pid"), pid);
    assert_eq!(sb.daemons(), vec![pid], "one daemon after starting twice");

    // reload: the same daemon reads its config again; a models directory added to it is
    // served at once.
    let more = sb.dir().join("more");
    fs::create_dir_all(&more).unwrap();
    write_model(&more, "extra", &[]);
    fs::write(
        &conf,
        format!(
            "model = {}\nmodel-name = svc\nmodels-dir = {}\n",
            model.display(),
            more.display()
        ),
    )
    .unwrap();
    let run = init.run(&sb, "reload").ok("reload");
    assert_eq!(run.output, "Reloading rkllmd: OK\n");
    assert_eq!(sb.pid_file("/run/rkllmd.pid"), pid);
    sb.wait_logged(Duration::from_secs(5), "reload", pid, "added: extra");
    assert_eq!(sb.healthy(SOCKET)["models"], json!(["svc", "extra"]));

    let run = init.run(&sb, "restart").ok("restart");
    assert_eq!(run.output, "Stopping rkllmd: OK\nStarting rkllmd: OK\n");
    assert!(!alive(pid), "restart: the old daemon still runs");
    let new = sb.pid_file("/run/rkllmd.pid");
    assert_ne!(new, pid, "restart: no new daemon");
    assert_eq!(sb.healthy(SOCKET)["status"], "ok");
    assert_eq!(sb.daemons(), vec![new]);
    sb.wait_logged(Duration::from_secs(5), "restart", pid, "socket removed");
    let pids = [pid, new];

    // After a crash: the pid file and the socket are stale; start replaces both.
    let crashed = *pids.last().unwrap();
    kill(
        Pid::from_raw(i32::try_from(crashed).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the crash", || !alive(crashed));
    assert!(sb.inside(SOCKET).exists(), "SIGKILL leaves the socket");
    let run = init.run(&sb, "start").ok("start after a crash");
    assert_eq!(run.output, "Starting rkllmd: OK\n");
    let pid = sb.pid_file("/run/rkllmd.pid");
    assert_ne!(pid, crashed);
    assert_eq!(sb.healthy(SOCKET)["status"], "ok");
    sb.wait_logged(
        Duration::from_secs(5),
        "restart after a crash",
        pid,
        "removed a stale socket",
    );

    // Drain during a generation: the answer finishes whole, then the daemon exits, and drain
    // returns only then.
    let mut client = Client::unix(&sb.inside(SOCKET));
    client.send_post("/v1/chat/completions", &capped_chat(30));
    assert_eq!(client.read_head().expect("stream starts").0, 200);
    let run = init.run(&sb, "drain").ok("drain");
    assert_eq!(run.output, "Draining rkllmd: OK\n");
    assert!(!alive(pid), "drain returned while the daemon still runs");
    assert_eq!(
        finish_reason(&mut client),
        "length",
        "the answer ran to its cap"
    );
    sb.assert_cleaned_up(&INIT_D_LEFTOVERS);
    sb.wait_logged(Duration::from_secs(5), "drain", pid, "drained");
    let run = init.run(&sb, "drain").ok("drain when stopped");
    assert_eq!(run.output, "Draining rkllmd: not running\n");
    init.run(&sb, "start").ok("start after a drain");
    let pid = sb.pid_file("/run/rkllmd.pid");
    assert_eq!(sb.healthy(SOCKET)["status"], "ok");

    // Stop during a generation: the abort takes 1.5 s, and stop must wait for the exit.
    let mut client = Client::unix(&sb.inside(SOCKET));
    client.send_post(
        "/v1/chat/completions",
        &json!({"stream": true, "messages": [{"role": "user", "content": "go on"}]}),
    );
    assert_eq!(client.read_head().expect("stream starts").0, 200);
    let run = init.run(&sb, "stop").ok("stop");
    assert_eq!(run.output, "Stopping rkllmd: OK\n");
    assert!(!alive(pid), "stop returned while the daemon still runs");
    assert!(
        run.took >= Duration::from_millis(1200),
        "stop returned after {:?}, before the daemon could have exited",
        run.took
    );
    sb.assert_cleaned_up(&INIT_D_LEFTOVERS);
    sb.wait_logged(Duration::from_secs(5), "stop", pid, "1 request(s) aborted");
    assert!(sb.daemons().is_empty());

    let run = init.run(&sb, "stop").ok("stop when stopped");
    assert_eq!(run.output, "Stopping rkllmd: not running\n");
    let run = init.run(&sb, "status");
    assert_eq!(run.status.code(), Some(1), "unknown action: {}", run.output);
    assert!(run.output.contains("Usage:"), "{}", run.output);
}

#[test]
fn init_d_script_under_busybox() {
    init_d_lifecycle(InitSystem::Busybox, "svc-busybox");
}

#[test]
fn init_d_script_under_debian_start_stop_daemon() {
    init_d_lifecycle(InitSystem::Debian, "svc-debian");
}

#[test]
fn init_d_start_reports_a_bad_configuration_on_the_console() {
    let _serial = serial();
    let sb = Sandbox::new("svc-badconf");
    let missing = sb.dir().join("missing.rkllm");
    write_defaults(
        &sb,
        &format!(
            "RKLLMD_BIN=\"{DAEMON}\"\nRKLLMD_ARGS=\"--model {}\"\n",
            missing.display()
        ),
    );
    let init = InitScript::new(&sb, InitSystem::Busybox);
    let run = init.run(&sb, "start");
    assert_eq!(run.status.code(), Some(1), "{}", run.output);
    assert!(
        run.output.starts_with("Starting rkllmd: FAIL\n")
            && run.output.contains("FAIL  config:")
            && run.output.contains("does not exist"),
        "{}",
        run.output
    );
    assert!(sb.daemons().is_empty());
    assert!(!sb.inside("/run/rkllmd.pid").exists());

    // A daemon that dies after the check is a FAIL too, not an OK. Here another process holds
    // the socket's lock, so the daemon exits (3) before it creates the socket.
    let run_dir = sb.inside("/run/rkllmd");
    fs::create_dir_all(&run_dir).unwrap();
    let lock_path = run_dir.join("rkllmd.sock.lock");
    let lock = fs::File::create(&lock_path).unwrap();
    fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o666)).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    write_defaults(
        &sb,
        &format!(
            "RKLLMD_BIN=\"{DAEMON}\"\nRKLLMD_ARGS=\"--model {}\"\n",
            common::fast_model().display()
        ),
    );
    let run = init.run(&sb, "start");
    assert_eq!(run.status.code(), Some(1), "{}", run.output);
    assert_eq!(run.output, "Starting rkllmd: FAIL\n");
    assert!(sb.daemons().is_empty());
}

/// The OpenRC service with its conf.d, laid out as openrc-run expects it: the script a real
/// file in an init.d directory (copied from board/openrc), instances symlinks beside it, and
/// conf.d next to init.d.
struct OpenRc {
    init_d: PathBuf,
}

impl OpenRc {
    fn new(sb: &Sandbox, conf_d: &str) -> OpenRc {
        tool("openrc-run", "openrc");
        tool("supervise-daemon", "openrc");
        let init_d = sb.dir().join("init.d");
        let conf = sb.dir().join("conf.d");
        fs::create_dir(&init_d).unwrap();
        fs::create_dir(&conf).unwrap();
        fs::copy(repo_path("board/openrc/rkllmd"), init_d.join("rkllmd")).unwrap();
        let mut text = fs::read_to_string(repo_path("board/openrc/conf.d/rkllmd")).unwrap();
        text.push_str(conf_d);
        fs::write(conf.join("rkllmd"), text).unwrap();
        OpenRc { init_d }
    }

    fn instance(&self, sb: &Sandbox, name: &str, conf_d: &str) {
        std::os::unix::fs::symlink("rkllmd", self.init_d.join(name)).unwrap();
        fs::write(sb.dir().join("conf.d").join(name), conf_d).unwrap();
    }

    fn run(&self, sb: &Sandbox, service: &str, action: &str) -> Run {
        sb.run(
            &self.init_d.join(service),
            &[action],
            &[("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")],
        )
    }

    /// The daemon supervise-daemon runs for `service` (its pid file holds the supervisor's).
    fn daemon(&self, sb: &Sandbox, service: &str) -> (u32, u32) {
        let pid_file = format!("/run/{service}.pid");
        let mut found = None;
        wait_until(Duration::from_secs(15), "supervised daemon", || {
            found = sb.try_pid_file(&pid_file).and_then(|supervisor| {
                let child = children(supervisor)
                    .into_iter()
                    .find(|&c| exe(c).as_deref() == Some(Path::new(DAEMON)))?;
                Some((supervisor, child))
            });
            found.is_some()
        });
        found.unwrap()
    }
}

#[test]
fn openrc_service_supervises_instances() {
    let _serial = serial();
    let mut sb = Sandbox::new("svc-openrc");
    let d = sb.dir().to_owned();
    let qwen_model = write_model(&d, "qwen", &[]);
    fs::write(
        d.join("rkllmd.conf"),
        format!(
            "model = {}\nmodel-name = main\n",
            common::fast_model().display()
        ),
    )
    .unwrap();
    fs::write(
        d.join("rkllmd.qwen.conf"),
        format!("model = {}\n", qwen_model.display()),
    )
    .unwrap();
    let rc = OpenRc::new(
        &sb,
        &format!(
            "rkllmd_binary=\"{DAEMON}\"\n\
             rkllmd_config=\"{}/${{RC_SVCNAME}}.conf\"\n\
             supervise_daemon_args=\"--env RKLLMD_SYSLOG_SOCKET={}/syslog.sock\"\n\
             respawn_delay=1\n",
            d.display(),
            d.display()
        ),
    );
    rc.instance(
        &sb,
        "rkllmd.qwen",
        "rkllmd_args=\"--model-name qwen-confd\"\n",
    );
    let qwen_socket = "/run/rkllmd/rkllmd.qwen.sock";

    let run = rc.run(&sb, "rkllmd", "start").ok("start");
    assert!(run.output.contains("Starting rkllmd"), "{}", run.output);
    let (supervisor, pid) = rc.daemon(&sb, "rkllmd");
    assert_eq!(sb.healthy(SOCKET)["model"], "main");
    sb.check_ownership(pid, SOCKET);
    sb.wait_logged(
        Duration::from_secs(5),
        "start",
        pid,
        "listening on /run/rkllmd/rkllmd.sock",
    );

    // The instance reads conf.d/rkllmd.qwen and its own config file, on its own socket.
    rc.run(&sb, "rkllmd.qwen", "start").ok("start rkllmd.qwen");
    let (_, qwen_pid) = rc.daemon(&sb, "rkllmd.qwen");
    assert_eq!(sb.healthy(qwen_socket)["model"], "qwen-confd");
    sb.check_ownership(qwen_pid, qwen_socket);
    sb.wait_logged(
        Duration::from_secs(5),
        "instance start",
        qwen_pid,
        &format!("listening on {qwen_socket} "),
    );
    sb.wait_logged(
        Duration::from_secs(5),
        "instance config",
        qwen_pid,
        &format!("model {})", qwen_model.display()),
    );
    let run = rc.run(&sb, "rkllmd", "status");
    assert!(
        run.status.success() && run.output.contains("started"),
        "status: {}",
        run.output
    );

    // supervise-daemon respawns a daemon that dies; the new one clears the stale socket.
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    let mut respawned = pid;
    wait_until(Duration::from_secs(15), "respawn", || {
        respawned = rc.daemon(&sb, "rkllmd").1;
        respawned != pid
    });
    assert_eq!(rc.daemon(&sb, "rkllmd").0, supervisor);
    assert_eq!(sb.healthy(SOCKET)["model"], "main");
    sb.wait_logged(
        Duration::from_secs(5),
        "respawn",
        respawned,
        "removed a stale socket",
    );

    let run = rc.run(&sb, "rkllmd", "restart").ok("restart");
    assert!(run.output.contains("Stopping rkllmd"), "{}", run.output);
    let (_, restarted) = rc.daemon(&sb, "rkllmd");
    assert!(restarted != respawned && !alive(respawned));
    assert_eq!(sb.healthy(SOCKET)["status"], "ok");

    // reload: the same daemon reads its config again and serves a models directory added.
    let more = d.join("more");
    fs::create_dir_all(&more).unwrap();
    write_model(&more, "extra", &[]);
    fs::write(
        d.join("rkllmd.conf"),
        format!(
            "model = {}\nmodel-name = main\nmodels-dir = {}\n",
            common::fast_model().display(),
            more.display()
        ),
    )
    .unwrap();
    let run = rc.run(&sb, "rkllmd", "reload").ok("reload");
    assert!(run.output.contains("Reloading rkllmd"), "{}", run.output);
    assert_eq!(rc.daemon(&sb, "rkllmd").1, restarted, "the same daemon");
    sb.wait_logged(Duration::from_secs(5), "reload", restarted, "added: extra");
    assert_eq!(sb.healthy(SOCKET)["models"], json!(["main", "extra"]));

    rc.run(&sb, "rkllmd.qwen", "stop").ok("stop rkllmd.qwen");
    assert!(!alive(qwen_pid));
    sb.assert_cleaned_up(&[
        qwen_socket,
        "/run/rkllmd/rkllmd.qwen.sock.lock",
        "/run/rkllmd.qwen.pid",
    ]);
    assert_eq!(
        sb.healthy(SOCKET)["model"],
        "main",
        "the other instance stays up"
    );

    // drain: the answer finishes whole, the daemon exits, and the supervisor does not start
    // it again: the service is stopped. The syslog socket holds only a few datagrams unread
    // (net.unix.max_dgram_qlen): read them before, and after the start.
    sb.syslog();
    rc.run(&sb, "rkllmd.qwen", "start")
        .ok("start rkllmd.qwen again");
    let (qwen_supervisor, qwen_pid) = rc.daemon(&sb, "rkllmd.qwen");
    sb.healthy(qwen_socket);
    sb.wait_logged(Duration::from_secs(5), "restart", qwen_pid, "ready");
    let mut client = Client::unix(&sb.inside(qwen_socket));
    client.send_post("/v1/chat/completions", &capped_chat(30));
    assert_eq!(client.read_head().expect("stream starts").0, 200);
    let run = rc.run(&sb, "rkllmd.qwen", "drain").ok("drain rkllmd.qwen");
    assert!(
        run.output.contains("Draining rkllmd.qwen"),
        "{}",
        run.output
    );
    assert!(!alive(qwen_pid) && !alive(qwen_supervisor));
    assert_eq!(finish_reason(&mut client), "length");
    sb.wait_logged(Duration::from_secs(5), "drain", qwen_pid, "drained");
    // Past the respawn delay (1 s here), nothing came back.
    std::thread::sleep(Duration::from_millis(1500));
    sb.assert_cleaned_up(&[
        qwen_socket,
        "/run/rkllmd/rkllmd.qwen.sock.lock",
        "/run/rkllmd.qwen.pid",
    ]);
    let run = rc.run(&sb, "rkllmd.qwen", "status");
    assert!(run.output.contains("stopped"), "status: {}", run.output);
    assert_eq!(
        sb.healthy(SOCKET)["model"],
        "main",
        "the other instance stays up"
    );

    let (supervisor, _) = rc.daemon(&sb, "rkllmd");
    rc.run(&sb, "rkllmd", "stop").ok("stop");
    assert!(!alive(restarted) && !alive(supervisor));
    sb.assert_cleaned_up(&INIT_D_LEFTOVERS);
    sb.wait_logged(Duration::from_secs(5), "stop", restarted, "socket removed");
    assert!(sb.daemons().is_empty());
    rc.run(&sb, "rkllmd", "stop").ok("stop when stopped");
}

/// What the OpenRC script sets for openrc-run, sourced by sh with `RC_SVCNAME` and
/// `RC_VERSION` as openrc-run exports them.
fn openrc_settings(svcname: &str, version: &str) -> Vec<String> {
    let script = repo_path("board/openrc/rkllmd");
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            r#". "$0"; printf '%s\n' "$command" "$command_args" "$command_user" "$pidfile" \
               "${notify-unset}" "$supervisor" "$respawn_max""#,
        )
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RC_SVCNAME", svcname)
        .env("RC_VERSION", version)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn openrc_script_names_instances_and_asks_for_readiness_only_where_supported() {
    let main = openrc_settings("rkllmd", "0.45.2");
    assert_eq!(
        main,
        [
            "/usr/bin/rkllmd",
            "--config /etc/rkllmd/rkllmd.conf --socket /run/rkllmd/rkllmd.sock --syslog",
            "rkllmd:rkllm",
            "/run/rkllmd.pid",
            "unset",
            "supervise-daemon",
            "5",
        ]
    );
    let qwen = openrc_settings("rkllmd.qwen", "0.56");
    assert_eq!(
        qwen[1],
        "--config /etc/rkllmd/rkllmd.qwen.conf --socket /run/rkllmd/rkllmd.qwen.sock --syslog"
    );
    assert_eq!(qwen[3], "/run/rkllmd.qwen.pid");
    // notify= came with OpenRC 0.62 (0.60 and 0.61 had an experimental ready=).
    for (version, notifies) in [
        ("0.56", false),
        ("0.60", false),
        ("0.61.1", false),
        ("0.62", true),
        ("0.62.2", true),
        ("0.63.2", true),
        ("1.0", true),
        ("", false),
        ("garbage", false),
    ] {
        let s = openrc_settings("rkllmd", version);
        if notifies {
            assert_eq!(s[4], "fd:9", "RC_VERSION={version}");
            assert!(
                s[1].ends_with(" --notify-fd 9"),
                "RC_VERSION={version}: {}",
                s[1]
            );
        } else {
            assert_eq!(s[4], "unset", "RC_VERSION={version}");
            assert!(
                !s[1].contains("--notify-fd"),
                "RC_VERSION={version}: {}",
                s[1]
            );
        }
    }
}

#[test]
fn service_files_pass_shellcheck() {
    let shellcheck = tool("shellcheck", "shellcheck");
    let check = |args: &[&str], files: &[&str]| {
        let out = Command::new(&shellcheck)
            .args(args)
            .args(files.iter().map(|f| repo_path(f)))
            .output()
            .expect("run shellcheck");
        assert!(
            out.status.success(),
            "shellcheck {files:?}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    check(&[], &["board/init.d/S95rkllmd", "board/openrc/rkllmd"]);
    // Sourced by the scripts, so checked as sh.
    check(
        &["--shell", "sh"],
        &["board/default/rkllmd", "board/openrc/conf.d/rkllmd"],
    );
}
