//! A run's end turned into the job's result: counts for the client, bytes per token learnt
//! from the prefill, and a failure told apart as a prompt too long for the context.

use super::generate::Ran;
use super::Worker;
use crate::engine::bytes_per_token;
use crate::engine::job::RunSummary;
use crate::engine::kv_cache::Plan;
use crate::engine::EngineError;
use crate::runtime::RunEnd;

impl Worker {
    /// Turns a run's end into the job's result, learning bytes per token on the way from the
    /// `sent_bytes` the runtime prefilled. `prompt_bytes`: the text the context then holds;
    /// `around`: what the runtime may have put around it.
    pub(super) fn conclude(
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
                        let tokens = if kept_history {
                            perf.prefill_tokens
                        } else {
                            perf.prefill_tokens.saturating_add(reused)
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

    pub(super) fn conclude_conversation(
        &mut self,
        plan: Plan,
        ran: Ran,
    ) -> Result<RunSummary, EngineError> {
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
    pub(super) fn classify(
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
