//! One client connection: its socket, its parser, its output, and a phase that says what it is
//! doing and which timer runs. The event loop asks it to change; it never edits its fields.

use std::io::{self, Read};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use super::output::Output;
use super::stream::{Peer, Stream};
use crate::api::{ApiError, Flavor, FullResponse, Next, Responder, ResponseOut};
use crate::engine::{EngineError, JobId};
use crate::http::{Limits, Progress, Request, RequestParser, CONTINUE_100};
use crate::metrics::Metrics;

/// While a response is in progress, reading stops once this much input is buffered (a
/// pipelining client waits); while a request is read, the cap is the request limit itself.
const PIPELINE_BUFFER_CAP: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;
/// How long a closing connection keeps draining input after its last response.
const LINGER: Duration = Duration::from_secs(2);
/// Not an HTTP status anyone receives: the metrics label of a request whose client left first.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The timers of a connection: two while it waits for a request, one whenever output waits.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From a request's first byte until it is whole.
    pub header: Duration,
    /// From the last response until the next request begins.
    pub keepalive: Duration,
    /// How long output may wait with none of it written (the client reads nothing).
    pub write: Duration,
}

enum Phase {
    /// Waiting for a request (`request_since` is `None`), or the rest of one.
    Reading {
        /// When the connection was accepted or finished its last response.
        idle_since: Instant,
        /// When the first byte of the request being read arrived.
        request_since: Option<Instant>,
    },
    /// A generation runs (or waits in the queue) for the request just parsed.
    Generating {
        job: JobId,
        responder: Box<dyn Responder>,
    },
    /// The last response is queued for writing; once it is out, our side is shut down and
    /// input is drained until the peer closes or the linger time passes (so a client still
    /// sending gets to read the answer instead of a reset).
    Closing { lingering_since: Option<Instant> },
}

pub struct Conn {
    stream: Stream,
    peer: Peer,
    rbuf: Vec<u8>,
    parser: RequestParser,
    out: Output,
    phase: Phase,
    /// The most a request may take in the read buffer (head and body limits).
    request_cap: usize,
    writable_registered: bool,
    /// The peer is gone (a failed read or write, a hangup, or we dropped it): nothing more is
    /// read or written.
    peer_closed: bool,
    /// The peer shut down its sending side (read EOF). A half-close is not a hangup: what it
    /// asked for is still answered, and written until a write fails.
    read_closed: bool,
    /// Since when output has waited without a byte of it written; `None` with none pending.
    write_stalled_since: Option<Instant>,
    /// The head of the request being read passed the gate (see `next_request`).
    head_checked: bool,
    /// The last read stopped at the cap with input possibly left in the socket.
    read_paused: bool,
    admitted: Admitted,
}

/// Whether the connection serves requests or only delivers a refusal (counted as refused, not
/// as an accepted connection).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admitted {
    Client,
    Refusal,
}

pub enum ReadOutcome {
    /// Everything available was read (or the buffer cap was hit, or the peer half-closed).
    Drained,
    /// The connection broke.
    Closed,
}

