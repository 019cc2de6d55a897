//! The one thread that owns every socket: listeners, clients, the signalfd and the engine's
//! waker. It polls, hands each event to its owner (admission, a connection, the job table),
//! runs the timers and reaps closed connections after each batch. Tokens come from a counter
//! (never raw fds, which the kernel reuses); reads and writes drain until `WouldBlock`;
//! WRITABLE interest is held only while output is pending.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::admission::{Admission, Open, TCP_LISTENER, UNIX_LISTENER};
use super::conn::{Conn, ReadOutcome};
use super::jobs::Jobs;
use super::serving::{Live, Serving};
use super::signals::Signals;
use crate::api::{self, Reply};
use crate::engine::{Engine, EngineError, Event, Eviction};
use crate::exit::Ending;
use crate::http;
use crate::memory::Reclaim;
use crate::metrics::Metrics;
use crate::models::ModelId;

mod stopping;

use stopping::{Drain, Shutdown};

const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);

#[derive(Default, Debug, Clone, Copy)]
pub struct Report {
    pub connections_closed: usize,
    pub requests_aborted: usize,
}

/// The listeners the daemon accepts clients on.
pub struct Listeners {
    pub unix: mio::net::UnixListener,
    pub tcp: Option<mio::net::TcpListener>,
}

pub struct EventLoop {
    poll: Poll,
    signals: Signals,
    engine: Engine,
    serving: Serving,
    admission: Admission,
    conns: HashMap<Token, Conn>,
    jobs: Jobs,
    metrics: Metrics,
    /// Buffers of dropped connections, to give back to the system.
    reclaim: Reclaim,
    /// Reused between batches of engine events.
    engine_events: Vec<Event>,
    ready_notified: bool,
    drain: Option<Drain>,
    shutdown: Option<Shutdown>,
    ending: Option<Ending>,
    report: Report,
}

