//! `rkllmd top`: a terminal view of a running daemon, redrawn every second from its `/health`
//! and `/metrics` (over the socket, or TCP with the API key). Plain ANSI: the cursor goes home
//! and the screen is cleared before each frame, so an interrupted `top` leaves a normal
//! terminal behind. The daemon does all the reading; `top` only asks.

mod fetch;
mod render;

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::config::TopSetup;
use fetch::Target;
pub use render::{parse_metrics, render, Frame, Sample};

const REFRESH: Duration = Duration::from_secs(1);
/// Columns when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;

/// Redraws until interrupted; returns only when the terminal is gone (a write fails).
pub fn run(setup: &TopSetup, out: &mut dyn Write) -> io::Error {
    let target = match setup.tcp {
        Some(addr) => Target::Tcp(addr),
        None => Target::Socket(setup.socket.clone()),
    };
    let key = setup.api_key.as_ref().map(|k| k.as_bytes());
    let shown = target.to_string();
    loop {
        let started = Instant::now();
        let frame = Frame {
            target: &shown,
            health: fetch::get(&target, "/health", key)
                .map_err(|e| format!("cannot reach the daemon: {e}"))
                .and_then(|(status, body)| match status {
                    // 503 says why it is not ready (loading, wedged, ...) in the same shape.
                    200 | 503 => {
                        serde_json::from_str(&body).map_err(|e| format!("/health is not JSON: {e}"))
                    }
                    s => Err(format!("/health answered {s}: {}", body.trim())),
                }),
            metrics: fetch::get(&target, "/metrics", key)
                .map_err(|e| format!("cannot reach the daemon: {e}"))
                .and_then(|(status, body)| match status {
                    200 => Ok(parse_metrics(&body)),
                    s => Err(format!("/metrics answered {s}: {}", body.trim())),
                }),
            width: width(),
        };
        let text = render(&frame);
        let written = out
            .write_all(b"\x1b[H\x1b[2J")
            .and_then(|()| out.write_all(text.as_bytes()))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            return e;
        }
        std::thread::sleep(REFRESH.saturating_sub(started.elapsed()));
    }
}

/// The terminal's columns, from the `TIOCGWINSZ` of standard output.
fn width() -> usize {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own; on a non-terminal it
    // fails and leaves it zeroed.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        DEFAULT_WIDTH
    }
}
