//! Logging through `log`: `env_logger` on stderr by default, or syslog (`--syslog`) for init.d,
//! whose start-stop-daemon --background throws stdio away. `RUST_LOG` overrides the level.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

pub fn init(level: LevelFilter, syslog: bool) -> io::Result<()> {
    if syslog {
        let logger = Syslog::connect();
        let level = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(level);
        log::set_max_level(level);
        log::set_boxed_logger(Box::new(logger)).map_err(io::Error::other)
    } else {
        env_logger::Builder::new()
            .filter_level(level)
            .parse_env("RUST_LOG")
            .format_target(false)
            .try_init()
            .map_err(io::Error::other)
    }
}

/// A minimal RFC 3164 client for the local syslog socket (facility daemon). Lines go to stderr
/// while no syslog daemon listens (started before it, or it died), never to nowhere: the
/// socket is looked for again at most once a second.
struct Syslog {
    sink: Mutex<Sink>,
    pid: u32,
}

struct Sink {
    sock: Option<UnixDatagram>,
    last_try: Instant,
}

const SYSLOG_PATHS: [&str; 2] = ["/dev/log", "/var/run/syslog"];
const FACILITY_DAEMON: u8 = 3;
const RETRY_EVERY: Duration = Duration::from_secs(1);

impl Syslog {
    fn connect() -> Syslog {
        let sock = match Self::open() {
            Ok(sock) => Some(sock),
            Err(e) => {
                eprintln!("rkllmd: no syslog socket ({e}); logging to stderr until one appears");
                None
            }
        };
        Syslog {
            sink: Mutex::new(Sink {
                sock,
                last_try: Instant::now(),
            }),
            pid: std::process::id(),
        }
    }

    fn open() -> io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        if let Some(path) = std::env::var_os("RKLLMD_SYSLOG_SOCKET") {
            sock.connect(path)?;
            return Ok(sock);
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no syslog socket found");
        for path in SYSLOG_PATHS {
            match sock.connect(path) {
                Ok(()) => return Ok(sock),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn severity(level: Level) -> u8 {
        match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        }
    }
}

impl Sink {
    /// Sends one datagram, reconnecting when the socket is gone (syslogd restarted) and the
    /// last attempt is over a second old. False when the line could not be sent now.
    fn send(&mut self, line: &[u8]) -> bool {
        if let Some(sock) = &self.sock {
            match sock.send(line) {
                Ok(_) => return true,
                // A syslogd that does not keep up must not stall the event loop.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {}
            }
        }
        let now = Instant::now();
        if self.sock.is_none() && now.duration_since(self.last_try) < RETRY_EVERY {
            return false;
        }
        self.last_try = now;
        self.sock = Syslog::open().ok();
        self.sock.as_ref().is_some_and(|s| s.send(line).is_ok())
    }
}

impl Log for Syslog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let pri = FACILITY_DAEMON * 8 + Self::severity(record.level());
        let line = format!("<{pri}>rkllmd[{}]: {}", self.pid, record.args());
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        if !sink.send(line.as_bytes()) {
            eprintln!("rkllmd[{}]: {} {}", self.pid, record.level(), record.args());
        }
    }

    fn flush(&self) {}
}
