//! The job the worker is running, as the engine tracks it, and aborting it: why it was
//! aborted, how long the runtime may take to notice, and when that counts as a wedge.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::job::{Event, Job, JobId};
use super::queue::Standing;
use super::{reseat, Engine, EngineError, State};

pub(super) struct Running {
    id: JobId,
    /// A background job that may still be preempted, kept to be put back in the queue.
    job: Option<Job>,
    /// How far it has been pushed back so far.
    standing: Standing,
    dispatched: Instant,
    /// Set when we aborted it, with why and when.
    aborted: Option<(AbortCause, Instant)>,
    /// When the worker called the runtime for it, while the call lasts; before and after it the
    /// worker prepares the run or concludes it (its own work, however long, is never taken for
    /// a wedged runtime).
    in_runtime: Option<Instant>,
    /// The runtime may still be prefilling: no text has come yet. An abort takes effect late
    /// then (rknn-llm#400: ~1.3 s), so the wedge grace is longer.
    prefilling: bool,
    /// When its first output came: the decode, where the runtime checks for an abort between
    /// tokens, began then.
    decoding_since: Option<Instant>,
    /// Our estimate of how long this run's prefill takes.
    prefill_estimate: Duration,
}

impl Running {
    /// Handed to the worker at `now`; `kept`: the copy of a background job that may still yield.
    pub(super) fn new(id: JobId, kept: Option<Job>, standing: Standing, now: Instant) -> Running {
        Running {
            id,
            job: kept,
            standing,
            dispatched: now,
            aborted: None,
            in_runtime: None,
            prefilling: true,
            decoding_since: None,
            prefill_estimate: Duration::ZERO,
        }
    }

    pub(super) fn id(&self) -> JobId {
        self.id
    }

    pub(super) fn dispatched(&self) -> Instant {
        self.dispatched
    }

    /// Why the engine aborted it, if it did.
    pub(super) fn aborted_by(&self) -> Option<AbortCause> {
        self.aborted.map(|(cause, _)| cause)
    }

    /// Aborted to make way for an interactive job, and to be run again.
    pub(super) fn preempted(&self) -> bool {
        matches!(self.aborted, Some((AbortCause::Preempt, _))) && self.job.is_some()
    }

    /// The worker called the runtime at `now`, with a prefill expected to take `estimate`.
    pub(super) fn entered_runtime(&mut self, now: Instant, estimate: Duration) {
        self.in_runtime = Some(now);
        self.prefill_estimate = estimate;
    }

    /// The runtime call returned: until the next one, the worker's time is its own.
    pub(super) fn left_runtime(&mut self) {
        self.in_runtime = None;
    }

    /// Output came at `now`: the prefill is over.
    pub(super) fn produced_output(&mut self, now: Instant) {
        if self.prefilling {
            self.prefilling = false;
            self.decoding_since = Some(now);
        }
    }

    /// From when an abort's grace counts: the abort, or the run's entry into the runtime if
    /// later, or the end of its prefill if later still (an abort that came during the prefill
    /// can take effect only in the decode); None while not aborted or not in the runtime.
    pub(super) fn abort_grace_from(&self) -> Option<Instant> {
        let (_, at) = self.aborted?;
        let from = at.max(self.in_runtime?);
        Some(self.decoding_since.map_or(from, |d| from.max(d)))
    }

    /// A preempted run's job and standing, to go back in the queue; None for any other run.
    pub(super) fn take_to_requeue(&mut self) -> Option<(Job, Standing)> {
        let preempted = self.preempted();
        self.job
            .take_if(|_| preempted)
            .map(|job| (job, self.standing))
    }

    /// Bytes of input held by the copy kept of a background job (0: none kept).
    pub(super) fn kept_bytes(&self) -> usize {
        self.job.as_ref().map_or(0, Job::input_bytes)
    }
}

/// Why the engine aborted the running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AbortCause {
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

