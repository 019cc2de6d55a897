//! The inference thread: owns the runtime, runs one job at a time, streams text back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::Waker;

use super::job::{Job, RunSummary, WorkerMsg};
use super::utf8::Utf8Assembler;
use crate::runtime::{
    AbortHandle, Capabilities, Flow, InitConfig, Output, RunEnd, RunRequest, Runtime,
};

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

pub(super) fn run(
    cfg: InitConfig,
    caps: Capabilities,
    jobs: Receiver<Job>,
    notify: Notifier,
    abort_slot: Arc<Mutex<Option<AbortHandle>>>,
    cancelled: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let mut runtime = match Runtime::init(&cfg) {
        Ok(rt) => rt,
        Err(e) => {
            notify.send(WorkerMsg::LoadFailed(e));
            notify.send(WorkerMsg::Stopped);
            return;
        }
    };
    if let Ok(mut slot) = abort_slot.lock() {
        *slot = Some(runtime.abort_handle());
    }
    notify.send(WorkerMsg::Loaded {
        load_time: started.elapsed(),
    });

    while let Ok(job) = jobs.recv() {
        if !notify.send(WorkerMsg::Started { id: job.id }) {
            break;
        }
        let result = run_job(
            &mut runtime,
            caps,
            cfg.max_new_tokens,
            &job,
            &notify,
            &cancelled,
        );
        if !notify.send(WorkerMsg::Done { id: job.id, result }) {
            break;
        }
    }
    drop(runtime);
    notify.send(WorkerMsg::Stopped);
}

fn run_job(
    runtime: &mut Runtime,
    caps: Capabilities,
    init_cap: u32,
    job: &Job,
    notify: &Notifier,
    cancelled: &AtomicU64,
) -> Result<RunSummary, (crate::runtime::RuntimeError, u32)> {
    // The loop may cancel a job it has handed over before the runtime started it; an
    // rkllm_abort at that moment finds nothing to abort, so the flag is checked here too.
    let is_cancelled = || cancelled.load(Ordering::Acquire) == job.id;
    if is_cancelled() {
        return Ok(RunSummary {
            perf: None,
            generated_tokens: 0,
            hit_cap: false,
        });
    }
    if job.clear_cache {
        runtime.clear_kv_cache(false).map_err(|e| (e, 0))?;
    }
    let cap = job.max_new_tokens.unwrap_or(init_cap).min(init_cap.max(1));
    let req = RunRequest {
        prompt: &job.prompt,
        role: job.role,
        enable_thinking: job.enable_thinking,
        keep_history: job.keep_history,
        max_new_tokens: Some(cap),
        sampling: job.sampling,
    };
    let mut generated = 0u32;
    let mut text = Utf8Assembler::default();
    let mut sink = |out: Output<'_>| {
        generated += 1;
        if let Output::Token { text: bytes, .. } = out {
            let piece = text.push(bytes);
            if !piece.is_empty() {
                notify.send(WorkerMsg::Text {
                    id: job.id,
                    text: piece,
                });
            }
        }
        // ABI 1.2 has no per-run cap: stop the run ourselves when it is reached.
        if is_cancelled() || (!caps.run_max_new_tokens && generated >= cap) {
            Flow::Pause
        } else {
            Flow::Continue
        }
    };
    let end = runtime.run(&req, &mut sink);
    let rest = text.finish();
    if !rest.is_empty() {
        notify.send(WorkerMsg::Text {
            id: job.id,
            text: rest,
        });
    }
    let perf = match end.map_err(|e| (e, generated))? {
        RunEnd::Finished(perf) => Some(perf),
        RunEnd::Paused => None,
    };
    Ok(RunSummary {
        perf,
        generated_tokens: generated,
        hit_cap: generated >= cap,
    })
}
