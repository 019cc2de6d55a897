//! One generation, whatever the API: the core that turns the engine's events into a response,
//! and the `Format` each API implements to give it its shape.
//!
//! The core owns what both APIs share: the output filter (reasoning, tool calls, stop
//! sequences), the answer accumulated when not streaming, the one finish-reason mapping, and the
//! response's life: the stream's head goes out lazily on the first output, so a failure before
//! it is a plain error response, and a failure after it is a last event in the stream. A format
//! only writes JSON: one event per piece of text or call, the stream's last events, or the whole
//! answer, through serde into a buffer the core reuses for every token.

use serde::Serialize;

use super::error::{ApiError, Flavor};
use super::full_response::FullResponse;
use super::output::{Event, OutputFilter};
use super::responder::{Next, Responder, ResponseOut};
use super::tools::ToolCall;
use crate::engine::{EngineError, Finish, FinishReason};

/// Which part of an answer a piece of text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Content,
    /// A leading think block.
    Reasoning,
}

/// How events are framed in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events: `data: {...}\n\n`.
    Sse,
    /// One JSON object a line.
    Ndjson,
}

/// A stream's events, written into a buffer that is reused for every token.
#[derive(Debug)]
pub struct Events {
    framing: Framing,
    buf: Vec<u8>,
}

impl Events {
    pub fn new(framing: Framing) -> Events {
        Events {
            framing,
            buf: Vec::new(),
        }
    }

    /// Appends one event.
    pub fn event(&mut self, value: &impl Serialize) {
        if self.framing == Framing::Sse {
            self.buf.extend_from_slice(b"data: ");
        }
        // Writing to a Vec cannot fail, and these values have no maps with non-string keys.
        let _ = serde_json::to_writer(&mut self.buf, value);
        self.buf.extend_from_slice(match self.framing {
            Framing::Sse => b"\n\n",
            Framing::Ndjson => b"\n",
        });
    }

    /// Appends bytes as they are (a stream's end marker).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Sends what was written, if anything, and empties the buffer.
    fn flush(&mut self, out: &mut dyn ResponseOut) {
        if !self.buf.is_empty() {
            out.chunk(&self.buf);
            self.buf.clear();
        }
    }

    #[cfg(test)]
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// How a generation ended, for the last events or the whole answer.
#[derive(Debug)]
pub struct Outcome<'a> {
    pub finish: &'a Finish,
    /// "stop" (the model ended, or a stop sequence did) or "length" (cut short).
    pub reason: &'static str,
    /// The whole content; empty when streamed (it went out as events).
    pub content: &'a str,
    /// The reasoning, when the answer opened with a think block and was not streamed.
    pub reasoning: Option<&'a str>,
    /// Every call the model made, streamed or not.
    pub calls: &'a [ToolCall],
}

/// One API's shape for a generation.
pub trait Format {
    /// Whose error shape failures take.
    const FLAVOR: Flavor;
    /// How the stream frames its events.
    const FRAMING: Framing;
    /// The stream's content type.
    const CONTENT_TYPE: &'static str;
    /// Headers a stream opens with, besides the request's warnings.
    const STREAM_HEADERS: &'static [(&'static str, &'static str)] = &[];
    /// What ends a stream after its last event (and after an error event).
    const END: &'static [u8] = b"";

    /// Events that open a stream, right after its head.
    fn open(&mut self, _events: &mut Events) {}
    /// One piece of text (the hot path).
    fn text(&mut self, part: Part, text: &str, events: &mut Events);
    /// One tool call; `index` counts the calls before it.
    fn call(&mut self, call: &ToolCall, index: usize, events: &mut Events);
    /// The stream's last events, before `END`.
    fn end(&mut self, outcome: &Outcome<'_>, events: &mut Events);
    /// The whole answer as one response, when not streaming.
    fn whole(&mut self, outcome: &Outcome<'_>) -> FullResponse;
}

/// The one mapping from how the engine ended a run to the reason clients see. A time limit or
/// an abort cut the answer short, as the token cap does.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Timeout | FinishReason::Aborted => "length",
    }
}

