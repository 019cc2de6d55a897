//! What flows between the event loop and the inference thread.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::priority::Priority;
use super::residents::Eviction;
use super::EngineError;
use super::{AdapterId, KeepAlive, ModelId};
use crate::exit::Ending;
use crate::runtime::{Perf, Role, RuntimeError, Sampling};
use crate::vision::image::ImageInput;

pub type JobId = u64;

/// One generation request as the engine runs it. Built by the API with a constructor and
/// setters; the engine reads it through getters.
#[derive(Clone, Debug)]
pub struct Job {
    id: JobId,
    /// Shared, so the engine keeps a background job to put back at the cost of a pointer.
    input: Arc<Input>,
    priority: Priority,
    role: Role,
    enable_thinking: bool,
    keep_history: bool,
    clear_cache: bool,
    max_new_tokens: Option<u32>,
    sampling: Option<Sampling>,
    tools: Option<String>,
    /// How many of the request's tools were left out to fit the tool budget (for `/metrics`).
    tools_left_out: usize,
    system_prompt: Option<String>,
    /// What a client gets back of an answer (see `set_answer_key`).
    answer_key: fn(&str) -> String,
    /// How the next request renders this job's answer (see `set_past_turn`).
    past_turn: Option<PastTurn>,
    /// Which model runs it.
    model: ModelId,
    /// Which of its LoRA adapters (`None`: the model alone).
    adapter: Option<AdapterId>,
    /// How long its model stays loaded after it (`None`: the configured default).
    keep_alive: Option<KeepAlive>,
    /// The request's images in prompt order, one `<image>` placeholder each in the input
    /// (empty: a text run). Shared, as the input is.
    images: Arc<[ImageInput]>,
}

/// Renders a generated answer as the next request of its conversation will render it as a
/// past assistant turn (markers, tool calls, reasoning dropped where the template drops it);
/// `None` when it cannot be known. Made by the API, which knows the template; the engine only
/// calls it.
#[derive(Clone)]
pub struct PastTurn(Arc<RenderAnswer>);

type RenderAnswer = dyn Fn(&str) -> Option<String> + Send + Sync;

impl PastTurn {
    pub fn new(render: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> PastTurn {
        PastTurn(Arc::new(render))
    }

    pub fn render(&self, answer: &str) -> Option<String> {
        (self.0)(answer)
    }
}

impl fmt::Debug for PastTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PastTurn")
    }
}

/// What the runtime is asked to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// One prompt, templated by the runtime or (a raw completion) passed on as it is.
    Prompt(String),
    /// A conversation rendered by rkllmd; the engine feeds the runtime only what its KV cache
    /// does not already hold.
    Conversation(Conversation),
    /// Texts to embed, one last-hidden-layer run each, in order.
    Embed(EmbedInput),
    /// A conversation under the runtime's own chat template, which takes one input per run:
    /// the engine sends the newest input on top of the history the runtime holds when the
    /// conversation continues it, and starts over otherwise.
    RuntimeTurns(RuntimeTurns),
    /// The engine's own job, never a client's: re-seat the KV cache with the last answer as the
    /// next request will render it (see `reseat`). The worker holds the text.
    Reseat,
    /// Load the job's model, run nothing (Ollama's load call).
    Load,
    /// Unload the job's model if it is resident: the engine's own job when its `keep_alive`
    /// has run out, or Ollama's unload call.
    Unload,
}

/// A conversation as the runtime's own template is given it: one input per run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeTurns {
    /// The earlier exchanges, oldest first.
    pub history: Vec<Exchange>,
    /// The newest input, sent with the job's `role`.
    pub newest: String,
}

/// One earlier input (as it was, or would have been, sent to the runtime) and the answer that
/// followed it, as the job's answer key gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub role: Role,
    pub input: String,
    pub answer: String,
}

/// An embedding request: its texts and how their token states become one vector each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedInput {
    pub texts: Vec<String>,
    /// Resolved (never `Auto`).
    pub pooling: super::Pooling,
    /// Cut a text that does not fit the context until it does (Ollama's `truncate`), instead
    /// of failing.
    pub truncate: bool,
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
    /// Bytes of the kept pieces that are tool definitions (counted apart when the
    /// conversation does not fit).
    pub tools_bytes: usize,
}

