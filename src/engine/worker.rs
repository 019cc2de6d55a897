//! The inference thread: owns the runtime, runs one job at a time, streams text back. Here: the
//! thread's loop and the choice of run by the job's input; each kind of run is in `worker/`
//! (`prompt_run`, `runtime_run`, `embed_run`, `reseat_run`, `snapshot_run`), the runtime call
//! they share in `generate`, and turning its end into the job's result in `conclude`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::Waker;

use super::job::{Input, Job, RunSummary, WorkerMsg};
use super::kv_cache::KvCache;
use super::runtime_history::RuntimeHistory;
use super::runtime_tools::{RuntimeTools, TOOL_RESPONSE_TAG};

mod conclude;
mod embed_run;
mod generate;
mod prompt_run;
mod reseat_run;
mod runtime_run;
mod snapshot_run;
use super::snapshots::{SnapshotConfig, Snapshots};
use super::EngineError;
use super::ModelId;
use crate::memory;
use crate::runtime::{AbortHandle, Capabilities, InitConfig, Role, Runtime};

/// What the runtime's own chat template may add around a prompt, in bytes, when it applies
/// it: a default system prompt and the turn markers (Qwen's are about 120 bytes). Only for
/// telling a refusal for length from another failure.
const RUNTIME_TEMPLATE_BYTES: usize = 256;

/// Sends to the loop and wakes it, at most one wake per drain of the channel.
#[derive(Clone)]
pub(super) struct Notifier {
    pub tx: SyncSender<WorkerMsg>,
    pub waker: Arc<Waker>,
    pub pending: Arc<AtomicBool>,
}

impl Notifier {
    /// Blocks while the channel is full (backpressure on the runtime). Returns false when the
    /// loop side has gone away.
    pub fn send(&self, msg: WorkerMsg) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the event loop: {e}");
            }
        }
        true
    }
}

/// What the inference thread needs besides the runtime's own parameters.
pub(super) struct WorkerConfig {
    /// The parameters every model loads with; `model_path` is set per model.
    pub init: InitConfig,
    /// The catalog's models, by id; the first is loaded at start. Shared with the loop, which
    /// changes it on a reload.
    pub models: super::models::ModelTable,
    pub kv_cache_reuse: bool,
    pub snapshots: Option<SnapshotConfig>,
    /// Where the learnt bytes-per-token ratio is published for the event loop.
    pub ratio: super::SharedRatio,
    /// Where the KV cache's token count is published for the event loop.
    pub kv_tokens: super::SharedTokens,
}

/// What outlives a resident model on the inference thread: what a model is loaded from, and
/// the ways to the loop.
struct Host {
    cfg: WorkerConfig,
    caps: Capabilities,
    notify: Notifier,
    abort_slot: Arc<Mutex<Option<AbortHandle>>>,
    cancelled: Arc<AtomicU64>,
}

pub(super) fn run(
    cfg: WorkerConfig,
    caps: Capabilities,
    jobs: Receiver<Job>,
    notify: Notifier,
    abort_slot: Arc<Mutex<Option<AbortHandle>>>,
    cancelled: Arc<AtomicU64>,
) {
    let host = Host {
        cfg,
        caps,
        notify,
        abort_slot,
        cancelled,
    };
    let started = Instant::now();
    let mut resident = match host.load(0) {
        Ok(worker) => Some(worker),
        Err(e) => {
            host.notify.send(WorkerMsg::LoadFailed(e));
            host.notify.send(WorkerMsg::Stopped);
            return;
        }
    };
    host.notify.send(WorkerMsg::Loaded {
        load_time: started.elapsed(),
    });

    for job in jobs {
        if !host.notify.send(WorkerMsg::Started { id: job.id() }) {
            break;
        }
        if matches!(job.input(), Input::Unload) {
            if let Some(worker) = resident.take_if(|w| w.model == job.model()) {
                let model = worker.model;
                drop(worker);
                host.notify.send(WorkerMsg::Unloaded { model });
            }
            let done = WorkerMsg::Done {
                id: job.id(),
                result: Ok(RunSummary::default()),
            };
            if !host.notify.send(done) {
                break;
            }
            continue;
        }
        let worker = match host.resident_for(&mut resident, job.model()) {
            Ok(worker) => worker,
            Err(error) => {
                if !host.notify.send(WorkerMsg::Done {
                    id: job.id(),
                    result: Err(error),
                }) {
                    break;
                }
                continue;
            }
        };
        // A re-seat is worth running only right after the run that offered it.
        let seat = worker.seat.take();
        let result = match job.input() {
            Input::Reseat => worker.reseat(&job, seat),
            Input::Load => Ok(RunSummary::default()),
            _ => worker.run_job(&job),
        };
        let (id, large) = (job.id(), job.input_bytes() >= memory::LARGE_REQUEST_BYTES);
        drop(job);
        if !host.notify.send(WorkerMsg::Done { id, result }) {
            break;
        }
        // The job and what the loop parsed to build it are freed now: a request that needed
        // a lot of memory gives it back (here, off the event loop's thread).
        if large {
            memory::give_back();
        }
    }
    drop(resident);
    host.notify.send(WorkerMsg::Stopped);
}

