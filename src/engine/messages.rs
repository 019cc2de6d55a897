//! The worker's messages, drained on the loop's thread: each becomes an `Event` for the loop,
//! a change of the engine's state, or what the engine learns (prefill speed, a re-seat wanted).

use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use super::job::{Event, Finish, FinishReason, JobId, RunSummary, WorkerMsg};
use super::running::AbortCause;
use super::{reseat, Engine, EngineError, KeepAlive, State};
use crate::exit::Ending;
use crate::runtime;

/// Until a run has reported its prefill: about a 3.8B model's rate on RK3588 (Rockchip's
/// benchmark: 1.02 s for 128 tokens).
const DEFAULT_PREFILL_PER_TOKEN: Duration = Duration::from_millis(8);

impl Engine {
    /// Handles every message the inference thread has sent so far.
    /// At most `limit` messages: a batch of events is bounded, so a client that falls behind
    /// is held before it is more than one batch past the mark (the rest waits for the wake
    /// sent here).
    pub(super) fn drain(&mut self, now: Instant, out: &mut Vec<Event>, limit: usize) {
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

    pub(super) fn handle(&mut self, msg: WorkerMsg, now: Instant, out: &mut Vec<Event>) {
        if reseat::is_private(&msg) {
            return;
        }
        match msg {
            WorkerMsg::Loaded { load_time } => {
                if self.state == State::Loading {
                    self.state = State::Ready;
                }
                self.residents.loaded(0);
                out.push(Event::Ready { load_time });
            }
            WorkerMsg::Switched {
                unloaded,
                model,
                took,
                failure,
            } => {
                for (gone, _) in &unloaded {
                    self.residents.remove(*gone);
                }
                if failure.is_none() {
                    self.residents.loaded(model);
                }
                out.push(Event::Switched {
                    unloaded,
                    model,
                    took,
                    failure,
                });
            }
            WorkerMsg::Unloaded { model } => {
                self.residents.remove(model);
                out.push(Event::Unloaded { model });
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
                if let Some(run) = self.running.as_mut().filter(|r| r.id() == id) {
                    let tokens = u32::try_from(prefill_tokens).unwrap_or(u32::MAX);
                    run.entered_runtime(now, per_token.saturating_mul(tokens));
                }
            }
            WorkerMsg::OutOfRuntime { id } => {
                if let Some(run) = self.running.as_mut().filter(|r| r.id() == id) {
                    run.left_runtime();
                }
            }
            WorkerMsg::Warning { id, text } => {
                if self.is_current(id) {
                    out.push(Event::Warning { id, text });
                }
            }
            // A preempted run's output is dropped: the client hears only the run that follows.
            WorkerMsg::Text { id, text, tokens } => {
                if let Some(run) = self.running.as_mut().filter(|r| r.id() == id) {
                    run.produced_output(now);
                    if !run.preempted() {
                        out.push(Event::Text { id, text, tokens });
                    }
                }
            }
            WorkerMsg::Embedding { id, vector, tokens } => {
                if let Some(run) = self.running.as_mut().filter(|r| r.id() == id) {
                    run.produced_output(now);
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
            WorkerMsg::Done { id, result } => self.finished(id, result, now, out),
            WorkerMsg::Snapshot(used) => out.push(Event::Snapshot(used)),
            WorkerMsg::Stopped => {
                self.state = State::Stopped;
                out.push(Event::Stopped);
            }
        }
    }

    /// The worker ended run `id`: a preempted background run goes back to the queue, any other
    /// becomes the job's last event (an answer cut short by a timeout or a shutdown as an error).
    fn finished(
        &mut self,
        id: JobId,
        result: Result<RunSummary, EngineError>,
        now: Instant,
        out: &mut Vec<Event>,
    ) {
        if !self.is_current(id) {
            return;
        }
        let Some(mut run) = self.running.take() else {
            return;
        };
        if id == reseat::RESEAT_ID || id == reseat::UNLOAD_ID {
            return;
        }
        // Its model stays loaded for the job's keep_alive from now.
        match self.run_keep_alive.take() {
            Some((model, KeepAlive::For(d))) => self.residents.set_expiry(model, Some(now + d)),
            Some((model, KeepAlive::Forever)) => self.residents.set_expiry(model, None),
            None => {}
        }
        self.reseat_wanted = matches!(result, Ok(RunSummary { reseat: true, .. }));
        if let Ok(RunSummary {
            perf: Some(perf), ..
        }) = &result
        {
            self.learn_prefill(perf);
        }
        if let Some((job, standing)) = run.take_to_requeue() {
            log::debug!("request {id}: preempted by an interactive request; queued again");
            self.queue.put_back(job, standing, now);
            out.push(Event::Preempted { id });
            return;
        }
        // The copy kept to put it back is dropped here, on the loop's thread, after the
        // worker gave back what the job freed: the loop gives this back (`Reclaim`).
        self.freed_bytes += run.kept_bytes();
        let event = match result {
            // An answer cut short must not look complete: it ends as an error.
            Ok(_) if run.aborted_by() == Some(AbortCause::Timeout) => Event::Failed {
                id,
                error: EngineError::Timeout {
                    after: self.cfg.request_timeout,
                },
            },
            Ok(_) if run.aborted_by() == Some(AbortCause::Shutdown) => Event::Failed {
                id,
                error: EngineError::ShuttingDown,
            },
            Ok(summary) => {
                let reason = match run.aborted_by() {
                    Some(AbortCause::Stop) => FinishReason::Stop,
                    Some(_) => FinishReason::Aborted,
                    None if summary.hit_cap => FinishReason::Length,
                    None => FinishReason::Stop,
                };
                let finish = Finish {
                    reason,
                    perf: summary.perf,
                    generated_tokens: summary.generated_tokens,
                    cached_tokens: summary.cached_tokens,
                    run_time: now.saturating_duration_since(run.dispatched()),
                };
                Event::Finished { id, finish }
            }
            Err(error) => Event::Failed { id, error },
        };
        out.push(event);
    }

    pub(super) fn is_current(&self, id: JobId) -> bool {
        self.running.as_ref().is_some_and(|r| r.id() == id)
    }

    /// Keeps the slowest prefill rate seen, so the wedge grace errs long.
    pub(super) fn learn_prefill(&mut self, perf: &runtime::Perf) {
        if perf.prefill_tokens == 0 || !perf.prefill_ms.is_finite() || perf.prefill_ms <= 0.0 {
            return;
        }
        let rate = Duration::from_secs_f64(
            f64::from(perf.prefill_ms) / 1e3 / f64::from(perf.prefill_tokens),
        );
        self.prefill_per_token = Some(self.prefill_per_token.map_or(rate, |r| r.max(rate)));
    }

    pub(super) fn worker_gone(&mut self, out: &mut Vec<Event>) {
        log::error!("the inference thread exited unexpectedly");
        if let Some(run) = self.running.take().filter(|r| r.id() != reseat::RESEAT_ID) {
            out.push(Event::Failed {
                id: run.id(),
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
