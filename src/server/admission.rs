//! Who gets a connection and who gets a request answered: the listeners' backlogs, the Unix
//! peers' credentials against the allow lists, the connection limit (deferred for one poll so
//! that slots of clients that just hung up are freed first; refused peers count too; a share
//! of it kept for the Unix socket, which TCP peers cannot take), accepting again after the
//! process ran out of file descriptors, and the TCP API key.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};

use super::conn::Conn;
use super::stream::{Peer, Stream};
use crate::api::{ApiError, Flavor, FullResponse};
use crate::config::Config;
use crate::http::{self, Limits, Request, Version};
use crate::lifecycle;
use crate::metrics::Metrics;

pub const UNIX_LISTENER: Token = Token(0);
pub const TCP_LISTENER: Token = Token(1);
/// The first client token; the ones below are the loop's own sources.
const FIRST_CONN: usize = 16;
/// How often a listener whose backlog could not be accepted (no file descriptor left) is
/// tried again when no connection closes meanwhile (fds may come back from elsewhere).
const STARVED_RETRY: Duration = Duration::from_millis(500);

/// The connections held when a client is to be admitted.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    pub all: usize,
    pub tcp: usize,
}

/// The slots of `max_connections` that TCP peers cannot take when TCP is on: a quarter, so a
/// flood of TCP peers (keyless ones included: they are only refused once their head arrives)
/// still leaves room for the local clients of the Unix socket.
pub fn unix_reserve(max_connections: usize) -> usize {
    max_connections / 4
}

pub struct Admission {
    cfg: Arc<Config>,
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
    limits: Limits,
    max_connections: usize,
    /// The most TCP connections held at once (`max_connections` less the Unix reserve).
    max_tcp: usize,
    /// Listeners whose accept failed for want of resources (EMFILE, ENFILE, ENOBUFS): their
    /// backlog raises no new edge, so they are retried when a connection closes or at
    /// `starved_retry`.
    starved: Vec<Token>,
    starved_retry: Option<Instant>,
    /// Starving was logged at warn level; reset by the next successful accept.
    starved_warned: bool,
    next_token: usize,
    /// Listeners whose backlog waits: the connection limit was reached, and clients that hung up
    /// may be holding slots whose hangup is in this event batch or the next one.
    deferred: Vec<Token>,
    /// Whether the loop has already polled once more (without waiting) for those hangups.
    deferral_polled: bool,
    /// Whole answers sent at accept time, built once from their `ApiError`.
    forbidden: Vec<u8>,
    too_many: Vec<u8>,
}

/// The whole bytes of a response that closes its connection.
fn canned(response: &FullResponse) -> Vec<u8> {
    let mut out = Vec::new();
    http::write_response(
        &mut out,
        response.status,
        &[("Content-Type", response.content_type)],
        &response.body,
        false,
        Version::Http11,
    );
    out
}

impl Admission {
    pub fn new(
        registry: &Registry,
        mut unix: UnixListener,
        mut tcp: Option<TcpListener>,
        cfg: Arc<Config>,
        limits: Limits,
    ) -> io::Result<Admission> {
        registry.register(&mut unix, UNIX_LISTENER, Interest::READABLE)?;
        if let Some(l) = tcp.as_mut() {
            registry.register(l, TCP_LISTENER, Interest::READABLE)?;
        }
        Ok(Admission {
            max_connections: cfg.max_connections,
            max_tcp: cfg.max_connections - unix_reserve(cfg.max_connections),
            starved: Vec::with_capacity(2),
            starved_retry: None,
            starved_warned: false,
            cfg,
            unix: Some(unix),
            tcp,
            limits,
            next_token: FIRST_CONN,
            deferred: Vec::with_capacity(2),
            deferral_polled: false,
            forbidden: canned(&ApiError::forbidden().response()),
            too_many: canned(&ApiError::too_many_connections().response()),
        })
    }

