//! One client connection: its buffers, its parser, and where its current response stands.

use std::io::{self, Read, Write};
use std::time::Instant;

use super::stream::{Peer, Stream};
use crate::api::{FullResponse, Responder, ResponseOut};
use crate::engine::JobId;
use crate::http::{self, Limits, RequestParser, StreamEncoding, Version};

/// Reads stop while this much unparsed input is buffered (a pipelining client waits).
/// While a response is in progress, reading stops once this much input is buffered (a
/// pipelining client waits); while a request is read, the cap is the request limit itself.
const PIPELINE_BUFFER_CAP: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;

pub enum Phase {
    /// Waiting for a request, or the rest of one.
    Reading,
    /// A generation runs (or waits in the queue) for the request just parsed.
    Generating {
        job: JobId,
        responder: Box<dyn Responder>,
    },
    /// The last response is queued for writing; once it is out, our side is shut down and
    /// input is drained until the peer closes or the linger time passes (so a client still
    /// sending gets to read the answer instead of a reset).
    Closing,
}

pub struct Conn {
    pub stream: Stream,
    pub peer: Peer,
    pub rbuf: Vec<u8>,
    pub parser: RequestParser,
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    pub phase: Phase,
    /// Keep-alive and version of the request being answered.
    pub keep_alive: bool,
    pub version: Version,
    pub encoding: Option<StreamEncoding>,
    /// The response to the current request is complete (it may still be in `wbuf`).
    pub response_done: bool,
    pub writable_registered: bool,
    pub peer_closed: bool,
    /// When the connection last finished a response or was accepted (keep-alive timer).
    pub idle_since: Instant,
    /// When the first byte of the request being read arrived (header timer).
    pub request_since: Option<Instant>,
    /// When our write side was shut down in `Closing` (linger timer).
    pub lingering_since: Option<Instant>,
    /// Metrics label of the request being answered, and the status it got (taken when counted).
    pub endpoint: &'static str,
    pub status: Option<u16>,
    /// The request being answered is a HEAD: responses carry their head only.
    pub head_only: bool,
    /// The most a request may take in the read buffer (head and body limits).
    request_cap: usize,
    /// The last read stopped at the cap with input possibly left in the socket.
    pub read_paused: bool,
    /// Only delivers a refusal: counted as refused, not as an accepted connection.
    pub refused: bool,
}

pub enum ReadOutcome {
    /// Everything available was read (or the buffer cap was hit).
    Drained,
    /// The peer closed its side or the connection broke.
    Closed,
}

impl Conn {
    pub fn new(stream: Stream, peer: Peer, limits: Limits, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            rbuf: Vec::new(),
            parser: RequestParser::new(limits),
            wbuf: Vec::new(),
            wpos: 0,
            phase: Phase::Reading,
            keep_alive: true,
            version: Version::Http11,
            encoding: None,
            response_done: false,
            writable_registered: false,
            peer_closed: false,
            idle_since: now,
            request_since: None,
            lingering_since: None,
            endpoint: "other",
            status: None,
            head_only: false,
            request_cap: limits.max_head_bytes.saturating_add(limits.max_body_bytes),
            read_paused: false,
            refused: false,
        }
    }

    /// Starts a connection that only delivers `bytes` and then closes (refusals).
    pub fn refusal(stream: Stream, peer: Peer, limits: Limits, bytes: &[u8], now: Instant) -> Conn {
        let mut conn = Conn::new(stream, peer, limits, now);
        conn.wbuf.extend_from_slice(bytes);
        conn.phase = Phase::Closing;
        conn.refused = true;
        conn
    }

    /// In `Closing` with everything written: stop writing, keep draining input.
    pub fn start_linger(&mut self, now: Instant) {
        if self.lingering_since.is_none() {
            self.stream.shutdown(std::net::Shutdown::Write);
            self.lingering_since = Some(now);
        }
    }

    /// Reads until WouldBlock, EOF or the buffer cap.
    pub fn read_available(&mut self, now: Instant) -> ReadOutcome {
        let mut chunk = [0u8; READ_CHUNK];
        let cap = match self.phase {
            Phase::Reading => self.request_cap,
            Phase::Generating { .. } | Phase::Closing => PIPELINE_BUFFER_CAP,
        };
        // Edge-triggered: if we stop below WouldBlock, nothing wakes us for the rest, so note it
        // and read again once the connection is back to reading a request.
        self.read_paused = false;
        while self.rbuf.len() < cap || matches!(self.phase, Phase::Closing) {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.peer_closed = true;
                    return ReadOutcome::Closed;
                }
                Ok(_) if matches!(self.phase, Phase::Closing) => {}
                Ok(n) => {
                    if self.request_since.is_none() {
                        self.request_since = Some(now);
                    }
                    self.rbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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

    /// Writes until the buffer is empty or WouldBlock. Err means the peer is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        Ok(())
    }

    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// The writer a responder uses for this connection's current response.
    pub fn out(&mut self) -> ConnOut<'_> {
        ConnOut { conn: self }
    }

    /// Writes a complete response for the current request.
    pub fn write_full(&mut self, response: FullResponse) {
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", response.content_type)];
        headers.extend(response.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if self.head_only {
            http::write_response_head(
                &mut self.wbuf,
                response.status,
                &headers,
                response.body.len(),
                self.keep_alive,
                self.version,
            );
        } else {
            http::write_response(
                &mut self.wbuf,
                response.status,
                &headers,
                &response.body,
                self.keep_alive,
                self.version,
            );
        }
        self.response_done = true;
        self.status = Some(response.status);
    }
}

pub struct ConnOut<'a> {
    conn: &'a mut Conn,
}

impl ResponseOut for ConnOut<'_> {
    fn start_stream(
        &mut self,
        status: u16,
        content_type: &'static str,
        headers: &[(&'static str, String)],
    ) {
        let c = &mut *self.conn;
        let mut all: Vec<(&str, &str)> = vec![("Content-Type", content_type)];
        all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        let encoding = http::write_stream_head(&mut c.wbuf, status, &all, c.version, c.keep_alive);
        if encoding == StreamEncoding::UntilClose {
            c.keep_alive = false;
        }
        c.encoding = Some(encoding);
        c.status = Some(status);
    }

    fn chunk(&mut self, data: &[u8]) {
        let c = &mut *self.conn;
        match c.encoding {
            Some(StreamEncoding::Chunked) => http::write_chunk(&mut c.wbuf, data),
            Some(StreamEncoding::UntilClose) => c.wbuf.extend_from_slice(data),
            None => log::error!("a responder wrote a chunk before starting its stream"),
        }
    }

    fn end_stream(&mut self) {
        let c = &mut *self.conn;
        if c.encoding.take() == Some(StreamEncoding::Chunked) {
            http::write_last_chunk(&mut c.wbuf);
        }
        c.response_done = true;
    }

    fn full(&mut self, response: FullResponse) {
        self.conn.write_full(response);
    }
}
