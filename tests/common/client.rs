//! A deliberately small HTTP/1.1 client for tests: raw bytes in, parsed responses out.
//!
//! Two layers. The `try_` methods return a [`ClientError`] and never panic: the soak's clients
//! record a failure and go on. The plain methods wrap them and panic with the error, which is
//! what a test wants.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a read or a write may block before the client gives up on the daemon.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub type Headers = Vec<(String, String)>;

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(on),
            Conn::Tcp(s) => s.set_nonblocking(on),
        }
    }

    fn set_timeouts(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
            Conn::Tcp(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
        }
    }

    fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }
}

/// Dropping a client hangs up at once, whatever else holds the socket: a child process that
/// another test is spawning holds a copy of every descriptor until it executes its program, so
/// closing ours alone may leave the daemon waiting for that (seen under load as hundreds of
/// "open" connections in `thousands_of_clients_come_and_go_without_leaking`).
impl Drop for Conn {
    fn drop(&mut self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Conn {
    /// Retries a read a signal interrupted: a blocking read with a timeout returns EINTR when the
    /// process is stopped and resumed (as a frozen and thawed container is), handler or not.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let got = match self {
                Conn::Unix(s) => s.read(buf),
                Conn::Tcp(s) => s.read(buf),
            };
            match got {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a `try_` call failed.
#[derive(Debug)]
pub enum ClientError {
    /// A socket call failed; `op` says which ("connect", "read", "write", ...).
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    /// The daemon sent something that is not well-formed HTTP/1.1, or stopped inside it.
    Http(String),
}

impl ClientError {
    fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
        move |source| ClientError::Io { op, source }
    }

    fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Io { source, .. } => Some(source.kind()),
            ClientError::Http(_) => None,
        }
    }

    /// A non-blocking socket had nothing to give or take.
    pub fn is_would_block(&self) -> bool {
        self.kind() == Some(ErrorKind::WouldBlock)
    }

    /// The daemon had already closed the connection (a reset, or a write to a closed socket).
    pub fn is_reset(&self) -> bool {
        matches!(
            self.kind(),
            Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
        )
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io { op, source } => write!(f, "{op}: {source}"),
            ClientError::Http(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io { source, .. } => Some(source),
            ClientError::Http(_) => None,
        }
    }
}

/// Lets a caller that keeps its failures as sentences use `?` on the client.
impl From<ClientError> for String {
    fn from(e: ClientError) -> String {
        e.to_string()
    }
}

type Result<T> = std::result::Result<T, ClientError>;

