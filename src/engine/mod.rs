//! The inference engine: a dedicated thread owns the runtime; the event loop owns this
//! `Engine` value, which keeps the bounded queue of waiting jobs (interactive first, see
//! `queue.rs`), hands the worker one job at a time, takes the NPU back from a background run
//! that has no output yet when an interactive job arrives, and turns the worker's messages into
//! `Event`s. Nothing here sleeps or polls: the worker
//! wakes the loop through a `mio::Waker`, and time limits surface through `next_deadline`.

mod bytes_per_token;
mod embed;
mod error;
mod job;
mod kv_cache;
mod priority;
mod queue;
mod reseat;
mod reuse;
mod runtime_history;
mod runtime_tools;
mod snapshots;
mod utf8;
mod worker;

use crate::exit::Ending;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Waker;

pub use bytes_per_token::{tokens as estimate_tokens, SharedRatio};
pub use embed::{normalize, Pooling};
pub use error::EngineError;
pub use job::{
    Conversation, EmbedInput, Event, Exchange, Finish, FinishReason, Input, Job, JobId, PastTurn,
    RuntimeTurns,
};
pub use kv_cache::SharedTokens;
pub use priority::{BackgroundPolicy, Priority, ThinkDefault};
pub use queue::MAX_PUSH_BACKS;
pub use snapshots::SnapshotConfig;
pub use utf8::Utf8Assembler;

use crate::runtime::{self, AbortHandle, InitConfig};
use job::{RunSummary, WorkerMsg};
use queue::{Queue, Standing};

/// Until a run has reported its prefill: about a 3.8B model's rate on RK3588 (Rockchip's
/// benchmark: 1.02 s for 128 tokens).
const DEFAULT_PREFILL_PER_TOKEN: Duration = Duration::from_millis(8);

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
    /// rkllmd renders conversations (jobs carry a `Conversation`) and the runtime's own chat
    /// template is switched off; false: the runtime templates each job's single prompt.
    pub raw_template: bool,
    /// Reuse the KV cache across turns of a conversation (false: clear it before every run).
    pub kv_cache_reuse: bool,
    /// Where conversations' KV caches are saved while other requests run (None: not saved).
    pub snapshots: Option<SnapshotConfig>,
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

struct Running {
    id: JobId,
    /// A background job that may still be preempted, kept to be put back in the queue.
    job: Option<Job>,
    /// How far it has been pushed back so far.
    standing: Standing,
    dispatched: Instant,
    /// Set when we aborted it, with why and when.
    aborted: Option<(AbortCause, Instant)>,
    /// When the worker called the runtime for it; until then the worker prepares the run (its
    /// own work, however long, is never taken for a wedged runtime).
    in_runtime: Option<Instant>,
    /// The runtime may still be prefilling: no text has come yet. An abort takes effect late
    /// then (rknn-llm#400: ~1.3 s), so the wedge grace is longer.
    prefilling: bool,
    /// Our estimate of how long this run's prefill takes.
    prefill_estimate: Duration,
}

impl Running {
    /// Aborted to make way for an interactive job, and to be run again.
    fn preempted(&self) -> bool {
        matches!(self.aborted, Some((AbortCause::Preempt, _))) && self.job.is_some()
    }
}

/// Why the engine aborted the running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AbortCause {
    /// The client went away: nobody hears the end.
    Cancel,
    /// A stop sequence matched: a complete answer.
    Stop,
    /// The request timeout passed: the answer is cut short, reported as an error.
    Timeout,
    /// The daemon is shutting down: the answer is cut short, reported as an error.
    Shutdown,
    /// An interactive job arrived before this background run produced any output: it goes
    /// back to the queue and runs again later.
    Preempt,
}

