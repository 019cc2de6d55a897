//! A deliberately small HTTP/1.1 client for tests: raw bytes in, parsed responses out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
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
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
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

pub struct Client {
    pub conn: Conn,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

impl Client {
    pub fn unix(path: &Path) -> Client {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client {
            conn: Conn::Unix(s),
            buf: Vec::new(),
        }
    }

    pub fn from_stream(s: UnixStream) -> Client {
        Client {
            conn: Conn::Unix(s),
            buf: Vec::new(),
        }
    }

    pub fn tcp(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client {
            conn: Conn::Tcp(s),
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("write request");
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
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: rkllmd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send_raw(head.as_bytes());
        self.send_raw(body.as_bytes());
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.conn.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("read response: {e}"),
        }
    }

    fn take_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads the status line and headers (skipping 1xx responses).
    pub fn read_head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        loop {
            let status_line = self.take_line()?;
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut headers = Vec::new();
            loop {
                let line = self.take_line()?;
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            if !(100..200).contains(&status) {
                return Some((status, headers));
            }
        }
    }

    /// Reads one whole response; panics if the connection closes before a status line.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .expect("connection closed before a response")
    }

    pub fn try_read_response(&mut self) -> Option<Response> {
        let (status, headers) = self.read_head()?;
        let resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let mut resp = resp;
        if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while self.buf.len() < len {
                assert!(self.fill(), "connection closed inside a body");
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            while let Some(chunk) = self.read_chunk() {
                resp.body.extend_from_slice(&chunk);
            }
        } else {
            while self.fill() {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Some(resp)
    }

    /// Reads one chunk of a chunked body; None at the last chunk.
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.take_line().expect("chunk size line");
        let size = usize::from_str_radix(size_line.trim(), 16).expect("hex chunk size");
        if size == 0 {
            let trailer = self.take_line();
            assert_eq!(
                trailer.as_deref(),
                Some(""),
                "chunked body must end with CRLF"
            );
            return None;
        }
        while self.buf.len() < size + 2 {
            assert!(self.fill(), "connection closed inside a chunk");
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(self.buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
        Some(data)
    }

    /// True when the server closed the connection (read returns EOF).
    pub fn is_closed(&mut self) -> bool {
        !self.fill()
    }
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}
