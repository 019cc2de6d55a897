//! The runtime library as rkllmd loads it (dlopen, `runtime-library`), and `rkllmd check`
//! against fake system roots.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, TempDir};

/// The simulator build.rs built (in its `OUT_DIR`), which the binaries' runpath finds.
fn simulator_library() -> PathBuf {
    PathBuf::from(env!("RKLLMD_SIM_LIB"))
}

/// The other ABI's simulator, which build.rs builds beside ours under its own name.
fn other_simulator_library() -> PathBuf {
    let path = PathBuf::from(env!("RKLLMD_OTHER_SIM_LIB"));
    assert!(
        path.is_file(),
        "build.rs builds the other ABI's simulator; '{}' is missing (RKLLM_LIB_DIR set?)",
        path.display()
    );
    path
}

/// A runtime whose `rkllm_createDefaultParam` raises SIGILL, built by build.rs.
fn sigill_library() -> PathBuf {
    let path = PathBuf::from(env!("RKLLMD_SIGILL_LIB"));
    assert!(
        path.is_file(),
        "build.rs builds the SIGILL test runtime; '{}' is missing (RKLLM_LIB_DIR set?)",
        path.display()
    );
    path
}

const EXIT_ABI: i32 = 7;

// ---- loading the runtime ----

#[test]
fn a_runtime_of_the_other_abi_is_refused_before_rkllm_init_with_exit_7() {
    use std::os::unix::process::ExitStatusExt;
    let other = other_simulator_library();
    let mut d = Daemon::builder("otherabi")
        .args(["--runtime-library", other.to_str().unwrap()])
        .no_wait()
        .start();
    let status = d.wait_exit(Duration::from_secs(10));
    let log = d.stderr();
    assert_eq!(status.signal(), None, "killed by a signal: {log}");
    assert_eq!(status.code(), Some(EXIT_ABI), "{log}");
    let (built, found) = if BUILT_ABI == "1.3" {
        ("1.3", "1.2")
    } else {
        ("1.2", "1.3")
    };
    assert!(
        log.contains(&format!(
            "the runtime library '{}' speaks ABI {found}",
            other.display()
        )) && log.contains(&format!("rkllmd is built for ABI {built}"))
            && log.contains("refusing to call rkllm_init"),
        "{log}"
    );
    assert!(!d.socket.exists(), "socket left behind");
    // The probe asked for the defaults; nothing else reached the runtime.
    let calls = std::fs::read_to_string(&d.trace).unwrap_or_default();
    assert!(calls.contains("rkllm_createDefaultParam"), "{calls}");
    assert!(!calls.contains("\"rkllm_init\""), "{calls}");
}

#[test]
fn the_built_abi_simulator_passes_the_probe() {
    // The same daemon with its own simulator: the probe recognises the built ABI.
    let mut d = Daemon::builder("ownabi")
        .args(["--runtime-library", simulator_library().to_str().unwrap()])
        .start();
    assert_eq!(d.client().get("/health").json()["runtime"], "simulator");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

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
    // A copy away from target/<profile>/: its $ORIGIN-relative runpath no longer finds the
    // simulator.
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

// ---- rkllmd check against fake system roots ----

/// The ABI this build speaks, and the runtime release our simulator stands in for.
const BUILT_ABI: &str = env!("RKLLMD_ABI");

fn sim_version(abi: &str) -> &'static str {
    match abi {
        "1.2" => "1.2.3",
        _ => "1.3.0",
    }
}

fn other_abi() -> &'static str {
    if BUILT_ABI == "1.2" {
        "1.3"
    } else {
        "1.2"
    }
}

/// Where a runtime library carries its version, as the real one does.
const BANNER: &str = "RKLLM SDK (version: ";

