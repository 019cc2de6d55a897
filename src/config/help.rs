//! The `--help` text, generated from the option table.

use std::fmt::Write as _;

use super::options::{DefaultText, Kind, OPTIONS};

/// Width of the flag column in the help text.
const HELP_COLUMN: usize = 30;
/// A default that would push a help line past this many columns goes on the next line.
const HELP_WIDTH: usize = 100;

/// The full `--help` text.
pub fn help() -> String {
    let mut out = String::from(
        "Usage: rkllmd [OPTIONS]\n       rkllmd check [--root DIR] [OPTIONS]\n       \
         rkllmd selftest --model FILE [OPTIONS]\n       \
         rkllmd top [OPTIONS]\n\n\
         Serve a Rockchip RKLLM model over HTTP on a Unix socket (and optionally TCP).\n\
         'check' diagnoses the board and the configuration without loading the runtime: one line\n\
         per check (ok, warn or FAIL, with a hint), exit 0 unless something blocks serving (1),\n\
         2 for a bad command line.\n\
         'selftest' loads the runtime and the model and checks, in under a minute, what rkllmd\n\
         assumes about the runtime (ok, FAIL or unknown per line, then a summary for bug reports);\n\
         it serves nothing and writes no file. Exit 0 unless an assumption fails (1).\n\
         'top' shows a running daemon every second: model, queue, the running request and its\n\
         tokens/s, NPU load, clocks, temperatures (the daemon's /health and /metrics, over its\n\
         socket, or over TCP when given the daemon's address and API key). Ctrl-C quits.\n\n\
         Options take '--name VALUE' or '--name=VALUE'. Each one except --config, --root, --help\n\
         and --version may also be set in the config file as 'name = value' ('#' starts a comment).\n",
    );
    let mut section = "";
    for opt in OPTIONS {
        if opt.section != section {
            section = opt.section;
            let _ = write!(out, "\n{section}:\n");
        }
        let mut flag = match opt.short {
            Some(c) => format!("-{c}, --{}", opt.name),
            None => format!("    --{}", opt.name),
        };
        if let Kind::Value(placeholder) = opt.kind {
            flag = format!("{flag} {placeholder}");
        }
        let indent = format!("\n  {:HELP_COLUMN$} ", "");
        let _ = write!(
            out,
            "  {flag:<HELP_COLUMN$} {}",
            opt.help.replace('\n', &indent)
        );
        if let DefaultText::Value(v) | DefaultText::Note(v) = opt.default {
            let default = format!("[default: {v}]");
            let line_len = out.len() - out.rfind('\n').map_or(0, |i| i + 1);
            if line_len + 1 + default.len() > HELP_WIDTH {
                out.push_str(&indent);
            } else {
                out.push(' ');
            }
            out.push_str(&default);
        }
        out.push('\n');
    }
    out.push_str(HELP_FOOTER);
    out
}

const HELP_FOOTER: &str = "
Signals:
  SIGTERM, SIGINT               prompt stop: stop accepting, abort the running generation,
                                fail queued requests, flush, destroy the runtime, remove the socket
                                (within --shutdown-timeout); a second signal exits at once
  SIGXCPU                       the same: the CPU-time limit was reached (the hard one kills)
  SIGQUIT                       drain: /health answers 503 \"draining\", new generations get 503
                                with Retry-After, running and queued requests finish; then the
                                daemon exits 0 (within --drain-timeout, then as on SIGTERM)
  SIGHUP                        reload: reads the config file again and rescans --models-dir;
                                new, removed and changed models and each model's settings apply
                                (a removed or changed model is unloaded once idle); other
                                settings need a restart (each changed one is logged); an invalid
                                config is logged and the one in use kept
  SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT, SIGXFSZ,
  SIGRTMIN to SIGRTMAX          logged and ignored (SIGXFSZ: the write past the limit fails)

Exit codes:
  0 clean shutdown   1 I/O failure at start, or a failing check or selftest
  2 bad command line or config
  3 already running  4 runtime library or model failed to load, or inference thread died
  5 wedged runtime or shutdown deadline passed  6 second signal
  7 the runtime library has another ABI than rkllmd is built for (1.2 vs 1.3)
  8 the NPU is in use by another instance (see --npu-lock)
  70 internal error (panic)
  The socket and lock files are removed in every case but SIGKILL and a crash (SIGSEGV,
  SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS); a stale socket is removed at next start.

Environment:
  RUST_LOG                      log filter, overrides --log-level
  NOTIFY_SOCKET                 systemd-style readiness: READY=1 is sent there when ready
  RKLLMD_SYSLOG_SOCKET          syslog socket for --syslog (default /dev/log)
";
