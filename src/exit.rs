//! Process exit codes, one scheme for the whole daemon, and how the event loop ended. This module
//! sits below everything that decides how the process ends (`error`, `server`, `lifecycle`,
//! `config`, `doctor`), so none of them imports another for a code.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | clean exit, including `--help`, `--version` and a passing `check` |
//! | 1 | failure at run time or in the environment: I/O, bind, permissions; a failing `check` or `selftest` |
//! | 2 | bad usage or configuration: the command line, the config file, `--user` without root, an unknown user or group |
//! | 3 | another instance is running: it holds the lock, or something serves the socket |
//! | 4 | the runtime library or the model did not load, or the inference thread died |
//! | 5 | the runtime was wedged or the shutdown deadline passed (the socket was still removed) |
//! | 6 | a second signal cut the shutdown short (the socket was still removed) |
//! | 7 | the runtime library speaks another ABI than rkllmd is built for (1.2 vs 1.3), or none it knows; found before `rkllm_init` |
//! | 8 | the NPU is in use by another instance (it holds the NPU lock, `npu-lock`) |
//! | 70 | a bug: a panic unwound to `main` (the socket was still removed) |
//!
//! Init scripts can tell "fix the configuration" (2) and "already up" (3) from a real failure
//! (1); supervisors restarting on 1 should not loop on 2.

pub const OK: i32 = 0;
pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const ALREADY_RUNNING: i32 = 3;
pub const ENGINE: i32 = 4;
pub const DEADLINE: i32 = 5;
pub const FORCED: i32 = 6;
/// The runtime library's ABI is not the one rkllmd is built for.
pub const ABI: i32 = 7;
/// Another instance (on another socket) holds the NPU lock. Not "already running" (3): this
/// instance's socket was free, and a supervisor retrying it would only wait for the other one.
pub const NPU_BUSY: i32 = 8;
/// `rkllmd check`: a check failed, so rkllmd cannot serve as configured; `rkllmd selftest`: the
/// runtime breaks an assumption the daemon relies on.
pub const CHECK_FAILED: i32 = 1;
pub const PANIC: i32 = 70;

/// How the event loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every step of the graceful shutdown completed.
    Clean,
    /// The deadline passed with work left (a wedged runtime, a client that would not read).
    DeadlineExceeded,
    /// A second signal cut the shutdown short.
    Forced,
    /// The model could not be loaded or the inference thread died.
    EngineFailed,
    /// The runtime library speaks another ABI: refused before `rkllm_init`.
    AbiMismatch,
}

impl Ending {
    /// The one mapping from how the loop ended to the process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Ending::Clean => OK,
            Ending::EngineFailed => ENGINE,
            Ending::AbiMismatch => ABI,
            Ending::DeadlineExceeded => DEADLINE,
            Ending::Forced => FORCED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_map_to_distinct_codes() {
        let codes = [
            Ending::Clean,
            Ending::EngineFailed,
            Ending::DeadlineExceeded,
            Ending::Forced,
            Ending::AbiMismatch,
        ]
        .map(Ending::exit_code);
        assert_eq!(codes, [OK, ENGINE, DEADLINE, FORCED, ABI]);
    }
}