impl Engine {
    /// Aborts the running job if it is a background one that has produced no output and may
    /// still yield; its end puts it back in the queue (see `messages.rs`).
    pub(super) fn preempt_background(&mut self, now: Instant) {
        let preemptible = self.running.as_ref().is_some_and(|r| {
            r.job.is_some() && r.aborted.is_none() && r.prefilling && self.held != Some(r.id)
        });
        if preemptible && self.queue.has_interactive() {
            self.abort_running(AbortCause::Preempt, now);
        }
    }

    /// An abort under way for `from` now ends as `to` (its time stays the abort's).
    pub(super) fn recause(&mut self, from: AbortCause, to: AbortCause) {
        if let Some(run) = &mut self.running {
            if let Some((cause, _)) = &mut run.aborted {
                if *cause == from {
                    *cause = to;
                    run.job = None;
                }
            }
        }
    }

    /// How long the running job may ignore an abort before the runtime counts as wedged: the
    /// configured grace, plus, while it may still be prefilling, the time the rest of the
    /// prefill may take (an abort can take effect only at its end) and at least the lag seen
    /// on boards.
    pub(super) fn grace(&self, run: &Running) -> Duration {
        if run.prefilling {
            self.cfg.abort_grace + run.prefill_estimate.max(PREFILL_ABORT_LAG)
        } else {
            self.cfg.abort_grace
        }
    }

    /// When an aborted run that has not ended counts as wedged: the grace after the abort, or
    /// after the run entered the runtime if that was later; never while the worker is still
    /// preparing it (it checks for the abort before calling the runtime).
    pub(super) fn wedge_deadline(&self, run: &Running) -> Option<Instant> {
        Some(run.abort_grace_from()? + self.grace(run))
    }

    pub(super) fn abort_running(&mut self, cause: AbortCause, now: Instant) {
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

    pub(super) fn declare_wedged(&mut self, out: &mut Vec<Event>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_in_the_prefill_gets_its_grace_from_the_decode_s_start() {
        let t0 = Instant::now();
        let mut run = Running::new(7, None, Standing::default(), t0);
        assert_eq!(run.abort_grace_from(), None, "not aborted");
        run.aborted = Some((AbortCause::Cancel, t0));
        assert_eq!(run.abort_grace_from(), None, "not in the runtime yet");
        run.entered_runtime(t0 + Duration::from_millis(10), Duration::ZERO);
        assert_eq!(run.abort_grace_from(), Some(t0 + Duration::from_millis(10)));
        // The prefill took a second (a slow board, or emulation): the runtime could act on the
        // abort only from then on.
        run.produced_output(t0 + Duration::from_secs(1));
        assert_eq!(run.abort_grace_from(), Some(t0 + Duration::from_secs(1)));
        // Later output does not move it.
        run.produced_output(t0 + Duration::from_secs(2));
        assert_eq!(run.abort_grace_from(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn an_abort_in_the_decode_gets_its_grace_from_the_abort() {
        let t0 = Instant::now();
        let mut run = Running::new(7, None, Standing::default(), t0);
        run.entered_runtime(t0, Duration::ZERO);
        run.produced_output(t0 + Duration::from_millis(5));
        run.aborted = Some((AbortCause::Cancel, t0 + Duration::from_secs(3)));
        assert_eq!(run.abort_grace_from(), Some(t0 + Duration::from_secs(3)));
    }

    /// CI under qemu: after a 32k-turn conversation's run had ended, the worker's bookkeeping
    /// of it outlasted a 0.1 s grace, and the runtime was declared wedged.
    #[test]
    fn no_grace_runs_while_the_worker_works_after_the_runtime_returned() {
        let t0 = Instant::now();
        let mut run = Running::new(7, None, Standing::default(), t0);
        run.entered_runtime(t0, Duration::ZERO);
        run.produced_output(t0 + Duration::from_millis(5));
        run.aborted = Some((AbortCause::Cancel, t0 + Duration::from_millis(6)));
        run.left_runtime();
        assert_eq!(run.abort_grace_from(), None);
        // A second call of the same job (a snapshot's save, then the answer) counts again.
        run.entered_runtime(t0 + Duration::from_secs(1), Duration::ZERO);
        assert_eq!(run.abort_grace_from(), Some(t0 + Duration::from_secs(1)));
    }
}
