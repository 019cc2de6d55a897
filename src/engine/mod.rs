//! The inference engine: a dedicated thread owns the runtime; the event loop owns this
//! `Engine` value, which keeps the bounded queue of waiting jobs (interactive first, see
//! `queue.rs`), hands the worker one job at a time, takes the NPU back from a background run
//! that has no output yet when an interactive job arrives (`running.rs`), and turns the worker's
//! messages into `Event`s (`messages.rs`). Nothing here sleeps or polls: the worker wakes the
//! loop through a `mio::Waker`, and time limits surface through `next_deadline`.

mod budget;
mod bytes_per_token;
mod embed;
mod error;
mod job;
mod keep_alive;
mod kv_cache;
mod lora;
mod messages;
mod models;
mod priority;
mod queue;
mod reseat;
mod residents;
mod reuse;
mod running;
mod runtime_history;
mod runtime_tools;
mod snapshots;
mod utf8;
mod vision;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Waker;

pub use bytes_per_token::{tokens as estimate_tokens, SharedRatio};
pub use embed::{normalize, Pooling};
pub use error::EngineError;
pub use job::{
    Conversation, EmbedInput, Event, Exchange, Finish, FinishReason, Input, Job, JobId, PastTurn,
    RuntimeTurns, SnapshotUse,
};
pub use keep_alive::KeepAlive;
pub use kv_cache::{CacheFigures, SharedCaches};
pub use lora::{AdapterId, LoraAdapter};
pub use priority::{BackgroundPolicy, Priority, ThinkDefault};
pub use queue::MAX_PUSH_BACKS;
pub use residents::{Eviction, Resident};
pub use snapshots::SnapshotConfig;
pub use utf8::Utf8Assembler;
pub use vision::{Vision, VisionLoad};

use crate::runtime::{self, AbortHandle, InitConfig};
use job::WorkerMsg;
use models::{ModelTable, Retiring};
use queue::{Queue, Standing};
use running::{AbortCause, Running};

/// How many messages the worker may have in flight before the runtime's callback blocks.
const EVENT_CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub init: InitConfig,
    pub queue_size: usize,
    pub queue_timeout: Duration,
    /// How long a background job waits on a free NPU for an interactive job (see
    /// `Queue::held_until`); zero: it starts at once.
    pub background_hold: Duration,
    pub request_timeout: Duration,
    /// How long a run may ignore an abort before the engine declares itself wedged.
    pub abort_grace: Duration,
    /// rkllmd renders conversations for the model of `init` (jobs carry a `Conversation`) and
    /// the runtime's own chat template is switched off; false: the runtime templates each
    /// job's single prompt. Used when `models` is empty.
    pub raw_template: bool,
    /// How long a model stays loaded after a job that does not say (`keep-alive`).
    pub keep_alive: KeepAlive,
    /// The models jobs may name, by id (`Job::model`); the first loads at start. Empty: the one
    /// model of `init`.
    pub models: Vec<ModelLoad>,
    /// Reuse the KV cache across turns of a conversation (false: clear it before every run).
    pub kv_cache_reuse: bool,
    /// Where conversations' KV caches are saved while other requests run (None: not saved).
    pub snapshots: Option<SnapshotConfig>,
    /// How many models may be resident, and the board's memory that decides it too.
    pub residency: Residency,
    /// What vision models' encoders run with.
    pub vision: Vision,
}

/// What decides which models stay resident (see `residents`).
#[derive(Clone, Debug)]
pub struct Residency {
    /// `max-loaded-models`: models resident at once (at least 1).
    pub max_loaded: usize,
    /// `--root`: where `/proc/meminfo` is read before each load (the memory budget).
    pub root: std::path::PathBuf,
}

impl Default for Residency {
    fn default() -> Residency {
        Residency {
            max_loaded: 1,
            root: std::path::PathBuf::from("/"),
        }
    }
}

/// Which model: its place in the catalog (`crate::models`; 0 is the default).
pub type ModelId = usize;