/// A runtime of `abi`: our simulator of that ABI, which carries that release's SDK banner.
fn runtime_bytes(abi: &str) -> Vec<u8> {
    let lib = if abi == BUILT_ABI {
        simulator_library()
    } else {
        other_simulator_library()
    };
    let bytes = std::fs::read(&lib).unwrap();
    let marker = format!("{BANNER}{}", sim_version(abi));
    assert!(
        bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "{} carries '{marker}'",
        lib.display()
    );
    bytes
}

/// Overwrites every `from` in `bytes` with `to` (same length or shorter); returns how many.
/// A debug build has the banner twice (its debug info holds the constant's value too).
fn rewrite_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(from.len()).position(|w| w == from) {
        let at = i + at;
        bytes[at..at + to.len()].copy_from_slice(to);
        n += 1;
        i = at + from.len();
    }
    n
}

/// A feature list as an RK3588 (Cortex-A55 + A76, ARMv8.2) reports it: no `sve`.
const RK3588_FEATURES: &str = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp \
                               cpuid asimdrdm lrcpc dcpop asimddp";

/// The libraries the simulator links (for either CPU rkllmd is built on here).
const SIMULATOR_NEEDS: [&str; 5] = [
    "libstdc++.so.6",
    "libgcc_s.so.1",
    "libc.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// A fake system root laid out as a Rockchip vendor kernel shows it.
struct FakeRoot {
    dir: TempDir,
}

impl FakeRoot {
    /// A healthy board: RKNPU driver 0.9.8 on renderD129 (the GPU on renderD128), 7 GiB
    /// available, performance governors, the runtime of the built ABI in /usr/lib. For ABI 1.3
    /// the CPUs report SVE (that runtime needs it); for ABI 1.2 they are RK3588's.
    fn healthy(tag: &str) -> FakeRoot {
        let root = FakeRoot {
            dir: TempDir::new(tag),
        };
        root.write("dev/dri/renderD128", "");
        root.write("dev/dri/renderD129", "");
        root.write(
            "sys/class/drm/renderD128/device/uevent",
            "DRIVER=mali\nOF_NAME=gpu\n",
        );
        root.write(
            "sys/class/drm/renderD129/device/uevent",
            "DRIVER=RKNPU\nOF_NAME=npu\nOF_COMPATIBLE_0=rockchip,rk3588-rknpu\n",
        );
        root.write("sys/kernel/debug/rknpu/version", "RKNPU driver: v0.9.8\n");
        root.write(
            "proc/device-tree/compatible",
            "radxa,rock-5b\0rockchip,rk3588\0",
        );
        root.cpus(if BUILT_ABI == "1.2" {
            RK3588_FEATURES.to_owned()
        } else {
            format!("{RK3588_FEATURES} sve")
        });
        root.write(
            "proc/meminfo",
            "MemTotal:        8026736 kB\nMemFree:         5000000 kB\nMemAvailable:    7340032 kB\n",
        );
        for cpu in 0..8 {
            root.write(
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "performance\n",
            );
        }
        root.write("sys/class/devfreq/fdab0000.npu/governor", "performance\n");
        root.write("etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n");
        root.write(
            "etc/ld.so.conf.d/aarch64-linux-gnu.conf",
            "# Multiarch support\n/usr/local/lib/aarch64-linux-gnu\n/lib/aarch64-linux-gnu\n",
        );
        root.write("etc/group", "root:x:0:\nrkllm:x:990:\n");
        root.write(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\nrkllmd:x:991:990::/:/sbin/nologin\n",
        );
        root.write_bytes("usr/lib/librkllmrt.so", &runtime_bytes(BUILT_ABI));
        // What the simulator needs (readelf -d), as placeholders: only their presence counts.
        for lib in SIMULATOR_NEEDS {
            root.write(&format!("usr/lib/{lib}"), "");
        }
        // A sparse 1.5 GiB model: its size is what counts.
        let model = root.path("models/qwen2.5-1.5b.rkllm");
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        std::fs::File::create(&model)
            .unwrap()
            .set_len(1536 << 20)
            .unwrap();
        root
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        self.write_bytes(rel, text.as_bytes());
    }

    fn write_bytes(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn remove(&self, rel: &str) {
        let path = self.path(rel);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }

    fn cpus(&self, features: String) {
        let mut text = String::new();
        for cpu in 0..8 {
            let part = if cpu < 4 { "0xd05" } else { "0xd0b" };
            text.push_str(&format!(
                "processor\t: {cpu}\nBogoMIPS\t: 48.00\nFeatures\t: {features}\n\
                 CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: {part}\n\n"
            ));
        }
        self.write("proc/cpuinfo", &text);
    }

    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rkllmd"));
        cmd.arg("check")
            .arg("--root")
            .arg(self.dir.path())
            .arg("--model")
            .arg(self.path("models/qwen2.5-1.5b.rkllm"))
            .arg("--socket")
            .arg(self.path("run/rkllmd/rkllmd.sock"))
            .args(["--socket-group", "rkllm", "--user", "rkllmd"])
            // cargo's LD_LIBRARY_PATH names host dirs; the board's environment has none.
            .env_remove("LD_LIBRARY_PATH");
        cmd
    }

    fn check(&self, extra: &[&str]) -> Report {
        Report::of(self.command().args(extra).output().unwrap())
    }
}

struct Report {
    code: Option<i32>,
    text: String,
}

impl Report {
    fn of(out: std::process::Output) -> Report {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.stderr.is_empty(),
            "nothing on stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Report {
            code: out.status.code(),
            text,
        }
    }

    /// The line of `check` (with its hint line, if any).
    fn line(&self, check: &str) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.get(6..)
                    .is_some_and(|rest| rest.starts_with(&format!("{check}: ")))
            })
            .unwrap_or_else(|| panic!("no '{check}' line in:\n{}", self.text));
        let mut out = lines[at].to_owned();
        if let Some(hint) = lines.get(at + 1).filter(|l| l.starts_with("      hint: ")) {
            out.push('\n');
            out.push_str(hint);
        }
        out
    }

    fn status(&self, check: &str) -> String {
        self.line(check)[..6].trim_end().to_owned()
    }
}