impl Host {
    /// The worker of `model`, loaded first if another (or none) is resident: the resident
    /// model's runtime is destroyed before the next one loads (the NPU holds one, see
    /// `max-loaded-models`), and with it everything known about its KV cache.
    fn resident_for<'w>(
        &self,
        resident: &'w mut Option<Worker>,
        model: ModelId,
    ) -> Result<&'w mut Worker, EngineError> {
        if resident.as_ref().is_some_and(|w| w.model == model) {
            return resident.as_mut().ok_or(EngineError::WorkerGone);
        }
        let unloaded = resident.take().map(|w| w.model);
        let started = Instant::now();
        let loaded = self.load(model);
        let name = self
            .cfg
            .models
            .get(model)
            .map_or_else(String::new, |m| m.name);
        self.notify.send(WorkerMsg::Switched {
            unloaded,
            model,
            took: started.elapsed(),
            failure: loaded.as_ref().err().map(ToString::to_string),
        });
        match loaded {
            Ok(worker) => Ok(resident.insert(worker)),
            Err(e) => Err(EngineError::ModelUnavailable {
                model: name,
                reason: e.to_string(),
            }),
        }
    }

    /// Loads `model` and gives it a worker with nothing known about its cache.
    fn load(&self, model: ModelId) -> Result<Worker, crate::runtime::RuntimeError> {
        let spec = self.cfg.models.get(model);
        let raw_template = spec.as_ref().is_some_and(|m| m.raw_template);
        let mut init = self.cfg.init.clone();
        if let Some(spec) = &spec {
            init.model_path = spec.path.clone();
            if let Some(params) = &spec.params {
                init = init.with_params(params);
            }
        }
        let mut runtime = Runtime::init(&init)?;
        if raw_template {
            // Empty system prompt, prefix and postfix: the runtime takes our text as it is.
            runtime.set_chat_template("", "", "")?;
        }
        if let Ok(mut slot) = self.abort_slot.lock() {
            *slot = Some(runtime.abort_handle());
        }
        let mut worker = Worker {
            runtime,
            model,
            caps: self.caps,
            init,
            cache: KvCache::default(),
            reuse: self.cfg.kv_cache_reuse,
            raw_template,
            tools: RuntimeTools::default(),
            history: RuntimeHistory::default(),
            warned: Warned::default(),
            must_clear: false,
            seat: None,
            prefix_reuse: true,
            notify: self.notify.clone(),
            cancelled: Arc::clone(&self.cancelled),
            snapshots: open_snapshots(
                self.cfg.snapshots.clone(),
                raw_template && self.cfg.kv_cache_reuse,
            ),
            restoring: None,
        };
        worker.cache.cleared();
        worker.cache.share_ratio(self.cfg.ratio.clone());
        worker.cache.share_tokens(self.cfg.kv_tokens.clone());
        Ok(worker)
    }
}

/// Snapshots are of conversations rkllmd renders and keeps in the cache; a directory that
/// cannot be made only turns them off.
fn open_snapshots(cfg: Option<SnapshotConfig>, conversations: bool) -> Option<Snapshots> {
    let cfg = cfg.filter(|c| conversations && c.limit_bytes > 0)?;
    let dir = cfg.dir.clone();
    let limit = cfg.limit_bytes;
    match Snapshots::open(cfg) {
        Ok(s) => {
            log::info!(
                "KV-cache snapshots in {} (up to {limit} bytes)",
                dir.display()
            );
            Some(s)
        }
        Err(e) => {
            log::warn!(
                "KV-cache snapshots are off: cannot use {}: {e}",
                dir.display()
            );
            None
        }
    }
}

struct Worker {
    runtime: Runtime,
    /// Which model `runtime` is.
    model: ModelId,
    caps: Capabilities,
    init: InitConfig,
    cache: KvCache,
    reuse: bool,
    /// rkllmd renders conversations, tool definitions included: the runtime's tools API is not
    /// used (it fails under the empty template, rknn-llm#397).
    raw_template: bool,
    /// The system prompt and tools last given to the runtime (`runtime` template mode).
    tools: RuntimeTools,
    /// The conversation the runtime holds (`runtime` template mode).
    history: RuntimeHistory,
    /// The last run was aborted, paused, failed or left the cache other than expected: the
    /// runtime's KV cache is cleared before the next run, whatever its kind.
    must_clear: bool,
    /// The conversation as its next request renders it up to the last answer, when the cache
    /// holds it otherwise (see `engine::reseat`).
    seat: Option<String>,
    /// False once a re-seat showed the runtime reusing no prefix without history.
    prefix_reuse: bool,
    notify: Notifier,
    cancelled: Arc<AtomicU64>,
    /// What was logged at warn level once already (later occurrences go to debug).
    warned: Warned,
    /// Saved KV caches of conversations (None: off).
    snapshots: Option<Snapshots>,
    /// A snapshot loaded for the run about to start.
    restoring: Option<snapshot_run::Restoring>,
}

