//! Streamed responses, whose length is unknown when the head is sent (token streaming).

use super::request::Version;
use super::response::{write_caller_headers, write_connection, write_status_line};

/// How a streamed body is framed, decided by `write_stream_head` from the client's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEncoding {
    /// HTTP/1.1: chunks, ended by the last chunk; the connection may carry on.
    Chunked,
    /// HTTP/1.0 has no chunks: raw bytes, and closing the connection ends the body.
    UntilClose,
}

impl StreamEncoding {
    /// Writes one piece of the body in this framing.
    pub fn write_data(self, out: &mut Vec<u8>, data: &[u8]) {
        match self {
            StreamEncoding::Chunked => write_chunk(out, data),
            StreamEncoding::UntilClose => out.extend_from_slice(data),
        }
    }

    /// Writes whatever ends the body; for `UntilClose` the caller closes after flushing.
    pub fn write_end(self, out: &mut Vec<u8>) {
        match self {
            StreamEncoding::Chunked => write_last_chunk(out),
            StreamEncoding::UntilClose => {}
        }
    }

    /// Whether the connection must close once the body is flushed, whatever the client asked.
    pub fn ends_by_close(self) -> bool {
        self == StreamEncoding::UntilClose
    }
}

/// The head of a streamed response. For 1.0 the body can only end by closing, so the
/// response says `Connection: close` even when the client asked for keep-alive.
pub fn write_stream_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    version: Version,
    keep_alive: bool,
) -> StreamEncoding {
    write_status_line(out, status);
    let encoding = match version {
        Version::Http11 => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            write_connection(out, keep_alive, version);
            StreamEncoding::Chunked
        }
        Version::Http10 => {
            write_connection(out, false, version);
            StreamEncoding::UntilClose
        }
    };
    write_caller_headers(out, headers);
    out.extend_from_slice(b"\r\n");
    encoding
}

/// One chunk. Empty data writes nothing, because an empty chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The zero-length chunk and empty trailer that end a chunked body.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn http11_stream_head_is_chunked() {
        let mut out = Vec::new();
        let encoding = write_stream_head(
            &mut out,
            200,
            &[("Content-Type", "text/event-stream")],
            Version::Http11,
            true,
        );
        assert_eq!(encoding, StreamEncoding::Chunked);
        assert!(!encoding.ends_by_close());
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
        );
    }

    #[test]
    fn http11_stream_head_without_keep_alive_says_close() {
        let mut out = Vec::new();
        let encoding = write_stream_head(&mut out, 200, &[], Version::Http11, false);
        assert_eq!(encoding, StreamEncoding::Chunked);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn http10_stream_ends_by_close() {
        let mut out = Vec::new();
        let encoding = write_stream_head(
            &mut out,
            200,
            &[("Content-Type", "application/x-ndjson")],
            Version::Http10,
            true,
        );
        assert_eq!(encoding, StreamEncoding::UntilClose);
        assert!(encoding.ends_by_close());
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\n\r\n"
        );
    }

    #[test]
    fn chunk_framing() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"0123456789");
        write_chunk(&mut out, b"");
        write_chunk(&mut out, b"x");
        write_last_chunk(&mut out);
        assert_eq!(text(&out), "a\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n");

        let mut out = Vec::new();
        write_chunk(&mut out, &[b'y'; 4096]);
        assert!(out.starts_with(b"1000\r\nyyyy"));
        assert!(out.ends_with(b"yyyy\r\n"));
        assert_eq!(out.len(), 6 + 4096 + 2);
    }

    #[test]
    fn encoding_writes_data_and_end() {
        let mut chunked = Vec::new();
        StreamEncoding::Chunked.write_data(&mut chunked, b"hi");
        StreamEncoding::Chunked.write_data(&mut chunked, b"");
        StreamEncoding::Chunked.write_end(&mut chunked);
        assert_eq!(text(&chunked), "2\r\nhi\r\n0\r\n\r\n");

        let mut raw = Vec::new();
        StreamEncoding::UntilClose.write_data(&mut raw, b"hi");
        StreamEncoding::UntilClose.write_end(&mut raw);
        assert_eq!(text(&raw), "hi");
    }

    #[test]
    fn hex_lengths() {
        for (n, hex) in [
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (255, "ff"),
            (65536, "10000"),
        ] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(text(&out), hex);
        }
        let mut out = Vec::new();
        push_hex(&mut out, usize::MAX);
        assert_eq!(text(&out), format!("{:x}", usize::MAX));
    }
}