const CHECKS: [&str; 11] = [
    "config",
    "npu",
    "runtime",
    "abi",
    "sve",
    "memory",
    "template",
    "open-files",
    "cpufreq",
    "npufreq",
    "socket",
];

#[test]
fn every_model_of_a_directory_is_checked_and_one_too_large_fails_by_name() {
    let root = FakeRoot::healthy("several");
    for (name, size) in [("gemma3-1b", 1u64 << 30), ("huge-qwen3", 8 << 30)] {
        std::fs::File::create(root.path(&format!("models/{name}.rkllm")))
            .unwrap()
            .set_len(size)
            .unwrap();
    }
    let dir = root.path("models");
    let r = root.check(&["--models-dir", dir.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    let lines: Vec<&str> = r
        .text
        .lines()
        .filter(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with("memory: ") || rest.starts_with("template: "))
        })
        .collect();
    let expected = [
        "ok    memory: model 'qwen2.5-1.5b': 7.0 GiB available, model file 1.5 GiB",
        "ok    template: model 'qwen2.5-1.5b': qwen2.5",
        "ok    memory: model 'gemma3-1b': 7.0 GiB available, model file 1.0 GiB",
        // Gemma 3 renders as Gemma 2 does: one preset serves both.
        "ok    template: model 'gemma3-1b': gemma2",
        "FAIL  memory: model 'huge-qwen3': 7.0 GiB available, model file 8.0 GiB",
        "ok    template: model 'huge-qwen3': qwen3",
    ];
    assert_eq!(lines.len(), expected.len(), "{}", r.text);
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(want),
            "{line:?} should start with {want:?}:\n{}",
            r.text
        );
    }
}

