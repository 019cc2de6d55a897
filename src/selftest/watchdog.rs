//! A budget for every run: one that goes on past it is aborted, and one that then ignores the
//! abort for `abort-grace` is a wedged runtime. `rkllm_run` cannot be left, so selftest prints
//! what it knows and ends the process with the check-failed code.

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::doctor::Finding;
use crate::exit;
use crate::runtime::AbortHandle;

/// Longer than any run of selftest takes on a board (the longest, an ignored abort, makes 128
/// tokens).
pub const RUN_BUDGET: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Watchdog {
    pub budget: Duration,
    pub grace: Duration,
    /// The report's closing lines (versions, board), printed if a run wedges.
    pub about: String,
}

/// Watches one run until dropped.
pub struct Guard {
    done: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn watch(&self, abort: AbortHandle) -> Guard {
        let (done, rx) = mpsc::channel::<()>();
        let dog = self.clone();
        let thread = thread::spawn(move || {
            if rx.recv_timeout(dog.budget) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            let _ = abort.abort();
            if rx.recv_timeout(dog.grace) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            let line = Finding::fail(
                "wedged",
                format!(
                    "a run went on past {} s and then ignored rkllm_abort for {} ms (abort-grace)",
                    dog.budget.as_secs(),
                    dog.grace.as_millis()
                ),
                "the daemon would declare the runtime wedged; send us this report",
            );
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{line}\nsummary: stopped at a wedged run\n{}",
                dog.about
            );
            let _ = out.flush();
            std::process::exit(exit::CHECK_FAILED);
        });
        Guard {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
