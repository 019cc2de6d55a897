//! Snapshots on the inference thread: saving a conversation's KV cache before a request
//! replaces it, and restoring it when the conversation comes back (see `engine::snapshots`).
//!
//! Save: the cached text is sent whole with `keep_history = 0`, so the runtime's prefix reuse
//! finds all of it in the cache and prefills (next to) nothing; `prompt_cache_params` has it
//! write the prompt cache once that prefill is done (SDK manual 1.3.0, 3.2.9), and one token
//! is decoded (the run's cap; ABI 1.2 stops it at that token). The runtime only logs a failed
//! write, so the file itself is checked: none, or an empty one (a full disk), is no snapshot.
//!
//! Restore: the cache is cleared, `rkllm_load_prompt_cache` loads the file, and the
//! conversation is sent whole with `keep_history = 1` on that empty cache, a run that starts a
//! sequence: the runtime counts the part of the input that starts with the loaded cache as
//! computed. (On a cache already holding turns a loaded prompt cache did not shorten the
//! prefill, rknn-llm#399; this run is never on such a cache.) A file the runtime refuses (torn,
//! foreign) is discarded and the conversation prefilled as without snapshots; the answer is the
//! same either way. What the restore really spared (the runtime's prefill count) feeds the cost
//! model, so a runtime on which loading does not help soon gets no more snapshots.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::generate::Ran;
use super::Worker;
use crate::engine::job::{Job, SnapshotUse, WorkerMsg};
use crate::engine::kv_cache::Plan;
use crate::engine::snapshots::SaveFailed;
use crate::engine::EngineError;
use crate::runtime::{Flow, Role, RunEnd, RunRequest};

/// A snapshot loaded for the run about to start.
pub(super) struct Restoring {
    tokens: u32,
    took: Duration,
}

impl Worker {
    /// Before a conversation's run that does not extend the cache: restores a snapshot of this
    /// conversation when one covers more of it than the cache does, and saves the cache it is
    /// about to replace when that pays. Returns the plan to run.
    pub(super) fn around_replacement(
        &mut self,
        job: &Job,
        plan: Plan,
    ) -> Result<Plan, EngineError> {
        // Snapshots are of the model alone: a prompt cache file does not say which adapter
        // computed it, and one restored under another adapter would be silently wrong.
        if self.snapshots.is_none() || !self.reuse || plan.send_from != 0 || self.adapter.is_some()
        {
            return Ok(plan);
        }
        let have = self.cache.shared_with(&plan.full);
        let found = self
            .snapshots
            .as_mut()
            .and_then(|s| s.find(&plan.full, have));
        if plan.clear || found.is_some() {
            self.save_before_replacing(job);
        }
        let Some(found) = found else {
            return Ok(plan);
        };
        if let Some(s) = self.snapshots.as_mut() {
            s.unpin();
        }
        self.cache.invalidate();
        self.runtime
            .clear_kv_cache(false)
            .map_err(EngineError::Runtime)?;
        self.cache.cleared();
        let started = Instant::now();
        self.notify.send(WorkerMsg::InRuntime {
            id: job.id(),
            prefill_tokens: self.cache.estimate_tokens(plan.full.len()),
        });
        let loaded = self.runtime.load_prompt_cache(&found.path);
        self.notify.send(WorkerMsg::OutOfRuntime { id: job.id() });
        match loaded {
            Ok(()) => {
                log::debug!(
                    "request {}: restoring a snapshot of {} tokens ({} bytes of the conversation)",
                    job.id(),
                    found.tokens,
                    found.text_len
                );
                self.restoring = Some(Restoring {
                    tokens: found.tokens,
                    took: started.elapsed(),
                });
                self.notify.send(WorkerMsg::Snapshot(SnapshotUse::Restored));
            }
            Err(e) => {
                let level = if self.warned.snapshot_load {
                    log::Level::Debug
                } else {
                    log::Level::Warn
                };
                self.warned.snapshot_load = true;
                log::log!(
                    level,
                    "request {}: the runtime could not load snapshot {} ({e}); discarded, the \
                     conversation is prefilled instead",
                    job.id(),
                    found.path.display()
                );
                if let Some(s) = self.snapshots.as_mut() {
                    s.discard(&found.path);
                }
            }
        }
        // The cache is empty now: the conversation goes in whole, its answer kept.
        Ok(Plan {
            send_from: 0,
            clear: false,
            keep_history: true,
            ..plan
        })
    }

    /// After a conversation's run: learns speeds from it and, after a restore, frees the loaded
    /// prompt cache and measures what it spared.
    pub(super) fn after_conversation_run(&mut self, ran: Ran) -> Ran {
        let Some(store) = self.snapshots.as_mut() else {
            return ran;
        };
        if let Ok(RunEnd::Finished(perf)) = &ran.end {
            store.costs.learn_run(perf);
        }
        let Some(restoring) = self.restoring.take() else {
            return ran;
        };
        if let Err(e) = self.runtime.release_prompt_cache() {
            log::debug!("rkllm_release_prompt_cache: {e}");
        }
        if let (Ok(RunEnd::Finished(perf)), Some(Ok(after))) = (&ran.end, &ran.cache_tokens) {
            // The cache was empty: what it holds beyond this run's prefill and answer came
            // from the snapshot.
            let covered = after
                .saturating_sub(perf.prefill_tokens)
                .saturating_sub(ran.generated);
            let uncovered = restoring.tokens.saturating_sub(covered);
            store
                .costs
                .learn_restore(restoring.tokens, restoring.took, uncovered);
            log::debug!(
                "restored snapshot covered {covered} of its {} tokens; prefilled {} ({})",
                restoring.tokens,
                perf.prefill_tokens,
                store.costs.describe()
            );
            return Ran {
                reused: covered,
                ..ran
            };
        }
        ran
    }

