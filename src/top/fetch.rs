//! One blocking GET to the daemon, over its Unix socket or TCP: `top` asks twice a refresh and
//! waits for nothing else, so a plain request with `Connection: close` read to the end is
//! all it needs.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long one request may take before the frame says the daemon does not answer.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A /metrics page is a few KiB; more is not a daemon talking.
const MAX_RESPONSE: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub enum Target {
    Socket(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// `(status, body)` of `GET path`.
pub fn get(target: &Target, path: &str, api_key: Option<&[u8]>) -> io::Result<(u16, String)> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(key) = api_key {
        request.push_str("Authorization: Bearer ");
        request.push_str(&String::from_utf8_lossy(key));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut raw = Vec::new();
    match target {
        Target::Socket(p) => {
            let mut s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            s.take(MAX_RESPONSE).read_to_end(&mut raw)?;
        }
        Target::Tcp(a) => {
            let mut s = TcpStream::connect_timeout(a, TIMEOUT)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            s.take(MAX_RESPONSE).read_to_end(&mut raw)?;
        }
    }
    parse(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// The status and body of a whole response with a `Content-Length` (what rkllmd sends for
/// `/health` and `/metrics`).
fn parse(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        assert_eq!(
            parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"),
            Some((503, "{}".to_owned()))
        );
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(parse(b"garbage\r\n\r\n"), None);
    }
}
