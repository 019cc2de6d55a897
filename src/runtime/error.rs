use std::fmt;
use std::path::PathBuf;

/// Failures reported by librkllmrt (or by us before reaching it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeError {
    Init {
        model: PathBuf,
        code: i32,
    },
    RunFailed {
        code: i32,
    },
    NoFinish,
    Call {
        call: &'static str,
        code: i32,
    },
    NulByte {
        what: &'static str,
    },
    /// dlopen failed; `reason` is dlerror's text.
    LibraryOpen {
        library: PathBuf,
        reason: String,
    },
    /// The library opened but lacks a function rkllmd calls; `reason` is dlerror's text.
    MissingSymbol {
        library: PathBuf,
        reason: String,
    },
    /// A process holds one runtime; another one was asked for after the first loaded.
    OtherLibraryLoaded {
        loaded: PathBuf,
        requested: PathBuf,
    },
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Init { model, code } => {
                write!(
                    f,
                    "the runtime could not load model '{}' (rkllm_init returned {code})",
                    model.display()
                )
            }
            RuntimeError::RunFailed { code } => write!(
                f,
                "the runtime reported an error during generation (code {code})"
            ),
            RuntimeError::NoFinish => write!(
                f,
                "the runtime returned from rkllm_run without finishing or failing"
            ),
            RuntimeError::Call { call, code } => write!(f, "{call} returned {code}"),
            RuntimeError::NulByte { what } => write!(
                f,
                "the {what} contains a NUL byte, which the runtime cannot take"
            ),
            RuntimeError::LibraryOpen { library, reason } => write!(
                f,
                "cannot load the runtime library '{}': {reason} (set runtime-library, or run 'rkllmd check')",
                library.display()
            ),
            RuntimeError::MissingSymbol { library, reason } => write!(
                f,
                "the runtime library '{}' is not a usable librkllmrt: {reason}",
                library.display()
            ),
            RuntimeError::OtherLibraryLoaded { loaded, requested } => write!(
                f,
                "cannot load runtime library '{}': '{}' is already loaded in this process",
                requested.display(),
                loaded.display()
            ),
        }
    }
}

impl std::error::Error for RuntimeError {}