#[test]
fn a_healthy_board_with_the_matching_runtime_passes_every_check() {
    let root = FakeRoot::healthy("healthy");
    let r = root.check(&[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    for check in CHECKS {
        let status = r.status(check);
        assert!(status == "ok" || status == "skip", "{check}: {}", r.text);
    }
    assert_eq!(r.text.lines().count(), CHECKS.len() + 1, "{}", r.text);
    assert!(
        r.text.ends_with("no check failed, 0 warning(s)\n"),
        "{}",
        r.text
    );
    assert_eq!(
        r.line("npu"),
        "ok    npu: /dev/dri/renderD129, RKNPU driver v0.9.8"
    );
    assert_eq!(
        r.line("runtime"),
        format!(
            "ok    runtime: {} (from default), version {}, ABI {BUILT_ABI} as built",
            root.path("usr/lib/librkllmrt.so").display(),
            sim_version(BUILT_ABI)
        )
    );
    if BUILT_ABI == "1.3" {
        assert_eq!(r.line("sve"), "ok    sve: all 8 CPUs have SVE");
    } else {
        assert_eq!(r.status("sve"), "skip");
    }
    assert!(r
        .line("memory")
        .starts_with("ok    memory: 7.0 GiB available, model file 1.5 GiB"));
    assert!(r.line("cpufreq").contains("performance on CPUs 0-7"));
    assert!(r.line("npufreq").contains("performance on fdab0000.npu"));
    assert!(
        r.line("socket").contains("will be created (mode 0750)"),
        "{}",
        r.text
    );
}

#[test]
fn rk3588_without_sve_and_a_1_3_runtime_is_a_warning_that_cites_both_reports() {
    let root = FakeRoot::healthy("nosve");
    root.cpus(RK3588_FEATURES.to_owned());
    root.write_bytes("usr/lib/librkllmrt.so", &runtime_bytes("1.3"));
    let r = root.check(&[]);
    let sve = r.line("sve");
    assert!(
        sve.starts_with(
            "warn  sve: runtime 1.3 may use SVE instructions but CPUs 0-7 (RK3588) have none"
        ),
        "{sve}"
    );
    assert!(
        sve.contains("rknn-llm#518") && sve.contains("rknn-llm#509"),
        "{sve}"
    );
    assert!(
        sve.contains("hint: use runtime 1.2.3") && sve.contains("--features rkllm-1-2"),
        "{sve}"
    );
    // A warning blocks nothing: under a 1.3 build the board passes; a 1.2 build fails only
    // for the ABI.
    let fails: Vec<&str> = r.text.lines().filter(|l| l.starts_with("FAIL")).collect();
    if BUILT_ABI == "1.3" {
        assert_eq!(r.code, Some(0), "{}", r.text);
    } else {
        assert!(
            fails
                .iter()
                .all(|l| l.starts_with("FAIL  runtime") || l.starts_with("FAIL  abi")),
            "{}",
            r.text
        );
    }
}

#[test]
fn a_runtime_that_dies_of_an_illegal_instruction_fails_the_sve_check_too() {
    let root = FakeRoot::healthy("sigillsve");
    root.cpus(RK3588_FEATURES.to_owned());
    let sigill = std::fs::read(sigill_library()).unwrap();
    root.write_bytes("usr/lib/librkllmrt.so", &sigill);
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(r.line("abi").contains("SIGILL"), "{}", r.text);
    // Its version is unknown, so the SVE question is asked for the build's ABI.
    if BUILT_ABI == "1.3" {
        assert!(
            r.line("sve")
                .starts_with("FAIL  sve: runtime 1.3 (the ABI rkllmd is built for) uses SVE")
                && r.line("sve")
                    .contains("died with 'Illegal instruction' in the abi probe"),
            "{}",
            r.text
        );
    } else {
        assert_eq!(r.status("sve"), "skip", "{}", r.text);
    }
}

#[test]
fn a_missing_npu_fails_and_the_other_checks_still_run() {
    let root = FakeRoot::healthy("nonpu");
    root.remove("sys/class/drm/renderD129");
    root.remove("dev/dri/renderD129");
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.line("npu").starts_with("FAIL  npu: no RKNPU device"),
        "{}",
        r.text
    );
    assert!(r
        .line("npu")
        .contains("hint: boot a kernel with Rockchip's RKNPU driver"));
    assert_eq!(r.status("runtime"), "ok", "{}", r.text);
    assert_eq!(
        r.text.lines().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "{}",
        r.text
    );

    // The driver bound but no device node (no devtmpfs).
    let root = FakeRoot::healthy("nonode");
    root.remove("dev/dri/renderD129");
    let r = root.check(&[]);
    assert!(
        r.line("npu").starts_with(
            "FAIL  npu: the RKNPU driver is bound but /dev/dri/renderD129 does not exist"
        ),
        "{}",
        r.text
    );

    // The misc-device flavour of the driver, and a driver too old for the runtime.
    let root = FakeRoot::healthy("oldnpu");
    root.remove("sys/class/drm/renderD129");
    root.remove("dev/dri/renderD129");
    root.write("dev/rknpu", "");
    root.write("sys/kernel/debug/rknpu/version", "RKNPU driver: v0.8.2\n");
    let r = root.check(&[]);
    assert!(
        r.line("npu")
            .starts_with("warn  npu: /dev/rknpu, RKNPU driver v0.8.2: older than 0.9.7")
            && r.line("npu")
                .contains("hint: librkllmrt warns below RKNPU driver 0.9.7"),
        "{}",
        r.text
    );

    // Without root, debugfs is unreadable; a modular driver says its version in sysfs.
    let root = FakeRoot::healthy("modnpu");
    root.remove("sys/kernel/debug/rknpu/version");
    root.write("sys/module/rknpu/version", "0.9.8\n");
    let r = root.check(&[]);
    assert_eq!(
        r.line("npu"),
        "ok    npu: /dev/dri/renderD129, RKNPU driver v0.9.8",
        "{}",
        r.text
    );

    // Only the mainline driver: librkllmrt cannot use it.
    let root = FakeRoot::healthy("rocket");
    root.remove("sys/class/drm/renderD129");
    root.remove("dev/dri/renderD129");
    root.write("dev/accel/accel0", "");
    root.write("sys/class/accel/accel0/device/uevent", "DRIVER=rocket\n");
    let r = root.check(&[]);
    assert!(
        r.line("npu").starts_with(
            "FAIL  npu: only the mainline 'rocket' NPU driver is present (/dev/accel/accel0)"
        ),
        "{}",
        r.text
    );
}

#[test]
fn no_runtime_library_anywhere_fails_and_names_what_was_skipped() {
    let root = FakeRoot::healthy("nolib");
    root.remove("usr/lib/librkllmrt.so");
    // Not an ELF: dlopen skips it and goes on searching, and so does the doctor.
    root.write(
        "lib/aarch64-linux-gnu/librkllmrt.so",
        "version https://git-lfs.github.com/spec/v1\n",
    );
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    let line = r.line("runtime");
    assert!(
        line.starts_with("FAIL  runtime: librkllmrt.so not found; skipped "),
        "{line}"
    );
    assert!(
        line.contains("lib/aarch64-linux-gnu/librkllmrt.so (not an ELF file)"),
        "{line}"
    );
    assert!(line.contains("hint: install librkllmrt.so"), "{line}");
    // Without a runtime the SVE question is asked for the ABI rkllmd is built for.
    let sve = r.status("sve");
    assert_eq!(
        sve,
        if BUILT_ABI == "1.3" { "ok" } else { "skip" },
        "{}",
        r.text
    );
}

#[test]
fn a_runtime_whose_dependency_is_missing_fails_by_name() {
    let root = FakeRoot::healthy("needed");
    root.remove("usr/lib/libstdc++.so.6");
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.line("runtime").starts_with(&format!(
            "FAIL  runtime: {} (from default) needs libstdc++.so.6, not found in the library path",
            root.path("usr/lib/librkllmrt.so").display()
        )),
        "{}",
        r.text
    );
    // Found through ld.so.conf instead: fine again.
    root.write("lib/aarch64-linux-gnu/libstdc++.so.6", "");
    assert_eq!(root.check(&[]).code, Some(0));
}

