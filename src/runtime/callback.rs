//! The trampoline the runtime calls for every result: it gets the Rust sink back from
//! `userdata`, runs it under `catch_unwind` (unwinding into C++ is undefined behaviour) and keeps
//! the panic to resume once `rkllm_run` has returned.
//!
//! A sink that wants the run to end (or that panicked) gets it aborted with `rkllm_abort`, never
//! paused by returning 1: a paused run keeps its generation and resumes it in the next
//! `keep_history` run (rkllm.h, `LLMResultCallback`), so the next request would get the rest of
//! the cancelled answer.

use std::any::Any;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::ffi::{self, RkdPerf};
use super::{Flow, Output, Perf};

/// What one `rkllm_run` call has seen so far; lives on the stack of `Runtime::run`.
pub(super) struct RunState<'a> {
    pub sink: &'a mut dyn FnMut(Output<'_>) -> Flow,
    /// The handle running this generation, for `rkllm_abort`.
    pub handle: *mut c_void,
    pub finished: Option<Perf>,
    pub error: bool,
    /// The sink asked to stop or discard, or panicked: later output of the run is dropped.
    pub stopped: bool,
    pub panic: Option<Box<dyn Any + Send>>,
}

pub(super) extern "C" fn on_event(
    ctx: *mut c_void,
    state: i32,
    text: *const c_char,
    token_id: i32,
    perf: *const RkdPerf,
) -> i32 {
    if ctx.is_null() {
        return 0;
    }
    // SAFETY: `ctx` is the `&mut RunState` that `Runtime::run` passed to `rkd_run`; it outlives
    // the call, and the runtime calls back on the thread running `rkd_run`, so no other reference
    // to it exists while this one is alive.
    let run = unsafe { &mut *ctx.cast::<RunState<'_>>() };
    let output = state == ffi::STATE_NORMAL || state == ffi::STATE_WAITING;
    if run.stopped && output {
        // Tokens the runtime makes before the abort takes effect: nobody wants them.
        return 0;
    }
    // SAFETY: the runtime passes a NUL-terminated string valid for the duration of the callback,
    // or NULL; we copy out of it before returning.
    let bytes = (!text.is_null()).then(|| unsafe { CStr::from_ptr(text) }.to_bytes());
    // SAFETY: `perf` is NULL or points to a struct on the shim's stack valid during this call.
    let perf = unsafe { perf.as_ref() }.map(|p| Perf::from(*p));

    let outcome = catch_unwind(AssertUnwindSafe(|| {
        dispatch(run, state, bytes, token_id, perf)
    }));
    match outcome {
        Ok(Flow::Continue) => {}
        Ok(Flow::Stop) => stop(run),
        Ok(Flow::Discard) => run.stopped = true,
        Ok(Flow::Pause) => {
            run.stopped = true;
            return 1;
        }
        Err(payload) => {
            run.panic = Some(payload);
            stop(run);
        }
    }
    0
}

fn stop(run: &mut RunState<'_>) {
    if run.stopped {
        return;
    }
    run.stopped = true;
    // SAFETY: `run.handle` is the live handle whose `rkd_run` is calling us (it cannot be
    // destroyed during the run: that needs the `Runtime` that is running it), and abort takes
    // only the handle. (That the real runtime honours an abort made from inside its own callback
    // is not verified on a board; the simulator does.)
    let rc = unsafe { ffi::rkd_abort(run.handle) };
    if rc != 0 {
        log::warn!("rkllm_abort returned {rc}; the run goes on to its end unseen");
    }
}

fn dispatch(
    run: &mut RunState<'_>,
    state: i32,
    text: Option<&[u8]>,
    token_id: i32,
    perf: Option<Perf>,
) -> Flow {
    match state {
        ffi::STATE_NORMAL => (run.sink)(Output::Token {
            text: text.unwrap_or_default(),
            token_id,
        }),
        // An incomplete UTF-8 character is pending inside the runtime: nothing to emit yet.
        ffi::STATE_WAITING => (run.sink)(Output::Waiting),
        ffi::STATE_FINISH => {
            run.finished = Some(perf.unwrap_or_default());
            Flow::Continue
        }
        ffi::STATE_ERROR => {
            run.error = true;
            Flow::Continue
        }
        other => {
            log::warn!("runtime callback with unknown state {other}; ignored");
            Flow::Continue
        }
    }
}