impl Job {
    /// A job for one prompt, with the runtime's defaults for everything else.
    pub fn new(id: JobId, prompt: impl Into<String>) -> Job {
        Job::with_input(id, Input::Prompt(prompt.into()))
    }

    /// A job that embeds texts.
    pub fn embed(id: JobId, input: EmbedInput) -> Job {
        Job::with_input(id, Input::Embed(input))
    }

    /// A job for a conversation under the runtime's own template.
    pub fn runtime_turns(id: JobId, turns: RuntimeTurns) -> Job {
        Job::with_input(id, Input::RuntimeTurns(turns))
    }

    /// A job for a conversation rkllmd rendered.
    pub fn conversation(id: JobId, conversation: Conversation) -> Job {
        Job::with_input(id, Input::Conversation(conversation))
    }

    fn with_input(id: JobId, input: Input) -> Job {
        Job {
            id,
            input: Arc::new(input),
            priority: Priority::Interactive,
            role: Role::User,
            enable_thinking: false,
            keep_history: false,
            clear_cache: false,
            max_new_tokens: None,
            sampling: None,
            tools: None,
            tools_left_out: 0,
            system_prompt: None,
            answer_key: str::to_owned,
            past_turn: None,
            model: 0,
            adapter: None,
            keep_alive: None,
            images: Arc::new([]),
        }
    }

    /// A client's load call: its model is loaded when its turn comes, nothing is run.
    pub fn load_model(id: JobId) -> Job {
        Job::with_input(id, Input::Load)
    }

    /// A client's unload call: its model is unloaded when its turn comes, if it is resident.
    pub fn unload_model(id: JobId) -> Job {
        Job::with_input(id, Input::Unload)
    }

    /// The engine's unload job (see `Input::Unload`).
    pub(super) fn unload(id: JobId, model: ModelId) -> Job {
        let mut job = Job::with_input(id, Input::Unload);
        job.model = model;
        job
    }

    /// The engine's re-seat job (see `Input::Reseat`).
    pub(super) fn reseat(id: JobId) -> Job {
        Job::with_input(id, Input::Reseat)
    }

    pub fn id(&self) -> JobId {
        self.id
    }

    /// The model the job runs on (the catalog's index; 0, the default, unless set).
    pub fn model(&self) -> ModelId {
        self.model
    }

    pub fn set_model(&mut self, model: ModelId) {
        self.model = model;
    }

    /// The LoRA adapter of its model the job runs with (`None`: the model alone).
    pub fn adapter(&self) -> Option<AdapterId> {
        self.adapter
    }

    pub fn set_adapter(&mut self, adapter: Option<AdapterId>) {
        self.adapter = adapter;
    }

    pub fn keep_alive(&self) -> Option<KeepAlive> {
        self.keep_alive
    }

    pub fn set_keep_alive(&mut self, keep_alive: Option<KeepAlive>) {
        self.keep_alive = keep_alive;
    }

    /// The images the input's `<image>` placeholders stand for, in order.
    pub fn images(&self) -> &[ImageInput] {
        &self.images
    }

    pub fn set_images(&mut self, images: Vec<ImageInput>) {
        self.images = images.into();
    }

    pub fn input(&self) -> &Input {
        &self.input
    }

    /// Interactive jobs are served first (see `priority.rs`).
    pub fn priority(&self) -> Priority {
        self.priority
    }

    pub fn set_priority(&mut self, priority: Priority) {
        self.priority = priority;
    }

    /// Bytes the job carries: its prompt, or its conversation's rendered pieces, and its
    /// encoded images.
    pub fn input_bytes(&self) -> usize {
        let images: usize = self.images.iter().map(|i| i.bytes.len()).sum();
        images
            + match self.input.as_ref() {
                Input::Prompt(p) => p.len(),
                Input::Conversation(c) => {
                    c.pieces.iter().map(String::len).sum::<usize>() + c.generation_prompt.len()
                }
                Input::Embed(e) => e.texts.iter().map(String::len).sum(),
                Input::Reseat | Input::Load | Input::Unload => 0,
                Input::RuntimeTurns(t) => {
                    t.newest.len()
                        + t.history
                            .iter()
                            .map(|e| e.input.len() + e.answer.len())
                            .sum::<usize>()
                }
            }
    }

