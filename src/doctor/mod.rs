//! `rkllmd check`: a doctor for a board that "gives no response".
//!
//! Every check reads files (under `--root`) or asks the kernel about this process, except `abi`,
//! which loads the runtime it found in a forked child (the runtime may die with SIGILL; the
//! child dies, not the check). Each prints one line (`report`), and the exit code says whether
//! anything blocks serving.

mod abi;
mod cpu;
mod library;
mod memory;
mod models;
mod npu;
mod report;
mod socket;

use std::io::{self, Write};

use nix::sys::resource::{getrlimit, Resource};

use crate::board::Root;
use crate::config::{CheckSetup, Config, NpuLock};
use crate::exit;
pub use report::{Finding, Status};

/// What `npu-lock` locks on this system: `auto` is the NPU's device node (none on a host
/// without one). The daemon and `selftest` both take it before loading a model.
pub fn npu_lock_path(setting: &NpuLock) -> Option<std::path::PathBuf> {
    match setting {
        NpuLock::Auto => npu::device_nodes(&Root::new(std::path::Path::new("/")))
            .into_iter()
            .next()
            .map(std::path::PathBuf::from),
        NpuLock::File(path) => Some(path.clone()),
        NpuLock::None => None,
    }
}

/// The `abi` check of `library`, as `selftest` runs it before loading the runtime itself.
pub fn abi_finding(library: &std::path::Path) -> Finding {
    abi::check(Some(library)).finding
}

/// The version in a runtime library's SDK banner (the file's bytes), if it carries one.
pub fn banner_version(library_bytes: &[u8]) -> Option<String> {
    library::runtime_version(library_bytes)
}

/// This board's Rockchip SoC from the device tree (`RK3588`), if it names one.
pub fn board_soc() -> Option<String> {
    cpu::soc(&Root::new(std::path::Path::new("/")))
}

/// Runs every check in a fixed order and returns the findings.
pub fn findings(setup: &CheckSetup, ld_library_path: Option<&str>) -> Vec<Finding> {
    if setup.config_only {
        return vec![config(setup)];
    }
    let root = Root::new(&setup.root);
    let cfg = &setup.config;
    let soc = cpu::soc(&root);
    let runtime = library::check(&root, &cfg.runtime_library, ld_library_path);
    let built_minor =
        library::major_minor(&format!("{}.0", env!("RKLLMD_ABI"))).map_or(3, |(_, minor)| minor);
    let abi = abi::check(runtime.path.as_deref());
    let mut all = vec![
        config(setup),
        npu::check(&root),
        runtime.finding,
        abi.finding,
        cpu::sve(
            &root,
            runtime.minor.unwrap_or(built_minor),
            runtime.minor.is_none(),
            soc.as_deref(),
            abi.illegal_instruction,
        ),
    ];
    all.extend(models::check(&root, cfg));
    all.extend([
        open_files(cfg),
        cpu::cpu_governor(&root),
        cpu::npu_governor(&root),
        socket::check(&root, cfg),
    ]);
    all
}

/// Prints the findings and a summary; the exit code is [`exit::CHECK_FAILED`] when any check
/// failed, else 0 (warnings alone do not block serving).
pub fn run(setup: &CheckSetup, out: &mut dyn Write) -> io::Result<i32> {
    let ld_library_path = std::env::var("LD_LIBRARY_PATH").ok();
    let findings = findings(setup, ld_library_path.as_deref());
    for f in &findings {
        writeln!(out, "{f}")?;
    }
    writeln!(out, "{}", report::summary(&findings))?;
    Ok(if findings.iter().any(|f| f.status == Status::Fail) {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

fn config(setup: &CheckSetup) -> Finding {
    const NAME: &str = "config";
    let hint = "'rkllmd --help' documents every option and config key";
    if let Some(e) = &setup.config_error {
        return Finding::fail(NAME, e.clone(), hint);
    }
    let cfg = &setup.config;
    if cfg.model.as_os_str().is_empty() {
        return Finding::fail(
            NAME,
            "no model given: pass --model FILE or set 'model' in the config file",
            hint,
        );
    }
    let file = match &cfg.config_file {
        Some(path) => path.display().to_string(),
        None => "no config file".to_owned(),
    };
    Finding::ok(
        NAME,
        format!(
            "{file}; model {}, socket {}",
            cfg.model.display(),
            cfg.socket.display()
        ),
    )
}

/// What the runtime and the connections need: librkllmrt's init has failed with EMFILE under the
/// usual soft limit of 1024.
fn needed_files(cfg: &Config) -> u64 {
    4096.max(cfg.max_connections as u64 + 1024)
}

#[allow(clippy::useless_conversion)] // rlim_t is u32 on 32-bit ARM.
fn widen(v: libc::rlim_t) -> u64 {
    u64::from(v)
}

fn open_files(cfg: &Config) -> Finding {
    const NAME: &str = "open-files";
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => (widen(soft), widen(hard)),
        Err(e) => {
            return Finding::warn(
                NAME,
                format!("cannot read the limit: {e}"),
                "check 'ulimit -Hn'",
            )
        }
    };
    let shown = |v: u64| {
        if v == widen(libc::RLIM_INFINITY) {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    let detail = format!(
        "soft {}, hard {} here; rkllmd raises its soft limit to the hard one at start",
        shown(soft),
        shown(hard)
    );
    let need = needed_files(cfg);
    if hard < need {
        Finding::warn(
            NAME,
            format!("{detail}, and {} is low", shown(hard)),
            format!(
                "raise the hard limit to at least {need} where rkllmd is started: 'ulimit -Hn 65536' \
                 in an init script, rc_ulimit=\"-n 65536\" for OpenRC, LimitNOFILE=65536 for systemd"
            ),
        )
    } else {
        Finding::ok(NAME, detail)
    }
}
