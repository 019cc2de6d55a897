//! What flows between the event loop and the inference thread.

use std::time::Duration;

use super::EngineError;
use crate::runtime::{Perf, Role, RuntimeError, Sampling};

pub type JobId = u64;

/// One generation request as the engine runs it.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: JobId,
    pub prompt: String,
    pub role: Role,
    pub enable_thinking: bool,
    pub keep_history: bool,
    /// Clear the runtime's KV cache before this run.
    pub clear_cache: bool,
    pub max_new_tokens: Option<u32>,
    pub sampling: Option<Sampling>,
    /// A conversation rendered by rkllmd; when set, `prompt` is unused and the engine feeds the
    /// runtime only what its KV cache does not already hold.
    pub conversation: Option<Conversation>,
    /// The function tools (a JSON array as text) the runtime is given for this run; `None` for
    /// none.
    pub tools: Option<String>,
}

/// A conversation rendered turn by turn, so old turns can be left out to fit the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The rendered turns in order; concatenated they are the prompt without the generation
    /// prompt.
    pub pieces: Vec<String>,
    /// How many leading pieces (the system prompt) are never left out.
    pub kept: usize,
    /// Opens the assistant's answer.
    pub generation_prompt: String,
}

impl Job {
    pub fn new(id: JobId, prompt: impl Into<String>) -> Job {
        Job {
            id,
            prompt: prompt.into(),
            role: Role::User,
            enable_thinking: false,
            keep_history: false,
            clear_cache: false,
            max_new_tokens: None,
            sampling: None,
            conversation: None,
            tools: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its answer (end-of-sequence).
    Stop,
    /// The token cap was reached.
    Length,
    /// The caller cancelled it.
    Aborted,
    /// The per-request deadline passed and the run was aborted.
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    /// The runtime's statistics; `None` when the run ended by a pause (the runtime sends none).
    pub perf: Option<Perf>,
    /// Tokens the runtime produced, counted by us (WAITING ones included).
    pub generated_tokens: u32,
    /// From dispatch to the worker to the end of the run.
    pub run_time: Duration,
}

/// What the engine reports to the event loop.
#[derive(Debug)]
pub enum Event {
    Ready { load_time: Duration },
    LoadFailed { reason: String },
    Started { id: JobId },
    Text { id: JobId, text: String },
    Finished { id: JobId, finish: Finish },
    Failed { id: JobId, error: EngineError },
    Wedged,
    Stopped,
}

/// Messages from the inference thread (internal).
#[derive(Debug)]
pub(super) enum WorkerMsg {
    Loaded {
        load_time: Duration,
    },
    LoadFailed(RuntimeError),
    Started {
        id: JobId,
    },
    Text {
        id: JobId,
        text: String,
    },
    Done {
        id: JobId,
        result: Result<RunSummary, EngineError>,
    },
    Stopped,
}

#[derive(Debug)]
pub(super) struct RunSummary {
    pub perf: Option<Perf>,
    pub generated_tokens: u32,
    pub hit_cap: bool,
}