    /// The role the prompt is sent as: `Tool` for function results in `runtime` template mode (a
    /// conversation is always sent as the user's).
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    pub fn enable_thinking(&self) -> bool {
        self.enable_thinking
    }

    pub fn set_enable_thinking(&mut self, on: bool) {
        self.enable_thinking = on;
    }

    /// Whether the runtime keeps a prompt's run in its KV cache (a conversation's always is).
    pub fn keep_history(&self) -> bool {
        self.keep_history
    }

    pub fn set_keep_history(&mut self, keep: bool) {
        self.keep_history = keep;
    }

    /// Clear the runtime's KV cache before a prompt's run.
    pub fn clear_cache(&self) -> bool {
        self.clear_cache
    }

    pub fn set_clear_cache(&mut self, clear: bool) {
        self.clear_cache = clear;
    }

    /// The request's cap on new tokens; `None`: the daemon's.
    pub fn max_new_tokens(&self) -> Option<u32> {
        self.max_new_tokens
    }

    pub fn set_max_new_tokens(&mut self, cap: Option<u32>) {
        self.max_new_tokens = cap;
    }

    /// The request's sampling; `None`: the configured one.
    pub fn sampling(&self) -> Option<Sampling> {
        self.sampling
    }

    pub fn set_sampling(&mut self, sampling: Option<Sampling>) {
        self.sampling = sampling;
    }

    /// The function tools (a JSON array as text) the runtime is given for this run; `None` for
    /// none.
    pub fn tools(&self) -> Option<&str> {
        self.tools.as_deref()
    }

    /// The tool definitions given to the model, and how many of the request's were left out to
    /// fit the tool budget.
    pub fn set_tools(&mut self, tools: Option<String>, left_out: usize) {
        self.tools = tools;
        self.tools_left_out = left_out;
    }

    /// How many of the request's tools were left out to fit the tool budget.
    pub fn tools_left_out(&self) -> usize {
        self.tools_left_out
    }

    /// The request's system text for the runtime's own template (`runtime` template mode, where
    /// the runtime gets it with the tools); `None`: the request had none.
    pub fn system_prompt(&self) -> Option<&str> {
        self.system_prompt.as_deref()
    }

    pub fn set_system_prompt(&mut self, system: Option<String>) {
        self.system_prompt = system;
    }

    /// An answer the runtime generated as the client gets it back, to compare with the answers
    /// of a `RuntimeTurns` history (which the API made with the same function). Identity by
    /// default.
    pub fn answer_key(&self, generated: &str) -> String {
        (self.answer_key)(generated)
    }

    pub fn set_answer_key(&mut self, key: fn(&str) -> String) {
        self.answer_key = key;
    }

    /// How the next request of this conversation renders the answer as a past turn; `None`
    /// (the default): unknown, and the KV cache is not re-seated after the run.
    pub fn past_turn(&self) -> Option<&PastTurn> {
        self.past_turn.as_ref()
    }