#[test]
fn the_search_follows_ld_library_path_and_ld_so_conf_inside_the_root() {
    let root = FakeRoot::healthy("search");
    root.write_bytes(
        "lib/aarch64-linux-gnu/librkllmrt.so",
        &runtime_bytes(BUILT_ABI),
    );
    let r = root.check(&[]);
    assert!(
        r.line("runtime").starts_with(&format!(
            "ok    runtime: {} (from ld.so.conf)",
            root.path("lib/aarch64-linux-gnu/librkllmrt.so").display()
        )),
        "{}",
        r.text
    );
    root.write_bytes("opt/rkllm/librkllmrt.so", &runtime_bytes(BUILT_ABI));
    let r = Report::of(
        root.command()
            .env("LD_LIBRARY_PATH", "/opt/rkllm")
            .output()
            .unwrap(),
    );
    assert!(
        r.line("runtime").starts_with(&format!(
            "ok    runtime: {} (from LD_LIBRARY_PATH)",
            root.path("opt/rkllm/librkllmrt.so").display()
        )),
        "{}",
        r.text
    );
    // A path is taken as given, not searched.
    let lib = root.path("elsewhere/librkllmrt-custom.so");
    root.write_bytes("elsewhere/librkllmrt-custom.so", &runtime_bytes(BUILT_ABI));
    let r = root.check(&["--runtime-library", lib.to_str().unwrap()]);
    assert!(
        r.line("runtime").starts_with(&format!(
            "ok    runtime: {} (from runtime-library)",
            lib.display()
        )),
        "{}",
        r.text
    );
}