/// What the engine loads a model from.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelLoad {
    pub path: std::path::PathBuf,
    /// For logs and errors.
    pub name: String,
    /// rkllmd renders this model's conversations (jobs carry a `Conversation`) and the
    /// runtime's own chat template is switched off; false: the runtime templates each job's
    /// single prompt.
    pub raw_template: bool,
    /// The LoRA adapters loaded with it, which jobs select by index (`Job::adapter`).
    pub adapters: Vec<LoraAdapter>,
    /// Its context, token cap, sampling and IOMMU domain (its config section's, else the
    /// daemon's); `None`: `EngineConfig::init`'s.
    pub params: Option<crate::runtime::ModelParams>,
    /// Its vision encoder and image tags, opened with the model: a vision model then.
    pub vision: Option<VisionLoad>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Loading,
    Ready,
    LoadFailed(String),
    Wedged,
    ShuttingDown,
    Stopped,
}

pub struct Engine {
    cfg: EngineConfig,
    state: State,
    jobs: Option<SyncSender<Job>>,
    msgs: Receiver<WorkerMsg>,
    wake_pending: Arc<AtomicBool>,
    /// Kept here too: if the worker held the only reference, its exit would close the eventfd
    /// and epoll would drop the wake it had just sent. Also wakes the loop to drain again
    /// after a hold ends.
    waker: Arc<Waker>,
    /// The running job whose client is behind: its messages stay in the channel, which fills
    /// and then blocks the runtime's callback, pausing the run until the client catches up.
    held: Option<JobId>,
    abort: Arc<Mutex<Option<AbortHandle>>>,
    /// The id of the job the loop wants stopped (0: none); the worker checks it per token.
    cancelled: Arc<AtomicU64>,
    /// The run the engine was declared wedged in; if it ever ends, the engine recovers.
    wedged_job: Option<JobId>,
    /// The slowest prefill seen, per token (learnt from the runtime's perf reports).
    prefill_per_token: Option<Duration>,
    queue: Queue,
    running: Option<Running>,
    /// The worker holds a re-seat of the KV cache to run when nothing else waits (`reseat`).
    reseat_wanted: bool,
    /// Bytes of input held by background jobs' copies that this thread has dropped since the
    /// loop last asked (see `take_freed_bytes`).
    freed_bytes: usize,
    thread: Option<JoinHandle<()>>,
    /// Bytes per token as the worker learns them.
    ratio: SharedRatio,
    /// Each resident model's KV cache as the worker knows it.
    kv_caches: SharedCaches,
    /// The models the worker has loaded, as its messages said, each with its expiry.
    residents: residents::Record,
    /// The model of the job running and its keep_alive (what that model's expiry becomes
    /// when it ends; None: it leaves the expiry as it is).
    run_keep_alive: Option<(ModelId, KeepAlive)>,
    /// What each model is loaded from, shared with the worker (a reload changes it).
    models: ModelTable,
    /// Models a reload changed or removed, unloaded when idle.
    retiring: Retiring,
}

