//! The one thread that owns every socket: listeners, clients, the signalfd and the engine's
//! waker. Tokens come from a counter (never raw fds, which the kernel reuses); reads and writes
//! drain until WouldBlock; WRITABLE interest is held only while output is pending; closed
//! connections are reaped after each batch of events.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::{Conn, Phase, ReadOutcome};
use super::signals::{SignalAction, Signals};
use super::stream::{Peer, Stream};
use crate::api::{self, Ctx, Next, Reply};
use crate::config::Config;
use crate::engine::{Engine, Event, JobId, State};
use crate::exit::Ending;
use crate::http::{self, Limits, Progress};
use crate::lifecycle;
use crate::runtime::RuntimeInfo;

const UNIX_LISTENER: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
pub const WAKER: Token = Token(3);
const FIRST_CONN: usize = 16;
/// How long a closing connection keeps draining input after its last response.
const LINGER: Duration = Duration::from_secs(2);

const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 78\r\nConnection: close\r\n\r\n{\"error\":{\"message\":\"this user may not use rkllmd\",\"type\":\"permission_error\"}}";

#[derive(Default, Debug, Clone, Copy)]
pub struct Report {
    pub connections_closed: usize,
    pub requests_aborted: usize,
}

struct Shutdown {
    deadline: Instant,
    /// The engine forced this shutdown (the model failed to load, the inference thread died):
    /// it ends as `EngineFailed` even once every client is flushed.
    engine_failed: bool,
}

pub struct EventLoop {
    poll: Poll,
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
    signals: Signals,
    engine: Engine,
    conns: HashMap<Token, Conn>,
    jobs: HashMap<JobId, Token>,
    next_token: usize,
    next_job: JobId,
    cfg: Arc<Config>,
    info: RuntimeInfo,
    limits: Limits,
    started: Instant,
    shutdown: Option<Shutdown>,
    ending: Option<Ending>,
    /// Listeners whose backlog waits: the connection limit was reached, and clients that hung up
    /// may be holding slots whose hangup is in this event batch or the next one.
    deferred_accepts: heapless::Vec<Token, 2>,
    /// Whether the loop has already polled once more (without waiting) for those hangups.
    deferral_polled: bool,
    report: Report,
    ready_notified: bool,
    engine_events: Vec<Event>,
    load_time: Option<std::time::Duration>,
    sampling: crate::runtime::Sampling,
    caps: crate::runtime::Capabilities,
    metrics: crate::metrics::Metrics,
    template: Option<crate::chat::Template>,
    /// Connections that got output from engine events; flushed once per batch, not per token.
    dirty: Vec<Token>,
}

/// What the daemon serves with: the configuration, the loaded runtime, the chat template.
pub struct Serving {
    pub cfg: Arc<Config>,
    pub info: RuntimeInfo,
    pub template: Option<crate::chat::Template>,
}

impl EventLoop {
    pub fn new(
        poll: Poll,
        unix: UnixListener,
        tcp: Option<TcpListener>,
        signals: Signals,
        engine: Engine,
        serving: Serving,
    ) -> io::Result<EventLoop> {
        let Serving {
            cfg,
            info,
            template,
        } = serving;
        let mut unix = unix;
        poll.registry()
            .register(&mut unix, UNIX_LISTENER, Interest::READABLE)?;
        let mut tcp = tcp;
        if let Some(l) = tcp.as_mut() {
            poll.registry()
                .register(l, TCP_LISTENER, Interest::READABLE)?;
        }
        poll.registry().register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&signals)),
            SIGNALS,
            Interest::READABLE,
        )?;
        let sampling = super::sampling_of(&cfg);
        let limits = Limits {
            max_head_bytes: Limits::default().max_head_bytes,
            max_body_bytes: cfg.max_body_bytes,
        };
        Ok(EventLoop {
            poll,
            unix: Some(unix),
            tcp,
            signals,
            engine,
            conns: HashMap::new(),
            jobs: HashMap::new(),
            next_token: FIRST_CONN,
            next_job: 1,
            cfg,
            info,
            limits,
            started: Instant::now(),
            shutdown: None,
            ending: None,
            deferred_accepts: heapless::Vec::new(),
            deferral_polled: false,
            report: Report::default(),
            ready_notified: false,
            engine_events: Vec::new(),
            load_time: None,
            metrics: crate::metrics::Metrics::default(),
            template,
            sampling,
            caps: crate::runtime::capabilities(),
            dirty: Vec::new(),
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
            let timeout = if self.deferred_accepts.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("poll failed: {e}");
                self.ending = Some(Ending::EngineFailed);
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    UNIX_LISTENER | TCP_LISTENER => self.accept(event.token(), now, false),
                    SIGNALS => self.on_signals(now),
                    WAKER => self.on_engine_wake(now),
                    token => self.on_conn_event(
                        token,
                        event.is_readable() || event.is_read_closed(),
                        event.is_writable(),
                        now,
                    ),
                }
                if self.ending.is_some() {
                    break;
                }
            }
            self.on_timers(Instant::now());
            self.reap();
            self.accept_deferred();
            if self.ending.is_none() {
                self.check_shutdown_done(Instant::now());
            }
            if let Some(ending) = self.ending {
                self.report.connections_closed += self.conns.len();
                for conn in self.conns.values() {
                    conn.stream.shutdown(std::net::Shutdown::Both);
                }
                return (ending, self.report, self.engine);
            }
        }
        (
            self.ending.unwrap_or(Ending::EngineFailed),
            self.report,
            self.engine,
        )
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.engine.next_deadline();
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(s) = &self.shutdown {
            consider(s.deadline);
        }
        for conn in self.conns.values() {
            if let Some(t) = self.conn_deadline(conn) {
                consider(t);
            }
        }
        next
    }

    fn conn_deadline(&self, conn: &Conn) -> Option<Instant> {
        match conn.phase {
            Phase::Reading => Some(match conn.request_since {
                Some(since) => since + self.cfg.header_timeout,
                None => conn.idle_since + self.cfg.keepalive_timeout,
            }),
            Phase::Closing => conn.lingering_since.map(|t| t + LINGER),
            Phase::Generating { .. } => None,
        }
    }

    // ---- listeners -------------------------------------------------------------------------

    /// Accepts a deferred backlog once a slot is free, or refuses it (503) when the limit still
    /// holds after one more poll: a client that hung up must not cost a waiting one its slot.
    fn accept_deferred(&mut self) {
        if self.deferred_accepts.is_empty() {
            return;
        }
        if self.conns.len() >= self.cfg.max_connections && !self.deferral_polled {
            self.deferral_polled = true;
            return;
        }
        self.deferral_polled = false;
        let now = Instant::now();
        for token in std::mem::take(&mut self.deferred_accepts) {
            self.accept(token, now, true);
        }
        self.reap();
    }

    /// Accepts the listener's backlog. At the connection limit the backlog is deferred
    /// (`accept_deferred`) unless this is that deferred pass (`after_reap`), which refuses.
    fn accept(&mut self, token: Token, now: Instant, after_reap: bool) {
        loop {
            if !after_reap && self.conns.len() >= self.cfg.max_connections {
                if !self.deferred_accepts.contains(&token) {
                    // Capacity 2, one entry per listener: the push cannot fail.
                    let _ = self.deferred_accepts.push(token);
                }
                return;
            }
            let accepted = match (token, &self.unix, &self.tcp) {
                (UNIX_LISTENER, Some(l), _) => l.accept().map(|(s, _)| Stream::Unix(s)),
                (TCP_LISTENER, _, Some(l)) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                _ => return,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest of the backlog for the next event.
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            let peer = match &stream {
                Stream::Unix(s) => match lifecycle::peer_cred(s) {
                    Ok(cred) => Peer::Unix(cred),
                    Err(e) => {
                        log::warn!("cannot read a client's credentials: {e}");
                        continue;
                    }
                },
                Stream::Tcp(s) => match s.peer_addr() {
                    Ok(addr) => Peer::Tcp(addr),
                    Err(_) => continue,
                },
            };
            self.admit(stream, peer, now);
        }
    }

    fn admit(&mut self, mut stream: Stream, peer: Peer, now: Instant) {
        use std::io::Write;
        let refused = match peer {
            Peer::Unix(cred) if !cred.allowed(&self.cfg.allow_uid, &self.cfg.allow_gid) => {
                log::debug!("refused uid {} gid {} pid {}", cred.uid, cred.gid, cred.pid);
                true
            }
            _ => false,
        };
        if !refused && self.conns.len() >= self.cfg.max_connections {
            log::debug!(
                "connection limit ({}) reached; refusing a client",
                self.cfg.max_connections
            );
            let _ = stream.write(http::TOO_MANY_CONNECTIONS);
            self.metrics.connections_refused += 1;
            return;
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        log::trace!("accepted {peer:?} as {token:?}");
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!("cannot register a client: {e}");
            return;
        }
        let conn = if refused {
            self.metrics.connections_refused += 1;
            Conn::refusal(stream, peer, self.limits, FORBIDDEN, now)
        } else {
            Conn::new(stream, peer, self.limits, now)
        };
        if !refused {
            self.metrics.connections_accepted += 1;
        }
        self.conns.insert(token, conn);
        // Edge-triggered: data that arrived before registration must be read now.
        self.on_conn_event(token, true, false, now);
    }

    // ---- signals and shutdown ----------------------------------------------------------------

    fn on_signals(&mut self, now: Instant) {
        for action in self.signals.drain() {
            match action {
                SignalAction::Reload => {
                    log::info!("SIGHUP: nothing to reload; logs are reopened per line")
                }
                SignalAction::Shutdown(sig) if self.shutdown.is_some() => {
                    log::warn!("{sig} during shutdown: exiting now");
                    self.ending = Some(Ending::Forced);
                }
                SignalAction::Shutdown(sig) => {
                    log::info!("{sig}: shutting down");
                    self.begin_shutdown(now);
                }
            }
        }
    }

    /// Stop accepting; fail the queue and abort the running generation (the engine does both);
    /// close idle connections; the busy ones close once their response is flushed.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(Shutdown {
            deadline: now + self.cfg.shutdown_timeout,
            engine_failed: false,
        });
        if let Some(mut l) = self.unix.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(mut l) = self.tcp.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if self.engine.running().is_some() {
            self.report.requests_aborted += 1;
        }
        self.report.requests_aborted += self.engine.queue_depth();
        let mut events = std::mem::take(&mut self.engine_events);
        self.engine.begin_shutdown(now, &mut events);
        self.dispatch_engine_events(&mut events, now);
        self.engine_events = events;
        for conn in self.conns.values_mut() {
            match conn.phase {
                Phase::Reading if conn.pending_output() == 0 => {
                    // Idle: close now rather than linger, so shutdown is not held up.
                    conn.phase = Phase::Closing;
                    conn.peer_closed = true;
                }
                // A response still being written: finish it, then close. Left in `Reading`,
                // the connection waited for a next request, holding the shutdown up to its
                // deadline (and exit code 5) after the client had everything.
                Phase::Reading => {
                    conn.keep_alive = false;
                    conn.phase = Phase::Closing;
                }
                Phase::Generating { .. } => conn.keep_alive = false,
                Phase::Closing => {}
            }
        }
    }

    fn check_shutdown_done(&mut self, now: Instant) {
        let Some(s) = &self.shutdown else { return };
        let engine_done = matches!(self.engine.state(), State::Stopped);
        if engine_done && self.conns.is_empty() {
            self.ending = Some(if s.engine_failed {
                Ending::EngineFailed
            } else {
                Ending::Clean
            });
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

    // ---- engine ------------------------------------------------------------------------------

    fn on_engine_wake(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.engine_events);
        self.engine.on_wake(now, &mut events);
        self.dispatch_engine_events(&mut events, now);
        self.engine_events = events;
    }

    fn dispatch_engine_events(&mut self, events: &mut Vec<Event>, now: Instant) {
        self.route_engine_events(events, now);
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for token in dirty.drain(..) {
            self.after_io(token, now);
        }
        self.dirty = dirty;
    }

    fn route_engine_events(&mut self, events: &mut Vec<Event>, now: Instant) {
        for event in events.drain(..) {
            match &event {
                Event::Finished { finish, .. } => self.metrics.record_finish(finish),
                Event::Failed {
                    error: crate::engine::EngineError::Runtime(_),
                    ..
                } => self.metrics.runtime_errors += 1,
                _ => {}
            }
            match event {
                Event::Ready { load_time } => {
                    self.load_time = Some(load_time);
                    log::info!("model loaded in {:.2} s; ready", load_time.as_secs_f32());
                    if !self.ready_notified {
                        self.ready_notified = true;
                        super::readiness::notify_ready(self.cfg.notify_fd);
                    }
                    // Lets the tests prove that a panic still removes the socket (debug builds only).
                    #[cfg(debug_assertions)]
                    if std::env::var_os("RKLLMD_DEBUG_PANIC_AFTER_READY").is_some() {
                        panic!("RKLLMD_DEBUG_PANIC_AFTER_READY is set: panicking on purpose");
                    }
                }
                Event::LoadFailed { reason } => {
                    log::error!("{reason}");
                    self.fail_engine(now);
                }
                // Stay up so /health can say so; every new generation gets a 503, and a shutdown
                // still ends within its deadline. Only a restart recovers the NPU.
                Event::Wedged => log::error!(
                    "the runtime is wedged: /health reports it; restart rkllmd unless the run ends after all"
                ),
                Event::Stopped => {
                    if self.shutdown.is_none() {
                        self.fail_engine(now);
                    }
                }
                Event::Started { id } => self.with_job(id, false, |conn, r| {
                    r.started(&mut conn.out());
                    Next::Continue
                }),
                Event::Text { id, text } => {
                    self.with_job(id, false, |conn, r| r.text(&text, &mut conn.out()))
                }
                Event::Finished { id, finish } => self.with_job(id, true, |conn, r| {
                    r.finished(&finish, &mut conn.out());
                    Next::Continue
                }),
                Event::Failed { id, error } => self.with_job(id, true, |conn, r| {
                    r.failed(&error, &mut conn.out());
                    Next::Continue
                }),
            }
        }
    }

    fn fail_engine(&mut self, now: Instant) {
        self.begin_shutdown(now);
        // With clients still connected (even an idle /health poller) the shutdown completes
        // later, in `check_shutdown_done`: it must still exit with the engine's code, not 0.
        if let Some(s) = &mut self.shutdown {
            s.engine_failed = true;
        }
        if self.ending.is_none() && self.conns.is_empty() {
            self.ending = Some(Ending::EngineFailed);
        }
    }

    /// Hands a job's event to its connection's responder, then flushes.
    fn with_job(
        &mut self,
        id: JobId,
        last: bool,
        f: impl FnOnce(&mut Conn, &mut dyn api::Responder) -> Next,
    ) {
        let Some(&token) = self.jobs.get(&id) else {
            return;
        };
        if last {
            end_job(&mut self.jobs, &mut self.metrics, id);
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let Phase::Generating { responder, .. } = &mut conn.phase else {
            return;
        };
        let mut responder = std::mem::replace(responder, Box::new(Detached));
        if f(conn, responder.as_mut()) == Next::Stop {
            self.engine.stop(id, Instant::now());
        }
        if last {
            if let Some(status) = conn.status.take() {
                self.metrics.record_response(conn.endpoint, status);
            }
            conn.phase = Phase::Reading;
            conn.request_since = None;
            conn.idle_since = Instant::now();
            if !conn.keep_alive {
                conn.phase = Phase::Closing;
            }
        } else if let Phase::Generating {
            responder: slot, ..
        } = &mut conn.phase
        {
            *slot = responder;
        }
        // Only a stream still generating is cut off; a finished answer waits for its reader
        // like any other response.
        if !last && conn.pending_output() > self.cfg.output_cap_bytes {
            log::warn!(
                "a client stopped reading its stream ({} bytes pending); cutting it off",
                conn.pending_output()
            );
            abandon(
                &mut self.engine,
                &mut self.jobs,
                &mut self.metrics,
                conn,
                id,
                Instant::now(),
            );
            conn.peer_closed = true;
            return;
        }
        self.dirty.push(token);
    }

    // ---- connections -------------------------------------------------------------------------

    fn on_conn_event(&mut self, token: Token, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if readable && !conn.peer_closed {
            if let ReadOutcome::Closed = conn.read_available(now) {
                if let Phase::Generating { job, .. } = conn.phase {
                    log::debug!("client of request {job} hung up; aborting it");
                    abandon(
                        &mut self.engine,
                        &mut self.jobs,
                        &mut self.metrics,
                        conn,
                        job,
                        now,
                    );
                }
            }
        }
        let _ = writable;
        self.after_io(token, now);
    }

    /// Parses and answers what is buffered, writes what is pending, and fixes interests.
    fn after_io(&mut self, token: Token, now: Instant) {
        self.process_requests(token, now);
        // A read that stopped at the buffer cap left input in the socket that no new edge will
        // announce: read it now that there is room (or a new request to read).
        while let Some(conn) = self.conns.get_mut(&token) {
            if !conn.read_paused || !matches!(conn.phase, Phase::Reading) || conn.peer_closed {
                break;
            }
            let before = conn.rbuf.len();
            conn.read_available(now);
            if conn.rbuf.len() == before && conn.read_paused {
                break;
            }
            self.process_requests(token, now);
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.flush().is_err() {
            conn.peer_closed = true;
            if let Phase::Generating { job, .. } = conn.phase {
                abandon(
                    &mut self.engine,
                    &mut self.jobs,
                    &mut self.metrics,
                    conn,
                    job,
                    now,
                );
            }
            conn.phase = Phase::Closing;
            conn.wbuf.clear();
            conn.wpos = 0;
            return;
        }
        if matches!(conn.phase, Phase::Closing) && conn.pending_output() == 0 {
            conn.start_linger(now);
        }
        let want_write = conn.pending_output() > 0;
        if want_write != conn.writable_registered {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, interest)
            {
                log::warn!("cannot update interest: {e}");
            }
            conn.writable_registered = want_write;
        }
    }

    fn process_requests(&mut self, token: Token, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if !matches!(conn.phase, Phase::Reading)
                || conn.pending_output() > self.cfg.output_cap_bytes
            {
                return;
            }
            match conn.parser.advance(&mut conn.rbuf) {
                Ok(Progress::NeedMore) => {
                    // The request timer runs from a request's first byte until it is whole:
                    // also while its body is awaited with nothing of it buffered yet, and for
                    // a partial request pipelined behind one just answered (whose answer reset
                    // the timer). Otherwise such clients were only cut off by the keep-alive
                    // timeout, silently.
                    if conn.rbuf.is_empty() && !conn.parser.awaiting_body() {
                        conn.request_since = None;
                    } else if conn.request_since.is_none() {
                        conn.request_since = Some(now);
                    }
                    return;
                }
                Ok(Progress::Continue100) => conn
                    .wbuf
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
                Ok(Progress::Request(req)) => {
                    conn.keep_alive = req.keep_alive && self.shutdown.is_none();
                    conn.version = req.version;
                    conn.response_done = false;
                    conn.endpoint = api::endpoint_label(&req.path);
                    conn.head_only = req.method == http::Method::Head;
                    self.answer(token, req, now);
                    self.record_response(token);
                }
                Err(e) => {
                    log::debug!("bad request: {e}");
                    http::write_error(&mut conn.wbuf, &e, conn.version);
                    conn.phase = Phase::Closing;
                    self.metrics.record_response("other", e.status());
                    return;
                }
            }
        }
    }

    /// Counts the current response of `token` once its status is known.
    fn record_response(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if let Some(status) = conn.status.take() {
                self.metrics.record_response(conn.endpoint, status);
            }
        }
    }

    fn answer(&mut self, token: Token, req: http::Request, now: Instant) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        if let (Peer::Tcp(addr), Some(_)) = (conn.peer, &self.cfg.api_key) {
            let presented = req
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or_default();
            if !self.cfg.api_key_matches(presented.as_bytes()) {
                log::debug!("missing or wrong API key from {addr}");
                let err = api::ApiError::unauthorized(api::Flavor::for_path(&req.path));
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.write_full(err.response());
                    if !conn.keep_alive {
                        conn.phase = Phase::Closing;
                    }
                }
                return;
            }
        }
        let ctx = Ctx {
            model_name: &self.cfg.model_name,
            info: &self.info,
            state: self.engine.state(),
            queue_depth: self.engine.queue_depth(),
            running: self.engine.running().is_some(),
            connections: self.conns.len(),
            started: self.started,
            load_time: self.load_time,
            model_path: &self.cfg.model,
            max_new_tokens: self.cfg.max_new_tokens,
            max_context_len: self.cfg.max_context_len,
            sampling: self.sampling,
            caps: self.caps,
            metrics: &self.metrics,
            template: self.template.as_ref(),
        };
        let job_id = self.next_job;
        let reply = api::route(&req, &ctx, job_id);
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match reply {
            Reply::Full(response) => {
                conn.write_full(response);
                conn.request_since = None;
                conn.idle_since = now;
                if !conn.keep_alive {
                    conn.phase = Phase::Closing;
                }
            }
            Reply::Generate { job, mut responder } => {
                self.next_job += 1;
                match self.engine.submit(job, now) {
                    Ok(()) => {
                        conn.phase = Phase::Generating {
                            job: job_id,
                            responder,
                        };
                        self.jobs.insert(job_id, token);
                        self.metrics.generations_submitted += 1;
                    }
                    Err(e) => {
                        if matches!(e, crate::engine::EngineError::QueueFull { .. }) {
                            self.metrics.queue_rejections += 1;
                        }
                        responder.failed(&e, &mut conn.out());
                        conn.request_since = None;
                        conn.idle_since = now;
                        if !conn.keep_alive {
                            conn.phase = Phase::Closing;
                        }
                    }
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
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| self.conn_deadline(c).is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(conn) = self.conns.get_mut(&token) {
                if matches!(conn.phase, Phase::Closing) {
                    conn.peer_closed = true;
                    continue;
                }
                if conn.request_since.is_some() {
                    log::debug!("a client sent its request too slowly; closing it");
                    let body = br#"{"error":{"message":"the request took too long to arrive","type":"timeout_error"}}"#;
                    http::write_response(
                        &mut conn.wbuf,
                        408,
                        &[("Content-Type", "application/json")],
                        body,
                        false,
                        conn.version,
                    );
                    let _ = conn.flush();
                    // Counted like every other answer, so /metrics shows slow clients.
                    self.metrics.record_response("other", 408);
                }
                conn.phase = Phase::Closing;
                conn.wbuf.clear();
                conn.wpos = 0;
                conn.peer_closed = true;
            }
        }
    }

    /// Removes connections that are finished: closing with nothing left to write, or whose peer
    /// is gone while they were waiting for a request.
    fn reap(&mut self) {
        let registry = self.poll.registry();
        let metrics = &mut self.metrics;
        let before = self.conns.len();
        self.conns.retain(|_, conn| {
            let done = match conn.phase {
                Phase::Closing => conn.peer_closed,
                Phase::Reading => conn.peer_closed && conn.pending_output() == 0,
                Phase::Generating { .. } => false,
            };
            if done {
                let _ = registry.deregister(&mut conn.stream);
                if !conn.refused {
                    metrics.connections_closed += 1;
                }
            }
            !done
        });
        let closed = before - self.conns.len();
        if self.shutdown.is_some() {
            self.report.connections_closed += closed;
        }
    }
}