    /// Lets the engine re-seat the KV cache after this job's answer while the NPU is idle, so
    /// the next turn prefills only its new input (see `engine::reseat`).
    pub fn set_past_turn(&mut self, render: PastTurn) {
        self.past_turn = Some(render);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its answer (end-of-sequence).
    Stop,
    /// The token cap (or the context) was reached.
    Length,
    /// The client went away and the run was aborted; nobody hears this end. (A run the engine
    /// cut short for a deadline or a shutdown ends as `Event::Failed` instead.)
    Aborted,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    /// The runtime's statistics; `None` when the run ended by a pause (the runtime sends none).
    pub perf: Option<Perf>,
    /// Tokens the runtime produced, counted by us (WAITING ones included).
    pub generated_tokens: u32,
    /// Prompt tokens the runtime took from its KV cache instead of prefilling them: the whole
    /// prompt is these plus `perf.prefill_tokens` (what clients count as the prompt).
    pub cached_tokens: u32,
    /// From dispatch to the worker to the end of the run.
    pub run_time: Duration,
}

/// What the engine reports to the event loop.
#[derive(Debug)]
pub enum Event {
    Ready {
        load_time: Duration,
    },
    /// `ending`: how the process ends for it (`AbiMismatch` for a runtime of another ABI).
    LoadFailed {
        reason: String,
        ending: Ending,
    },
    Started {
        id: JobId,
    },
    /// What the client should be told about how its request was run that only the inference
    /// thread knows (an `X-Rkllmd-Warning`); comes before the run's text.
    Warning {
        id: JobId,
        text: String,
    },
    /// A background run that had produced no output was aborted for an interactive job and
    /// put back in the queue; it runs again later (another `Started`), and its client sees only
    /// that run.
    Preempted {
        id: JobId,
    },
    /// `tokens`: how many of the runtime's tokens the piece of text comes from (a character
    /// split over tokens arrives once, with all of them).
    Text {
        id: JobId,
        text: String,
        tokens: u32,
    },
    /// One input's pooled, normalised vector (in input order); `tokens`: how many token states
    /// it came from.
    Embedding {
        id: JobId,
        vector: Vec<f32>,
        tokens: u32,
    },
    Finished {
        id: JobId,
        finish: Finish,
    },
    Failed {
        id: JobId,
        error: EngineError,
    },
    /// See `WorkerMsg::Switched`.
    Switched {
        unloaded: Vec<(ModelId, Eviction)>,
        model: ModelId,
        /// How long the load took, and why it failed if it did.
        took: Duration,
        failure: Option<String>,
    },
    /// A resident model was unloaded, idle past its `keep_alive` or for an unload call.
    Unloaded {
        model: ModelId,
    },
    /// A KV-cache snapshot was saved or restored (`engine::snapshots`).
    Snapshot(SnapshotUse),
    Wedged,
    Stopped,
}

/// What was done with a KV-cache snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotUse {
    /// A conversation's cache was saved before a request replaced it.
    Saved,
    /// A conversation that came back was served from its snapshot.
    Restored,
}

/// Messages from the inference thread (internal).
#[derive(Debug)]
pub(super) enum WorkerMsg {
    Loaded {
        load_time: Duration,
    },
    LoadFailed(RuntimeError),
    /// The worker unloaded the resident model for an `Input::Unload` job.
    Unloaded {
        model: ModelId,
    },
    /// The worker unloaded `unloaded` (the least recently used models, each with why) to make
    /// room and loaded `model` for a job that needs it (in `took`; `failure`: why it did not
    /// load).
    Switched {
        unloaded: Vec<(ModelId, Eviction)>,
        model: ModelId,
        /// How long the load took, and why it failed if it did.
        took: Duration,
        failure: Option<String>,
    },
    /// The worker took the job (it now prepares its run: plans the prompt, clears the cache).
    Started {
        id: JobId,
    },
    /// The worker is about to call `rkllm_run` for the job: from here on, time is the
    /// runtime's, and an abort it ignores counts towards declaring it wedged.
    InRuntime {
        id: JobId,
        /// About how many tokens the runtime is to prefill.
        prefill_tokens: u64,
    },
    /// The runtime call made after `InRuntime` returned: the worker's own work after it (the
    /// bookkeeping of a long conversation, say) is never taken for a wedged runtime.
    OutOfRuntime {
        id: JobId,
    },
    Warning {
        id: JobId,
        text: String,
    },
    /// `tokens`: how many of the runtime's tokens the piece of text comes from (a character
    /// split over tokens arrives once, with all of them).
    Text {
        id: JobId,
        text: String,
        tokens: u32,
    },
    Embedding {
        id: JobId,
        vector: Vec<f32>,
        tokens: u32,
    },
    Done {
        id: JobId,
        result: Result<RunSummary, EngineError>,
    },
    Snapshot(SnapshotUse),
    Stopped,
}

#[derive(Debug, Default)]
pub(super) struct RunSummary {
    pub perf: Option<Perf>,
    pub generated_tokens: u32,
    /// See `Finish::cached_tokens`.
    pub cached_tokens: u32,
    pub hit_cap: bool,
    /// The worker holds a re-seat for the cache: the engine may run it while idle.
    pub reseat: bool,
}
