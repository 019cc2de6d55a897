//! Embedding jobs on the inference thread: one last-hidden-layer run per text, in order.
//!
//! Such a run must not disturb a conversation's KV record. What the real runtime does to its KV
//! cache in that mode is not documented, so the cache's size is read before and after every run:
//! the same size keeps the record (the runtime computed on the side, as the simulator models);
//! any other size, or a run that did not finish, invalidates it and clears the cache before the
//! next run.

use std::sync::atomic::Ordering;

use super::Worker;
use crate::engine::embed::pool;
use crate::engine::job::{EmbedInput, Job, RunSummary, WorkerMsg};
use crate::engine::EngineError;
use crate::runtime::{HiddenStates, Perf, RunEnd, RuntimeError};

impl Worker {
    pub(super) fn embed(
        &mut self,
        job: &Job,
        input: &EmbedInput,
    ) -> Result<RunSummary, EngineError> {
        let mut total = Perf::default();
        // The adapter applies to the hidden states too; the cache's own stays as it is.
        let lora = self
            .loras
            .name(&self.name, job.adapter())?
            .map(str::to_owned);
        for text in &input.texts {
            if self.cancelled.load(Ordering::Acquire) == job.id() {
                break;
            }
            let (text, ran) = self.run_fitting(text, lora.as_deref(), input.truncate);
            let (states, end) = match ran {
                Ok(r) => r,
                Err(e) => {
                    // Under the runtime's own template, it wraps the text in it.
                    let around = if self.raw_template {
                        0
                    } else {
                        super::RUNTIME_TEMPLATE_BYTES
                    };
                    return Err(self.classify(e, 0, text.len(), around));
                }
            };
            if let RunEnd::Finished(perf) = end {
                total = total.followed_by(&perf);
            }
            // A run that ended without states was aborted (the client left, or the engine cut
            // it for a deadline or a shutdown, which it reports as such), or the runtime
            // misbehaved: the job ends here with fewer vectors than texts, which the responder
            // answers as a runtime error when nobody aborted it.
            let (Some(states), RunEnd::Finished(perf)) = (states, end) else {
                break;
            };
            let Some(vector) = pool(&states, input.pooling) else {
                break;
            };
            self.cache.calibrate(text.len(), perf.prefill_tokens);
            let tokens = u32::try_from(states.num_tokens).unwrap_or(u32::MAX);
            if !self.notify.send(WorkerMsg::Embedding {
                id: job.id(),
                vector,
                tokens,
            }) {
                break;
            }
        }
        Ok(RunSummary {
            perf: Some(total),
            generated_tokens: 0,
            hit_cap: false,
            // Each text runs with keep_history 0 from a cache the run leaves alone: nothing of
            // a text is counted as reused.
            cached_tokens: 0,
            reseat: false,
        })
    }

    /// One run of `text`; with `truncate`, a text the runtime refuses is cut by a quarter (at a
    /// character boundary) and run again, until it is down to half the context length in bytes
    /// (a token is at least a byte, so by then it is not the text's length that fails it). Whether the failed runs touched the KV cache is checked as for
    /// any other. Returns the text that ran.
    fn run_fitting<'t>(
        &mut self,
        text: &'t str,
        lora: Option<&str>,
        truncate: bool,
    ) -> (
        &'t str,
        Result<(Option<HiddenStates>, RunEnd), RuntimeError>,
    ) {
        let floor = self.init.max_context_len as usize / 2;
        let mut text = text;
        loop {
            let ran = self.checked_run(text, lora);
            if !truncate || ran.is_ok() || text.len() <= floor {
                return (text, ran);
            }
            let mut cut = text.len() * 3 / 4;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            log::debug!(
                "embedding input of {} bytes refused; trying {cut}",
                text.len()
            );
            text = &text[..cut];
        }
    }

    /// A hidden-layer run that keeps the KV record only when the cache's size did not change.
    fn checked_run(
        &mut self,
        text: &str,
        lora: Option<&str>,
    ) -> Result<(Option<HiddenStates>, RunEnd), RuntimeError> {
        let before = self.runtime.kv_cache_size().ok();
        let ran = self.runtime.run_hidden(text, lora);
        let after = self.runtime.kv_cache_size().ok();
        let finished = matches!(ran, Ok((_, RunEnd::Finished(_))));
        if !finished || before.is_none() || before != after {
            if finished {
                log::debug!(
                    "the KV cache went from {before:?} to {after:?} tokens in an embedding run; \
                     clearing it before the next run"
                );
            }
            self.cache.invalidate();
            self.must_clear = true;
        }
        ran
    }
}
