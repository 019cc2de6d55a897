//! Sans-io HTTP/1.1: requests are parsed out of a connection's read buffer and responses are
//! written into its write buffer. Nothing here touches a socket, so every protocol rule can be
//! tested with plain bytes and the event loop only moves bytes.

mod chunked;
mod error;
mod head;
mod parser;
mod request;
mod response;

pub use self::chunked::{write_chunk, write_last_chunk, write_stream_head, StreamEncoding};
pub use self::error::HttpError;
pub use self::parser::{Progress, RequestParser};
pub use self::request::{Method, Request, Version};
pub use self::response::{reason, write_response, write_response_head, CONTINUE_100};

/// Header fields accepted in one request; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// Caps on what one request may make us buffer. Both are checked before the bytes they guard
/// are kept, so a client cannot grow a connection's buffer past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line, header fields and the blank line that ends them, plus any empty lines
    /// skipped before the request line.
    pub max_head_bytes: usize,
    /// Largest `Content-Length` accepted.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    }
}
