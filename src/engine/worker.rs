//! The inference thread: owns the runtime, runs one job at a time, streams text back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::Waker;

use super::bytes_per_token;
use super::job::{Input, Job, RunSummary, WorkerMsg};
use super::kv_cache::{KvCache, Plan};
use super::reuse;
use super::runtime_history::RuntimeHistory;
use super::runtime_tools::{RuntimeTools, TOOL_RESPONSE_TAG};
use super::utf8::Utf8Assembler;

mod embed_run;
mod reseat_run;
mod runtime_run;
mod snapshot_run;
use super::snapshots::{SnapshotConfig, Snapshots};
use super::EngineError;
use crate::memory;
use crate::runtime::{
    AbortHandle, Capabilities, Flow, InitConfig, Output, Role, RunEnd, RunRequest, Runtime,
};

/// What the runtime's own chat template may add around a prompt, in bytes, when it applies
/// it: a default system prompt and the turn markers (Qwen's are about 120 bytes). Only for
/// telling a refusal for length from another failure.
const RUNTIME_TEMPLATE_BYTES: usize = 256;

/// Sends to the loop and wakes it, at most one wake per drain of the channel.
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
    pub init: InitConfig,
    /// rkllmd renders conversations itself: switch the runtime's template off.
    pub raw_template: bool,
    pub kv_cache_reuse: bool,
    pub snapshots: Option<SnapshotConfig>,
    /// Where the learnt bytes-per-token ratio is published for the event loop.
    pub ratio: super::SharedRatio,
    /// Where the KV cache's token count is published for the event loop.
    pub kv_tokens: super::SharedTokens,
}

