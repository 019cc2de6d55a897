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
use super::kv_cache::{KvCache, Publisher};
use super::lora;
use super::runtime_history::RuntimeHistory;
use super::runtime_tools::{RuntimeTools, TOOL_RESPONSE_TAG};

mod conclude;
mod embed_run;
mod generate;
mod image_run;
mod prompt_run;
mod reseat_run;
mod runtime_run;
mod snapshot_run;
use super::budget;
use super::residents::{Eviction, Residents};
use super::snapshots::{SnapshotConfig, Snapshots};
use super::EngineError;
use super::{AdapterId, ModelId};
use crate::board::Root;
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
    /// Where each resident model's KV cache is published for the event loop.
    pub kv_caches: super::SharedCaches,
    /// Models resident at once (`max-loaded-models`).
    pub max_loaded: usize,
    /// Where `/proc/meminfo` is read for the memory budget (`--root`).
    pub root: Root,
    /// What vision models' encoders run with.
    pub vision: super::Vision,
}

/// What outlives a resident model on the inference thread: what a model is loaded from, and
/// the ways to the loop.
struct Host {
    cfg: WorkerConfig,
    caps: Capabilities,
    notify: Notifier,
    abort_slot: Arc<Mutex<Option<AbortHandle>>>,
    cancelled: Arc<AtomicU64>,
    /// Models whose load failed even after unloading another to retry: the next failure of
    /// theirs is not worth unloading a further one for.
    refused_again: Vec<ModelId>,
}