#[test]
fn a_runtime_of_the_other_abi_fails_with_the_rebuild_hint() {
    let root = FakeRoot::healthy("mismatch");
    let other = other_abi();
    root.write_bytes("usr/lib/librkllmrt.so", &runtime_bytes(other));
    // An SVE-capable CPU, so that only the ABI is at fault.
    root.cpus(format!("{RK3588_FEATURES} sve"));
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    let line = r.line("runtime");
    assert!(
        line.contains(&format!(
            "version {}: ABI {other}, but rkllmd is built for ABI {BUILT_ABI}",
            sim_version(other)
        )),
        "{line}"
    );
    let hint = if other == "1.2" {
        "hint: rebuild rkllmd with --features rkllm-1-2, or install runtime 1.3.x"
    } else {
        "hint: rebuild rkllmd without --features rkllm-1-2, or install runtime 1.2.3"
    };
    assert!(line.contains(hint), "{line}");
    // The probe, in a child process, finds the other layout in the library itself.
    let abi = r.line("abi");
    assert!(
        abi.starts_with(&format!(
            "FAIL  abi: {}: rkllm_createDefaultParam fills an ABI {other} RKLLMParam, but rkllmd \
             is built for ABI {BUILT_ABI}: the daemon would refuse it (exit code 7)",
            root.path("usr/lib/librkllmrt.so").display()
        )),
        "{abi}"
    );
    assert_eq!(
        r.text.lines().filter(|l| l.starts_with("FAIL")).count(),
        2,
        "{}",
        r.text
    );
}

