//! The runtime library as rkllmd loads it (dlopen, `runtime-library`), and `rkllmd check`
//! against fake system roots.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, TempDir};

/// target/<profile>/librkllmrt.so: the simulator build.rs put beside the binary.
fn simulator_library() -> std::path::PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rkllmd"))
        .parent()
        .expect("the binary has a directory")
        .join("librkllmrt.so")
}

// ---- loading the runtime ----

#[test]
fn a_missing_runtime_library_ends_the_start_with_exit_4_and_no_socket() {
    let mut d = Daemon::builder("nolib")
        .args(["--runtime-library", "librkllmrt-absent.so"])
        .no_wait()
        .start();
    let status = d.wait_exit(Duration::from_secs(10));
    let log = d.stderr();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(
        log.contains("cannot load the runtime library 'librkllmrt-absent.so'")
            && log.contains("cannot open shared object file"),
        "dlerror's text in the log: {log}"
    );
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn a_library_without_the_runtime_functions_is_refused_by_name() {
    // libc opens fine but has no rkllm_* symbols.
    let mut d = Daemon::builder("nosym")
        .args(["--runtime-library", "libc.so.6"])
        .no_wait()
        .start();
    let status = d.wait_exit(Duration::from_secs(10));
    let log = d.stderr();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(
        log.contains("is not a usable librkllmrt") && log.contains("rkllm_createDefaultParam"),
        "{log}"
    );
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn a_runtime_library_path_is_used_as_is_and_logged() {
    let dir = TempDir::new("libpath");
    let lib = dir.path().join("librkllmrt-copy.so");
    std::fs::copy(simulator_library(), &lib).unwrap();
    let mut d = Daemon::builder("libpath")
        .args(["--runtime-library", lib.to_str().unwrap()])
        .start();
    let health = d.client().get("/health").json();
    assert_eq!(health["runtime"], "simulator");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let log = d.stderr();
    assert!(
        log.contains(&format!("runtime library loaded: {}", lib.display())),
        "{log}"
    );
}

#[test]
fn version_says_when_no_runtime_loads() {
    let dir = TempDir::new("version");
    let exe = dir.path().join("rkllmd");
    // A copy away from target/<profile>/: its $ORIGIN runpath no longer finds the simulator.
    std::fs::copy(env!("CARGO_BIN_EXE_rkllmd"), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("runtime ABI {}", env!("RKLLMD_ABI")))
            && text.contains("no runtime loaded")
            && text.contains("cannot open shared object file"),
        "{text}"
    );
}
