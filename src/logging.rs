//! Logging through `log`: env_logger on stderr by default, or syslog (`--syslog`) for init.d,
//! whose start-stop-daemon --background throws stdio away. `RUST_LOG` overrides the level.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

pub fn init(level: LevelFilter, syslog: bool) -> io::Result<()> {
    if syslog {
        let logger = Syslog::connect()?;
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

/// A minimal RFC 3164 client for the local syslog socket (facility daemon).
struct Syslog {
    sock: Mutex<Option<UnixDatagram>>,
    pid: u32,
}

const SYSLOG_PATHS: [&str; 2] = ["/dev/log", "/var/run/syslog"];
const FACILITY_DAEMON: u8 = 3;

impl Syslog {
    fn connect() -> io::Result<Syslog> {
        let sock = Self::open()?;
        Ok(Syslog {
            sock: Mutex::new(Some(sock)),
            pid: std::process::id(),
        })
    }

    fn open() -> io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
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
        let Ok(mut guard) = self.sock.lock() else {
            return;
        };
        // syslogd may have restarted (SIGHUP rotations): reconnect once and retry.
        let sent = guard
            .as_ref()
            .is_some_and(|s| s.send(line.as_bytes()).is_ok());
        if !sent {
            *guard = Self::open().ok();
            if let Some(s) = guard.as_ref() {
                let _ = s.send(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}
