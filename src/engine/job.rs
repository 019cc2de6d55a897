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
        /// On failure, with the tokens generated before it.
        result: Result<RunSummary, (RuntimeError, u32)>,
    },
    Stopped,
}

#[derive(Debug)]
pub(super) struct RunSummary {
    pub perf: Option<Perf>,
    pub generated_tokens: u32,
    pub hit_cap: bool,
}
