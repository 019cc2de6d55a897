//! What a local user can do to the daemon's files and process, with the real binary: a symlink
//! at the socket's directory, hard links at the lock path, `--user` and directories it did not
//! create, signals, FIFOs and devices named as files, full file systems. Several need root
//! (changing owners, switching users): CI runs as root, and elsewhere they fail saying so.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, TempDir};
use nix::sys::signal::Signal;

const EXIT_FAILURE: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_ALREADY_RUNNING: i32 = 3;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root): run it with sudo"
    );
}

/// A daemon start expected to end by itself: its exit code and stderr. A start still running
/// after `timeout` is killed and the test fails, saying so.
fn run_to_exit(mut cmd: Command, timeout: Duration) -> (Option<i32>, String) {
    // A pipe, not a file: one test makes every file write of the daemon fail.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rkllmd still running after {timeout:?}; stderr:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), reader.join().unwrap())
}

/// `rkllmd --model fast.rkllm --socket SOCKET ARGS...`.
fn daemon(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::daemon_bin());
    cmd.arg("--model")
        .arg(common::fast_model())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("NOTIFY_SOCKET");
    cmd
}

const START: Duration = Duration::from_secs(20);

#[test]
fn a_symlink_planted_at_the_socket_directory_is_refused() {
    require_root();
    let dir = TempDir::new("symlink-dir");
    // Another user's squat, as on /tmp/rkllmd-UID: a link to a sticky world-writable directory,
    // which passes every check on its own.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = dir.path().join("rkllmd-1000");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(4242), Some(4242)).unwrap();
    let socket = link.join("rkllmd.sock");
    // As root, and as an unprivileged user whose default directory it would be.
    for uid in [0, 65534] {
        let mut cmd = daemon(&socket, &[]);
        cmd.uid(uid).gid(65534);
        let (code, stderr) = run_to_exit(cmd, START);
        assert_eq!(code, Some(EXIT_FAILURE), "uid {uid}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "socket directory {} is a symbolic link (owned by uid 4242); refusing to follow it",
                link.display()
            )),
            "uid {uid}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&open).unwrap().count(),
            0,
            "nothing made there"
        );
    }
}

#[test]
fn user_never_changes_the_owner_of_a_directory_it_did_not_create() {
    require_root();
    // Another service's directory, with its socket in it.
    let dir = TempDir::new("user-shared");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let _theirs = std::os::unix::net::UnixListener::bind(shared.join("other.sock")).unwrap();
    let (code, stderr) = run_to_exit(
        daemon(&shared.join("rkllmd.sock"), &["--user", "nobody"]),
        START,
    );
    assert_eq!(code, Some(EXIT_FAILURE), "{stderr}");
    assert!(
        stderr.contains("was not created by rkllmd and user 'nobody' cannot write to it"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&shared).unwrap().uid(), 0, "still root's");
    assert!(shared.join("other.sock").exists());
    assert!(
        !shared.join("rkllmd.sock.lock").exists(),
        "nothing of ours left"
    );
}

#[test]
fn a_refused_second_instance_with_user_leaves_the_first_ones_directory_alone() {
    require_root();
    let b = Daemon::builder("user-second");
    let socket = b.dir().join("run/rkllmd.sock");
    let first = b.start_at(&socket);
    let run = socket.parent().unwrap();
    let (code, stderr) = run_to_exit(daemon(&socket, &["--user", "nobody"]), START);
    assert_eq!(code, Some(EXIT_ALREADY_RUNNING), "{stderr}");
    assert_eq!(std::fs::metadata(run).unwrap().uid(), 0, "still root's");
    assert_eq!(first.client().get("/health").status, 200);
}

