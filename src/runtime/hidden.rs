//! Last-hidden-layer runs (`RKLLM_INFER_GET_LAST_HIDDEN_LAYER`): the runtime prefills a prompt
//! and hands the last layer's hidden states to the callback, one vector per token. The buffer
//! is the runtime's and is freed by its next callback (rknn-llm's `llm_demo.cpp`), so the
//! trampoline copies it before returning.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::ffi::{self, RkdPerf};
use super::{cstring, Perf, RunEnd, Runtime, RuntimeError};

/// The hidden states of one run, copied out of the runtime: `num_tokens` rows of `embd_size`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HiddenStates {
    pub values: Vec<f32>,
    pub embd_size: usize,
    pub num_tokens: usize,
}

impl HiddenStates {
    /// The state of token `i` (`i < num_tokens`).
    pub fn token(&self, i: usize) -> &[f32] {
        &self.values[i * self.embd_size..(i + 1) * self.embd_size]
    }
}

/// What one hidden-layer run has seen; lives on the stack of `Runtime::run_hidden`.
struct HiddenRun {
    states: Option<HiddenStates>,
    finished: Option<Perf>,
    error: bool,
    panic: Option<Box<dyn Any + Send>>,
}

extern "C" fn on_hidden(
    ctx: *mut c_void,
    state: i32,
    states: *const f32,
    embd_size: i32,
    num_tokens: i32,
    perf: *const RkdPerf,
) -> i32 {
    if ctx.is_null() {
        return 0;
    }
    // SAFETY: `ctx` is the `&mut HiddenRun` that `run_hidden` passed to `rkd_run_hidden`; it
    // outlives the call and the runtime calls back on the thread running it, so this is the only
    // reference while it lives.
    let run = unsafe { &mut *ctx.cast::<HiddenRun>() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let (Ok(width), Ok(tokens)) = (usize::try_from(embd_size), usize::try_from(num_tokens))
        else {
            return;
        };
        if !states.is_null() && width > 0 && tokens > 0 {
            let len = width.saturating_mul(tokens);
            // SAFETY: the shim passes a non-NULL `states` only with the runtime's
            // `embd_size * num_tokens` floats behind it, valid during this call; they are copied
            // here, before returning.
            let values = unsafe { std::slice::from_raw_parts(states, len) }.to_vec();
            run.states = Some(HiddenStates {
                values,
                embd_size: width,
                num_tokens: tokens,
            });
        }
        match state {
            ffi::STATE_FINISH => {
                // SAFETY: NULL or a struct on the shim's stack valid during this call.
                run.finished = Some(
                    unsafe { perf.as_ref() }
                        .map(|p| Perf::from(*p))
                        .unwrap_or_default(),
                );
            }
            ffi::STATE_ERROR => run.error = true,
            _ => {}
        }
    }));
    if let Err(payload) = outcome {
        run.panic = Some(payload);
    }
    0
}

impl Runtime {
    /// Runs `prompt` in last-hidden-layer mode with `keep_history` 0, with the LoRA adapter
    /// named `lora` (`None`: the base model). `Ok` carries the states when the runtime delivered
    /// them (an aborted run may end without) and how the run ended.
    pub fn run_hidden(
        &mut self,
        prompt: &str,
        lora: Option<&str>,
    ) -> Result<(Option<HiddenStates>, RunEnd), RuntimeError> {
        let prompt = cstring("prompt", prompt)?;
        let lora = lora.map(|l| cstring("adapter name", l)).transpose()?;
        let mut run = HiddenRun {
            states: None,
            finished: None,
            error: false,
            panic: None,
        };
        // Aborts from other threads reach the runtime from here until the call returned.
        let _running = self.handle.mark_running();
        // SAFETY: `self.ptr` is live (only `Drop` destroys it, with `&mut self`); the prompt, the
        // adapter name and `run` outlive the call; the runtime calls `on_hidden` only during it, on this thread,
        // with `run` as its userdata.
        let rc = unsafe {
            ffi::rkd_run_hidden(
                self.ptr,
                prompt.as_ptr(),
                lora.as_ref().map_or(std::ptr::null(), |l| l.as_ptr()),
                on_hidden,
                std::ptr::addr_of_mut!(run).cast(),
            )
        };
        if let Some(payload) = run.panic {
            std::panic::resume_unwind(payload);
        }
        match (run.error, run.finished) {
            (true, _) => Err(RuntimeError::RunFailed { code: rc }),
            (false, Some(perf)) => Ok((run.states, RunEnd::Finished(perf))),
            (false, None) if rc != 0 => Err(RuntimeError::RunFailed { code: rc }),
            (false, None) => Ok((run.states, RunEnd::Unfinished)),
        }
    }
}
