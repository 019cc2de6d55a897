//! The seat a conversation's run leaves for the engine's re-seat, and the re-seat run itself
//! (see `engine::reseat`).

use super::generate::Ran;
use super::Worker;
use crate::engine::job::{Conversation, RunSummary};
use crate::engine::kv_cache::Plan;
use crate::engine::reseat::MAX_SEAT_BYTES;
use crate::engine::{EngineError, Job};
use crate::runtime::{Role, RunEnd};

const NOTHING: RunSummary = RunSummary {
    perf: None,
    generated_tokens: 0,
    cached_tokens: 0,
    hit_cap: false,
    reseat: false,
};

impl Worker {
    /// The conversation as its next request renders it up to this run's answer (the job's
    /// `PastTurn`), when a re-seat may follow the run: KV-cache reuse on, the runtime's prefix
    /// reuse not seen failing, a complete answer (the client sends back what it got) of a
    /// conversation sent without leaving turns out, and a rendered answer within
    /// `MAX_SEAT_BYTES`.
    pub(super) fn seat_for(
        &self,
        job: &Job,
        conv: &Conversation,
        plan: &Plan,
        ran: &Ran,
    ) -> Option<String> {
        if !self.reuse || !self.prefix_reuse || !ran.clean || ran.hit_cap {
            return None;
        }
        if plan.dropped_turns > 0 {
            return None;
        }
        let past = job.past_turn()?.render(&ran.answer)?;
        if past.len() > MAX_SEAT_BYTES {
            log::debug!(
                "request {}: an answer of {} bytes is not re-seated (at most {MAX_SEAT_BYTES})",
                job.id(),
                past.len()
            );
            return None;
        }
        let history = plan.full.strip_suffix(conv.generation_prompt.as_str())?;
        let mut seat = String::with_capacity(history.len() + past.len());
        seat.push_str(history);
        seat.push_str(&past);
        Some(seat)
    }

    /// After the run's record is updated: keeps the seat, and tells the engine, unless the
    /// cache already holds what the next request starts with. A run with history kept left
    /// the answer as generated in the cache: enough when the seat extends it (a template that
    /// keeps answers as they are). A run without history left the prompt alone: the answer is
    /// missing.
    pub(super) fn offer_seat(
        &mut self,
        seat: Option<String>,
        kept_history: bool,
        result: Result<RunSummary, EngineError>,
    ) -> Result<RunSummary, EngineError> {
        match (result, seat) {
            (Ok(summary), Some(seat)) if !(kept_history && self.cache.is_prefix_of(&seat)) => {
                self.seat = Some(seat);
                Ok(RunSummary {
                    reseat: true,
                    ..summary
                })
            }
            (result, _) => result,
        }
    }

    /// Runs a re-seat: `seat` sent whole without history, cut at its first token (ABI 1.3:
    /// `max_new_tokens` 1; ABI 1.2: the worker aborts the run at its first token, and an
    /// aborted run without history leaves the prompt as a finished one does, per the
    /// simulator's model of the runtime). The record then holds the seat alone. Anything else
    /// leaves the cache unknown: cleared before the next run, as after any failed run.
    pub(super) fn reseat(
        &mut self,
        job: &Job,
        seat: Option<String>,
    ) -> Result<RunSummary, EngineError> {
        let Some(seat) = seat else {
            return Ok(NOTHING);
        };
        if self.must_clear || !self.cache.is_valid() {
            return Ok(NOTHING);
        }
        let plan = Plan {
            full: seat,
            send_from: 0,
            clear: false,
            keep_history: false,
            dropped_turns: 0,
        };
        let ran = self.generate(job, plan.input(), Role::User, false, 1);
        let stopped_at_first = !self.caps.run_max_new_tokens
            && ran.generated == 1
            && !self.is_cancelled(job)
            && matches!(ran.end, Ok(RunEnd::Stopped(Some(_))));
        let (perf, after) = match &ran.end {
            Ok(RunEnd::Finished(perf)) if ran.clean => (*perf, ran.cache_tokens),
            Ok(RunEnd::Stopped(Some(perf))) if stopped_at_first => {
                (*perf, Some(self.runtime.kv_cache_size()))
            }
            _ => {
                self.cache.invalidate();
                self.must_clear = true;
                return Ok(NOTHING);
            }
        };
        let Some(Ok(tokens)) = after else {
            self.cache.invalidate();
            self.must_clear = true;
            return Ok(NOTHING);
        };
        self.must_clear = false;
        let reused = tokens.saturating_sub(perf.prefill_tokens);
        if reused == 0 && self.prefix_reuse {
            // Every seat shares at least its first turn with the cache.
            self.prefix_reuse = false;
            log::info!(
                "the runtime reused nothing of its KV cache for a prompt sent without history; \
                 the cache is no longer re-seated between turns"
            );
        }
        log::debug!(
            "re-seated the KV cache: {} tokens prefilled, {reused} reused",
            perf.prefill_tokens
        );
        self.cache.finished(plan, "", tokens);
        Ok(RunSummary {
            perf: Some(perf),
            generated_tokens: ran.generated,
            cached_tokens: reused,
            hit_cap: false,
            reseat: false,
        })
    }
}
