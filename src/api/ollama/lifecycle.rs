//! Ollama's load and unload calls: a chat with no messages or a generate with no prompt loads
//! the model (`done_reason: "load"`); with `keep_alive: 0` it unloads it (`"unload"`). Each is
//! a job, so it waits its turn behind the generations queued before it.

use super::format::OllamaFormat;
use crate::api::error::{ApiError, Flavor};
use crate::api::responder::{Next, Responder, ResponseOut};
use crate::engine::{EngineError, Finish};

pub(super) struct Lifecycle {
    format: OllamaFormat,
    stream: bool,
    /// "load" or "unload".
    reason: &'static str,
}

impl Lifecycle {
    pub(super) fn new(format: OllamaFormat, stream: bool, reason: &'static str) -> Lifecycle {
        Lifecycle {
            format,
            stream,
            reason,
        }
    }
}

impl Responder for Lifecycle {
    fn started(&mut self, _out: &mut dyn ResponseOut) {}

    fn text(&mut self, _text: &str, _out: &mut dyn ResponseOut) -> Next {
        Next::Continue
    }

    fn finished(&mut self, _finish: &Finish, out: &mut dyn ResponseOut) {
        let reply = self.format.lifecycle_reply(self.reason);
        // Streamed: one NDJSON line, for clients that read lines.
        out.full(if self.stream {
            reply.as_ndjson_line()
        } else {
            reply
        });
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        out.full(ApiError::from_engine(Flavor::Ollama, error).response());
    }
}
