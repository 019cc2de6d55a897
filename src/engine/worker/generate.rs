//! One call of the runtime: the text streamed to the loop as it comes, the cancel flag checked
//! per token, and what the run left in the KV cache checked against what it should hold.

use std::sync::atomic::Ordering;

use super::Worker;
use crate::engine::job::{Job, WorkerMsg};
use crate::engine::reuse;
use crate::engine::utf8::Utf8Assembler;
use crate::runtime::{Flow, Images, Output, Role, RunEnd, RunRequest};

/// What a run produced.
pub(super) struct Ran {
    pub(super) end: Result<RunEnd, crate::runtime::RuntimeError>,
    pub(super) generated: u32,
    pub(super) answer: String,
    pub(super) hit_cap: bool,
    /// Prompt tokens taken from the KV cache (see `reuse::reused_tokens`).
    pub(super) reused: u32,
    /// The KV cache size after a run that finished (read once, here), None after any other.
    pub(super) cache_tokens: Option<Result<u32, crate::runtime::RuntimeError>>,
    /// The run ended as it should and left the cache as expected; false also when the caller
    /// stopped it.
    pub(super) clean: bool,
}

impl Worker {
    pub(super) fn generate(
        &mut self,
        job: &Job,
        prompt: &str,
        role: Role,
        keep_history: bool,
        cap: u32,
    ) -> Ran {
        self.generate_with(job, prompt, (role, keep_history, cap), None)
    }

    /// `generate`, with the images the prompt's placeholders stand for (a multimodal run).
    pub(super) fn generate_with(
        &mut self,
        job: &Job,
        prompt: &str,
        (role, keep_history, cap): (Role, bool, u32),
        images: Option<&Images<'_>>,
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
            lora: self.loras.name(&self.name, self.adapter).ok().flatten(),
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
                // The loop set the flag, then called rkllm_abort. Seen at the first output, that
                // abort may have come after the check above but before the runtime started the
                // run: it found no run and was lost (the simulator's `run_start_delay_ms`), so
                // abort again. Later, the loop's abort stands.
                if generated == 1 {
                    Flow::Stop
                } else {
                    Flow::Discard
                }
            } else if !caps.run_max_new_tokens && generated >= cap {
                // ABI 1.2 has no per-run cap: end the run ourselves when it is reached.
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let ran = match images {
            Some(images) => self.runtime.run_multimodal(&req, images, &mut sink),
            None => self.runtime.run(&req, &mut sink),
        };
        self.notify.send(WorkerMsg::OutOfRuntime { id: job.id() });
        let end = match ran {
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
