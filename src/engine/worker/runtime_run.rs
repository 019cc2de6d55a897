//! Runs a conversation under the runtime's own template (`runtime` mode): the newest input with
//! `keep_history = 1`, on top of the history the runtime holds when the conversation continues
//! it, else after clearing the cache (see `runtime_history`).

use super::generate::Ran;
use super::{Worker, RUNTIME_TEMPLATE_BYTES};
use crate::engine::job::{RunSummary, RuntimeTurns, WorkerMsg};
use crate::engine::{EngineError, Job};

impl Worker {
    pub(super) fn runtime_turns(
        &mut self,
        job: &Job,
        turns: &RuntimeTurns,
        cap: u32,
        tools_set: bool,
    ) -> Result<RunSummary, EngineError> {
        // The rendered-conversation record does not follow what this run does to the cache.
        self.cache.invalidate();
        if !self.reuse {
            self.history.invalidate();
        }
        let max = u64::from(self.init.max_context_len);
        let reserve = cap.min(self.init.max_context_len / 4);
        // The newest input alone must fit beside the system prompt and tools the runtime holds
        // (the template's own markers are not counted: a refusal must never be wrong).
        let known = turns.newest.len() + self.tools.context_bytes();
        let tools_bytes = self.tools.tools_bytes();
        self.cache
            .check_fits(known, tools_bytes, self.init.max_context_len, reserve)?;
        let reserve = u64::from(reserve);
        let around = RUNTIME_TEMPLATE_BYTES + job.tools().map_or(0, str::len);
        let input = self.cache.estimate_tokens(turns.newest.len() + around);
        let (system, tools) = (job.system_prompt(), job.tools());
        let start = self.history.start(turns, system, tools, |held| {
            u64::from(held) + input + reserve <= max
        });
        if let Some(text) = start.warning {
            log::debug!("request {}: {text}", job.id());
            self.notify.send(WorkerMsg::Warning {
                id: job.id(),
                text: text.to_owned(),
            });
        }
        if start.clear {
            self.history.invalidate();
            // The system prompt (and tools) set with rkllm_set_function_tools stay.
            self.runtime
                .clear_kv_cache(true)
                .map_err(EngineError::Runtime)?;
            self.history.cleared();
        }
        let ran = self.generate(job, &turns.newest, job.role(), true, cap);
        let Ran {
            end,
            generated,
            answer,
            hit_cap,
            reused,
            cache_tokens,
            clean,
        } = ran;
        match cache_tokens {
            Some(Ok(tokens)) if clean => {
                let key = job.answer_key(&answer);
                let role = job.role();
                self.history
                    .finished(start, turns, role, (system, tools), key, tokens);
            }
            _ => self.history.invalidate(),
        }
        // New tools are prefilled with this run: learning from the input's bytes alone would
        // take a run of tools for a run of one-byte tokens.
        let sent = if tools_set { known } else { turns.newest.len() };
        let bytes = (sent, known, RUNTIME_TEMPLATE_BYTES);
        self.conclude(end, (generated, reused, true), hit_cap, bytes)
    }
}