    /// The KV cache's size after a restore run is the runtime's own count of the loaded prefix
    /// plus the run: the usual before/after check does not apply to it.
    pub(super) fn restored_run(&self) -> bool {
        self.restoring.is_some()
    }

    /// Saves what the cache holds, before a request replaces it, when that pays.
    pub(super) fn save_before_replacing(&mut self, job: &Job) {
        if self.is_cancelled(job) {
            return;
        }
        let Some(store) = self.snapshots.as_mut() else {
            return;
        };
        let Some((text, tokens)) = self.cache.held() else {
            return;
        };
        if tokens == 0 || text.is_empty() || store.holds(text) {
            return;
        }
        if !store.costs.pays(tokens) {
            log::debug!(
                "request {}: no snapshot of the {tokens}-token cache, it would not pay ({})",
                job.id(),
                store.costs.describe()
            );
            return;
        }
        let text = text.to_owned();
        let path = store.new_path(&text);
        let req = RunRequest {
            prompt: &text,
            role: Role::User,
            enable_thinking: false,
            keep_history: false,
            max_new_tokens: Some(1),
            sampling: None,
            save_prompt_cache: Some(&path),
            // The adapter the cache was computed with: the save reuses all of it.
            lora: self.loras.name(&self.name, self.adapter).ok().flatten(),
        };
        // In the runtime from here: a save that hangs is a wedge like any run's (the whole text
        // may be prefilled again if the runtime does not reuse it, so the grace allows that).
        self.notify.send(WorkerMsg::InRuntime {
            id: job.id(),
            prefill_tokens: self.cache.estimate_tokens(text.len()),
        });
        let (cancelled, id) = (&self.cancelled, job.id());
        let per_run_cap = self.caps.run_max_new_tokens;
        let started = Instant::now();
        let end = self.runtime.run(&req, &mut |_| {
            if cancelled.load(Ordering::Acquire) == id {
                Flow::Discard
            } else if per_run_cap {
                Flow::Continue
            } else {
                Flow::Stop
            }
        });
        let took = started.elapsed();
        self.notify.send(WorkerMsg::OutOfRuntime { id });
        let size = self.runtime.kv_cache_size();
        let saved = match (&end, &size) {
            (Ok(RunEnd::Finished(_) | RunEnd::Stopped(_)), Ok(n)) if !self.is_cancelled(job) => {
                Some(*n)
            }
            _ => None,
        };
        // A finished run leaves the prompt in the cache; its size may differ from the record's
        // (the answer's text tokenizes differently from the tokens generated), so the record
        // only holds with the same size. A run that ended otherwise (an abort on ABI 1.2, a
        // cancel) leaves it unknown: cleared, as it is about to be replaced anyway.
        match (&end, &size) {
            (Ok(RunEnd::Finished(_)), Ok(n)) if *n == tokens => {}
            (Ok(RunEnd::Finished(_)), Ok(_)) => self.cache.invalidate(),
            _ => {
                self.cache.invalidate();
                match self.runtime.clear_kv_cache(false) {
                    Ok(()) => self.cache.cleared(),
                    Err(_) => self.must_clear = true,
                }
            }
        }
        let Some(store) = self.snapshots.as_mut() else {
            return;
        };
        let Some(n) = saved else {
            let _ = std::fs::remove_file(&path);
            log::debug!(
                "request {}: the snapshot run ended early: {end:?}",
                job.id()
            );
            return;
        };
        match store.added(text, n, path.clone()) {
            Ok(()) => {
                store.costs.learn_save(n, took);
                self.notify.send(WorkerMsg::Snapshot(SnapshotUse::Saved));
                log::debug!(
                    "request {}: saved a snapshot of {n} tokens in {} ms",
                    job.id(),
                    took.as_millis()
                );
            }
            Err(e) => {
                let level = if self.warned.snapshot_save {
                    log::Level::Debug
                } else {
                    log::Level::Warn
                };
                self.warned.snapshot_save = true;
                let why = match e {
                    SaveFailed::NoFile => format!(
                        "the runtime wrote no file at {} (a full disk? its own log says)",
                        path.display()
                    ),
                    SaveFailed::TooLarge { bytes } => {
                        format!("its {bytes} bytes exceed kv-snapshot-limit")
                    }
                };
                log::log!(
                    level,
                    "request {}: no snapshot of the conversation's KV cache: {why}; the request \
                     is served without one",
                    job.id()
                );
            }
        }
    }
}
