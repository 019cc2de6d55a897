//! A complete response: status, content type, extra headers and the whole body.

use serde::Serialize;

pub struct FullResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl FullResponse {
    /// The same JSON body as a stream of one NDJSON line, for clients that asked for a stream.
    #[must_use]
    pub fn as_ndjson_line(mut self) -> FullResponse {
        self.body.push(b'\n');
        FullResponse {
            content_type: "application/x-ndjson",
            ..self
        }
    }

    /// A JSON body; `value` is anything serde can write (a `json!` tree or a borrowed struct).
    pub fn json(status: u16, value: &impl Serialize) -> FullResponse {
        let mut body = Vec::with_capacity(128);
        super::json::write(&mut body, value);
        FullResponse::json_bytes(status, body)
    }

    /// A body already written as JSON.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> FullResponse {
        FullResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    /// The same response with `headers` added.
    #[must_use]
    pub fn with_headers(
        mut self,
        headers: impl IntoIterator<Item = (&'static str, String)>,
    ) -> FullResponse {
        self.headers.extend(headers);
        self
    }
}