/// At least this much longer grace for an abort while the runtime may be prefilling: users
/// measured an abort during the prefill taking effect 1.27 s late (rknn-llm#400).
const PREFILL_ABORT_LAG: Duration = Duration::from_millis(1500);

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
    /// The KV cache's tokens as the worker knows them.
    kv_tokens: SharedTokens,
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
        let init = worker::WorkerConfig {
            init: cfg.init.clone(),
            raw_template: cfg.raw_template,
            kv_cache_reuse: cfg.kv_cache_reuse,
            snapshots: cfg.snapshots.clone(),
            ratio: SharedRatio::default(),
            kv_tokens: SharedTokens::default(),
        };
        let ratio = init.ratio.clone();
        let kv_tokens = init.kv_tokens.clone();
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
            kv_tokens,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// The client job running (never the engine's own re-seat).
    pub fn running(&self) -> Option<JobId> {
        self.running
            .as_ref()
            .map(|r| r.id)
            .filter(|&id| id != reseat::RESEAT_ID)
    }

    /// Bytes of prompt per token, as the runtime's prefill counts teach it (a prior until then).
    pub fn bytes_per_token(&self) -> f64 {
        self.ratio.get()
    }

    /// Tokens in the runtime's KV cache, when the worker knows them for certain.
    pub fn kv_cache_tokens(&self) -> Option<u32> {
        self.kv_tokens.get()
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

    /// Aborts the running job if it is a background one that has produced no output and may
    /// still yield; its end puts it back in the queue (see `handle`).
    fn preempt_background(&mut self, now: Instant) {
        let preemptible = self.running.as_ref().is_some_and(|r| {
            r.job.is_some() && r.aborted.is_none() && r.prefilling && self.held != Some(r.id)
        });
        if preemptible && self.queue.has_interactive() {
            self.abort_running(AbortCause::Preempt, now);
        }
    }

    /// The client of `id` is gone: drop it from the queue, or abort it if it is running.
    /// Returns true when the job was known.
    pub fn cancel(&mut self, id: JobId, now: Instant) -> bool {
        if self.queue.remove(id).is_some() {
            return true;
        }
        match &self.running {
            Some(r) if r.id == id => {
                self.abort_running(AbortCause::Cancel, now);
                // Preempted already: it must not come back for a client that is gone.
                self.recause(AbortCause::Preempt, AbortCause::Cancel);
                true
            }
            _ => false,
        }
    }

    /// An abort under way for `from` now ends as `to` (its time stays the abort's).
    fn recause(&mut self, from: AbortCause, to: AbortCause) {
        if let Some(run) = &mut self.running {
            if let Some((cause, _)) = &mut run.aborted {
                if *cause == from {
                    *cause = to;
                    run.job = None;
                }
            }
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
            .is_some_and(|r| r.id == id && r.aborted.is_none())
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

    /// Handles every message the inference thread has sent so far.
    /// At most `limit` messages: a batch of events is bounded, so a client that falls behind
    /// is held before it is more than one batch past the mark (the rest waits for the wake
    /// sent here).
    fn drain(&mut self, now: Instant, out: &mut Vec<Event>, limit: usize) {
        if self.held.is_some() {
            // Left set, the flag keeps the worker from waking us for messages we do not take.
            return;
        }
        // Clear before draining: a message sent during the drain wakes us again.
        self.wake_pending.store(false, Ordering::Release);
        for _ in 0..limit {
            match self.msgs.try_recv() {
                Ok(msg) => self.handle(msg, now, out),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    if self.state != State::Stopped {
                        self.worker_gone(out);
                    }
                    return;
                }
            }
        }
        // Stopped at the limit: the worker may be done sending, so nothing else would wake us.
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
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
        match run.aborted {
            None if now >= run.dispatched + self.cfg.request_timeout => {
                log::warn!("request {} passed the request timeout; aborting it", run.id);
                self.abort_running(AbortCause::Timeout, now);
            }
            Some(_) if self.wedge_deadline(run).is_some_and(|d| now >= d) => {
                self.declare_wedged(out);
            }
            _ => {}
        }
    }

    /// How long the running job may ignore an abort before the runtime counts as wedged: the
    /// configured grace, plus, while it may still be prefilling, the time the rest of the
    /// prefill may take (an abort can take effect only at its end) and at least the lag seen
    /// on boards.
    fn grace(&self, run: &Running) -> Duration {
        if run.prefilling {
            self.cfg.abort_grace + run.prefill_estimate.max(PREFILL_ABORT_LAG)
        } else {
            self.cfg.abort_grace
        }
    }

    /// When an aborted run that has not ended counts as wedged: the grace after the abort, or
    /// after the run entered the runtime if that was later; never while the worker is still
    /// preparing it (it checks for the abort before calling the runtime).
    fn wedge_deadline(&self, run: &Running) -> Option<Instant> {
        let (_, at) = run.aborted?;
        Some(at.max(run.in_runtime?) + self.grace(run))
    }

    /// The earliest instant at which `on_timer` has something to do.
    /// Bytes of job input dropped on this thread since the last call, for the loop to give
    /// back to the system (a background job's copy of a huge conversation would otherwise stay
    /// in the heap).
    pub fn take_freed_bytes(&mut self) -> usize {
        std::mem::take(&mut self.freed_bytes)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let queue = self.queue.next_timeout(self.cfg.queue_timeout);
        let run = match &self.running {
            Some(r) => match r.aborted {
                None => Some(r.dispatched + self.cfg.request_timeout),
                Some(_) => self.wedge_deadline(r),
            },
            None => self.queue.held_until(self.cfg.background_hold),
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
        if self.running.as_ref().is_some_and(|r| r.aborted.is_none()) {
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

    fn handle(&mut self, msg: WorkerMsg, now: Instant, out: &mut Vec<Event>) {
        if reseat::is_private(&msg) {
            return;
        }
        match msg {
            WorkerMsg::Loaded { load_time } => {
                if self.state == State::Loading {
                    self.state = State::Ready;
                }
                out.push(Event::Ready { load_time });
            }
            WorkerMsg::LoadFailed(e) => {
                let reason = e.to_string();
                let ending = if e.is_abi() {
                    Ending::AbiMismatch
                } else {
                    Ending::EngineFailed
                };
                self.state = State::LoadFailed(reason.clone());
                for q in self.queue.drain() {
                    out.push(Event::Failed {
                        id: q.job.id(),
                        error: EngineError::LoadFailed {
                            reason: reason.clone(),
                        },
                    });
                }
                out.push(Event::LoadFailed { reason, ending });
            }
            WorkerMsg::Started { id } => {
                if self.is_current(id) {
                    out.push(Event::Started { id });
                }
            }
            WorkerMsg::InRuntime { id, prefill_tokens } => {
                let per_token = self.prefill_per_token.unwrap_or(DEFAULT_PREFILL_PER_TOKEN);
                if let Some(run) = self.running.as_mut().filter(|r| r.id == id) {
                    run.prefill_estimate =
                        per_token.saturating_mul(u32::try_from(prefill_tokens).unwrap_or(u32::MAX));
                    run.in_runtime = Some(now);
                }
            }
            WorkerMsg::Warning { id, text } => {
                if self.is_current(id) {
                    out.push(Event::Warning { id, text });
                }
            }
            // A preempted run's output is dropped: the client hears only the run that follows.
            WorkerMsg::Text { id, text, tokens } => {
                if let Some(run) = self.running.as_mut().filter(|r| r.id == id) {
                    run.prefilling = false;
                    if !run.preempted() {
                        out.push(Event::Text { id, text, tokens });
                    }
                }
            }
            WorkerMsg::Embedding { id, vector, tokens } => {
                if let Some(run) = self.running.as_mut().filter(|r| r.id == id) {
                    run.prefilling = false;
                    if !run.preempted() {
                        out.push(Event::Embedding { id, vector, tokens });
                    }
                }
            }
            WorkerMsg::Done { id, .. } if self.wedged_job == Some(id) => {
                // The run ended after all, only later than the grace period: the runtime works.
                self.wedged_job = None;
                if self.state == State::Wedged {
                    log::warn!("the runtime finished the run it was stuck in; serving again");
                    self.state = State::Ready;
                }
            }
            WorkerMsg::Done { id, result } => {
                if !self.is_current(id) {
                    return;
                }
                let Some(mut run) = self.running.take() else {
                    return;
                };
                if id == reseat::RESEAT_ID {
                    return;
                }
                self.reseat_wanted = matches!(result, Ok(RunSummary { reseat: true, .. }));
                if let Ok(RunSummary {
                    perf: Some(perf), ..
                }) = &result
                {
                    self.learn_prefill(perf);
                }
                let preempted = run.preempted();
                if let Some(job) = run.job.take_if(|_| preempted) {
                    log::debug!("request {id}: preempted by an interactive request; queued again");
                    self.queue.put_back(job, run.standing, now);
                    out.push(Event::Preempted { id });
                    return;
                }
                // The copy kept to put it back is dropped here, on the loop's thread, after the
                // worker gave back what the job freed: the loop gives this back (`Reclaim`).
                self.freed_bytes += run.job.as_ref().map_or(0, Job::input_bytes);
                let event = match result {
                    // An answer cut short must not look complete: it ends as an error.
                    Ok(_) if matches!(run.aborted, Some((AbortCause::Timeout, _))) => {
                        Event::Failed {
                            id,
                            error: EngineError::Timeout {
                                after: self.cfg.request_timeout,
                            },
                        }
                    }
                    Ok(_) if matches!(run.aborted, Some((AbortCause::Shutdown, _))) => {
                        Event::Failed {
                            id,
                            error: EngineError::ShuttingDown,
                        }
                    }
                    Ok(summary) => {
                        let reason = match run.aborted {
                            Some((AbortCause::Stop, _)) => FinishReason::Stop,
                            Some(_) => FinishReason::Aborted,
                            None if summary.hit_cap => FinishReason::Length,
                            None => FinishReason::Stop,
                        };
                        let finish = Finish {
                            reason,
                            perf: summary.perf,
                            generated_tokens: summary.generated_tokens,
                            cached_tokens: summary.cached_tokens,
                            run_time: now.saturating_duration_since(run.dispatched),
                        };
                        Event::Finished { id, finish }
                    }
                    Err(error) => Event::Failed { id, error },
                };
                out.push(event);
            }
            WorkerMsg::Stopped => {
                self.state = State::Stopped;
                out.push(Event::Stopped);
            }
        }
    }

    fn is_current(&self, id: JobId) -> bool {
        self.running.as_ref().is_some_and(|r| r.id == id)
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
        // A re-seat runs only on an empty queue (see `reseat`); it is never preempted.
        let (job, standing) = match self.queue.pop_next() {
            Some(next) => (next.job, next.standing),
            None if wanted => (Job::reseat(reseat::RESEAT_ID), Standing::default()),
            None => return,
        };
        let id = job.id();
        let keep = job.priority() == Priority::Background && standing.may_yield();
        let kept = keep.then(|| job.clone());
        // The worker has ended every earlier run, so the flag can be lowered; a job run again
        // after a preemption keeps its id and would otherwise look cancelled.
        self.cancelled.store(0, Ordering::Release);
        // The worker is idle and the channel holds one job, so this cannot be full.
        match jobs.try_send(job) {
            Ok(()) => {
                self.running = Some(Running {
                    id,
                    job: kept,
                    standing,
                    dispatched: now,
                    aborted: None,
                    in_runtime: None,
                    prefilling: true,
                    prefill_estimate: Duration::ZERO,
                });
            }
            Err(e) => log::error!("cannot hand job {id} to the inference thread: {e}"),
        }
    }

    /// Keeps the slowest prefill rate seen, so the wedge grace errs long.
    fn learn_prefill(&mut self, perf: &runtime::Perf) {
        if perf.prefill_tokens == 0 || !perf.prefill_ms.is_finite() || perf.prefill_ms <= 0.0 {
            return;
        }
        let rate = Duration::from_secs_f64(
            f64::from(perf.prefill_ms) / 1e3 / f64::from(perf.prefill_tokens),
        );
        self.prefill_per_token = Some(self.prefill_per_token.map_or(rate, |r| r.max(rate)));
    }

    fn abort_running(&mut self, cause: AbortCause, now: Instant) {
        let Some(run) = &mut self.running else { return };
        if run.aborted.is_some() {
            return;
        }
        run.aborted = Some((cause, now));
        self.cancelled.store(run.id, Ordering::Release);
        // A held run is blocked in its callback: it can only see the abort once it may send.
        let held = self.held == Some(run.id);
        let handle = self.abort.lock().ok().and_then(|slot| slot.clone());
        match handle.map(|h| h.abort()) {
            Some(Ok(())) => log::debug!("aborted request {}", run.id),
            Some(Err(e)) => log::warn!("abort of request {} failed: {e}", run.id),
            None => log::warn!("no runtime handle to abort request {}", run.id),
        }
        if held {
            self.release();
        }
    }

    fn declare_wedged(&mut self, out: &mut Vec<Event>) {
        let grace = self
            .running
            .as_ref()
            .map_or(self.cfg.abort_grace, |r| self.grace(r));
        log::error!(
            "the runtime ignored an abort for {:.1} s; declaring the engine wedged",
            grace.as_secs_f32()
        );
        self.state = State::Wedged;
        if let Some(run) = self.running.take() {
            self.wedged_job = Some(run.id);
            if run.id != reseat::RESEAT_ID {
                out.push(Event::Failed {
                    id: run.id,
                    error: EngineError::Wedged,
                });
            }
        }
        for q in self.queue.drain() {
            out.push(Event::Failed {
                id: q.job.id(),
                error: EngineError::Wedged,
            });
        }
        out.push(Event::Wedged);
    }

    fn worker_gone(&mut self, out: &mut Vec<Event>) {
        log::error!("the inference thread exited unexpectedly");
        if let Some(run) = self.running.take().filter(|r| r.id != reseat::RESEAT_ID) {
            out.push(Event::Failed {
                id: run.id,
                error: EngineError::WorkerGone,
            });
        }
        for q in self.queue.drain() {
            out.push(Event::Failed {
                id: q.job.id(),
                error: EngineError::WorkerGone,
            });
        }
        self.state = State::Stopped;
        out.push(Event::Stopped);
    }
}