impl Conn {
    pub fn new(stream: Stream, peer: Peer, limits: Limits, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            rbuf: Vec::new(),
            parser: RequestParser::new(limits),
            out: Output::new(),
            phase: Phase::Reading {
                idle_since: now,
                request_since: None,
            },
            request_cap: limits.max_head_bytes.saturating_add(limits.max_body_bytes),
            writable_registered: false,
            peer_closed: false,
            read_closed: false,
            write_stalled_since: None,
            head_checked: false,
            read_paused: false,
            admitted: Admitted::Client,
        }
    }

    /// Starts a connection that only delivers `bytes` and then closes (refusals).
    pub fn refusal(stream: Stream, peer: Peer, bytes: &[u8], now: Instant) -> Conn {
        let mut conn = Conn::new(stream, peer, Limits::default(), now);
        conn.out.push_raw(bytes);
        conn.phase = Phase::Closing {
            lingering_since: None,
        };
        conn.admitted = Admitted::Refusal;
        conn
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }

    pub fn is_refusal(&self) -> bool {
        self.admitted == Admitted::Refusal
    }

    /// Input may still arrive: the peer neither left nor shut down its sending side.
    pub fn can_read(&self) -> bool {
        !self.peer_closed && !self.read_closed
    }

    pub fn pending_output(&self) -> usize {
        self.out.pending()
    }

    /// The job this connection waits for, while it does.
    pub fn job(&self) -> Option<JobId> {
        match self.phase {
            Phase::Generating { job, .. } => Some(job),
            _ => None,
        }
    }

    /// When this connection's current timer expires. Output that waits has the write timer
    /// in every phase; besides it, a generation has none (the engine times those), nor has a
    /// last response still being written.
    pub fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Reading {
                request_since: Some(since),
                ..
            } => Some(since + timeouts.header),
            Phase::Reading { idle_since, .. } => Some(idle_since + timeouts.keepalive),
            Phase::Closing { lingering_since } => lingering_since.map(|t| t + LINGER),
            Phase::Generating { .. } => None,
        };
        let write = self.write_stalled_since.map(|t| t + timeouts.write);
        match (phase, write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Done with: closing with the peer gone, or its input ended once our answer is out (or
    /// the linger over); or waiting for a request that cannot come with nothing left to write.
    pub fn is_finished(&self) -> bool {
        match self.phase {
            Phase::Closing {
                lingering_since: Some(_),
            } => self.peer_closed || self.read_closed,
            Phase::Closing {
                lingering_since: None,
            } => self.peer_closed,
            Phase::Reading { .. } => {
                (self.peer_closed || self.read_closed) && self.out.pending() == 0
            }
            Phase::Generating { .. } => false,
        }
    }

    /// After a large request, the read buffer gives back what it grew to hold it: a keep-alive
    /// connection would otherwise keep the largest body it ever read for its whole life.
    fn shrink_read_buffer(&mut self) {
        if self.rbuf.capacity() > PIPELINE_BUFFER_CAP {
            self.rbuf.shrink_to(self.rbuf.len().max(READ_CHUNK));
        }
    }

    /// Reads until `WouldBlock`, EOF or the buffer cap.
    pub fn read_available(&mut self, now: Instant) -> ReadOutcome {
        let mut chunk = [0u8; READ_CHUNK];
        let closing = matches!(self.phase, Phase::Closing { .. });
        let cap = match self.phase {
            Phase::Reading { .. } => self.request_cap,
            Phase::Generating { .. } | Phase::Closing { .. } => PIPELINE_BUFFER_CAP,
        };
        // Edge-triggered: if we stop below WouldBlock, nothing wakes us for the rest, so note it
        // and read again once the connection is back to reading a request.
        self.read_paused = false;
        while closing || self.rbuf.len() < cap {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.read_closed = true;
                    return ReadOutcome::Drained;
                }
                Ok(_) if closing => {}
                Ok(n) => {
                    if let Phase::Reading { request_since, .. } = &mut self.phase {
                        request_since.get_or_insert(now);
                    }
                    self.rbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.peer_closed = true;
                    return ReadOutcome::Closed;
                }
            }
        }
        if self.rbuf.len() >= cap {
            self.read_paused = true;
        }
        ReadOutcome::Drained
    }

    /// A read stopped at the buffer cap and the connection can take more input now: input
    /// that no new edge will announce is waiting in the socket.
    pub fn wants_resumed_read(&self) -> bool {
        self.read_paused && matches!(self.phase, Phase::Reading { .. }) && self.can_read()
    }

    /// Reads again after a paused read; false when that brought nothing new.
    pub fn resume_read(&mut self, now: Instant) -> bool {
        let before = self.rbuf.len();
        self.read_available(now);
        self.rbuf.len() != before || !self.read_paused
    }

    /// The next whole request, while the connection is free to answer one and its output is
    /// below `output_cap`. Answers `Expect: 100-continue` and refuses a malformed request (400
    /// family, then close) itself. `keep_alive` is false when the daemon closes after it.
    /// `gate` sees each request's head as soon as it is parsed, before its body is read: a
    /// head it refuses is answered with its error and the connection closes unread.
    pub fn next_request(
        &mut self,
        now: Instant,
        output_cap: usize,
        keep_alive: bool,
        gate: &dyn Fn(&Request) -> Result<(), ApiError>,
        metrics: &mut Metrics,
    ) -> Option<Request> {
        loop {
            if !matches!(self.phase, Phase::Reading { .. }) || self.out.pending() > output_cap {
                return None;
            }
            let progress = self.parser.advance(&mut self.rbuf);
            if matches!(progress, Ok(Progress::NeedMore | Progress::Continue100))
                && self.refuse_head(gate, now, metrics)
            {
                return None;
            }
            let Phase::Reading { request_since, .. } = &mut self.phase else {
                return None;
            };
            match progress {
                Ok(Progress::NeedMore) => {
                    // The request timer runs from a request's first byte until it is whole:
                    // also while its body is awaited with nothing of it buffered yet, and for
                    // a partial request pipelined behind one just answered (whose answer reset
                    // the timer). Otherwise such clients were only cut off by the keep-alive
                    // timeout, silently.
                    if self.rbuf.is_empty() && !self.parser.awaiting_body() {
                        *request_since = None;
                    } else {
                        request_since.get_or_insert(now);
                    }
                    return None;
                }
                Ok(Progress::Continue100) => self.out.push_raw(CONTINUE_100),
                Ok(Progress::Request(req)) => {
                    self.head_checked = false;
                    self.shrink_read_buffer();
                    self.out.begin(&req, keep_alive);
                    return Some(req);
                }
                Err(e) => {
                    log::debug!("bad request: {e}");
                    self.out.begin_unparsed();
                    let err = ApiError::from_http(Flavor::OpenAi, &e);
                    self.respond(err.response(), now, metrics);
                    return None;
                }
            }
        }
    }

    /// Shows the head of a request whose body is awaited to `gate`, once; true when it was
    /// refused (answered, closing).
    fn refuse_head(
        &mut self,
        gate: &dyn Fn(&Request) -> Result<(), ApiError>,
        now: Instant,
        metrics: &mut Metrics,
    ) -> bool {
        if self.head_checked {
            return false;
        }
        let Some(head) = self.parser.pending_head() else {
            return false;
        };
        self.head_checked = true;
        let Err(e) = gate(&head) else {
            return false;
        };
        self.out.begin(&head, false);
        self.respond(e.response(), now, metrics);
        true
    }

    /// Writes a complete response to the current request and finishes it.
    pub fn respond(&mut self, response: FullResponse, now: Instant, metrics: &mut Metrics) {
        self.out.full(response);
        self.finish_response(now, metrics);
    }

    /// The request just parsed waits for generation `job`, which `responder` formats.
    pub fn start_generation(&mut self, job: JobId, responder: Box<dyn Responder>) {
        self.phase = Phase::Generating { job, responder };
    }

    /// The generation could not start: `responder` answers with the error.
    pub fn refuse_generation(
        &mut self,
        mut responder: Box<dyn Responder>,
        error: &EngineError,
        now: Instant,
        metrics: &mut Metrics,
    ) {
        responder.failed(error, &mut self.out);
        self.finish_response(now, metrics);
    }

    /// Hands the generation's responder and this connection's output to `f`; `None` when the
    /// connection is not generating.
    pub fn with_responder(
        &mut self,
        f: impl FnOnce(&mut dyn Responder, &mut dyn ResponseOut) -> Next,
    ) -> Option<Next> {
        let Phase::Generating { responder, .. } = &mut self.phase else {
            return None;
        };
        Some(f(responder.as_mut(), &mut self.out))
    }

    /// The response to the current request is complete (it may still be buffered): counts it,
    /// then waits for the next request, or closes when the connection is not kept alive.
    pub fn finish_response(&mut self, now: Instant, metrics: &mut Metrics) {
        if let Some(status) = self.out.take_status() {
            metrics.response(self.out.endpoint(), status);
        }
        self.phase = if self.out.keep_alive() {
            Phase::Reading {
                idle_since: now,
                request_since: None,
            }
        } else {
            Phase::Closing {
                lingering_since: None,
            }
        };
    }

    /// The client is gone (or cut off) while its generation runs: counts the response with the
    /// status it was sent (a stream's 200), or 499 ("client closed request", as nginx logs it)
    /// when none was, and drops the connection. Returns the job to cancel.
    pub fn abandon(&mut self, metrics: &mut Metrics) -> Option<JobId> {
        let job = self.job()?;
        let status = self.out.take_status().unwrap_or(CLIENT_CLOSED_REQUEST);
        metrics.response(self.out.endpoint(), status);
        self.discard_output();
        Some(job)
    }

    /// Drops whatever is still to be written and closes without lingering.
    pub fn discard_output(&mut self) {
        self.out.discard();
        self.write_stalled_since = None;
        self.phase = Phase::Closing {
            lingering_since: None,
        };
        self.peer_closed = true;
    }

    /// Its deadline passed: a client that read none of its pending output for the write
    /// timeout is dropped, a linger ends, a request that arrives too slowly gets a 408, an idle
    /// keep-alive connection just closes. (A generating connection is abandoned instead, see
    /// `Jobs::abandon`.)
    pub fn time_out(&mut self, now: Instant, timeouts: Timeouts, metrics: &mut Metrics) {
        if self
            .write_stalled_since
            .is_some_and(|t| t + timeouts.write <= now)
        {
            log::debug!(
                "a client read nothing of its answer for {:.1} s; dropping it",
                timeouts.write.as_secs_f32()
            );
        } else if let Phase::Reading {
            request_since: Some(_),
            ..
        } = self.phase
        {
            log::debug!("a client sent its request too slowly; closing it");
            self.out.begin_unparsed();
            self.out.full(ApiError::request_timeout().response());
            let _ = self.out.flush_to(&mut self.stream);
            // Counted like every other answer, so /metrics shows slow clients.
            if let Some(status) = self.out.take_status() {
                metrics.response(self.out.endpoint(), status);
            }
        }
        self.discard_output();
    }

    /// The daemon shuts down: an idle connection closes now, one writing a response closes
    /// once it is written, a generating one once its response is complete.
    pub fn begin_shutdown(&mut self) {
        match self.phase {
            Phase::Reading { .. } if self.out.pending() == 0 => {
                // Idle: close now rather than linger, so shutdown is not held up.
                self.phase = Phase::Closing {
                    lingering_since: None,
                };
                self.peer_closed = true;
            }
            // Left in `Reading`, the connection waited for a next request, holding the shutdown
            // up to its deadline (and exit code 5) after the client had everything.
            Phase::Reading { .. } => {
                self.out.close_after_response();
                self.phase = Phase::Closing {
                    lingering_since: None,
                };
            }
            Phase::Generating { .. } => self.out.close_after_response(),
            Phase::Closing { .. } => {}
        }
    }

    /// Writes what is pending and restarts the write timer on progress; once a closing
    /// connection has written everything, shuts down its write side and starts lingering. Err
    /// means the peer is gone.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        let before = self.out.pending();
        self.out.flush_to(&mut self.stream)?;
        let after = self.out.pending();
        self.write_stalled_since = match self.write_stalled_since {
            _ if after == 0 => None,
            _ if after < before => Some(now),
            since => Some(since.unwrap_or(now)),
        };
        if let Phase::Closing {
            lingering_since: lingering_since @ None,
        } = &mut self.phase
        {
            if self.out.pending() == 0 {
                self.stream.shutdown(Shutdown::Write);
                *lingering_since = Some(now);
            }
        }
        Ok(())
    }

    /// Holds WRITABLE interest only while output is pending.
    pub fn sync_interest(&mut self, registry: &Registry, token: Token) {
        let want_write = self.out.pending() > 0;
        if want_write == self.writable_registered {
            return;
        }
        let interest = if want_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = registry.reregister(&mut self.stream, token, interest) {
            log::warn!("cannot update interest: {e}");
        }
        self.writable_registered = want_write;
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Cuts the connection at exit, whatever its state.
    pub fn shutdown(&self) {
        self.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use mio::net::UnixStream;

    use super::*;
    use crate::lifecycle::PeerCred;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
        write: Duration::from_secs(30),
    };
    const OUTPUT_CAP: usize = 1 << 20;

    fn open_gate(_: &Request) -> Result<(), ApiError> {
        Ok(())
    }

    /// A connection over a real socket pair, and the client's end.
    fn pair(now: Instant) -> (Conn, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let peer = Peer::Unix(PeerCred {
            pid: 1,
            uid: 0,
            gid: 0,
        });
        (
            Conn::new(Stream::Unix(ours), peer, Limits::default(), now),
            theirs,
        )
    }

    /// Everything the client can read now; `None` once the daemon's side is shut down.
    fn received(client: &mut UnixStream) -> (String, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf) {
                Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (String::from_utf8_lossy(&out).into_owned(), false)
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends `bytes` from the client and lets the connection parse them.
    fn request(
        conn: &mut Conn,
        client: &mut UnixStream,
        bytes: &[u8],
        now: Instant,
        metrics: &mut Metrics,
    ) -> Option<Request> {
        client.write_all(bytes).expect("client write");
        assert!(matches!(conn.read_available(now), ReadOutcome::Drained));
        conn.next_request(now, OUTPUT_CAP, true, &open_gate, metrics)
    }

    fn count(metrics: &Metrics, endpoint: &'static str, status: u16) -> u64 {
        metrics
            .requests()
            .get(&(endpoint, status))
            .copied()
            .unwrap_or(0)
    }

    /// Streams text as chunks, the way the API responders do.
    struct Chunks;

    impl Responder for Chunks {
        fn started(&mut self, out: &mut dyn ResponseOut) {
            out.start_stream(200, "text/plain", &[]);
        }
        fn text(&mut self, text: &str, out: &mut dyn ResponseOut) -> Next {
            out.chunk(text.as_bytes());
            Next::Continue
        }
        fn finished(&mut self, _: &crate::engine::Finish, out: &mut dyn ResponseOut) {
            out.end_stream();
        }
        fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
            out.full(ApiError::from_engine(Flavor::OpenAi, error).response());
        }
    }

    #[test]
    fn the_read_buffer_gives_back_what_a_large_request_made_it_grow_to() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let body = vec![b'x'; 150_000];
        let mut raw = format!(
            "POST /v1/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let req = request(&mut conn, &mut client, &raw, now, &mut m).expect("the request");
        assert_eq!(req.body.len(), body.len());
        assert!(
            conn.rbuf.capacity() <= PIPELINE_BUFFER_CAP,
            "{} bytes kept",
            conn.rbuf.capacity()
        );
    }

    #[test]
    fn a_full_response_is_counted_and_the_connection_waits_for_the_next() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        assert_eq!(conn.deadline(TIMEOUTS), Some(now + TIMEOUTS.keepalive));
        let req = request(
            &mut conn,
            &mut client,
            b"GET /health HTTP/1.1\r\n\r\n",
            now,
            &mut m,
        )
        .expect("a request");
        assert_eq!(req.path, "/health");
        let later = now + Duration::from_secs(1);
        conn.respond(
            FullResponse::json(200, &serde_json::json!({"a": 1})),
            later,
            &mut m,
        );
        conn.flush(later).expect("flush");
        assert_eq!(
            received(&mut client),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Type: application/json\r\n\r\n{\"a\":1}"
                    .to_owned(),
                false
            )
        );
        assert_eq!(count(&m, "/health", 200), 1);
        assert_eq!(conn.deadline(TIMEOUTS), Some(later + TIMEOUTS.keepalive));
        assert!(!conn.is_finished());
    }

    #[test]
    fn connection_close_lingers_after_the_response_then_finishes_when_the_peer_leaves() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"HEAD /health HTTP/1.1\r\nConnection: close\r\n\r\n";
        request(&mut conn, &mut client, raw, now, &mut m).expect("a request");
        conn.respond(FullResponse::json(200, &serde_json::json!({})), now, &mut m);
        conn.flush(now).expect("flush");
        assert_eq!(
            received(&mut client),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n"
                    .to_owned(),
                true
            )
        );
        assert_eq!(conn.deadline(TIMEOUTS), Some(now + LINGER));
        assert!(!conn.is_finished());
        drop(client);
        assert!(matches!(conn.read_available(now), ReadOutcome::Drained));
        assert!(conn.is_finished());
    }

    #[test]
    fn a_generation_streams_through_its_responder_and_counts_once() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        request(&mut conn, &mut client, raw, now, &mut m).expect("a request");
        assert_eq!(conn.with_responder(|_, _| Next::Continue), None);
        conn.start_generation(7, Box::new(Chunks));
        assert_eq!(conn.job(), Some(7));
        assert_eq!(conn.deadline(TIMEOUTS), None);
        // Nothing more is parsed while the generation runs.
        assert!(conn
            .next_request(now, OUTPUT_CAP, true, &open_gate, &mut m)
            .is_none());
        conn.with_responder(|r, out| {
            r.started(out);
            Next::Continue
        });
        assert_eq!(
            conn.with_responder(|r, out| r.text("hi", out)),
            Some(Next::Continue)
        );
        conn.with_responder(|_, out| {
            out.end_stream();
            Next::Continue
        });
        conn.finish_response(now, &mut m);
        conn.flush(now).expect("flush");
        assert_eq!(
            received(&mut client).0,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        );
        assert_eq!(count(&m, "/v1/completions", 200), 1);
        assert_eq!(conn.job(), None);
        assert_eq!(conn.deadline(TIMEOUTS), Some(now + TIMEOUTS.keepalive));
    }

    #[test]
    fn an_abandoned_generation_counts_499_and_drops_its_output() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        request(&mut conn, &mut client, raw, now, &mut m).expect("a request");
        conn.start_generation(3, Box::new(Chunks));
        assert_eq!(conn.abandon(&mut m), Some(3));
        assert_eq!(count(&m, "/v1/completions", 499), 1);
        assert_eq!(conn.pending_output(), 0);
        assert!(conn.is_finished());
        assert_eq!(conn.abandon(&mut m), None, "abandoned once");
    }

    #[test]
    fn a_refused_generation_is_answered_by_its_responder() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        request(&mut conn, &mut client, raw, now, &mut m).expect("a request");
        conn.refuse_generation(Box::new(Chunks), &EngineError::Loading, now, &mut m);
        conn.flush(now).expect("flush");
        assert!(received(&mut client)
            .0
            .starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert_eq!(count(&m, "/v1/completions", 503), 1);
        assert_eq!(conn.deadline(TIMEOUTS), Some(now + TIMEOUTS.keepalive));
    }

    #[test]
    fn a_malformed_request_gets_its_error_and_the_connection_closes() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"POST /api/chat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(request(&mut conn, &mut client, raw, now, &mut m).is_none());
        conn.flush(now).expect("flush");
        let (text, closed) = received(&mut client);
        assert!(
            text.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(
            text.contains("\"type\":\"invalid_request_error\""),
            "{text}"
        );
        assert!(closed);
        assert_eq!(count(&m, "other", 501), 1);
    }

    #[test]
    fn expect_continue_is_answered_before_the_body() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw =
            b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
        assert!(request(&mut conn, &mut client, raw, now, &mut m).is_none());
        conn.flush(now).expect("flush");
        assert_eq!(received(&mut client).0.as_bytes(), CONTINUE_100);
        // The body is awaited: the request timer runs.
        assert_eq!(conn.deadline(TIMEOUTS), Some(now + TIMEOUTS.header));
        let req = request(&mut conn, &mut client, b"{}", now, &mut m).expect("the request");
        assert_eq!(req.body, b"{}");
    }

    #[test]
    fn a_request_arriving_too_slowly_gets_a_408() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let later = now + Duration::from_secs(1);
        assert!(request(
            &mut conn,
            &mut client,
            b"GET /health HTTP/1.1\r\n",
            later,
            &mut m
        )
        .is_none());
        assert_eq!(conn.deadline(TIMEOUTS), Some(later + TIMEOUTS.header));
        conn.time_out(later, TIMEOUTS, &mut m);
        let text = received(&mut client).0;
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        assert!(
            text.contains("the request took too long to arrive"),
            "{text}"
        );
        assert_eq!(count(&m, "other", 408), 1);
        assert!(conn.is_finished());
    }

    #[test]
    fn an_idle_connection_times_out_silently() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        conn.time_out(now, TIMEOUTS, &mut m);
        assert_eq!(received(&mut client).0, "");
        assert!(m.requests().is_empty());
        assert!(conn.is_finished());
    }

    #[test]
    fn shutdown_closes_idle_connections_and_lets_busy_ones_finish() {
        let now = Instant::now();
        let (mut idle, _a) = pair(now);
        idle.begin_shutdown();
        assert!(idle.is_finished());

        let (mut busy, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        request(&mut busy, &mut client, raw, now, &mut m).expect("a request");
        busy.start_generation(1, Box::new(Chunks));
        busy.begin_shutdown();
        assert!(!busy.is_finished());
        busy.with_responder(|r, out| {
            r.started(out);
            out.end_stream();
            Next::Continue
        });
        busy.finish_response(now, &mut m);
        busy.flush(now).expect("flush");
        let (text, closed) = received(&mut client);
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(closed, "shut down after the response");
    }

    #[test]
    fn a_half_closed_client_still_gets_its_whole_answer() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
        client.write_all(raw).expect("client write");
        client.shutdown(Shutdown::Write).expect("half-close");
        assert!(matches!(conn.read_available(now), ReadOutcome::Drained));
        assert!(!conn.can_read());
        let req = conn
            .next_request(now, OUTPUT_CAP, true, &open_gate, &mut m)
            .expect("the request read before the EOF");
        assert_eq!(req.path, "/health");
        // Larger than the socket buffers: it takes several flushes.
        let big = "x".repeat(1 << 20);
        conn.respond(
            FullResponse::json(200, &serde_json::json!(big)),
            now,
            &mut m,
        );
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !conn.is_finished() {
            conn.flush(now).expect("flush");
            match client.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        got.extend_from_slice(received(&mut client).0.as_bytes());
        assert!(got.len() > 1 << 20, "{} bytes", got.len());
        assert!(got.ends_with(b"xxx\""));
    }

    #[test]
    fn output_nobody_reads_expires_in_every_phase() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let raw = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
        request(&mut conn, &mut client, raw, now, &mut m).expect("a request");
        let big = "x".repeat(4 << 20);
        conn.respond(
            FullResponse::json(200, &serde_json::json!(big)),
            now,
            &mut m,
        );
        conn.flush(now).expect("flush");
        assert!(conn.pending_output() > 0, "the client reads nothing");
        // Closing with output pending: only the write timer runs.
        assert_eq!(conn.deadline(TIMEOUTS), Some(now + TIMEOUTS.write));
        // Progress restarts it.
        let later = now + Duration::from_secs(5);
        let mut buf = vec![0u8; 1 << 16];
        client.read_exact(&mut buf).expect("read some");
        conn.flush(later).expect("flush");
        assert_eq!(conn.deadline(TIMEOUTS), Some(later + TIMEOUTS.write));
        let expired = later + TIMEOUTS.write;
        conn.time_out(expired, TIMEOUTS, &mut m);
        assert!(conn.is_finished());
        assert_eq!(conn.pending_output(), 0);
    }

    #[test]
    fn a_head_the_gate_refuses_is_answered_before_its_body() {
        let now = Instant::now();
        let (mut conn, mut client) = pair(now);
        let mut m = Metrics::default();
        let refuse = |_: &Request| Err(ApiError::unauthorized(Flavor::OpenAi));
        client
            .write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
            .expect("client write");
        conn.read_available(now);
        assert!(conn
            .next_request(now, OUTPUT_CAP, true, &refuse, &mut m)
            .is_none());
        conn.flush(now).expect("flush");
        let (text, closed) = received(&mut client);
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(closed);
        assert_eq!(count(&m, "/v1/completions", 401), 1);
    }

    #[test]
    fn a_refusal_delivers_its_bytes_then_closes() {
        let now = Instant::now();
        let (ours, mut client) = UnixStream::pair().expect("a socket pair");
        let peer = Peer::Unix(PeerCred {
            pid: 1,
            uid: 1000,
            gid: 1000,
        });
        let mut conn = Conn::refusal(Stream::Unix(ours), peer, b"no", now);
        assert!(conn.is_refusal());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        conn.read_available(now);
        conn.flush(now).expect("flush");
        assert_eq!(received(&mut client), ("no".to_owned(), true));
        drop(client);
        conn.read_available(now);
        assert!(conn.is_finished());
    }
}
