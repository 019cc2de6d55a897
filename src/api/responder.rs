//! The contract between a generation's events and the bytes a client receives.

use super::full_response::FullResponse;
use crate::engine::{EngineError, Finish};

/// Where a responder writes. The connection frames the stream (chunked for HTTP/1.1, raw until
/// close for HTTP/1.0) and owns keep-alive.
pub trait ResponseOut {
    fn start_stream(
        &mut self,
        status: u16,
        content_type: &'static str,
        headers: &[(&'static str, String)],
    );
    fn chunk(&mut self, data: &[u8]);
    fn end_stream(&mut self);
    fn full(&mut self, response: FullResponse);
}

/// What the responder wants after a piece of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// A stop sequence matched: end the generation (reported as a normal stop).
    Stop,
}

/// Formats one generation for one API. Exactly one of `finished` / `failed` is called last, and
/// it must complete the response (`end_stream` or `full`).
pub trait Responder {
    /// The runtime has started this request (it left the queue).
    fn started(&mut self, out: &mut dyn ResponseOut);
    /// A warning about how the request was run, before its first text: it goes out with the
    /// response's head (`X-Rkllmd-Warning`). Ignored by responders that have none to give.
    fn warning(&mut self, _text: &str) {}
    fn text(&mut self, text: &str, out: &mut dyn ResponseOut) -> Next;
    /// One input's embedding (embedding jobs only), in input order; `tokens`: its token count.
    fn embedding(&mut self, _vector: &[f32], _tokens: u32) {}
    fn finished(&mut self, finish: &Finish, out: &mut dyn ResponseOut);
    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut);
}
