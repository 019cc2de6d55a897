//! The runtime's handle as threads share it: the inference thread owns it and runs on it, and
//! an `AbortHandle` on any other thread aborts its run.
//!
//! An abort reaches the runtime only while a run is under way on the handle (from just before
//! `rkllm_run` until it returned). Made while the handle is idle, it would be lost, or, were the
//! runtime to keep it, end the next run, someone else's, at its start: which of the two
//! librkllmrt does is not known (the simulator's `idle_abort_carries` plays either). An abort
//! that comes just before the runtime starts a run may still be lost: the inference thread
//! aborts again from the run's first output when it sees its job was cancelled.

use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{check, ffi, RuntimeError};

/// The pointer (null once destroyed) and whether a run is under way on it.
pub(super) struct Handle {
    shared: Mutex<Shared>,
}

struct Shared {
    ptr: *mut c_void,
    running: bool,
}

// SAFETY: the runtime handle is an opaque pointer that librkllmrt allows to be used from any
// thread; rkllmd calls everything but `rkllm_abort` from the owning thread only (enforced by
// `Runtime` being `!Sync` through `&mut self` methods), and abort/destroy are serialised by the
// mutex so abort never sees a destroyed handle.
unsafe impl Send for Shared {}

impl Handle {
    pub(super) fn new(ptr: *mut c_void) -> Arc<Handle> {
        Arc::new(Handle {
            shared: Mutex::new(Shared {
                ptr,
                running: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A run is under way until the mark is dropped; make it just before calling the runtime.
    pub(super) fn mark_running(&self) -> RunMark<'_> {
        self.lock().running = true;
        RunMark(self)
    }

    /// The pointer, taken to destroy it: no abort reaches it afterwards. Null if taken before.
    pub(super) fn take(&self) -> *mut c_void {
        let mut shared = self.lock();
        shared.running = false;
        std::mem::replace(&mut shared.ptr, std::ptr::null_mut())
    }
}

/// While it lives, aborts reach the runtime.
pub(super) struct RunMark<'a>(&'a Handle);

impl Drop for RunMark<'_> {
    fn drop(&mut self) {
        // Taken under the lock an abort holds while it calls the runtime: none is half-made.
        self.0.lock().running = false;
    }
}

/// Aborts the run under way from any thread; a no-op while no run is, or once the runtime is
/// destroyed.
#[derive(Clone)]
pub struct AbortHandle {
    handle: Arc<Handle>,
}

impl AbortHandle {
    pub(super) fn new(handle: &Arc<Handle>) -> AbortHandle {
        AbortHandle {
            handle: Arc::clone(handle),
        }
    }

    pub fn abort(&self) -> Result<(), RuntimeError> {
        let shared = self.handle.lock();
        if shared.ptr.is_null() || !shared.running {
            return Ok(());
        }
        // SAFETY: the pointer is a live handle (destroy nulls it under this same lock first).
        let rc = unsafe { ffi::rkd_abort(shared.ptr) };
        check("rkllm_abort", rc)
    }
}
