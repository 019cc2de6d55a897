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
use super::json;
use super::output::{Event, OutputFilter};
use super::params::WARNING_HEADER;
use super::responder::{Next, Responder, ResponseOut};
use super::tools::ToolCall;
use crate::engine::{EngineError, Finish, FinishReason};

/// Which part of an answer a piece of text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Content = 0,
    /// A leading think block.
    Reasoning = 1,
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
    /// Per part, a text event as serde wrote it around a placeholder for its text (see
    /// `text_event`).
    repeating: [Option<Template>; 2],
}

/// A text event serialized once with `PLACEHOLDER` as its text, split where the placeholder's
/// JSON string stands: the event for any text is `before`, the text as serde writes a JSON
/// string, then `after`.
#[derive(Debug)]
struct Template {
    before: Vec<u8>,
    after: Vec<u8>,
}

/// Serialized as a JSON string it is itself in quotes: nothing in it is escaped.
const PLACEHOLDER: &str = "rkllmd:text-of-this-event:c1f0";

impl Events {
    pub fn new(framing: Framing) -> Events {
        Events {
            framing,
            buf: Vec::new(),
            repeating: [None, None],
        }
    }

    /// Appends one event.
    pub fn event(&mut self, value: &impl Serialize) {
        Self::write_event(self.framing, &mut self.buf, value);
    }

    /// Appends one server-sent event with an `event:` line naming it (OpenAI's Responses
    /// stream names every event by its type).
    pub fn named(&mut self, name: &str, value: &impl Serialize) {
        debug_assert_eq!(self.framing, Framing::Sse);
        self.buf.extend_from_slice(b"event: ");
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b'\n');
        Self::write_event(self.framing, &mut self.buf, value);
    }

    fn write_event(framing: Framing, buf: &mut Vec<u8>, value: &impl Serialize) {
        if framing == Framing::Sse {
            buf.extend_from_slice(b"data: ");
        }
        json::write(buf, value);
        buf.extend_from_slice(match framing {
            Framing::Sse => b"\n\n",
            Framing::Ndjson => b"\n",
        });
    }

    /// Appends the event `event(text)` for one piece of text, for a format whose text events
    /// differ only in their text for the whole stream (and in which part they carry). The
    /// first event of each part is serialized whole, with a placeholder for the text, and
    /// kept; every event after it is that serialization with the text, written by serde as the
    /// JSON string it would write in place, where the placeholder stood. The per-token cost is
    /// then one string's escaping rather than every key and value of the event. When the
    /// placeholder does not stand exactly once (a model name containing it), every event is
    /// serialized whole.
    pub fn text_event<'a, V: Serialize>(
        &mut self,
        part: Part,
        text: &'a str,
        event: impl Fn(&'a str) -> V,
    ) {
        let slot = &mut self.repeating[part as usize];
        if slot.is_none() {
            *slot = Some(Self::template(self.framing, &event(PLACEHOLDER)));
        }
        match slot {
            Some(t) if !t.before.is_empty() => {
                self.buf.extend_from_slice(&t.before);
                json::write(&mut self.buf, text);
                self.buf.extend_from_slice(&t.after);
            }
            _ => Self::write_event(self.framing, &mut self.buf, &event(text)),
        }
    }

    /// The template of `value`, or an empty one when the placeholder is not there exactly once.
    fn template(framing: Framing, value: &impl Serialize) -> Template {
        let mut whole = Vec::new();
        Self::write_event(framing, &mut whole, value);
        let quoted = format!("\"{PLACEHOLDER}\"");
        let found: Vec<usize> = whole
            .windows(quoted.len())
            .enumerate()
            .filter(|(_, w)| *w == quoted.as_bytes())
            .map(|(i, _)| i)
            .collect();
        match found[..] {
            [at] => Template {
                before: whole[..at].to_vec(),
                after: whole[at + quoted.len()..].to_vec(),
            },
            _ => Template {
                before: Vec::new(),
                after: Vec::new(),
            },
        }
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

/// Every stream, SSE or NDJSON, asks proxies in front (nginx honours it; HAProxy does not
/// buffer anyway) to pass each event on as it comes rather than collect the response.
const UNBUFFERED: (&str, &str) = ("X-Accel-Buffering", "no");

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
    /// The event that ends a stream cut short, before `END`: by default the error in the API's
    /// shape.
    fn error(&mut self, err: &ApiError, events: &mut Events) {
        events.event(&err.body());
    }
}

/// The one mapping from how the engine ended a run to the reason clients see; `None` for an
/// answer that was cut short and must not look complete (the engine reports a deadline or a
/// shutdown as a failure; an abort for a client that left reaches no one).
pub fn finish_reason(reason: FinishReason) -> Option<&'static str> {
    match reason {
        FinishReason::Stop => Some("stop"),
        FinishReason::Length => Some("length"),
        FinishReason::Aborted => None,
    }
}

/// The responder for one generation in format `F`: the output filter, and the answer it
/// feeds (apart, so that the filter's events are written through the answer while the filter
/// is borrowed).
pub struct Generation<F> {
    /// Reasoning, content and tool calls out of the generated text; stop sequences.
    filter: OutputFilter,
    answer: Answer<F>,
}

/// What a generation has answered so far, and how it answers.
struct Answer<F> {
    format: F,
    stream: bool,
    /// Headers naming what the daemon could not honour; sent with the head or the answer.
    warnings: Vec<(&'static str, String)>,
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
            filter,
            answer: Answer {
                format,
                stream,
                warnings,
                head_sent: false,
                content: String::new(),
                reasoning: String::new(),
                calls: Vec::new(),
                events: Events::new(F::FRAMING),
            },
        }
    }
}

