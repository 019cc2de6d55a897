//! Signals arrive as readable events on a signalfd in the poll set, never as async handlers.

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What the event loop does with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    /// The prompt stop: running work is aborted, queued work refused.
    Shutdown(Signal),
    /// SIGQUIT (nginx's graceful stop): take no new generations, finish what is running and
    /// queued, then stop. Routers see it on `/health` before anything is cut.
    Drain,
    /// SIGHUP: read the configuration again and rescan the models directory (see
    /// `Serving::reload`); logs go to stderr or syslog per line, with nothing to reopen.
    Reload,
}

pub struct Signals {
    fd: SignalFd,
}

/// Signals that stop the daemon promptly: the two that init systems and terminals send, and
/// SIGXCPU, which the kernel sends at the soft CPU-time limit before it kills at the hard one.
/// SIGQUIT drains instead (see [`SignalAction::Drain`]).
const SHUTDOWN: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGXCPU];

/// Signals whose default action would end the process without cleaning up, and which mean
/// nothing to rkllmd: each is logged and ignored. SIGXFSZ too: ignored, the write that went past
/// the file-size limit fails with EFBIG and is reported as an error. The real-time signals
/// (SIGRTMIN to SIGRTMAX) are added in [`handled`].
const IGNORED: [Signal; 9] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGXFSZ,
];

/// Every signal whose default action terminates the process and that can be caught, except
/// the ones that report a fault of this process (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
/// SIGTRAP, SIGSYS): no clean-up can run safely after those; the next start removes the stale
/// socket. SIGPIPE is ignored in [`Signals::install`].
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in SHUTDOWN
        .iter()
        .chain(&IGNORED)
        .chain(&[Signal::SIGHUP, Signal::SIGQUIT])
    {
        set.add(*s);
    }
    let mut raw: libc::sigset_t = *set.as_ref();
    for signo in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: `raw` is an initialised sigset_t and `signo` a valid signal number.
        unsafe { libc::sigaddset(&mut raw, signo) };
    }
    // SAFETY: `raw` was built from a valid SigSet by sigaddset only.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// The signal's name for the log: `SIGUSR1`, `SIGRTMIN+3`.
fn name(signo: i32) -> String {
    match Signal::try_from(signo) {
        Ok(sig) => sig.as_str().to_owned(),
        Err(_) if signo >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", signo - libc::SIGRTMIN()),
        Err(_) => format!("signal {signo}"),
    }
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

    /// Reads every pending signal; the ignored ones are logged here.
    pub fn drain(&mut self) -> Vec<SignalAction> {
        let mut actions = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                    match Signal::try_from(signo) {
                        Ok(Signal::SIGHUP) => actions.push(SignalAction::Reload),
                        Ok(Signal::SIGQUIT) => actions.push(SignalAction::Drain),
                        Ok(sig) if SHUTDOWN.contains(&sig) => {
                            actions.push(SignalAction::Shutdown(sig));
                        }
                        _ => log::warn!(
                            "{} from pid {} (uid {}) ignored: it means nothing to rkllmd",
                            name(signo),
                            info.ssi_pid,
                            info.ssi_uid
                        ),
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