/// Things worth one warning per daemon run.
#[derive(Default)]
struct Warned {
    /// `rkllm_set_function_tools` failed.
    tools: bool,
    /// The KV cache held other than the expected number of tokens.
    mismatch: bool,
    /// A snapshot could not be saved / loaded.
    snapshot_save: bool,
    snapshot_load: bool,
}

impl Worker {
    fn is_cancelled(&self, job: &Job) -> bool {
        self.cancelled.load(Ordering::Acquire) == job.id()
    }

    fn run_job(&mut self, job: &Job) -> Result<RunSummary, EngineError> {
        // The loop may cancel a job it has handed over before the runtime started it; an
        // rkllm_abort at that moment finds nothing to abort, so the flag is checked here too.
        if self.is_cancelled(job) {
            return Ok(RunSummary {
                perf: None,
                generated_tokens: 0,
                cached_tokens: 0,
                hit_cap: false,
                reseat: false,
            });
        }
        if self.must_clear {
            self.cache.invalidate();
            self.history.invalidate();
            self.runtime
                .clear_kv_cache(false)
                .map_err(EngineError::Runtime)?;
            self.cache.cleared();
            self.history.cleared();
            self.must_clear = false;
        }
        let tools_set = self.set_tools(job);
        let cap = job
            .max_new_tokens()
            .unwrap_or(self.init.max_new_tokens)
            .min(self.init.max_new_tokens.max(1));
        let reserve = cap.min(self.init.max_context_len / 4);
        match job.input() {
            Input::Conversation(conv) => {
                if !self.reuse {
                    self.cache.invalidate();
                }
                let plan = self.cache.plan(conv, self.init.max_context_len, reserve)?;
                let plan = self.around_replacement(job, plan)?;
                if plan.dropped_turns > 0 {
                    log::info!(
                        "request {}: left out the {} oldest turn(s) to fit the context",
                        job.id(),
                        plan.dropped_turns
                    );
                }
                if plan.clear {
                    self.cache.invalidate();
                    self.runtime
                        .clear_kv_cache(false)
                        .map_err(EngineError::Runtime)?;
                    self.cache.cleared();
                }
                let ran = self.generate(job, plan.input(), Role::User, plan.keep_history, cap);
                let ran = self.after_conversation_run(ran);
                let seat = self.seat_for(job, conv, &plan, &ran);
                let kept_history = plan.keep_history;
                let result = self.conclude_conversation(plan, ran);
                self.offer_seat(seat, kept_history, result)
            }
            Input::Embed(input) => self.embed(job, input),
            Input::RuntimeTurns(turns) => self.runtime_turns(job, turns, cap, tools_set),
            // Reached only through the job loop, which hands the re-seat its seat.
            Input::Reseat => self.reseat(job, None),
            // Handled by the job loop, which holds the resident model.
            Input::Load | Input::Unload => Ok(RunSummary::default()),
            Input::Prompt(prompt) => self.prompt(job, prompt, cap, reserve, tools_set),
        }
    }

    /// With the runtime's template, gives the runtime the job's tools, with the request's system
    /// prompt, when they differ from the last ones (see `runtime_tools`). The call replaces the
    /// context the runtime prefills and empties its KV cache, so the cache record no longer
    /// holds. A runtime that refuses them (a model without a chat template, rknn-llm#397) runs
    /// the job without them: the model then answers in prose; that is logged once.
    /// Returns whether the runtime took new tools (its context, emptied, is prefilled with
    /// them on the next run).
    fn set_tools(&mut self, job: &Job) -> bool {
        if self.raw_template {
            return false;
        }
        let Some(set) = self.tools.change(job.tools(), job.system_prompt()) else {
            return false;
        };
        self.cache.invalidate();
        self.history.invalidate();
        match self
            .runtime
            .set_function_tools(&set.system, &set.tools, TOOL_RESPONSE_TAG)
        {
            Ok(()) => {
                self.tools.accepted(set);
                self.history.cleared();
                return true;
            }
            Err(e) if !self.warned.tools => {
                self.warned.tools = true;
                log::warn!(
                    "the runtime refused the request's tools ({e}); requests run without them \
                     (logged once; a model converted without a chat template has this)"
                );
            }
            Err(e) => log::debug!("the runtime refused the request's tools: {e}"),
        }
        false
    }
}
