use std::fmt;
use std::path::PathBuf;

use super::abi::Abi;

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
    /// A last-hidden-layer run finished without handing over any hidden states.
    NoHiddenStates,
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
    /// The probe found the other ABI's `RKLLMParam` layout: `rkllm_init` would misread ours.
    AbiMismatch {
        library: PathBuf,
        built: Abi,
        found: Abi,
    },
    /// The probe's bytes fit neither ABI's `RKLLMParam`.
    AbiUnknown {
        library: PathBuf,
        detail: String,
    },
    /// A process holds one runtime; another one was asked for after the first loaded.
    OtherLibraryLoaded {
        loaded: PathBuf,
        requested: PathBuf,
    },
    /// A multimodal run's embeddings are not `images` x `tokens` x `token_width` floats.
    ImageEmbeddingSize {
        images: usize,
        tokens: usize,
        token_width: usize,
        floats: usize,
    },
    /// A multimodal prompt needs one `<image>` per image.
    ImagePlaceholders {
        placeholders: usize,
        images: usize,
    },
    /// A multimodal run on a runtime initialised without image tags (`InitConfig::image_tags`).
    NoImageTags,
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
            RuntimeError::NoHiddenStates => write!(
                f,
                "the runtime finished a last-hidden-layer run without any hidden states"
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
            RuntimeError::AbiMismatch {
                library,
                built,
                found,
            } => write!(
                f,
                "the runtime library '{}' speaks ABI {found} (its default RKLLMParam has the \
                 {found} layout), but rkllmd is built for ABI {built}; refusing to call rkllm_init: \
                 {}",
                library.display(),
                found.remedy()
            ),
            RuntimeError::AbiUnknown { library, detail } => write!(
                f,
                "the runtime library '{}' has an RKLLMParam layout of neither ABI rkllmd knows \
                 (1.2, 1.3): {detail}; refusing to call rkllm_init",
                library.display()
            ),
            RuntimeError::ImageEmbeddingSize {
                images,
                tokens,
                token_width,
                floats,
            } => write!(
                f,
                "image embeddings of {floats} floats are not {images} image(s) x {tokens} tokens \
                 x {token_width} floats"
            ),
            RuntimeError::ImagePlaceholders {
                placeholders,
                images,
            } => write!(
                f,
                "the prompt has {placeholders} image placeholder(s) for {images} image(s)"
            ),
            RuntimeError::NoImageTags => write!(
                f,
                "a multimodal run needs the model's image tags, and none were set at init"
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

impl RuntimeError {
    /// The runtime speaks another ABI (or none rkllmd knows): a distinct exit code.
    pub fn is_abi(&self) -> bool {
        matches!(
            self,
            RuntimeError::AbiMismatch { .. } | RuntimeError::AbiUnknown { .. }
        )
    }
}

impl std::error::Error for RuntimeError {}
