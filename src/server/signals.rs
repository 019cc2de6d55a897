//! Signals arrive as readable events on a signalfd in the poll set, never as async handlers.

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What the event loop does with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    Shutdown(Signal),
    /// SIGHUP: logs go to stderr or syslog, both reopened per line, so nothing to do but log it.
    Reload,
}

pub struct Signals {
    fd: SignalFd,
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

impl Signals {
    /// Blocks the handled signals in this thread (threads spawned afterwards inherit the mask)
    /// and opens a signalfd for them. Call before spawning any thread. SIGPIPE is ignored so a
    /// write to a vanished client is an error, not a death.
    pub fn install() -> nix::Result<Signals> {
        let set = handled();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        // SAFETY: SIG_IGN installs no Rust code as a handler, so no async-signal-safety concern.
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// Reads every pending signal.
    pub fn drain(&mut self) -> Vec<SignalAction> {
        let mut actions = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let signal = i32::try_from(info.ssi_signo)
                        .ok()
                        .and_then(|n| Signal::try_from(n).ok());
                    match signal {
                        Some(Signal::SIGHUP) => actions.push(SignalAction::Reload),
                        Some(sig) => actions.push(SignalAction::Shutdown(sig)),
                        None => {
                            log::warn!("unexpected signal {} on the signalfd", info.ssi_signo);
                        }
                    }
                }
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("reading the signalfd failed: {e}");
                    break;
                }
            }
        }
        actions
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