impl EventLoop {
    pub fn new(
        poll: Poll,
        listeners: Listeners,
        signals: Signals,
        engine: Engine,
        serving: Serving,
    ) -> io::Result<EventLoop> {
        let admission = Admission::new(
            poll.registry(),
            listeners.unix,
            listeners.tcp,
            Arc::clone(serving.shared_cfg()),
            serving.limits(),
        )?;
        poll.registry().register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&signals)),
            SIGNALS,
            Interest::READABLE,
        )?;
        Ok(EventLoop {
            poll,
            signals,
            engine,
            serving,
            admission,
            conns: HashMap::new(),
            jobs: Jobs::new(),
            metrics: Metrics::default(),
            reclaim: Reclaim::new(Instant::now()),
            engine_events: Vec::new(),
            ready_notified: false,
            drain: None,
            shutdown: None,
            ending: None,
            report: Report::default(),
        })
    }

    /// A waker bound to this loop's poll, for the engine.
    pub fn waker(poll: &Poll) -> io::Result<Arc<Waker>> {
        Ok(Arc::new(Waker::new(poll.registry(), WAKER)?))
    }

    pub fn run(mut self) -> (Ending, Report, Engine) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let timeout = if self.admission.has_deferred() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("poll failed: {e}");
                self.ending = Some(Ending::EngineFailed);
            }
            let now = Instant::now();
            for event in &events {
                if self.ending.is_some() {
                    break;
                }
                match event.token() {
                    UNIX_LISTENER | TCP_LISTENER => self.accept(event.token(), now, false),
                    SIGNALS => self.on_signals(now),
                    WAKER => self.on_engine_wake(now),
                    // Hung up for good (EPOLLHUP; a half-close only ends the reading side):
                    // whatever it sent is never answered, so it takes no queue place or slot.
                    token if event.is_write_closed() => self.on_hung_up(token, now),
                    token if event.is_readable() || event.is_read_closed() => {
                        self.on_readable(token, now);
                    }
                    token => self.after_io(token, now),
                }
            }
            self.on_timers(Instant::now());
            let freed = self.reap();
            self.reclaim.run(Instant::now());
            self.accept_starved(freed);
            self.accept_deferred();
            if self.ending.is_none() {
                self.check_drain_done(Instant::now());
                self.check_shutdown_done(Instant::now());
            }
            if let Some(ending) = self.ending {
                self.report.connections_closed += self.conns.len();
                for conn in self.conns.values() {
                    conn.shutdown();
                }
                return (ending, self.report, self.engine);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timeouts = self.serving.timeouts();
        let conns = self.conns.values().filter_map(|c| c.deadline(timeouts));
        let shutdown = self.shutdown.as_ref().map(|s| s.deadline);
        // Once the drain has become a shutdown, its deadline (maybe past) is no timer any more.
        let drain = self
            .drain
            .as_ref()
            .filter(|_| self.shutdown.is_none())
            .map(|d| d.deadline);
        conns
            .chain(shutdown)
            .chain(drain)
            .chain(self.engine.next_deadline())
            .chain(self.admission.starved_retry())
            .chain(self.reclaim.due())
            .min()
    }

    // ---- admission ---------------------------------------------------------------------------

    /// Accepts the listener's backlog (see `Admission::next`).
    fn accept(&mut self, listener: Token, now: Instant, after_reap: bool) {
        while let Some((token, conn)) = self.admission.next(
            listener,
            self.poll.registry(),
            self.open(),
            after_reap,
            &mut self.metrics,
            now,
        ) {
            self.conns.insert(token, conn);
            // Edge-triggered: data that arrived before registration must be read now.
            self.on_readable(token, now);
        }
    }

    fn open(&self) -> Open {
        Open {
            all: self.conns.len(),
            tcp: self.conns.values().filter(|c| c.peer().is_tcp()).count(),
        }
    }

    /// Accepts again from listeners that ran out of file descriptors, once a connection
    /// closed (`freed`) or their retry time came: no new edge announces their backlog.
    fn accept_starved(&mut self, freed: bool) {
        let now = Instant::now();
        for listener in self.admission.take_starved(freed, now) {
            self.accept(listener, now, false);
        }
    }

    /// Accepts a deferred backlog once a slot is free, or refuses it when the limit still holds
    /// after one more poll.
    fn accept_deferred(&mut self) {
        let deferred = self.admission.take_deferred(self.open());
        if deferred.is_empty() {
            return;
        }
        let now = Instant::now();
        for listener in deferred {
            self.accept(listener, now, true);
        }
        self.reap();
    }

    // ---- connections -------------------------------------------------------------------------

    fn on_readable(&mut self, token: Token, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.can_read() {
            if let ReadOutcome::Closed = conn.read_available(now) {
                let (engine, metrics) = (&mut self.engine, &mut self.metrics);
                self.jobs.abandon(conn, engine, metrics, now);
            }
        }
        self.after_io(token, now);
    }

    /// The peer can neither send nor read any more: its generation, queued or running, is
    /// cancelled, and what is buffered either way is dropped unanswered.
    fn on_hung_up(&mut self, token: Token, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        log::trace!("{token:?} hung up");
        let (engine, metrics) = (&mut self.engine, &mut self.metrics);
        self.jobs.abandon(conn, engine, metrics, now);
        conn.discard_output();
    }

    /// Answers what is buffered, writes what is pending, and fixes interests.
    fn after_io(&mut self, token: Token, now: Instant) {
        self.process_requests(token, now);
        // A read that stopped at the buffer cap left input in the socket that no new edge will
        // announce: read it now that there is room (or a new request to read).
        while let Some(conn) = self.conns.get_mut(&token) {
            if !conn.wants_resumed_read() || !conn.resume_read(now) {
                break;
            }
            self.process_requests(token, now);
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.flush(now).is_err() {
            let (engine, metrics) = (&mut self.engine, &mut self.metrics);
            self.jobs.abandon(conn, engine, metrics, now);
            conn.discard_output();
            return;
        }
        Jobs::resume_if_caught_up(conn, &mut self.engine, self.serving.cfg().output_cap_bytes);
        conn.sync_interest(self.poll.registry(), token);
    }

    fn process_requests(&mut self, token: Token, now: Instant) {
        let output_cap = self.serving.cfg().output_cap_bytes;
        // A draining daemon closes each connection after its response, so that a router's
        // next request on it opens one to another instance.
        let keep_alive = self.shutdown.is_none() && self.drain.is_none();
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            // The API key is checked on the head, before a keyless client can make us buffer
            // its body.
            let (admission, peer) = (&self.admission, conn.peer());
            let gate = |head: &http::Request| admission.authorize(peer, head);
            let Some(req) =
                conn.next_request(now, output_cap, keep_alive, &gate, &mut self.metrics)
            else {
                return;
            };
            self.answer(token, &req, now);
        }
    }

    /// Answers one request: a complete response, or a generation submitted to the engine.
    fn answer(&mut self, token: Token, req: &http::Request, now: Instant) {
        let connections = self.conns.len();
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if let Err(e) = self.admission.authorize(conn.peer(), req) {
            conn.respond(e.response(), now, &mut self.metrics);
            return;
        }
        let ctx = self.serving.ctx(&Live {
            state: self.engine.state(),
            queue_depth: self.engine.queue_depth(),
            running: self.engine.running().is_some(),
            draining: self.drain.is_some(),
            connections,
            metrics: &self.metrics,
            bytes_per_token: self.engine.bytes_per_token(),
            kv_caches: self.engine.kv_caches(),
            resident: self.engine.residents(),
            now,
        });
        let reply = api::route(req, &ctx, self.jobs.next_id());
        match reply {
            Reply::Full(response) => conn.respond(response, now, &mut self.metrics),
            Reply::Generate { responder, .. } if self.drain.is_some() => {
                conn.refuse_generation(responder, &EngineError::Draining, now, &mut self.metrics);
            }
            Reply::Generate { job, responder } => {
                self.metrics.tools_left_out(job.tools_left_out());
                match self
                    .jobs
                    .submit(&mut self.engine, &mut self.metrics, job, token, now)
                {
                    Ok(id) => conn.start_generation(id, responder),
                    Err(e) => conn.refuse_generation(responder, &e, now, &mut self.metrics),
                }
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if self.engine.next_deadline().is_some_and(|d| d <= now) {
            let mut events = std::mem::take(&mut self.engine_events);
            self.engine.on_timer(now, &mut events);
            self.dispatch_engine_events(&mut events, now);
            self.engine_events = events;
        }
        let timeouts = self.serving.timeouts();
        for conn in self.conns.values_mut() {
            if conn.deadline(timeouts).is_none_or(|d| d > now) {
                continue;
            }
            if conn.job().is_some() {
                // Only the write timer runs while generating: the client reads nothing.
                log::debug!("a client read nothing of its stream for a while; cutting it off");
                self.jobs
                    .abandon(conn, &mut self.engine, &mut self.metrics, now);
            } else {
                conn.time_out(now, timeouts, &mut self.metrics);
            }
        }
    }

    /// Removes connections that are finished (see `Conn::is_finished`); true when any was.
    fn reap(&mut self) -> bool {
        let registry = self.poll.registry();
        let (metrics, reclaim) = (&mut self.metrics, &mut self.reclaim);
        let before = self.conns.len();
        self.conns.retain(|_, conn| {
            if !conn.is_finished() {
                return true;
            }
            reclaim.freed(conn.buffer_capacity());
            conn.deregister(registry);
            if !conn.is_refusal() {
                metrics.connection_closed();
            }
            false
        });
        if self.shutdown.is_some() {
            self.report.connections_closed += before - self.conns.len();
        }
        self.conns.len() < before
    }

    // ---- engine ------------------------------------------------------------------------------

    fn on_engine_wake(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.engine_events);
        self.engine.on_wake(now, &mut events);
        self.dispatch_engine_events(&mut events, now);
        self.engine_events = events;
        self.reclaim.freed(self.engine.take_freed_bytes());
    }

    /// Routes a batch of engine events, then flushes each connection written to once.
    fn dispatch_engine_events(&mut self, events: &mut Vec<Event>, now: Instant) {
        let output_cap = self.serving.cfg().output_cap_bytes;
        for event in events.drain(..) {
            self.metrics.engine_event(&event, now);
            self.jobs.deliver(
                &event,
                &mut self.conns,
                &mut self.engine,
                &mut self.metrics,
                output_cap,
                now,
            );
            self.on_engine_state(event, now);
        }
        let dirty = self.jobs.take_dirty();
        for &token in &dirty {
            self.after_io(token, now);
        }
        self.jobs.put_back(dirty);
    }

    /// The events about the engine itself, not about one job.
    fn on_engine_state(&mut self, event: Event, now: Instant) {
        match event {
            Event::Ready { load_time } => {
                self.serving.loaded(load_time);
                let name = self.serving.cfg().model_name.clone();
                self.metrics.model_load(&name, load_time, true);
                log::info!("model loaded in {:.2} s; ready", load_time.as_secs_f32());
                if !self.ready_notified {
                    self.ready_notified = true;
                    super::readiness::notify_ready(self.serving.cfg().notify_fd);
                }
                test_panic_hook(&self.serving.cfg().socket);
            }
            Event::Switched {
                unloaded,
                model,
                took,
                failure,
            } => self.switched(unloaded, model, took, failure),
            Event::Unloaded { model } => {
                if let Some(m) = self.serving.catalog().get(model) {
                    let name = m.name.clone();
                    log::info!("model '{name}' unloaded (keep_alive)");
                    self.metrics.model_unloaded(&name);
                }
            }
            Event::LoadFailed { reason, ending } => {
                log::error!("{reason}");
                self.fail_engine(now, ending);
            }
            // Stay up so /health can say so; every new generation gets a 503, and a shutdown
            // still ends within its deadline. Only a restart recovers the NPU.
            Event::Wedged => log::error!(
                "the runtime is wedged: /health reports it; restart rkllmd unless the run ends after all"
            ),
            Event::Stopped => {
                if self.shutdown.is_none() {
                    self.fail_engine(now, Ending::EngineFailed);
                }
            }
            Event::Started { .. }
            | Event::Warning { .. }
            | Event::Preempted { .. }
            | Event::Snapshot(_)
            | Event::Text { .. }
            | Event::Embedding { .. }
            | Event::Finished { .. }
            | Event::Failed { .. } => {}
        }
    }

    /// The worker loaded a model, after unloading others to make room: logged (a switch
    /// costs seconds on a board, so each is worth a line, and each unload says why) and
    /// counted.
    fn switched(
        &mut self,
        unloaded: Vec<(ModelId, Eviction)>,
        model: ModelId,
        took: Duration,
        failure: Option<String>,
    ) {
        let catalog = self.serving.catalog();
        let name_of = |id: ModelId| catalog.get(id).map_or("?", |m| m.name.as_str()).to_owned();
        let to = name_of(model);
        let mut from = Vec::new();
        for (gone, why) in unloaded {
            let name = name_of(gone);
            log::info!("model '{name}' unloaded to make room for '{to}' ({why})");
            self.metrics.model_unloaded(&name);
            from.push(format!("'{name}'"));
        }
        let from_text = if from.is_empty() {
            String::new()
        } else {
            format!(" (unloaded {})", from.join(", "))
        };
        self.metrics.model_load(&to, took, failure.is_none());
        match failure {
            None => {
                self.serving.loaded(took);
                log::info!(
                    "switched to model '{to}'{from_text}: loaded in {:.2} s",
                    took.as_secs_f32()
                );
            }
            Some(reason) => {
                log::error!(
                    "model '{to}' failed to load in {:.2} s{from_text}: {reason}",
                    took.as_secs_f32()
                );
            }
        }
    }

    fn fail_engine(&mut self, now: Instant, ending: Ending) {
        self.begin_shutdown(now);
        // With clients still connected (even an idle /health poller) the shutdown completes
        // later, in `check_shutdown_done`: it must still exit with the engine's code, not 0.
        if let Some(s) = &mut self.shutdown {
            s.engine_failed = Some(ending);
        }
        if self.ending.is_none() && self.conns.is_empty() {
            self.ending = Some(ending);
        }
    }
}

/// Lets the tests prove, in debug and release builds alike, that a panic still removes the
/// socket. It fires only when `RKLLMD_TEST_PANIC_AFTER_READY` names this very instance's socket
/// path, so a variable left in an environment (`=1`, or another instance's path) cannot crash a
/// daemon by accident.
fn test_panic_hook(socket: &std::path::Path) {
    let named = std::env::var_os("RKLLMD_TEST_PANIC_AFTER_READY");
    assert!(
        named.is_none_or(|v| socket != v.as_os_str()),
        "RKLLMD_TEST_PANIC_AFTER_READY names this socket: panicking on purpose"
    );
}