/// The loop is done with job `id`: forgets its connection and counts it as ended, once.
fn end_job(jobs: &mut HashMap<JobId, Token>, metrics: &mut crate::metrics::Metrics, id: JobId) {
    if jobs.remove(&id).is_some() {
        metrics.generations_ended += 1;
    }
}

/// The client of job `id` is gone (hung up, or cut off for not reading): aborts the job, counts
/// its response once, with the status it was sent (a stream's 200) or 499 ("client closed
/// request", as nginx logs it) when none was, and drops what was still to be written.
fn abandon(
    engine: &mut Engine,
    jobs: &mut HashMap<JobId, Token>,
    metrics: &mut crate::metrics::Metrics,
    conn: &mut Conn,
    id: JobId,
    now: Instant,
) {
    engine.cancel(id, now);
    end_job(jobs, metrics, id);
    let status = conn.status.take().unwrap_or(CLIENT_CLOSED_REQUEST);
    metrics.record_response(conn.endpoint, status);
    conn.phase = Phase::Closing;
    conn.wbuf.clear();
    conn.wpos = 0;
}

/// Not an HTTP status anyone receives: the metrics label of a request whose client left first.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Stands in for a responder while its own is borrowed out of the connection.
struct Detached;

impl api::Responder for Detached {
    fn started(&mut self, _: &mut dyn api::ResponseOut) {}
    fn text(&mut self, _: &str, _: &mut dyn api::ResponseOut) -> Next {
        Next::Continue
    }
    fn finished(&mut self, _: &crate::engine::Finish, _: &mut dyn api::ResponseOut) {}
    fn failed(&mut self, _: &crate::engine::EngineError, _: &mut dyn api::ResponseOut) {}
}
