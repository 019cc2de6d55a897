//! `rkllmd selftest --model FILE`: what rkllmd assumes about the runtime, checked on this board.
//!
//! It loads the runtime and the model in this process (after probing the ABI in a child) and
//! makes a few short runs: each check prints one line in `check`'s format (`ok`, `FAIL`,
//! `unknown`), `FAIL` only where the runtime breaks an assumption the daemon relies on. A
//! summary for bug reports closes the output. Nothing is written to disk (but a missing
//! `npu-lock` file, created empty); every handle is destroyed. The NPU lock is taken as the
//! daemon takes it, so selftest never loads a model beside a running daemon's. On a board the whole takes well under a minute with a small model.

mod abort;
mod about;
mod cache;
mod context;
mod runtime_tools;
mod session;
mod template;
mod watchdog;

use std::io::{self, Write};

use crate::config::Config;
use crate::doctor::{self, Finding, Status};
use crate::exit;
use crate::lifecycle;
use crate::runtime;
use watchdog::Watchdog;

/// Runs the checks, printing each group's lines as they come, then the summary. The exit code is
/// [`exit::CHECK_FAILED`] when any check failed, else 0.
pub fn run(cfg: &Config, out: &mut dyn Write) -> io::Result<i32> {
    let mut all = Vec::new();
    let mut emit = |out: &mut dyn Write, findings: Vec<Finding>| -> io::Result<()> {
        for f in findings {
            writeln!(out, "{f}")?;
            all.push(f);
        }
        out.flush()
    };
    let abi = doctor::abi_finding(&cfg.runtime_library);
    let mut usable = abi.status != Status::Fail;
    emit(out, vec![abi])?;
    // Held until the end: a daemon serving on this NPU would otherwise share it with our model.
    let _npu = match doctor::npu_lock_path(&cfg.npu_lock).map(|p| lifecycle::NpuGuard::acquire(&p))
    {
        Some(Err(e)) if usable => {
            usable = false;
            emit(
                out,
                vec![Finding::fail(
                    "npu-lock",
                    e.to_string(),
                    "stop the rkllmd that holds the NPU first (or set npu-lock = none if the board \
                     has room for both models)",
                )],
            )?;
            None
        }
        Some(Ok(guard)) => Some(guard),
        _ => None,
    };
    let mut banner = None;
    if usable {
        match runtime::load(&cfg.runtime_library) {
            Ok(lib) => {
                banner = std::fs::read(&lib.path)
                    .ok()
                    .and_then(|b| doctor::banner_version(&b));
                emit(out, vec![banner_finding(banner.as_deref(), &lib.path)])?;
                let dog = Watchdog {
                    budget: watchdog::RUN_BUDGET,
                    grace: cfg.abort_grace,
                    about: about::lines(cfg, banner.as_deref()),
                };
                emit(out, template::check(cfg, &dog))?;
                emit(out, cache::check(cfg, &dog))?;
                emit(out, vec![context::check(cfg, &dog)])?;
                emit(out, abort::check(cfg, &dog))?;
            }
            Err(e) => emit(
                out,
                vec![Finding::fail("load", e.to_string(), "run 'rkllmd check'")],
            )?,
        }
    }
    writeln!(out, "{}", summary(cfg, banner.as_deref(), &all))?;
    Ok(if all.iter().any(|f| f.status == Status::Fail) {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

fn banner_finding(version: Option<&str>, path: &std::path::Path) -> Finding {
    match version {
        Some(v) => Finding::ok(
            "banner",
            format!("{}: RKLLM SDK version {v}", path.display()),
        ),
        None => Finding::unknown(
            "banner",
            format!(
                "{}: no 'RKLLM SDK (version: X' banner in the file",
                path.display()
            ),
        ),
    }
}

/// The lines to paste into a bug report.
fn summary(cfg: &Config, banner: Option<&str>, findings: &[Finding]) -> String {
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    // Only the ABI probe warns (defaults that fit both ABIs).
    let warned = match count(Status::Warn) {
        0 => String::new(),
        n => format!(", {n} warn"),
    };
    format!(
        "summary: {} ok, {} unknown, {} FAIL{warned}\n{}",
        count(Status::Ok),
        count(Status::Unknown),
        count(Status::Fail),
        about::lines(cfg, banner)
    )
}
