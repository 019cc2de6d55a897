//! The output side of a connection: its write buffer and how the response being written is
//! framed. Kept apart from the rest of `Conn` so a responder (held in the connection's phase)
//! and the output it writes to can be borrowed at the same time.

use std::io::{self, Write};

use super::stream::Stream;
use crate::api::{FullResponse, ResponseOut};
use crate::http::{self, Request, StreamEncoding, Version};

pub struct Output {
    buf: Vec<u8>,
    /// How much of `buf` is already written to the socket.
    pos: usize,
    /// Keep-alive and version of the request being answered.
    keep_alive: bool,
    version: Version,
    /// The request being answered is a HEAD: responses carry their head only.
    head_only: bool,
    /// Set while a streamed body is open.
    encoding: Option<StreamEncoding>,
    /// Metrics label of the request being answered, and the status it got (taken when counted).
    endpoint: &'static str,
    status: Option<u16>,
}

impl Output {
    /// Bytes the buffer holds allocated, written or not.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn new() -> Output {
        Output {
            buf: Vec::new(),
            pos: 0,
            keep_alive: true,
            version: Version::Http11,
            head_only: false,
            encoding: None,
            endpoint: "other",
            status: None,
        }
    }

    /// Starts answering `req`; `keep_alive` is false when the daemon will close regardless.
    pub fn begin(&mut self, req: &Request, keep_alive: bool) {
        self.keep_alive = req.keep_alive && keep_alive;
        self.version = req.version;
        self.endpoint = crate::api::endpoint_label(&req.path);
        self.head_only = req.method == http::Method::Head;
        self.status = None;
    }

    /// Starts an answer to something that is not a parsed request (a refusal, a timeout): it
    /// is counted under "other" and closes the connection.
    pub fn begin_unparsed(&mut self) {
        self.keep_alive = false;
        self.endpoint = "other";
        self.head_only = false;
        self.status = None;
    }

    /// Queues bytes that are not part of a response (the interim `100 Continue`).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The daemon will close after the response in progress (shutdown).
    pub fn close_after_response(&mut self) {
        self.keep_alive = false;
    }

    /// The status of the response written since `begin`, once (so it is counted once).
    pub fn take_status(&mut self) -> Option<u16> {
        self.status.take()
    }

    /// The metrics label of the request being answered.
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Forgets what is still to be written.
    pub fn discard(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.encoding = None;
    }

    /// Writes until the buffer is empty or `WouldBlock`. Err means the peer is gone.
    pub fn flush_to(&mut self, stream: &mut Stream) -> io::Result<()> {
        while self.pos < self.buf.len() {
            match stream.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(())
    }
}

impl ResponseOut for Output {
    fn start_stream(
        &mut self,
        status: u16,
        content_type: &'static str,
        headers: &[(&'static str, String)],
    ) {
        let mut all: Vec<(&str, &str)> = vec![("Content-Type", content_type)];
        all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        let encoding =
            http::write_stream_head(&mut self.buf, status, &all, self.version, self.keep_alive);
        if encoding.ends_by_close() {
            self.keep_alive = false;
        }
        self.encoding = Some(encoding);
        self.status = Some(status);
    }

    fn chunk(&mut self, data: &[u8]) {
        match self.encoding {
            Some(encoding) => encoding.write_data(&mut self.buf, data),
            None => log::error!("a responder wrote a chunk before starting its stream"),
        }
    }

    fn end_stream(&mut self) {
        if let Some(encoding) = self.encoding.take() {
            encoding.write_end(&mut self.buf);
        }
    }

    fn full(&mut self, response: FullResponse) {
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", response.content_type)];
        headers.extend(response.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if self.head_only {
            http::write_response_head(
                &mut self.buf,
                response.status,
                &headers,
                response.body.len(),
                self.keep_alive,
                self.version,
            );
        } else {
            http::write_response(
                &mut self.buf,
                response.status,
                &headers,
                &response.body,
                self.keep_alive,
                self.version,
            );
        }
        self.status = Some(response.status);
    }
}