pub(super) fn run(
    cfg: WorkerConfig,
    caps: Capabilities,
    jobs: Receiver<Job>,
    notify: Notifier,
    abort_slot: Arc<Mutex<Option<AbortHandle>>>,
    cancelled: Arc<AtomicU64>,
) {
    let mut host = Host {
        cfg,
        caps,
        notify,
        abort_slot,
        cancelled,
        refused_again: Vec::new(),
    };
    let started = Instant::now();
    let mut residents = Residents::new(host.cfg.max_loaded);
    if let Err(e) = host.load_within_budget(0, &mut residents, &mut Vec::new()) {
        host.notify.send(WorkerMsg::LoadFailed(e));
        host.notify.send(WorkerMsg::Stopped);
        return;
    }
    host.notify.send(WorkerMsg::Loaded {
        load_time: started.elapsed(),
    });

    for job in jobs {
        if !host.notify.send(WorkerMsg::Started { id: job.id() }) {
            break;
        }
        if matches!(job.input(), Input::Unload) {
            if let Some(worker) = residents.remove(job.model()) {
                drop(worker);
                host.notify.send(WorkerMsg::Unloaded { model: job.model() });
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
        let worker = match host.resident_for(&mut residents, job.model()) {
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
        // The loop aborts through this slot: it must name the runtime this job runs on.
        if let Ok(mut slot) = host.abort_slot.lock() {
            *slot = Some(worker.runtime.abort_handle());
        }
        // A re-seat is worth running only right after the run that offered it.
        let seat = worker.seat.take();
        let result = match job.input() {
            Input::Reseat => worker.reseat(&job, seat),
            Input::Load => Ok(RunSummary::default()),
            _ => worker.run_job(&job),
        };
        worker.publish_snapshots();
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
    residents.clear();
    host.notify.send(WorkerMsg::Stopped);
}

impl Host {
    /// The worker of `model`, loaded first if it is not resident. Room is made first (see
    /// `residents`): the least recently used models are unloaded while `max-loaded-models` are
    /// resident or the board's memory is short, and once more if the runtime refuses the load
    /// beside the others (not for a model whose retry failed too before: the fault is then
    /// likely its own). An unloaded model's KV cache, and everything known about it, goes.
    fn resident_for<'w>(
        &mut self,
        residents: &'w mut Residents<Worker>,
        model: ModelId,
    ) -> Result<&'w mut Worker, EngineError> {
        if residents.contains(model) {
            return residents.use_model(model).ok_or(EngineError::WorkerGone);
        }
        let mut unloaded = Vec::new();
        while residents.is_full() {
            let max = residents.max();
            let Some((gone, worker)) = residents.take_lru() else {
                break;
            };
            drop(worker);
            unloaded.push((gone, Eviction::Capacity { max }));
        }
        let started = Instant::now();
        let mut loaded = self.load_within_budget(model, residents, &mut unloaded);
        let retry = !self.refused_again.contains(&model);
        if let (Err(e), true) = (&loaded, retry) {
            // Some runtimes hold one handle per process: make room once more and retry.
            if let Some((gone, worker)) = residents.take_lru() {
                log::warn!(
                    "model {} did not load beside {} other(s) ({e}); unloading the least \
                     recently used and trying once more",
                    self.name(model),
                    residents.len() + 1
                );
                drop(worker);
                unloaded.push((gone, Eviction::Refused));
                loaded = self.load(model, residents);
                if loaded.is_err() {
                    self.refused_again.push(model);
                } else {
                    residents.learn_handle_limit();
                }
            }
        }
        if loaded.is_ok() {
            self.refused_again.retain(|&m| m != model);
        }
        self.notify.send(WorkerMsg::Switched {
            unloaded,
            model,
            took: started.elapsed(),
            failure: loaded.as_ref().err().map(ToString::to_string),
        });
        match loaded {
            Ok(()) => residents.use_model(model).ok_or(EngineError::WorkerGone),
            Err(e) => Err(EngineError::ModelUnavailable {
                model: self
                    .cfg
                    .models
                    .get(model)
                    .map_or_else(String::new, |m| m.name),
                reason: e.to_string(),
            }),
        }
    }

    /// For logs: the model's name, quoted.
    fn name(&self, model: ModelId) -> String {
        let name = self.cfg.models.get(model).map(|m| m.name);
        format!("'{}'", name.as_deref().unwrap_or("?"))
    }

    /// Loads `model` after unloading the least recently used models while the board's
    /// available memory, with what those unloads free (their files' sizes), is below what
    /// the model needs (`budget`). With nothing left to unload the load is tried anyway: the
    /// estimate may be wrong, and the runtime says for certain.
    fn load_within_budget(
        &self,
        model: ModelId,
        residents: &mut Residents<Worker>,
        unloaded: &mut Vec<(ModelId, Eviction)>,
    ) -> Result<(), crate::runtime::RuntimeError> {
        let size_of = |m: ModelId| {
            self.cfg
                .models
                .get(m)
                .map_or(0, |spec| budget::file_size(&spec.path))
        };
        if let Some(mut available) = budget::available(&self.cfg.root) {
            let needed = budget::needed(size_of(model));
            while available < needed {
                let Some((gone, worker)) = residents.take_lru() else {
                    log::warn!(
                        "model {} may not fit: {} MiB available, {} MiB needed (its file and \
                         a margin); loading it anyway",
                        self.name(model),
                        available >> 20,
                        needed >> 20
                    );
                    break;
                };
                drop(worker);
                unloaded.push((gone, Eviction::Memory { available, needed }));
                available = available.saturating_add(size_of(gone));
            }
        }
        self.load(model, residents)
    }

    /// Loads `model` into the lowest free slot, with nothing known about its cache. Each slot
    /// is its own NPU memory domain: `base-domain-id` plus the slot's number (rknn-llm#437:
    /// one domain holds about 4 GB of models).
    fn load(
        &self,
        model: ModelId,
        residents: &mut Residents<Worker>,
    ) -> Result<(), crate::runtime::RuntimeError> {
        let slot = residents.free_slot();
        let spec = self.cfg.models.get(model);
        let raw_template = spec.as_ref().is_some_and(|m| m.raw_template);
        let mut init = self.cfg.init.clone();
        if let Some(spec) = &spec {
            init.model_path = spec.path.clone();
            if let Some(params) = &spec.params {
                init = init.with_params(params);
            }
        }
        init.base_domain_id = init
            .base_domain_id
            .saturating_add(i32::try_from(slot).unwrap_or(i32::MAX));
        if let Some(v) = spec.as_ref().and_then(|m| m.vision.as_ref()) {
            // Its family's tags (`models::ModelVision`).
            init.image_tags = Some(v.tags.clone());
        }
        let mut runtime = Runtime::init(&init)?;
        if raw_template {
            // Empty system prompt, prefix and postfix: the runtime takes our text as it is.
            runtime.set_chat_template("", "", "")?;
        }
        let name = spec.as_ref().map_or_else(String::new, |m| m.name.clone());
        let vision = spec
            .as_ref()
            .and_then(|m| m.vision.as_ref())
            .map(|v| image_run::Vision::open(&name, &self.cfg.vision, v));
        let adapters = spec.as_ref().map_or(&[][..], |m| m.adapters.as_slice());
        let loras = lora::Loaded::load_all(&name, adapters, |a| {
            runtime.load_lora(&a.path, &a.name, a.scale)
        });
        let mut worker = Worker {
            runtime,
            name,
            loras,
            adapter: None,
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
                self.cfg
                    .snapshots
                    .clone()
                    .map(|s| s.for_slot(slot, residents.max())),
                raw_template && self.cfg.kv_cache_reuse,
            ),
            restoring: None,
            vision,
        };
        worker.cache.cleared();
        worker.cache.share_ratio(self.cfg.ratio.clone());
        worker
            .cache
            .share_tokens(Publisher::new(self.cfg.kv_caches.clone(), model));
        residents.insert(model, slot, worker);
        Ok(())
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
    /// Its model's name, for errors.
    name: String,
    /// Its LoRA adapters, as loading them went.
    loras: lora::Loaded,
    /// The adapter the KV cache's entries were computed with (`None`: the model alone); every
    /// run applies it, and a job for another one clears the cache first.
    adapter: Option<AdapterId>,
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
    /// Its vision encoder, for a model with one.
    vision: Option<image_run::Vision>,
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

    /// Publishes how many snapshots its conversations have (saves and evictions change it).
    fn publish_snapshots(&self) {
        let held = self.snapshots.as_ref().map_or(0, Snapshots::len);
        self.cache.publish_snapshots(held);
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
        self.select_adapter(job)?;
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
        if !job.images().is_empty() {
            return self.image_run(job, cap, reserve);
        }
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

    /// Makes the job's adapter the one runs apply. Keys and values computed under another
    /// adapter (or none) are not this one's: the cache is cleared before the run, and what is
    /// known of it (the KV record, the runtime's history) forgotten. An embedding run computes
    /// on the side of the cache and names its adapter itself (see `embed_run`).
    fn select_adapter(&mut self, job: &Job) -> Result<(), EngineError> {
        self.loras.name(&self.name, job.adapter())?;
        if matches!(job.input(), Input::Embed(_)) || job.adapter() == self.adapter {
            return Ok(());
        }
        log::debug!(
            "request {}: adapter {:?} after {:?}; the KV cache is cleared",
            job.id(),
            job.adapter(),
            self.adapter
        );
        self.adapter = job.adapter();
        self.must_clear = true;
        Ok(())
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
