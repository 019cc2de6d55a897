//! Giving memory back to the system after a request that needed a lot of it. The allocator
//! (glibc's malloc) keeps freed memory for reuse: after one request of a million small JSON
//! values, their pages stay in the heap (freed, but not at its top) and the daemon's RSS stays
//! at the request's peak for the life of the process. `malloc_trim` returns every whole free
//! page of every arena.

use std::time::{Duration, Instant};

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

/// Buffer memory the event loop freed and has not given back yet. Connections dropped with
/// large buffers (bodies that never completed, answers never read) leave their pages in the
/// heap, where nothing else returns them. Given back at most once per `INTERVAL`, so that
/// clients coming and going cannot keep the loop trimming.
#[derive(Debug)]
pub struct Reclaim {
    pending: usize,
    last: Instant,
}

impl Reclaim {
    pub const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(now: Instant) -> Reclaim {
        Reclaim {
            pending: 0,
            last: now,
        }
    }

    /// `bytes` of buffers were just freed.
    pub fn freed(&mut self, bytes: usize) {
        self.pending = self.pending.saturating_add(bytes);
    }

    /// When memory is to be given back: once `LARGE_REQUEST_BYTES` were freed, and `INTERVAL`
    /// after the last time.
    pub fn due(&self) -> Option<Instant> {
        (self.pending >= LARGE_REQUEST_BYTES).then_some(self.last + Self::INTERVAL)
    }

    /// Gives memory back if it is due; true when it did.
    pub fn run(&mut self, now: Instant) -> bool {
        if self.due().is_none_or(|d| d > now) {
            return false;
        }
        give_back();
        self.pending = 0;
        self.last = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_once_enough_was_freed_and_at_most_once_an_interval() {
        let t0 = Instant::now();
        let mut r = Reclaim::new(t0);
        r.freed(LARGE_REQUEST_BYTES - 1);
        assert_eq!(r.due(), None, "too little to be worth it");
        r.freed(1);
        assert_eq!(r.due(), Some(t0 + Reclaim::INTERVAL));
        assert!(!r.run(t0), "not within an interval of the last time");
        let t1 = t0 + Reclaim::INTERVAL;
        assert!(r.run(t1));
        assert_eq!(r.due(), None, "nothing pending after giving back");
        r.freed(LARGE_REQUEST_BYTES);
        assert!(!r.run(t1 + Duration::from_millis(999)));
        assert!(r.run(t1 + Reclaim::INTERVAL));
    }
}