impl<F: Format> Answer<F> {
    /// Sends the stream's head on the first output, so a failure before it is a plain error.
    fn ensure_head(&mut self, out: &mut dyn ResponseOut) {
        if self.head_sent {
            return;
        }
        let headers: Vec<(&'static str, String)> = std::iter::once(&UNBUFFERED)
            .chain(F::STREAM_HEADERS)
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

    fn warning(&mut self, text: &str) {
        // The engine warns before the run's first text, so before the head goes out. A
        // preempted run warned already when it runs again: said once.
        let said = self.answer.warnings.iter().any(|(_, t)| t == text);
        if !self.answer.head_sent && !said {
            self.answer.warnings.push((WARNING_HEADER, text.to_owned()));
        }
    }

    fn text(&mut self, text: &str, out: &mut dyn ResponseOut) -> Next {
        let answer = &mut self.answer;
        self.filter.push(text, &mut |e| answer.on_event(e, out))
    }

    fn finished(&mut self, finish: &Finish, out: &mut dyn ResponseOut) {
        let filter = &mut self.filter;
        let answer = &mut self.answer;
        filter.finish(&mut |e| answer.on_event(e, out));
        let thought = filter.thought();
        let reason = match finish_reason(finish.reason) {
            Some(reason) => filter.reason(reason),
            // A stop sequence ended the answer before the abort did: it is complete.
            None if filter.stopped() => "stop",
            None => return answer.fail(&EngineError::Cancelled, out),
        };
        answer.finish(finish, thought, reason, out);
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        self.answer.fail(error, out);
    }
}

impl<F: Format> Answer<F> {
    fn finish(
        &mut self,
        finish: &Finish,
        thought: bool,
        reason: &'static str,
        out: &mut dyn ResponseOut,
    ) {
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

    fn fail(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        let err = ApiError::from_engine(F::FLAVOR, error);
        if self.head_sent {
            self.format.error(&err, &mut self.events);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A text event whose key names its part, as the formats' are.
    fn event<'a>(model: &'a str, part: Part, text: &'a str) -> Value<'a> {
        match part {
            Part::Content => Value::Content { model, text },
            Part::Reasoning => Value::Reasoning {
                model,
                reasoning: text,
            },
        }
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Value<'a> {
        Content { model: &'a str, text: &'a str },
        Reasoning { model: &'a str, reasoning: &'a str },
    }

    /// What `event` writes for the same value: the reference a template must reproduce.
    fn whole(framing: Framing, value: &impl Serialize) -> Vec<u8> {
        let mut events = Events::new(framing);
        events.event(value);
        events.take()
    }

    const TEXTS: [&str; 6] = [
        "plain",
        "",
        "quote \" backslash \\ newline \n tab \t",
        "control \u{1} \u{1f}",
        "unicode é 漢字 🙂",
        "rkllmd:text-of-this-event:c1f0",
    ];

    #[test]
    fn only_a_complete_answer_has_a_finish_reason() {
        assert_eq!(finish_reason(FinishReason::Stop), Some("stop"));
        assert_eq!(finish_reason(FinishReason::Length), Some("length"));
        assert_eq!(finish_reason(FinishReason::Aborted), None);
    }

    #[test]
    fn a_templated_text_event_is_byte_for_byte_what_serde_writes_whole() {
        for framing in [Framing::Sse, Framing::Ndjson] {
            let mut events = Events::new(framing);
            for part in [Part::Content, Part::Reasoning] {
                for text in TEXTS {
                    events.text_event(part, text, |t| event("m\"odel", part, t));
                    let expected = whole(framing, &event("m\"odel", part, text));
                    assert_eq!(
                        String::from_utf8(events.take()).unwrap(),
                        String::from_utf8(expected).unwrap(),
                        "{framing:?} {part:?} {text:?}"
                    );
                }
            }
            assert!(events
                .repeating
                .iter()
                .all(|t| t.as_ref().is_some_and(|t| !t.before.is_empty())));
        }
    }

    #[test]
    fn each_part_keeps_its_own_template() {
        #[derive(Serialize)]
        struct Delta<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            content: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reasoning: Option<&'a str>,
        }
        let delta = |part, t| match part {
            Part::Content => Delta {
                content: Some(t),
                reasoning: None,
            },
            Part::Reasoning => Delta {
                content: None,
                reasoning: Some(t),
            },
        };
        let mut events = Events::new(Framing::Ndjson);
        events.text_event(Part::Reasoning, "a", |t| delta(Part::Reasoning, t));
        events.text_event(Part::Content, "b", |t| delta(Part::Content, t));
        events.text_event(Part::Reasoning, "c", |t| delta(Part::Reasoning, t));
        let lines: Vec<serde_json::Value> = String::from_utf8(events.take())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                json!({"reasoning": "a"}),
                json!({"content": "b"}),
                json!({"reasoning": "c"})
            ]
        );
    }

    #[test]
    fn a_model_name_holding_the_placeholder_gets_whole_events() {
        let model = "x rkllmd:text-of-this-event:c1f0";
        // The placeholder then stands twice (as the model's text too, unquoted there) or is
        // not alone in its string: either way no template, and every event is still right.
        for model in [model, PLACEHOLDER] {
            let mut events = Events::new(Framing::Sse);
            for text in TEXTS {
                events.text_event(Part::Content, text, |t| event(model, Part::Content, t));
                assert_eq!(
                    events.take(),
                    whole(Framing::Sse, &event(model, Part::Content, text)),
                    "{model:?} {text:?}"
                );
            }
            if model == PLACEHOLDER {
                let template = events.repeating[Part::Content as usize].as_ref().unwrap();
                assert!(template.before.is_empty(), "placeholder twice: no template");
            }
        }
    }
}