pub(super) fn run(
    cfg: WorkerConfig,
    caps: Capabilities,
    jobs: Receiver<Job>,
    notify: Notifier,
    abort_slot: Arc<Mutex<Option<AbortHandle>>>,
    cancelled: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let runtime = match load(&cfg) {
        Ok(rt) => rt,
        Err(e) => {
            notify.send(WorkerMsg::LoadFailed(e));
            notify.send(WorkerMsg::Stopped);
            return;
        }
    };
    // The slot is only ever filled here; dropping our Arc leaves the engine's.
    if let Ok(mut slot) = abort_slot.lock() {
        *slot = Some(runtime.abort_handle());
    }
    drop(abort_slot);
    notify.send(WorkerMsg::Loaded {
        load_time: started.elapsed(),
    });

    let mut worker = Worker {
        runtime,
        caps,
        init: cfg.init,
        cache: KvCache::default(),
        reuse: cfg.kv_cache_reuse,
        raw_template: cfg.raw_template,
        tools: RuntimeTools::default(),
        history: RuntimeHistory::default(),
        warned: Warned::default(),
        must_clear: false,
        seat: None,
        prefix_reuse: true,
        notify,
        cancelled,
        snapshots: open_snapshots(cfg.snapshots, cfg.raw_template && cfg.kv_cache_reuse),
        restoring: None,
    };
    worker.cache.cleared();
    worker.cache.share_ratio(cfg.ratio);
    worker.cache.share_tokens(cfg.kv_tokens);
    for job in jobs {
        if !worker.notify.send(WorkerMsg::Started { id: job.id() }) {
            break;
        }
        // A re-seat is worth running only right after the run that offered it.
        let seat = worker.seat.take();
        let result = match job.input() {
            Input::Reseat => worker.reseat(&job, seat),
            _ => worker.run_job(&job),
        };
        let (id, large) = (job.id(), job.input_bytes() >= memory::LARGE_REQUEST_BYTES);
        drop(job);
        if !worker.notify.send(WorkerMsg::Done { id, result }) {
            break;
        }
        // The job and what the loop parsed to build it are freed now: a request that needed
        // a lot of memory gives it back (here, off the event loop's thread).
        if large {
            memory::give_back();
        }
    }
    let Worker {
        runtime, notify, ..
    } = worker;
    drop(runtime);
    notify.send(WorkerMsg::Stopped);
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

fn load(cfg: &WorkerConfig) -> Result<Runtime, crate::runtime::RuntimeError> {
    let mut runtime = Runtime::init(&cfg.init)?;
    if cfg.raw_template {
        // Empty system prompt, prefix and postfix: the runtime takes our text as it is.
        runtime.set_chat_template("", "", "")?;
    }
    Ok(runtime)
}

struct Worker {
    runtime: Runtime,
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

/// What a run produced.
struct Ran {
    end: Result<RunEnd, crate::runtime::RuntimeError>,
    generated: u32,
    answer: String,
    hit_cap: bool,
    /// Prompt tokens taken from the KV cache (see `reuse::reused_tokens`).
    reused: u32,
    /// The KV cache size after a run that finished (read once, here), None after any other.
    cache_tokens: Option<Result<u32, crate::runtime::RuntimeError>>,
    /// The run ended as it should and left the cache as expected; false also when the caller
    /// stopped it.
    clean: bool,
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
                let mut result = self.conclude_conversation(plan, ran);
                self.offer_seat(seat, kept_history, &mut result);
                result
            }
            Input::Embed(input) => self.embed(job, input),
            Input::RuntimeTurns(turns) => self.runtime_turns(job, turns, cap, tools_set),
            // Reached only through the job loop, which hands the re-seat its seat.
            Input::Reseat => self.reseat(job, None),
            Input::Prompt(prompt) => {
                // With the runtime's template the context holds the system prompt and the tools
                // given with them (the template's own markers are not counted: a refusal must
                // never be wrong).
                let (tools, known) = if self.raw_template {
                    (0, prompt.len())
                } else {
                    let t = &self.tools;
                    (t.tools_bytes(), prompt.len() + t.context_bytes())
                };
                let max = self.init.max_context_len;
                self.cache.check_fits(known, tools, max, reserve)?;
                // A single prompt (runtime templating, or a raw completion) changes the cache in
                // ways the records do not follow.
                self.save_before_replacing(job);
                self.cache.invalidate();
                self.history.invalidate();
                if job.clear_cache() {
                    self.runtime
                        .clear_kv_cache(false)
                        .map_err(EngineError::Runtime)?;
                }
                let ran = self.generate(job, prompt, job.role(), job.keep_history(), cap);
                let reused = ran.reused;
                // With the runtime's template, the context holds its turn markers too. New
                // tools are prefilled with this run: learning from the prompt's bytes alone
                // would take a run of tools for a run of one-byte tokens.
                let around = if self.raw_template {
                    0
                } else {
                    RUNTIME_TEMPLATE_BYTES
                };
                let sent = if tools_set { known } else { prompt.len() };
                let bytes = (sent, known, around);
                self.conclude(
                    ran.end,
                    (ran.generated, reused, job.keep_history()),
                    ran.hit_cap,
                    bytes,
                )
            }
        }
    }

    fn generate(
        &mut self,
        job: &Job,
        prompt: &str,
        role: Role,
        keep_history: bool,
        cap: u32,
    ) -> Ran {
        // A cancel that came while the run was being prepared found no run to abort.
        if self.is_cancelled(job) {
            return Ran {
                end: Ok(RunEnd::Unfinished),
                generated: 0,
                answer: String::new(),
                hit_cap: false,
                reused: 0,
                cache_tokens: None,
                clean: false,
            };
        }
        let req = RunRequest {
            prompt,
            role,
            enable_thinking: job.enable_thinking(),
            keep_history,
            max_new_tokens: Some(cap),
            sampling: job.sampling(),
            save_prompt_cache: None,
        };
        // What the cache holds before the run, to check what it holds after (history kept).
        let before = if keep_history {
            self.runtime.kv_cache_size().ok()
        } else {
            None
        };
        self.notify.send(WorkerMsg::InRuntime {
            id: job.id(),
            prefill_tokens: self.cache.estimate_tokens(prompt.len()),
        });
        let mut generated = 0u32;
        // Tokens already reported with a piece of text.
        let mut reported = 0u32;
        let mut text = Utf8Assembler::default();
        let mut answer = String::new();
        let (notify, cancelled, caps) = (&self.notify, &self.cancelled, self.caps);
        let mut sink = |out: Output<'_>| {
            generated += 1;
            if let Output::Token { text: bytes, .. } = out {
                let piece = text.push(bytes);
                if !piece.is_empty() {
                    answer.push_str(&piece);
                    notify.send(WorkerMsg::Text {
                        id: job.id(),
                        text: piece,
                        tokens: generated - reported,
                    });
                    reported = generated;
                }
            }
            if cancelled.load(Ordering::Acquire) == job.id() {
                // The loop set the flag, then called rkllm_abort.
                Flow::Discard
            } else if !caps.run_max_new_tokens && generated >= cap {
                // ABI 1.2 has no per-run cap: end the run ourselves when it is reached.
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let end = match self.runtime.run(&req, &mut sink) {
            // No FINISH after our abort is a normal end of an aborted run; without one, the
            // runtime misbehaved.
            Ok(RunEnd::Unfinished) if !self.is_cancelled(job) => {
                Err(crate::runtime::RuntimeError::NoFinish)
            }
            end => end,
        };
        let rest = text.finish();
        if !rest.is_empty() {
            answer.push_str(&rest);
            self.notify.send(WorkerMsg::Text {
                id: job.id(),
                text: rest,
                tokens: generated - reported,
            });
        }
        let cache_tokens = match &end {
            Ok(RunEnd::Finished(_)) => Some(self.runtime.kv_cache_size()),
            _ => None,
        };
        let hit_cap = generated >= cap
            || filled_context(
                &end,
                cache_tokens.as_ref(),
                keep_history,
                generated,
                self.init.max_context_len,
            );
        let finished = matches!(end, Ok(RunEnd::Finished(_))) && !self.is_cancelled(job);
        let clean =
            finished && self.cache_as_expected(job, before, &end, generated, cache_tokens.as_ref());
        let reused = reuse::reused_tokens(&end, before, cache_tokens.as_ref());
        // After an abort, a pause, an error or a surprise, the next run starts from scratch.
        self.must_clear = !clean;
        Ran {
            end,
            generated,
            answer,
            hit_cap,
            reused,
            cache_tokens,
            clean,
        }
    }

    /// With history kept, the cache must hold what it held before plus what this run prefilled
    /// and generated. Anything else (a context shift deleted a span, the runtime added a BOS or
    /// kept the EOS, ...) means our record of it no longer holds.
    fn cache_as_expected(
        &mut self,
        job: &Job,
        before: Option<u32>,
        end: &Result<RunEnd, crate::runtime::RuntimeError>,
        generated: u32,
        after: Option<&Result<u32, crate::runtime::RuntimeError>>,
    ) -> bool {
        let (Some(before), Ok(RunEnd::Finished(perf))) = (before, end) else {
            return true; // history not kept: nothing to compare
        };
        if self.restored_run() {
            return true;
        }
        let Some(Ok(after)) = after else {
            return false;
        };
        let expected = before
            .saturating_add(perf.prefill_tokens)
            .saturating_add(generated);
        if *after == expected {
            return true;
        }
        let level = if self.warned.mismatch {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        self.warned.mismatch = true;
        log::log!(
            level,
            "request {}: the KV cache holds {after} tokens, not the {expected} expected \
             ({before} before + {} prefilled + {generated} generated); clearing it before the next run",
            job.id(),
            perf.prefill_tokens
        );
        false
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

    /// Turns a run's end into the job's result, learning bytes per token on the way from the
    /// `sent_bytes` the runtime prefilled. `prompt_bytes`: the text the context then holds;
    /// `around`: what the runtime may have put around it.
    fn conclude(
        &mut self,
        end: Result<RunEnd, crate::runtime::RuntimeError>,
        (generated, reused, kept_history): (u32, u32, bool),
        hit_cap: bool,
        (sent_bytes, prompt_bytes, around): (usize, usize, usize),
    ) -> Result<RunSummary, EngineError> {
        match end {
            Ok(end) => {
                let perf = match end {
                    RunEnd::Finished(perf) => {
                        // Without history all that was sent is the prompt, reused part included.
                        let tokens = if !kept_history {
                            perf.prefill_tokens.saturating_add(reused)
                        } else {
                            perf.prefill_tokens
                        };
                        self.cache.calibrate(sent_bytes, tokens);
                        Some(perf)
                    }
                    RunEnd::Stopped(perf) => perf,
                    RunEnd::Unfinished => None,
                };
                Ok(RunSummary {
                    perf,
                    generated_tokens: generated,
                    cached_tokens: reused,
                    hit_cap,
                    reseat: false,
                })
            }
            Err(error) => Err(self.classify(error, generated, prompt_bytes, around)),
        }
    }

    fn conclude_conversation(&mut self, plan: Plan, ran: Ran) -> Result<RunSummary, EngineError> {
        let bytes = (plan.input().len(), plan.full.len(), 0);
        let Ran {
            end,
            generated,
            answer,
            hit_cap,
            reused,
            cache_tokens,
            clean: clean_finish,
        } = ran;
        let counts = (generated, reused, plan.keep_history);
        let result = self.conclude(end, counts, hit_cap, bytes);
        match cache_tokens {
            Some(Ok(tokens)) if clean_finish => self.cache.finished(plan, &answer, tokens),
            Some(Err(e)) if clean_finish => {
                log::warn!("cannot read the KV cache size: {e}");
                self.cache.invalidate();
            }
            _ => self.cache.invalidate(),
        }
        result
    }

    /// The runtime API has no tokenizer and reports a prompt over the context only as a failed
    /// run: a failure before any token, for a prompt that could hold more tokens than the
    /// context (it has more bytes than the context has tokens: no token is shorter than a
    /// byte), is reported as such. Whatever the learnt ratio says, a context overflow is never
    /// reported as a runtime error. `around`: bytes the runtime may have added to the prompt.
    fn classify(
        &self,
        error: crate::runtime::RuntimeError,
        generated: u32,
        prompt_bytes: usize,
        around: usize,
    ) -> EngineError {
        let max_context = self.init.max_context_len;
        let most = bytes_per_token::most_tokens(prompt_bytes + around);
        if generated == 0 && most > u64::from(max_context) {
            EngineError::PromptTooLong {
                estimated_tokens: self.cache.estimate_tokens(prompt_bytes),
                prompt_bytes,
                max_context,
                by_runtime: true,
                tools_tokens: 0,
                reserve: 0,
            }
        } else {
            EngineError::Runtime(error)
        }
    }
}

/// Whether a run that ended by itself stopped because the context was full: the client must hear
/// "length" then, as when `max_tokens` cut it. One token of slack, as the runtime may stop one
/// short of the limit.
fn filled_context(
    end: &Result<RunEnd, crate::runtime::RuntimeError>,
    cache_tokens: Option<&Result<u32, crate::runtime::RuntimeError>>,
    keep_history: bool,
    generated: u32,
    max_context_len: u32,
) -> bool {
    let Ok(RunEnd::Finished(perf)) = end else {
        return false;
    };
    let cached = cache_tokens
        .and_then(|r| r.as_ref().ok())
        .copied()
        .unwrap_or(0);
    // The prefill counts only what this run added to a reused prefix. The cache holds the whole
    // context with history kept, and only the prompt without.
    let used = if keep_history {
        cached
    } else {
        cached.max(perf.prefill_tokens).saturating_add(generated)
    };
    used.saturating_add(1) >= max_context_len
}
