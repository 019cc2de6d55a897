//! Runs a single prompt: a raw completion, or one turn under the runtime's own template. The
//! runtime changes its cache in ways the conversation record does not follow, so the record is
//! dropped (a snapshot of it saved first).

use super::{Worker, RUNTIME_TEMPLATE_BYTES};
use crate::engine::job::RunSummary;
use crate::engine::{EngineError, Job};

impl Worker {
    pub(super) fn prompt(
        &mut self,
        job: &Job,
        prompt: &str,
        cap: u32,
        reserve: u32,
        tools_set: bool,
    ) -> Result<RunSummary, EngineError> {
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