#[test]
fn a_hard_link_planted_at_the_lock_path_is_refused_and_kept_intact() {
    let dir = TempDir::new("lock-hardlink");
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    let socket = dir.path().join("rkllmd.sock");
    std::fs::hard_link(&precious, dir.path().join("rkllmd.sock.lock")).unwrap();
    let (code, stderr) = run_to_exit(daemon(&socket, &[]), START);
    assert_eq!(code, Some(EXIT_FAILURE), "{stderr}");
    assert!(
        stderr.contains("has 2 hard links; refusing to write it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(!socket.exists());
}

#[test]
fn a_failed_lock_write_says_why_and_leaves_no_lock_file() {
    // RLIMIT_FSIZE 0 makes the pid write fail as a full disk would (EFBIG, and SIGXFSZ, which
    // must not kill the daemon).
    let dir = TempDir::new("lock-full");
    let socket = dir.path().join("rkllmd.sock");
    let mut cmd = daemon(&socket, &[]);
    // SAFETY: between fork and exec only setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &raw const zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, stderr) = run_to_exit(cmd, START);
    assert_eq!(code, Some(EXIT_FAILURE), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write lock file {}.lock: File too large",
            socket.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no empty lock file left"
    );
}

#[test]
fn signals_that_mean_nothing_are_logged_and_ignored() {
    let mut d = Daemon::start("sig-ignored");
    let mut signals: Vec<(i32, String)> = [
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGIO,
        Signal::SIGPWR,
        Signal::SIGSTKFLT,
        Signal::SIGXFSZ,
    ]
    .iter()
    .map(|s| (*s as i32, s.as_str().to_owned()))
    .collect();
    for n in 0..=(libc::SIGRTMAX() - libc::SIGRTMIN()) {
        signals.push((libc::SIGRTMIN() + n, format!("SIGRTMIN+{n}")));
    }
    for (signo, name) in &signals {
        // SAFETY: kill with a valid pid and signal number has no memory effects.
        assert_eq!(
            unsafe { libc::kill(i32::try_from(d.child.id()).unwrap(), *signo) },
            0
        );
        common::wait_until(Duration::from_secs(10), name, || {
            d.stderr().contains(&format!("{name} from pid "))
        });
        assert_eq!(d.client().get("/health").status, 200, "after {name}");
    }
    assert!(d.child.try_wait().unwrap().is_none(), "still running");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(!d.socket.exists());
    assert!(!d.socket.with_extension("sock.lock").exists());
}

#[test]
fn sigxcpu_shuts_down_cleanly() {
    let mut d = Daemon::start("sig-xcpu");
    d.signal(Signal::SIGXCPU);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
    assert!(
        d.stderr().contains("SIGXCPU: shutting down"),
        "{}",
        d.stderr()
    );
    assert!(!d.socket.exists(), "socket removed");
    assert!(
        !d.socket.with_extension("sock.lock").exists(),
        "lock removed"
    );
}

#[test]
fn devices_and_fifos_named_as_files_are_refused_at_once() {
    let dir = TempDir::new("not-files");
    let socket = dir.path().join("rkllmd.sock");
    let fifo = dir.path().join("lib.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.path().join("big.conf");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    let fifo_arg = fifo.to_str().unwrap();
    let cases: [(&[&str], String); 5] = [
        (
            &["--config", "/dev/zero"],
            "cannot read config file '/dev/zero': it is a character device, not a regular file"
                .into(),
        ),
        (
            &["--config", fifo_arg],
            format!("cannot read config file '{fifo_arg}': it is a FIFO, not a regular file"),
        ),
        (
            &["--config", big.to_str().unwrap()],
            "it is longer than 1048576 bytes".into(),
        ),
        (
            &["--api-key-file", "/dev/zero"],
            "cannot read API key file '/dev/zero': it is a character device, not a regular file"
                .into(),
        ),
        (
            &["--runtime-library", fifo_arg],
            format!("runtime library '{fifo_arg}' is not a regular file"),
        ),
    ];
    for (args, message) in cases {
        let (code, stderr) = run_to_exit(daemon(&socket, args), START);
        assert_eq!(code, Some(EXIT_USAGE), "{args:?}: {stderr}");
        assert!(stderr.contains(&message), "{args:?}: {stderr}");
        assert!(!socket.exists(), "{args:?}: nothing bound");
    }
}

#[test]
fn unknown_user_or_group_is_a_configuration_error() {
    let dir = TempDir::new("unknown-names");
    let socket = dir.path().join("run/rkllmd.sock");
    for (args, message) in [
        (
            ["--user", "no-such-user-rkllmd"],
            "user 'no-such-user-rkllmd' does not exist",
        ),
        (
            ["--socket-group", "no-such-group-rkllmd"],
            "group 'no-such-group-rkllmd' does not exist",
        ),
    ] {
        let (code, stderr) = run_to_exit(daemon(&socket, &args), START);
        assert_eq!(code, Some(EXIT_USAGE), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            !socket.parent().unwrap().exists(),
            "{args:?}: nothing created"
        );
    }
}

#[test]
fn a_relative_socket_path_is_served_from_the_working_directory() {
    let dir = TempDir::new("relative");
    let mut cmd = daemon(Path::new("rel.sock"), &[]);
    cmd.current_dir(dir.path());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("rel.sock");
    common::wait_until(START, "the relative socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    common::wait_until(START, "ready", || {
        common::Client::unix(&socket).get("/health").status == 200
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!socket.exists());
    assert!(!dir.path().join("rel.sock.lock").exists());
}

#[test]
fn a_second_instance_on_another_socket_is_kept_off_the_npu() {
    const EXIT_NPU_BUSY: i32 = 8;
    let b = Daemon::builder("npu-first");
    let npu = b.dir().join("npu.lock");
    let npu_arg = npu.to_str().unwrap().to_owned();
    let first = b.args(["--npu-lock", &npu_arg]).start();
    let dir = TempDir::new("npu-second");
    let socket = dir.path().join("other.sock");
    let (code, stderr) = run_to_exit(daemon(&socket, &["--npu-lock", &npu_arg]), START);
    assert_eq!(code, Some(EXIT_NPU_BUSY), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the NPU is in use by another instance (pid {}, holding {npu_arg}): one model per NPU; \
             set npu-lock = none if the board has room for both",
            first.child.id()
        )),
        "{stderr}"
    );
    assert!(!socket.exists(), "refused before binding");
    assert!(!dir.path().join("other.sock.lock").exists(), "nothing left");
    assert!(
        first.trace_of("rkllm_init").len() == 1,
        "only the first loaded a model"
    );

    // The configuration says the board has room for both: both serve.
    let second = Daemon::builder("npu-optout")
        .args(["--npu-lock", "none"])
        .start();
    assert_eq!(second.client().get("/health").status, 200);
    assert_eq!(first.client().get("/health").status, 200);
}

#[test]
fn help_and_version_to_a_reader_that_left_exit_quietly() {
    for arg in ["--help", "--version"] {
        // The pipe's read end is closed before rkllmd writes: every write fails with EPIPE.
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        drop(read_end);
        let out = Command::new(common::daemon_bin())
            .arg(arg)
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{arg}: {stderr}");
        assert!(!stderr.contains("panicked"), "{arg}: {stderr}");
    }
}
