//! Giving memory back to the system after a request that needed a lot of it. The allocator
//! (glibc's malloc) keeps freed memory for reuse: after one request of a million small JSON
//! values, their pages stay in the heap (freed, but not at its top) and the daemon's RSS stays
//! at the request's peak for the life of the process. `malloc_trim` returns every whole free
//! page of every arena.

/// Requests whose input is at least this large give their memory back when they are done;
/// below it, trimming would cost more than it returns.
pub const LARGE_REQUEST_BYTES: usize = 1 << 20;

/// Returns the allocator's free pages to the system. A no-op where the C library has no
/// `malloc_trim` (musl returns freed memory by itself).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists,
    // under the allocator's locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
