//! The daemon's top-level error, and its one mapping to the process exit code.

use std::fmt;
use std::io;

use crate::causes::WithCauses;
use crate::config::ConfigError;
use crate::exit;
use crate::lifecycle::LifecycleError;
use crate::runtime::RuntimeError;

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
            DaemonError::Lifecycle(e) => e.exit_code(),
            DaemonError::Runtime(e) if e.is_abi() => exit::ABI,
            DaemonError::Runtime(_) => exit::ENGINE,
            DaemonError::Io { .. } | DaemonError::Logging(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The inner error's causes are said here: this is the line a person reads.
            DaemonError::Config(e) => write!(f, "{}", WithCauses(e)),
            DaemonError::Lifecycle(e) => write!(f, "{}", WithCauses(e)),
            DaemonError::Runtime(e) => write!(f, "{}", WithCauses(e)),
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
    fn io_errors_are_failures_with_a_sentence() {
        let e = DaemonError::io(
            "bind the TCP listener",
            io::Error::from(io::ErrorKind::AddrInUse),
        );
        assert_eq!(e.exit_code(), exit::FAILURE);
        assert!(e.to_string().starts_with("cannot bind the TCP listener: "));
    }

    #[test]
    fn a_runtime_of_the_other_abi_has_its_own_code() {
        use crate::runtime::Abi;
        let e = DaemonError::from(RuntimeError::AbiMismatch {
            library: "/usr/lib/librkllmrt.so".into(),
            built: Abi::V1_3,
            found: Abi::V1_2,
        });
        assert_eq!(e.exit_code(), exit::ABI);
        assert!(e.to_string().contains("speaks ABI 1.2"), "{e}");
        let e = DaemonError::from(RuntimeError::AbiUnknown {
            library: "/usr/lib/librkllmrt.so".into(),
            detail: "as 1.2: reserved byte 3 would be nonzero".to_owned(),
        });
        assert_eq!(e.exit_code(), exit::ABI);
        assert_ne!(exit::ABI, exit::ENGINE);
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