#[test]
fn a_runtime_that_dies_in_the_probe_is_a_finding_and_check_goes_on() {
    use std::os::unix::process::ExitStatusExt;
    let root = FakeRoot::healthy("sigill");
    root.write_bytes(
        "usr/lib/librkllmrt.so",
        &std::fs::read(sigill_library()).unwrap(),
    );
    let out = root.command().output().unwrap();
    assert_eq!(out.status.signal(), None, "check itself was killed");
    let r = Report::of(out);
    assert_eq!(r.code, Some(1), "{}", r.text);
    let abi = r.line("abi");
    assert!(
        abi.starts_with(&format!(
            "FAIL  abi: {}: the runtime died with SIGILL (Illegal instruction) in \
             rkllm_createDefaultParam (probed in a child process)",
            root.path("usr/lib/librkllmrt.so").display()
        )),
        "{abi}"
    );
    assert!(
        abi.contains("hint: it uses an instruction this CPU lacks"),
        "{abi}"
    );
    // Every check after it still ran.
    for check in CHECKS {
        r.line(check);
    }
    assert!(
        r.text.ends_with("rkllmd cannot serve as configured\n"),
        "{}",
        r.text
    );
}

#[test]
fn a_runtime_without_a_version_marker_is_a_warning() {
    let root = FakeRoot::healthy("nomarker");
    let mut bytes = runtime_bytes(BUILT_ABI);
    assert!(rewrite_all(&mut bytes, BANNER.as_bytes(), b"X") > 0);
    root.write_bytes("usr/lib/librkllmrt.so", &bytes);
    let r = root.check(&[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert!(
        r.line("runtime").starts_with("warn  runtime: ")
            && r.line("runtime").contains("version unknown"),
        "{}",
        r.text
    );
}

#[test]
fn too_little_memory_for_the_model_fails() {
    let root = FakeRoot::healthy("lowmem");
    root.write(
        "proc/meminfo",
        "MemTotal: 4026736 kB\nMemFree: 900000 kB\nMemAvailable: 1048576 kB\n",
    );
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.line("memory")
            .starts_with("FAIL  memory: 1.0 GiB available, model file 1.5 GiB"),
        "{}",
        r.text
    );
    // Enough for the weights, little beyond: a warning.
    root.write("proc/meminfo", "MemAvailable: 1677722 kB\n");
    let r = root.check(&[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.status("memory"), "warn", "{}", r.text);
}

#[test]
fn a_powersave_governor_is_a_warning_and_the_exit_stays_zero() {
    let root = FakeRoot::healthy("governor");
    for cpu in 4..8 {
        root.write(
            &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            "powersave\n",
        );
    }
    root.write(
        "sys/class/devfreq/fdab0000.npu/governor",
        "rknpu_ondemand\n",
    );
    let r = root.check(&[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    let cpu = r.line("cpufreq");
    assert!(
        cpu.starts_with("warn  cpufreq: performance on CPUs 0-3, powersave on CPUs 4-7"),
        "{cpu}"
    );
    assert!(
        cpu.contains("hint: for steady token rates: echo performance"),
        "{cpu}"
    );
    assert!(
        r.line("npufreq")
            .starts_with("warn  npufreq: rknpu_ondemand on fdab0000.npu"),
        "{}",
        r.text
    );
    assert!(
        r.text.ends_with("no check failed, 2 warning(s)\n"),
        "{}",
        r.text
    );
}

#[test]
fn an_invalid_config_is_a_fail_line_and_every_other_check_still_prints() {
    let root = FakeRoot::healthy("badconf");
    root.write("etc/rkllmd/rkllmd.conf", "queue-size = 8\ntop-p = 7\n");
    let conf = root.path("etc/rkllmd/rkllmd.conf");
    let r = root.check(&["--config", conf.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    let line = r.line("config");
    assert!(
        line.starts_with(&format!(
            "FAIL  config: {} line 2: invalid value '7' for top-p",
            conf.display()
        )),
        "{line}"
    );
    for check in CHECKS {
        r.line(check);
    }
    assert_eq!(r.status("npu"), "ok", "{}", r.text);
    assert_eq!(
        r.status("memory"),
        "ok",
        "the model still counts: {}",
        r.text
    );

    // No model at all: the daemon would refuse to start.
    let r = Report::of(
        std::process::Command::new(env!("CARGO_BIN_EXE_rkllmd"))
            .args(["check", "--root"])
            .arg(root.dir.path())
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.line("config").starts_with("FAIL  config: no model given"),
        "{}",
        r.text
    );
    assert_eq!(r.status("memory"), "skip", "{}", r.text);
}

#[test]
fn a_bad_command_line_is_still_a_usage_error() {
    let root = FakeRoot::healthy("usage");
    let out = root.command().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rkllmd"))
        .args(["--config-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--config-only is only for 'rkllmd check'")
    );
}

#[test]
fn a_low_hard_open_files_limit_is_a_warning() {
    use std::os::unix::process::CommandExt;
    let root = FakeRoot::healthy("nofile");
    let mut cmd = root.command();
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 512,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = Report::of(cmd.output().unwrap());
    assert_eq!(r.code, Some(0), "{}", r.text);
    let line = r.line("open-files");
    assert!(
        line.starts_with("warn  open-files: soft 256, hard 512 here; rkllmd raises its soft limit"),
        "{line}"
    );
    assert!(line.contains("at least 4096"), "{line}");
}

#[test]
fn a_world_writable_socket_directory_fails_as_the_daemon_would_refuse_it() {
    use std::os::unix::fs::PermissionsExt;
    let root = FakeRoot::healthy("sockdir");
    let dir = root.path("run/rkllmd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.line("socket")
            .contains("is world-writable without the sticky bit")
            && r.line("socket").contains("hint: chmod o-w"),
        "{}",
        r.text
    );
    // A symlink in its place (to a sticky directory that would pass) is refused, like the
    // daemon refuses it.
    let elsewhere = root.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::rename(&dir, root.path("run/moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    let r = root.check(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.line("socket")
            .contains("is a symbolic link (owned by uid")
            && r.line("socket").contains("refuses to follow it"),
        "{}",
        r.text
    );
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(root.path("run/moved"), &dir).unwrap();
    // A group that does not exist in the root's /etc/group.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let r = root.check(&["--socket-group", "nosuch"]);
    assert!(
        r.line("socket")
            .starts_with("FAIL  socket: socket-group 'nosuch' does not exist"),
        "{}",
        r.text
    );
}

#[test]
fn on_this_system_the_runtime_is_the_one_dlopen_finds_through_the_runpath() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rkllmd"))
        .args(["check", "--model"])
        .arg(common::fast_model())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let r = Report::of(out);
    assert_eq!(
        r.line("runtime"),
        format!(
            "ok    runtime: {} (from rkllmd's runpath), version {}, ABI {BUILT_ABI} as built",
            simulator_library().display(),
            sim_version(BUILT_ABI)
        )
    );
}

#[test]
fn config_only_judges_the_configuration_and_not_the_board() {
    // This host has no NPU, so the full check fails here; --config-only must not.
    let model = common::fast_model();
    let ok = Command::new(common::daemon_bin())
        .args(["check", "--config-only", "--model"])
        .arg(&model)
        .output()
        .expect("run rkllmd check");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ok    config:"), "{stdout}");
    assert!(!stdout.contains("npu:"), "{stdout}");

    let bad = Command::new(common::daemon_bin())
        .args([
            "check",
            "--config-only",
            "--model",
            "/nonexistent/model.rkllm",
        ])
        .output()
        .expect("run rkllmd check");
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("FAIL  config:"), "{stdout}");
    // The finding, its hint and the summary; no board check ran.
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(!stdout.contains("npu:"), "{stdout}");

    // Outside check it is a command-line error.
    let run = Command::new(common::daemon_bin())
        .args(["--config-only", "--model"])
        .arg(&model)
        .output()
        .expect("run rkllmd");
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("--config-only is only for 'rkllmd check'")
    );
}