    /// Stops accepting for good (shutdown).
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut l) = self.unix.take() {
            let _ = registry.deregister(&mut l);
        }
        if let Some(mut l) = self.tcp.take() {
            let _ = registry.deregister(&mut l);
        }
        self.deferred.clear();
        self.starved.clear();
        self.starved_retry = None;
    }

    /// When starved listeners are next tried, if any are.
    pub fn starved_retry(&self) -> Option<Instant> {
        self.starved_retry
    }

    /// The starved listeners to try again: all of them once a connection closed
    /// (`freed`) or the retry time passed.
    pub fn take_starved(&mut self, freed: bool, now: Instant) -> Vec<Token> {
        if self.starved.is_empty() || !(freed || self.starved_retry.is_some_and(|t| t <= now)) {
            return Vec::new();
        }
        self.starved_retry = None;
        std::mem::take(&mut self.starved)
    }

    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The deferred listeners to accept from now: once a slot is free, or after one more poll
    /// when the limit still holds (then `next` refuses with a 503: a client that hung up must
    /// not cost a waiting one its slot, but nobody waits forever).
    pub fn take_deferred(&mut self, open: Open) -> Vec<Token> {
        if self.deferred.is_empty() {
            return Vec::new();
        }
        let full = open.all >= self.max_connections
            || (self.deferred.contains(&TCP_LISTENER) && open.tcp >= self.max_tcp);
        if full && !self.deferral_polled {
            self.deferral_polled = true;
            return Vec::new();
        }
        self.deferral_polled = false;
        std::mem::take(&mut self.deferred)
    }

    /// Accepts the next connection of `listener`'s backlog and registers it, with `open`
    /// connections already held. At the limit (for TCP, its share of it), the backlog is
    /// deferred unless this is the deferred pass (`after_reap`), which refuses with a canned
    /// 503. A Unix peer the allow lists refuse gets a connection that only delivers a 403; it
    /// holds a slot like any other. `None`: the backlog is empty or waits.
    pub fn next(
        &mut self,
        listener: Token,
        registry: &Registry,
        open: Open,
        after_reap: bool,
        metrics: &mut Metrics,
        now: Instant,
    ) -> Option<(Token, Conn)> {
        let full = open.all >= self.max_connections
            || (listener == TCP_LISTENER && open.tcp >= self.max_tcp);
        loop {
            if !after_reap && full {
                if !self.deferred.contains(&listener) {
                    self.deferred.push(listener);
                }
                return None;
            }
            let (mut stream, peer) = self.accept(listener, now)?;
            let allowed = match peer {
                Peer::Unix(cred) if !cred.allowed(&self.cfg.allow_uid, &self.cfg.allow_gid) => {
                    log::debug!("refused uid {} gid {} pid {}", cred.uid, cred.gid, cred.pid);
                    false
                }
                _ => true,
            };
            if full {
                log::debug!(
                    "connection limit ({} in all, {} over TCP) reached; refusing a client",
                    self.max_connections,
                    self.max_tcp
                );
                let _ = stream.write(&self.too_many);
                metrics.connection_refused();
                continue;
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            log::trace!("accepted {peer:?} as {token:?}");
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                log::warn!("cannot register a client: {e}");
                return None;
            }
            let conn = if allowed {
                metrics.connection_accepted();
                Conn::new(stream, peer, self.limits, now)
            } else {
                metrics.connection_refused();
                Conn::refusal(stream, peer, &self.forbidden, now)
            };
            return Some((token, conn));
        }
    }

    /// One connection from the listener's backlog with its peer; `None` when there is none
    /// (or accepting fails: EMFILE and friends mark the listener starved).
    fn accept(&mut self, listener: Token, now: Instant) -> Option<(Stream, Peer)> {
        loop {
            let accepted = match (listener, &self.unix, &self.tcp) {
                (UNIX_LISTENER, Some(l), _) => l.accept().map(|(s, _)| Stream::Unix(s)),
                (TCP_LISTENER, _, Some(l)) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                _ => return None,
            };
            let stream = match accepted {
                Ok(stream) => {
                    self.starved_warned = false;
                    stream
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up while in the backlog: take the next one.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    if !self.starved_warned {
                        self.starved_warned = true;
                        log::warn!("accept failed: {e}; trying again as connections close");
                    } else {
                        log::debug!("accept failed again: {e}");
                    }
                    if !self.starved.contains(&listener) {
                        self.starved.push(listener);
                    }
                    self.starved_retry = Some(now + STARVED_RETRY);
                    return None;
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
            return Some((stream, peer));
        }
    }

    /// A TCP client must present the API key, when one is configured, as `Authorization:
    /// Bearer`; Unix-socket clients were checked by their credentials at accept time.
    pub fn authorize(&self, peer: Peer, req: &Request) -> Result<(), ApiError> {
        let (Peer::Tcp(addr), Some(_)) = (peer, &self.cfg.api_key) else {
            return Ok(());
        };
        let presented = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if self.cfg.api_key_matches(presented.as_bytes()) {
            Ok(())
        } else {
            log::debug!("missing or wrong API key from {addr}");
            Err(ApiError::unauthorized(Flavor::for_path(&req.path)))
        }
    }
}
