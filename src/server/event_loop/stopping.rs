//! How the loop stops: signals (SIGHUP reloads, SIGQUIT drains, SIGTERM/SIGINT stop
//! promptly), the drain, and the shutdown that flushes the last responses.

use std::time::Instant;

use super::EventLoop;
use crate::engine::State;
use crate::exit::Ending;
use crate::server::signals::SignalAction;

pub(super) struct Shutdown {
    pub(super) deadline: Instant,
    /// The engine forced this shutdown (the model failed to load, the inference thread died):
    /// it ends so (`EngineFailed`, `AbiMismatch`) even once every client is flushed.
    pub(super) engine_failed: Option<Ending>,
}

/// A drain (SIGQUIT): the listeners stay open so that routers read `/health` (503 `draining`)
/// and new generations get a clean 503; the running and queued ones finish, then the daemon
/// stops as on SIGTERM (with nothing left to abort), or at `deadline` with whatever is left.
pub(super) struct Drain {
    pub(super) deadline: Instant,
}

impl EventLoop {
    pub(super) fn on_signals(&mut self, now: Instant) {
        for action in self.signals.drain() {
            match action {
                SignalAction::Reload => {
                    if let Some((loads, unserved)) = self.serving.reload() {
                        self.engine.reload_models(loads, &unserved, now);
                    }
                }
                SignalAction::Shutdown(sig) if self.shutdown.is_some() => {
                    log::warn!("{sig} during shutdown: exiting now");
                    self.ending = Some(Ending::Forced);
                }
                SignalAction::Shutdown(sig) => {
                    log::info!("{sig}: shutting down");
                    self.begin_shutdown(now);
                }
                SignalAction::Drain if self.shutdown.is_some() => {
                    log::info!("SIGQUIT during shutdown: already stopping");
                }
                SignalAction::Drain if self.drain.is_some() => {
                    log::info!("SIGQUIT: already draining");
                }
                SignalAction::Drain => self.begin_drain(now),
            }
        }
    }

    pub(super) fn begin_drain(&mut self, now: Instant) {
        let timeout = self.serving.cfg().drain_timeout;
        log::info!(
            "SIGQUIT: draining: {} request(s) running or queued finish within {:.0} s; new \
             generations are refused and /health answers 503",
            self.waiting_generations(),
            timeout.as_secs_f32()
        );
        self.drain = Some(Drain {
            deadline: now + timeout,
        });
    }

    /// Generations that connections wait for, queued or running.
    pub(super) fn waiting_generations(&self) -> usize {
        self.conns.values().filter(|c| c.job().is_some()).count()
    }

    /// A drain ends, as a prompt stop, once no connection waits for a generation (the last
    /// responses are then flushed as in any shutdown), or when its deadline passes.
    pub(super) fn check_drain_done(&mut self, now: Instant) {
        let Some(drain) = &self.drain else { return };
        if self.shutdown.is_some() {
            return;
        }
        let waiting = self.waiting_generations();
        if waiting == 0 {
            log::info!("drained: every request finished; stopping");
        } else if now >= drain.deadline {
            log::warn!(
                "drain timeout passed with {waiting} request(s) unfinished: stopping as on SIGTERM"
            );
        } else {
            return;
        }
        self.begin_shutdown(now);
    }

    /// Stop accepting; fail the queue and abort the running generation (the engine does both);
    /// close idle connections; the busy ones close once their response is flushed.
    pub(super) fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(Shutdown {
            deadline: now + self.serving.cfg().shutdown_timeout,
            engine_failed: None,
        });
        self.admission.close(self.poll.registry());
        let queued = self.engine.queue_depth();
        let mut events = std::mem::take(&mut self.engine_events);
        self.engine.begin_shutdown(now, &mut events);
        // Counted after the engine caught up: a run that had already ended is not aborted.
        self.report.requests_aborted += queued + usize::from(self.engine.running().is_some());
        self.dispatch_engine_events(&mut events, now);
        self.engine_events = events;
        for conn in self.conns.values_mut() {
            conn.begin_shutdown();
        }
    }

    pub(super) fn check_shutdown_done(&mut self, now: Instant) {
        let Some(s) = &self.shutdown else { return };
        let engine_done = matches!(self.engine.state(), State::Stopped);
        if engine_done && self.conns.is_empty() {
            self.ending = Some(s.engine_failed.unwrap_or(Ending::Clean));
        } else if matches!(self.engine.state(), State::Wedged) && self.conns.is_empty() {
            // Nothing left to flush, and a wedged run never returns: waiting longer is pointless.
            log::error!("the runtime is wedged: exiting without destroying it");
            self.ending = Some(Ending::DeadlineExceeded);
        } else if now >= s.deadline {
            log::error!(
                "shutdown deadline passed with {} connection(s) open and the engine {}",
                self.conns.len(),
                if engine_done {
                    "stopped"
                } else {
                    "still running"
                }
            );
            self.ending = Some(Ending::DeadlineExceeded);
        }
    }
}
