use std::fmt;
use std::path::PathBuf;

/// Failures reported by librkllmrt (or by us before reaching it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeError {
    Init { model: PathBuf, code: i32 },
    RunFailed { code: i32 },
    NoFinish,
    Call { call: &'static str, code: i32 },
    NulByte { what: &'static str },
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
        }
    }
}

impl std::error::Error for RuntimeError {}
