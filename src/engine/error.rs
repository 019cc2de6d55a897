use std::fmt;
use std::time::Duration;

use crate::runtime::RuntimeError;

/// Why a request did not get (all of) its generation.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// The bounded queue is full; try again later.
    QueueFull { capacity: usize },
    /// The request waited longer than the queue timeout.
    QueueTimeout { waited: Duration },
    /// The model is still loading and the queue cannot take more.
    Loading,
    /// The model failed to load; nothing will be served.
    LoadFailed { reason: String },
    /// The model a request named could not be loaded when its turn came; other models serve.
    ModelUnavailable { model: String, reason: String },
    /// The LoRA adapter a request named did not load with its model; the model itself serves.
    AdapterUnavailable {
        model: String,
        adapter: String,
        reason: String,
    },
    /// A run ignored abort past the grace period; the runtime is stuck.
    Wedged,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The daemon drains (SIGQUIT): it finishes what it has and takes no new generation.
    Draining,
    /// The request ran past the request timeout and was cut short.
    Timeout { after: Duration },
    /// The client went away and its generation was aborted (nobody hears this).
    Cancelled,
    /// The runtime refused a prompt that (by our estimate) does not fit its context.
    PromptTooLong {
        /// The whole prompt that could not be left out, tool definitions included.
        estimated_tokens: u64,
        prompt_bytes: usize,
        max_context: u32,
        /// The runtime refused the prompt (by the estimate it might have fitted, but it is
        /// larger in bytes than the context in tokens); false: refused before running it.
        by_runtime: bool,
        /// Of `estimated_tokens`, the tool definitions' (0: none, or not known).
        tools_tokens: u64,
        /// Tokens kept free for the answer (0 when refused by the runtime).
        reserve: u32,
    },
    /// An image of the request could not be used (it does not decode, or the prompt does not
    /// place it): the client's fault, told before any output.
    BadImage { reason: String },
    /// The model's vision encoder did not open, or failed on an image; its text requests serve.
    Encoder { model: String, reason: String },
    /// The runtime failed the run.
    Runtime(RuntimeError),
    /// The inference thread is gone (it panicked or exited).
    WorkerGone,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::QueueFull { capacity } => {
                write!(
                    f,
                    "the request queue is full ({capacity} waiting); retry later"
                )
            }
            EngineError::QueueTimeout { waited } => {
                write!(
                    f,
                    "the request waited {:.1} s in the queue without reaching the model",
                    waited.as_secs_f32()
                )
            }
            EngineError::Loading => write!(f, "the model is still loading"),
            EngineError::LoadFailed { reason } => write!(f, "the model failed to load: {reason}"),
            EngineError::ModelUnavailable { model, reason } => {
                write!(f, "model '{model}' could not be loaded: {reason}")
            }
            EngineError::AdapterUnavailable {
                model,
                adapter,
                reason,
            } => write!(
                f,
                "LoRA adapter '{adapter}' of model '{model}' could not be loaded: {reason}"
            ),
            EngineError::Wedged => write!(
                f,
                "the runtime stopped responding; the daemon must be restarted"
            ),
            EngineError::ShuttingDown => write!(f, "the daemon is shutting down"),
            EngineError::Draining => write!(
                f,
                "the daemon is draining: it finishes the requests it has and takes no new ones; \
                 send this one to another instance"
            ),
            EngineError::Cancelled => write!(f, "the request was cancelled"),
            EngineError::Timeout { after } => write!(
                f,
                "the generation ran past the request timeout ({:.1} s) and was cut short",
                after.as_secs_f32()
            ),
            EngineError::PromptTooLong { estimated_tokens, prompt_bytes, max_context, by_runtime: false, tools_tokens, reserve } => write!(
                f,
                "the prompt does not fit the model's context: about {estimated_tokens} tokens ({prompt_bytes} bytes; \
                 {tools_tokens} of them tool definitions) and {reserve} kept for the answer, for a context of \
                 {max_context} tokens"
            ),
            EngineError::PromptTooLong { estimated_tokens, prompt_bytes, max_context, by_runtime: true, .. } => write!(
                f,
                "the prompt does not fit the model's context: the runtime refused it ({prompt_bytes} bytes, \
                 estimated at {estimated_tokens} tokens, for a context of {max_context} tokens)"
            ),
            EngineError::BadImage { reason } => f.write_str(reason),
            EngineError::Encoder { model, reason } => {
                write!(f, "the vision encoder of model '{model}' failed: {reason}")
            }
            EngineError::Runtime(e) => write!(f, "generation failed: {e}"),
            EngineError::WorkerGone => write!(f, "the inference thread is gone"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Runtime(e) => Some(e),
            _ => None,
        }
    }
}