/// The responder for one generation in format `F`.
pub struct Generation<F> {
    format: F,
    stream: bool,
    /// Headers naming what the daemon could not honour; sent with the head or the answer.
    warnings: Vec<(&'static str, String)>,
    /// Reasoning, content and tool calls out of the generated text; stop sequences.
    filter: OutputFilter,
    /// The stream's head went out: errors must now travel inside the stream.
    head_sent: bool,
    content: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    events: Events,
}

impl<F: Format> Generation<F> {
    pub fn new(
        format: F,
        stream: bool,
        filter: OutputFilter,
        warnings: Vec<(&'static str, String)>,
    ) -> Generation<F> {
        Generation {
            format,
            stream,
            warnings,
            filter,
            head_sent: false,
            content: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
            events: Events::new(F::FRAMING),
        }
    }

    /// Sends the stream's head on the first output, so a failure before it is a plain error.
    fn ensure_head(&mut self, out: &mut dyn ResponseOut) {
        if self.head_sent {
            return;
        }
        let headers: Vec<(&'static str, String)> = F::STREAM_HEADERS
            .iter()
            .map(|&(name, value)| (name, value.to_owned()))
            .chain(self.warnings.iter().cloned())
            .collect();
        out.start_stream(200, F::CONTENT_TYPE, &headers);
        self.head_sent = true;
        self.format.open(&mut self.events);
        self.events.flush(out);
    }

    fn on_event(&mut self, event: Event<'_>, out: &mut dyn ResponseOut) {
        let (part, text) = match event {
            Event::Reasoning(text) => (Part::Reasoning, text),
            Event::Content(text) => (Part::Content, text),
            Event::Call(call) => {
                if self.stream {
                    self.ensure_head(out);
                    self.format.call(&call, self.calls.len(), &mut self.events);
                    self.events.flush(out);
                }
                self.calls.push(call);
                return;
            }
        };
        if text.is_empty() {
            return;
        }
        if self.stream {
            self.ensure_head(out);
            self.format.text(part, text, &mut self.events);
            self.events.flush(out);
        } else if part == Part::Reasoning {
            self.reasoning.push_str(text);
        } else {
            self.content.push_str(text);
        }
    }
}

impl<F: Format> Responder for Generation<F> {
    fn started(&mut self, _: &mut dyn ResponseOut) {}

    fn text(&mut self, text: &str, out: &mut dyn ResponseOut) -> Next {
        // Taken out for the call so that its borrowed events can be written through `self`.
        let mut filter = std::mem::take(&mut self.filter);
        let next = filter.push(text, &mut |e| self.on_event(e, out));
        self.filter = filter;
        next
    }

    fn finished(&mut self, finish: &Finish, out: &mut dyn ResponseOut) {
        let mut filter = std::mem::take(&mut self.filter);
        filter.finish(&mut |e| self.on_event(e, out));
        let thought = filter.thought();
        let reason = filter.reason(finish_reason(finish.reason));
        self.filter = filter;
        if self.stream {
            // The head is not out yet when the answer is empty.
            self.ensure_head(out);
        }
        // When streamed, the text went out as events: the content is empty.
        let outcome = Outcome {
            finish,
            reason,
            content: &self.content,
            reasoning: (thought && !self.stream).then_some(self.reasoning.as_str()),
            calls: &self.calls,
        };
        if self.stream {
            self.format.end(&outcome, &mut self.events);
            self.events.raw(F::END);
            self.events.flush(out);
            out.end_stream();
        } else {
            let response = self.format.whole(&outcome);
            out.full(response.with_headers(std::mem::take(&mut self.warnings)));
        }
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        let err = ApiError::from_engine(F::FLAVOR, error);
        if self.head_sent {
            self.events.event(&err.body());
            self.events.raw(F::END);
            self.events.flush(out);
            out.end_stream();
        } else {
            out.full(err.response());
        }
    }
}

#[cfg(test)]
pub mod testing {
    //! A `ResponseOut` that records what a responder does, for the formats' tests.

    use super::super::full_response::FullResponse;
    use super::super::responder::ResponseOut;
    use serde_json::Value;

    type Head = (u16, &'static str, Vec<(&'static str, String)>);

    #[derive(Default)]
    pub struct Capture {
        pub head: Option<Head>,
        pub body: Vec<u8>,
        pub ended: bool,
        pub full: Option<FullResponse>,
    }

    impl ResponseOut for Capture {
        fn start_stream(
            &mut self,
            status: u16,
            ct: &'static str,
            headers: &[(&'static str, String)],
        ) {
            assert!(self.head.is_none(), "head sent twice");
            self.head = Some((status, ct, headers.to_vec()));
        }
        fn chunk(&mut self, data: &[u8]) {
            assert!(self.head.is_some() && !self.ended, "chunk outside a stream");
            self.body.extend_from_slice(data);
        }
        fn end_stream(&mut self) {
            self.ended = true;
        }
        fn full(&mut self, response: FullResponse) {
            assert!(self.head.is_none(), "full response after a stream head");
            self.full = Some(response);
        }
    }

    impl Capture {
        /// The whole response as JSON, when it was not streamed.
        pub fn json(&self) -> Value {
            serde_json::from_slice(&self.full.as_ref().expect("a full response").body).unwrap()
        }
    }
}