fn http<T>(what: impl Into<String>) -> Result<T> {
    Err(ClientError::Http(what.into()))
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn try_json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ClientError::Http(format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            ))
        })
    }

    pub fn json(&self) -> serde_json::Value {
        self.try_json().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// The bytes of a JSON POST request.
pub fn post_request(path: &str, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: rkllmd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub struct Client {
    pub conn: Conn,
    buf: Vec<u8>,
    /// Bytes per `read()`: 1 for a slow reader.
    read_size: usize,
    /// A slow reader sleeps 1 ms after every this many bytes (0: never).
    pause_every: usize,
    since_pause: usize,
}

impl Client {
    fn new(conn: Conn) -> Client {
        Client {
            conn,
            buf: Vec::new(),
            read_size: 16384,
            pause_every: 0,
            since_pause: 0,
        }
    }

    // ---- the fallible layer: errors are returned, never panicked on ------------------------

    /// A fresh connection, with `IO_TIMEOUT` on reads and writes.
    fn connected(conn: Conn) -> Result<Client> {
        conn.set_timeouts(Some(IO_TIMEOUT))
            .map_err(ClientError::io("set a timeout"))?;
        Ok(Client::new(conn))
    }

    pub fn try_unix(path: &Path) -> Result<Client> {
        let s = UnixStream::connect(path).map_err(ClientError::io("connect"))?;
        Client::connected(Conn::Unix(s))
    }

    pub fn try_tcp(addr: &str) -> Result<Client> {
        let s = TcpStream::connect(addr).map_err(ClientError::io("connect"))?;
        Client::connected(Conn::Tcp(s))
    }

    /// From now on reads `read_size` bytes at a time and sleeps 1 ms after every `pause_every`
    /// bytes (0: never): a slow reader.
    pub fn read_slowly(&mut self, read_size: usize, pause_every: usize) {
        self.read_size = read_size.max(1);
        self.pause_every = pause_every;
    }

    /// Reads and writes wait at most `timeout` from now on (`IO_TIMEOUT` by default): for a
    /// request whose parsing alone takes a debug build long on a loaded machine.
    pub fn try_set_io_timeout(&self, timeout: Duration) -> Result<()> {
        self.conn
            .set_timeouts(Some(timeout))
            .map_err(ClientError::io("set a timeout"))
    }

    pub fn try_set_nonblocking(&self, on: bool) -> Result<()> {
        self.conn
            .set_nonblocking(on)
            .map_err(ClientError::io("set non-blocking"))
    }

    /// Shuts our write side: the daemon reads EOF.
    pub fn try_shutdown_write(&self) -> Result<()> {
        self.conn
            .shutdown_write()
            .map_err(ClientError::io("shutdown"))
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> Result<()> {
        self.conn.write_all(bytes).map_err(ClientError::io("write"))
    }

    /// Reads more into the buffer; false at EOF. What arrives stays buffered for the reads below.
    pub fn try_fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 16384];
        let want = self.read_size.min(chunk.len());
        let n = self
            .conn
            .read(&mut chunk[..want])
            .map_err(ClientError::io("read"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        if self.pause_every > 0 {
            self.since_pause += n;
            if self.since_pause >= self.pause_every {
                self.since_pause = 0;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(n > 0)
    }

    /// One CRLF-terminated line; None at EOF before any of it.
    fn try_line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(Some(line));
            }
            if !self.try_fill()? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    http(format!(
                        "EOF inside a line: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                };
            }
        }
    }

    fn try_need_line(&mut self) -> Result<String> {
        match self.try_line()? {
            Some(line) => Ok(line),
            None => http("EOF where a line was due"),
        }
    }

    /// The status and headers of the next final response (1xx interim responses, which the
    /// daemon sends for `Expect: 100-continue`, are skipped); None when the connection closes
    /// before a status line.
    pub fn try_read_head(&mut self) -> Result<Option<(u16, Headers)>> {
        loop {
            let Some(status_line) = self.try_line()? else {
                return Ok(None);
            };
            let Some(status) = status_line
                .strip_prefix("HTTP/1.1 ")
                .and_then(|s| s.get(..3))
                .and_then(|s| s.parse::<u16>().ok())
            else {
                return http(format!("bad status line {status_line:?}"));
            };
            let mut headers = Vec::new();
            loop {
                let line = self.try_need_line()?;
                if line.is_empty() {
                    break;
                }
                let Some((k, v)) = line.split_once(':') else {
                    return http(format!("bad header line {line:?}"));
                };
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            if !(100..200).contains(&status) {
                return Ok(Some((status, headers)));
            }
        }
    }

    /// One chunk of a chunked body; None at the last chunk.
    pub fn try_read_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let size_line = self.try_need_line()?;
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return http(format!("bad chunk size {size_line:?}"));
        };
        if size == 0 {
            let end = self.try_need_line()?;
            return if end.is_empty() {
                Ok(None)
            } else {
                http(format!("trailer after the last chunk: {end:?}"))
            };
        }
        while self.buf.len() < size + 2 {
            if !self.try_fill()? {
                return http("EOF inside a chunk");
            }
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        if self.buf.drain(..2).as_slice() != b"\r\n" {
            return http("chunk not followed by CRLF");
        }
        Ok(Some(data))
    }

    /// One whole response, its body framed by Content-Length, chunked encoding, or else the
    /// connection's end; None when the connection closes before a status line.
    pub fn try_read_response(&mut self) -> Result<Option<Response>> {
        let Some((status, headers)) = self.try_read_head()? else {
            return Ok(None);
        };
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = r.header("content-length") {
            let Ok(len) = len.parse::<usize>() else {
                return http(format!("bad Content-Length {len:?}"));
            };
            while self.buf.len() < len {
                if !self.try_fill()? {
                    return http("EOF inside a body");
                }
            }
            r.body = self.buf.drain(..len).collect();
        } else if r
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            while let Some(chunk) = self.try_read_chunk()? {
                r.body.extend_from_slice(&chunk);
            }
        } else {
            while self.try_fill()? {}
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(Some(r))
    }

    /// True when the daemon has closed the connection and sent nothing more; false when a
    /// byte arrives or was already buffered.
    pub fn try_is_closed(&mut self) -> Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        Ok(!self.try_fill()? && self.buf.is_empty())
    }

    // ---- the panicking layer, for tests -------------------------------------------------------

    pub fn unix(path: &Path) -> Client {
        Client::try_unix(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn tcp(addr: &str) -> Client {
        Client::try_tcp(addr).unwrap_or_else(|e| panic!("{addr}: {e}"))
    }

    /// Wraps a stream as it is: no timeouts are set.
    pub fn from_stream(s: UnixStream) -> Client {
        Client::new(Conn::Unix(s))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("sending a request: {e}"));
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send_raw(format!("GET {path} HTTP/1.1\r\nHost: rkllmd\r\n\r\n").as_bytes());
        self.read_response()
    }

    pub fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Response {
        self.send_post(path, body);
        self.read_response()
    }

    pub fn send_post(&mut self, path: &str, body: &serde_json::Value) {
        self.send_raw(&post_request(path, body));
    }

    /// Status and headers; None when the connection closes before a status line.
    pub fn read_head(&mut self) -> Option<(u16, Headers)> {
        self.try_read_head()
            .unwrap_or_else(|e| panic!("reading a response head: {e}"))
    }

    /// One chunk of a chunked body; None at the last chunk.
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        self.try_read_chunk()
            .unwrap_or_else(|e| panic!("reading a chunk: {e}"))
    }

    /// One whole response; panics if the connection closes before a status line.
    pub fn read_response(&mut self) -> Response {
        self.read_response_or_close()
            .expect("connection closed before a response")
    }

    /// One whole response; None when the connection closes before a status line.
    pub fn read_response_or_close(&mut self) -> Option<Response> {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// True when the server closed the connection (read returns EOF).
    pub fn is_closed(&mut self) -> bool {
        self.try_is_closed()
            .unwrap_or_else(|e| panic!("waiting for the close: {e}"))
    }
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        // An event's `data:` line; other lines (`event:` names) are skipped.
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}
