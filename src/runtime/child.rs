//! The ABI probe in a forked child, for `rkllmd check`: loading a runtime runs its code, and a
//! runtime that dies (SIGILL on a CPU without SVE) must be a finding, not the end of the check.
//!
//! The child loads the library, probes it, writes a line of detail to a pipe and `_exit`s with a
//! code that encodes the verdict; the parent waits (with a deadline) and decodes it. `check` is
//! single-threaded, so the child may allocate and dlopen.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::abi::{Abi, AbiProbe};

/// What the child found, or how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildProbe {
    /// The library loaded and the probe judged it.
    Probed(AbiProbe),
    /// The library did not load or the probe could not run; the text says why.
    Failed(String),
    /// The child was killed by this signal (the runtime crashed).
    Signaled(Signal),
    /// The child did not finish within the deadline and was killed.
    TimedOut(Duration),
}

// Exit codes of the child.
const IS_1_2: i32 = 10;
const IS_1_3: i32 = 11;
const EITHER: i32 = 12;
const NEITHER: i32 = 13;
const FAILED: i32 = 14;

/// Loads `library` in a forked child and probes its ABI there.
pub fn probe_in_child(library: &Path, deadline: Duration) -> ChildProbe {
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return ChildProbe::Failed(format!("cannot create a pipe: {e}")),
    };
    // SAFETY: `rkllmd check` runs no other thread, so the child is a full copy of a
    // single-threaded process and may do anything the parent could before it `_exit`s; it
    // never returns into the caller's code.
    match unsafe { fork() } {
        Err(e) => ChildProbe::Failed(format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(read_end);
            child(library, &write_end)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            parent(child, read_end, deadline)
        }
    }
}

fn child(library: &Path, out: &OwnedFd) -> ! {
    // The runtime may print a banner: keep it out of the report on stdout.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
    let (code, detail) = match super::load(library).and_then(|_| super::probe_abi()) {
        Ok(AbiProbe::Is(Abi::V1_2)) => (IS_1_2, String::new()),
        Ok(AbiProbe::Is(Abi::V1_3)) => (IS_1_3, String::new()),
        Ok(AbiProbe::Either) => (EITHER, String::new()),
        Ok(AbiProbe::Neither { detail }) => (NEITHER, detail),
        Err(e) => (FAILED, e.to_string()),
    };
    let _ = nix::unistd::write(out, detail.as_bytes());
    // SAFETY: _exit ends the child at once: no atexit handler, no destructor and no stdio flush
    // of state copied from the parent runs twice.
    unsafe { libc::_exit(code) }
}

fn parent(child: Pid, read_end: OwnedFd, deadline: Duration) -> ChildProbe {
    let start = Instant::now();
    let status = loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return ChildProbe::TimedOut(deadline);
            }
            Ok(status) => break status,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return ChildProbe::Failed(format!("cannot wait for the probe: {e}")),
        }
    };
    let mut detail = String::new();
    let _ = std::fs::File::from(read_end).read_to_string(&mut detail);
    match status {
        WaitStatus::Signaled(_, signal, _) => ChildProbe::Signaled(signal),
        WaitStatus::Exited(_, code) => decode(code, detail),
        other => ChildProbe::Failed(format!("the probe ended as {other:?}")),
    }
}

fn decode(code: i32, detail: String) -> ChildProbe {
    match code {
        IS_1_2 => ChildProbe::Probed(AbiProbe::Is(Abi::V1_2)),
        IS_1_3 => ChildProbe::Probed(AbiProbe::Is(Abi::V1_3)),
        EITHER => ChildProbe::Probed(AbiProbe::Either),
        NEITHER => ChildProbe::Probed(AbiProbe::Neither { detail }),
        FAILED => ChildProbe::Failed(detail),
        // The runtime ended the process itself (exit() in a constructor, say).
        other => ChildProbe::Failed(format!(
            "the runtime ended the process with exit code {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decode_to_verdicts() {
        assert_eq!(
            decode(IS_1_2, String::new()),
            ChildProbe::Probed(AbiProbe::Is(Abi::V1_2))
        );
        assert_eq!(
            decode(NEITHER, "x".into()),
            ChildProbe::Probed(AbiProbe::Neither { detail: "x".into() })
        );
        assert_eq!(
            decode(FAILED, "why".into()),
            ChildProbe::Failed("why".into())
        );
        assert!(
            matches!(decode(3, String::new()), ChildProbe::Failed(t) if t.contains("exit code 3"))
        );
    }
}