impl Engine {
    /// Starts the inference thread, which begins loading the model at once.
    pub fn start(cfg: EngineConfig, waker: Arc<Waker>) -> std::io::Result<Engine> {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(1);
        let (msg_tx, msg_rx) = mpsc::sync_channel::<WorkerMsg>(EVENT_CHANNEL_CAPACITY);
        let wake_pending = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(Mutex::new(None));
        let notifier = worker::Notifier {
            tx: msg_tx,
            waker: Arc::clone(&waker),
            pending: Arc::clone(&wake_pending),
        };
        let models = ModelTable::new(if cfg.models.is_empty() {
            vec![ModelLoad {
                path: cfg.init.model_path.clone(),
                name: String::new(),
                raw_template: cfg.raw_template,
                adapters: Vec::new(),
                params: None,
                vision: None,
            }]
        } else {
            cfg.models.clone()
        });
        let init = worker::WorkerConfig {
            init: cfg.init.clone(),
            models: models.clone(),
            kv_cache_reuse: cfg.kv_cache_reuse,
            snapshots: cfg.snapshots.clone(),
            ratio: SharedRatio::default(),
            kv_caches: SharedCaches::default(),
            max_loaded: cfg.residency.max_loaded,
            vision: cfg.vision.clone(),
            root: crate::board::Root::new(&cfg.residency.root),
        };
        let ratio = init.ratio.clone();
        let kv_caches = init.kv_caches.clone();
        let caps = runtime::capabilities();
        let slot = Arc::clone(&abort);
        let cancelled = Arc::new(AtomicU64::new(0));
        let worker_cancelled = Arc::clone(&cancelled);
        let thread = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || worker::run(init, caps, job_rx, notifier, slot, worker_cancelled))?;
        Ok(Engine {
            cfg,
            state: State::Loading,
            jobs: Some(job_tx),
            msgs: msg_rx,
            wake_pending,
            waker,
            held: None,
            abort,
            cancelled,
            wedged_job: None,
            prefill_per_token: None,
            queue: Queue::default(),
            running: None,
            reseat_wanted: false,
            freed_bytes: 0,
            thread: Some(thread),
            ratio,
            kv_caches,
            residents: residents::Record::default(),
            run_keep_alive: None,
            models,
            retiring: Retiring::default(),
        })
    }

    /// After a reload (SIGHUP): what each model is loaded from now (by id, the same ids as
    /// before, new models appended), and which are no longer served (`removed`). A resident
    /// model whose entry changed is unloaded as soon as no job runs, so the next job for it
    /// loads it anew; a removed one once no queued job needs it either.
    pub fn reload_models(&mut self, models: Vec<ModelLoad>, removed: &[ModelId], now: Instant) {
        let served: Vec<ModelId> = (0..models.len())
            .filter(|id| !removed.contains(id))
            .collect();
        let mut changed = self.models.replace(models);
        // A model loaded later loads with the new entry. A running job may be loading one
        // with the old entry: then every changed model is marked (at worst one needless
        // reload).
        if self.running.is_none() {
            changed.retain(|id| self.residents.contains(*id));
        }
        self.retiring.reloaded(&changed, removed, &served);
        self.dispatch(now);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The models loaded on the NPU, once the worker has said so, most recently used first,
    /// each with when it is unloaded if it stays idle.
    pub fn residents(&self) -> &[Resident] {
        self.residents.all()
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// The client job running (never the engine's own re-seat).
    pub fn running(&self) -> Option<JobId> {
        self.running
            .as_ref()
            .map(Running::id)
            .filter(|&id| id != reseat::RESEAT_ID)
    }

    /// Bytes of prompt per token, as the runtime's prefill counts teach it (a prior until then).
    pub fn bytes_per_token(&self) -> f64 {
        self.ratio.get()
    }

    /// Each resident model's KV cache: its tokens when the worker knows them for certain, and
    /// its snapshots.
    pub fn kv_caches(&self) -> &SharedCaches {
        &self.kv_caches
    }

    pub fn queue_capacity(&self) -> usize {
        self.cfg.queue_size
    }

    /// Queues a job or starts it at once when the runtime is idle. An interactive job takes
    /// the NPU back from a background run that has produced no output yet.
    pub fn submit(&mut self, job: Job, now: Instant) -> Result<(), EngineError> {
        match &self.state {
            State::Loading | State::Ready => {}
            State::LoadFailed(reason) => {
                return Err(EngineError::LoadFailed {
                    reason: reason.clone(),
                })
            }
            State::Wedged => return Err(EngineError::Wedged),
            State::ShuttingDown | State::Stopped => return Err(EngineError::ShuttingDown),
        }
        if self.queue.len() >= self.cfg.queue_size {
            return Err(EngineError::QueueFull {
                capacity: self.cfg.queue_size,
            });
        }
        let interactive = job.priority() == Priority::Interactive;
        self.queue.push(job, now);
        if interactive {
            self.preempt_background(now);
        }
        self.dispatch(now);
        Ok(())
    }

    /// The client of `id` is gone: drop it from the queue, or abort it if it is running.
    /// Returns true when the job was known.
    pub fn cancel(&mut self, id: JobId, now: Instant) -> bool {
        if self.queue.remove(id).is_some() {
            return true;
        }
        match &self.running {
            Some(r) if r.id() == id => {
                self.abort_running(AbortCause::Cancel, now);
                // Preempted already: it must not come back for a client that is gone.
                self.recause(AbortCause::Preempt, AbortCause::Cancel);
                true
            }
            _ => false,
        }
    }

    /// Ends the running job `id` early as a normal stop (a stop sequence matched).
    pub fn stop(&mut self, id: JobId, now: Instant) {
        if self.is_current(id) {
            self.abort_running(AbortCause::Stop, now);
        }
    }

    /// The client of running job `id` is behind: take none of its messages until `resume`.
    /// The worker blocks once the channel is full, so the run pauses without burning the NPU
    /// for output nobody reads yet. A job being aborted is never held (its end must arrive).
    pub fn hold(&mut self, id: JobId) {
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.id() == id && r.aborted_by().is_none())
        {
            self.held = Some(id);
        }
    }

    /// The client of job `id` caught up: its messages flow again.
    pub fn resume(&mut self, id: JobId) {
        if self.held == Some(id) {
            self.release();
        }
    }

    /// Ends a hold; the wake makes the loop drain what piled up meanwhile (the worker, blocked
    /// on a full channel, sends no wake of its own).
    fn release(&mut self) {
        if self.held.take().is_some() {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the event loop: {e}");
            }
        }
    }

    /// Drains the worker's messages after a wake; the events go to `out` in order.
    pub fn on_wake(&mut self, now: Instant, out: &mut Vec<Event>) {
        self.drain(now, out, EVENT_CHANNEL_CAPACITY);
        self.dispatch(now);
    }

    /// Applies the time limits that have passed; call when `next_deadline` is reached.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Event>) {
        for (q, waited) in self.queue.expire(now, self.cfg.queue_timeout) {
            out.push(Event::Failed {
                id: q.job.id(),
                error: EngineError::QueueTimeout { waited },
            });
        }
        let Some(run) = &self.running else {
            // A held background job may start now.
            self.dispatch(now);
            return;
        };
        match run.aborted_by() {
            None if now >= run.dispatched() + self.cfg.request_timeout => {
                log::warn!(
                    "request {} passed the request timeout; aborting it",
                    run.id()
                );
                self.abort_running(AbortCause::Timeout, now);
            }
            Some(_) if self.wedge_deadline(run).is_some_and(|d| now >= d) => {
                self.declare_wedged(out);
            }
            _ => {}
        }
    }

    /// Bytes of job input dropped on this thread since the last call, for the loop to give
    /// back to the system (a background job's copy of a huge conversation would otherwise stay
    /// in the heap).
    pub fn take_freed_bytes(&mut self) -> usize {
        std::mem::take(&mut self.freed_bytes)
    }

    /// The earliest instant at which `on_timer` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let queue = self.queue.next_timeout(self.cfg.queue_timeout);
        let run = match &self.running {
            Some(r) => match r.aborted_by() {
                None => Some(r.dispatched() + self.cfg.request_timeout),
                Some(_) => self.wedge_deadline(r),
            },
            None => self
                .queue
                .held_until(self.cfg.background_hold)
                .or_else(|| self.idle_expiry()),
        };
        match (queue, run) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts shutting down: queued jobs fail, the running one is aborted, the worker is told
    /// to exit once it is idle (it then destroys the runtime and reports `Stopped`).
    pub fn begin_shutdown(&mut self, now: Instant, out: &mut Vec<Event>) {
        if matches!(self.state, State::Stopped) {
            return;
        }
        // A run that has already ended, its messages still on their way (a long answer the
        // loop has not caught up with), is complete: it must not be aborted and called cut.
        self.release();
        self.drain(now, out, usize::MAX);
        if !matches!(self.state, State::Wedged) {
            self.state = State::ShuttingDown;
        }
        for q in self.queue.drain() {
            out.push(Event::Failed {
                id: q.job.id(),
                error: EngineError::ShuttingDown,
            });
        }
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.aborted_by().is_none())
        {
            self.abort_running(AbortCause::Shutdown, now);
        }
        // A preempted run has nowhere to go back to: its answer is cut short.
        self.recause(AbortCause::Preempt, AbortCause::Shutdown);
        self.jobs = None;
    }

    /// Waits for the inference thread after `Stopped`; never call it while a run may be stuck.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the inference thread panicked");
            }
        }
    }

    /// When the first idle resident model's keep_alive runs out (None: none does, or a job
    /// waits or runs).
    fn idle_expiry(&self) -> Option<Instant> {
        if self.running.is_some() || self.queue.len() > 0 || self.reseat_wanted {
            return None;
        }
        self.residents.next_expiry()
    }

    /// Hands the next queued job to the worker if it is idle and the model is loaded.
    fn dispatch(&mut self, now: Instant) {
        if self.state != State::Ready || self.running.is_some() {
            return;
        }
        let Some(jobs) = &self.jobs else { return };
        let wanted = std::mem::take(&mut self.reseat_wanted);
        if self
            .queue
            .held_until(self.cfg.background_hold)
            .is_some_and(|until| now < until)
        {
            return;
        }
        // A resident model a reload changed or removed is unloaded first (see `reload_models`).
        // A re-seat runs only on an empty queue (see `reseat`); it is never preempted. An idle
        // model past its keep_alive is unloaded after it.
        let retire = {
            let (queue, retiring) = (&self.queue, &mut self.retiring);
            self.residents
                .all()
                .iter()
                .map(|r| r.model)
                .find(|m| retiring.take_unload(*m, queue.wants(*m)))
        };
        let residents = &self.residents;
        let (job, standing) = if let Some(model) = retire {
            (Job::unload(reseat::UNLOAD_ID, model), Standing::default())
        } else {
            match self.queue.pop_next(|m| residents.contains(m)) {
                Some(next) => (next.job, next.standing),
                // The re-seat is of the cache of the model that ran last, the most recently
                // used (never a reason to load one).
                None if wanted => match self.residents.latest() {
                    Some(model) => {
                        let mut job = Job::reseat(reseat::RESEAT_ID);
                        job.set_model(model);
                        (job, Standing::default())
                    }
                    None => return,
                },
                None => match self.residents.take_expired(now) {
                    Some(model) => (Job::unload(reseat::UNLOAD_ID, model), Standing::default()),
                    None => return,
                },
            }
        };
        // An unload call (or the engine's own jobs) leaves the resident model's expiry alone.
        let client = job.id() != reseat::RESEAT_ID && job.id() != reseat::UNLOAD_ID;
        let unload = matches!(job.input(), Input::Unload);
        self.run_keep_alive = (client && !unload)
            .then(|| (job.model(), job.keep_alive().unwrap_or(self.cfg.keep_alive)));
        if !unload {
            self.residents.used(job.model());
        }
        let id = job.id();
        let keep = job.priority() == Priority::Background && standing.may_yield();
        let kept = keep.then(|| job.clone());
        // The worker has ended every earlier run, so the flag can be lowered; a job run again
        // after a preemption keeps its id and would otherwise look cancelled.
        self.cancelled.store(0, Ordering::Release);
        // The worker is idle and the channel holds one job, so this cannot be full.
        match jobs.try_send(job) {
            Ok(()) => {
                self.running = Some(Running::new(id, kept, standing, now));
            }
            Err(e) => log::error!("cannot hand job {id} to the inference thread: {e}"),
        }
    }
}
