//! The daemon's top-level error, and the one mapping from how the daemon ended to its exit code.

use std::fmt;
use std::io;

use crate::config::ConfigError;
use crate::lifecycle::LifecycleError;
use crate::runtime::RuntimeError;
use crate::server::Ending;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    pub const OK: i32 = 0;
    /// An I/O failure at start (bind, poll, thread).
    pub const FAILURE: i32 = 1;
    /// Bad command line or config file.
    pub const USAGE: i32 = 2;
    /// Another instance holds the socket's lock.
    pub const ALREADY_RUNNING: i32 = 3;
    /// The runtime library or the model did not load, or the inference thread died.
    pub const ENGINE: i32 = 4;
    /// The runtime was wedged or the shutdown deadline passed; the socket was still removed.
    pub const DEADLINE: i32 = 5;
    /// A second signal cut the shutdown short; the socket was still removed.
    pub const FORCED: i32 = 6;
    /// `rkllmd check`: a check failed, so rkllmd cannot serve as configured.
    pub const CHECK_FAILED: i32 = 1;
    /// A bug: a panic unwound to main (the socket was still removed).
    pub const PANIC: i32 = 70;
}

#[derive(Debug)]
pub enum DaemonError {
    Config(ConfigError),
    Lifecycle(LifecycleError),
    /// The runtime library could not be loaded.
    Runtime(RuntimeError),
    Io {
        what: &'static str,
        source: io::Error,
    },
    Logging(io::Error),
}

impl DaemonError {
    pub fn io(what: &'static str, source: io::Error) -> DaemonError {
        DaemonError::Io { what, source }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_) => exit::USAGE,
            DaemonError::Lifecycle(e) if e.is_already_running() => exit::ALREADY_RUNNING,
            DaemonError::Runtime(_) => exit::ENGINE,
            DaemonError::Lifecycle(_) | DaemonError::Io { .. } | DaemonError::Logging(_) => {
                exit::FAILURE
            }
        }
    }
}

pub fn ending_exit_code(ending: Ending) -> i32 {
    match ending {
        Ending::Clean => exit::OK,
        Ending::EngineFailed => exit::ENGINE,
        Ending::DeadlineExceeded => exit::DEADLINE,
        Ending::Forced => exit::FORCED,
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => write!(f, "{e}"),
            DaemonError::Lifecycle(e) => write!(f, "{e}"),
            DaemonError::Runtime(e) => write!(f, "{e}"),
            DaemonError::Io { what, source } => write!(f, "cannot {what}: {source}"),
            DaemonError::Logging(e) => write!(f, "cannot set up logging: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Config(e) => Some(e),
            DaemonError::Lifecycle(e) => Some(e),
            DaemonError::Runtime(e) => Some(e),
            DaemonError::Io { source, .. } | DaemonError::Logging(source) => Some(source),
        }
    }
}

impl From<ConfigError> for DaemonError {
    fn from(e: ConfigError) -> Self {
        DaemonError::Config(e)
    }
}

impl From<RuntimeError> for DaemonError {
    fn from(e: RuntimeError) -> Self {
        DaemonError::Runtime(e)
    }
}

impl From<LifecycleError> for DaemonError {
    fn from(e: LifecycleError) -> Self {
        DaemonError::Lifecycle(e)
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
        ]
        .map(ending_exit_code);
        assert_eq!(
            codes,
            [exit::OK, exit::ENGINE, exit::DEADLINE, exit::FORCED]
        );
    }

    #[test]
    fn io_errors_are_failures_with_a_sentence() {
        let e = DaemonError::io(
            "bind the TCP listener",
            io::Error::from(io::ErrorKind::AddrInUse),
        );
        assert_eq!(e.exit_code(), exit::FAILURE);
        assert!(e.to_string().starts_with("cannot bind the TCP listener: "));
    }

    #[test]
    fn a_runtime_library_that_does_not_load_is_an_engine_failure() {
        let e = DaemonError::from(RuntimeError::LibraryOpen {
            library: "librkllmrt.so".into(),
            reason: "librkllmrt.so: cannot open shared object file".to_owned(),
        });
        assert_eq!(e.exit_code(), exit::ENGINE);
        assert!(
            e.to_string().contains("cannot open shared object file"),
            "{e}"
        );
    }
}
