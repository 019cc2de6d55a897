//! One generation as Ollama answers it: NDJSON lines (`application/x-ndjson`), one per piece of
//! text and a last one with `done: true` and the run's statistics; or, without streaming, that
//! last object alone carrying the whole text. A `<think>` block that opens the answer is sent as
//! `thinking` (in `message` for chat), never as content.

use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::clock::{rfc3339, write_rfc3339};
use super::FLAVOR;
use crate::api::error::ApiError;
use crate::api::full_response::FullResponse;
use crate::api::output::{Event, OutputFilter};
use crate::api::responder::{Next, Responder, ResponseOut};
use crate::api::tools::ToolCall;
use crate::engine::{EngineError, Finish, FinishReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Generate,
}

pub struct OllamaResponder {
    kind: Kind,
    /// The model as the request named it (Ollama echoes the name it was given).
    model: String,
    stream: bool,
    pub warnings: Vec<(&'static str, String)>,
    /// Thinking, content and tool calls out of the generated text; stop sequences.
    filter: OutputFilter,
    /// When the request was routed: `total_duration` runs from here.
    received: Instant,
    /// The stream's head went out: errors must now travel inside the stream.
    head_sent: bool,
    content: String,
    thinking: String,
    tool_calls: Vec<ToolCall>,
    /// Scratch buffer for one line, reused for every token.
    line: Vec<u8>,
}

impl OllamaResponder {
    pub fn new(kind: Kind, model: String, stream: bool, stops: Vec<String>) -> OllamaResponder {
        OllamaResponder {
            kind,
            model,
            stream,
            warnings: Vec::new(),
            filter: OutputFilter::new(true, None, stops),
            received: Instant::now(),
            head_sent: false,
            content: String::new(),
            thinking: String::new(),
            tool_calls: Vec::new(),
            line: Vec::new(),
        }
    }

    /// Turns `<tool_call>` blocks in the content into `message.tool_calls`.
    pub fn find_tool_calls(&mut self, job_id: u64) {
        self.filter.find_tool_calls(job_id);
    }

    /// The object every line starts from: model, time, and the text in this kind's fields.
    fn object(
        &self,
        text: &str,
        thinking: Option<&str>,
        done: bool,
        now: SystemTime,
    ) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("model".into(), json!(self.model));
        o.insert("created_at".into(), json!(rfc3339(now)));
        match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if let Some(t) = thinking {
                    message["thinking"] = json!(t);
                }
                o.insert("message".into(), message);
            }
            Kind::Generate => {
                o.insert("response".into(), json!(text));
                if let Some(t) = thinking {
                    o.insert("thinking".into(), json!(t));
                }
            }
        }
        o.insert("done".into(), json!(done));
        o
    }

    /// The answer to a load call: done at once, nothing generated.
    pub fn load_reply(&self) -> Value {
        let mut o = self.object("", None, true, SystemTime::now());
        o.insert("done_reason".into(), json!("load"));
        Value::Object(o)
    }

    /// The hot path: one line per piece of text, written without building a JSON tree. Must
    /// equal `object(text, None, false, now)`, or for thinking `object("", Some(text), ..)`
    /// (see the test).
    fn write_text_line(
        &mut self,
        thinking: bool,
        text: &str,
        now: SystemTime,
        out: &mut dyn ResponseOut,
    ) {
        let l = &mut self.line;
        l.clear();
        l.extend_from_slice(b"{\"model\":");
        let _ = serde_json::to_writer(&mut *l, &self.model);
        l.extend_from_slice(b",\"created_at\":\"");
        write_rfc3339(l, now);
        match self.kind {
            Kind::Chat => {
                l.extend_from_slice(b"\",\"message\":{\"role\":\"assistant\",\"content\":")
            }
            Kind::Generate => l.extend_from_slice(b"\",\"response\":"),
        }
        if thinking {
            l.extend_from_slice(b"\"\",\"thinking\":");
        }
        let _ = serde_json::to_writer(&mut *l, text);
        match self.kind {
            Kind::Chat => l.extend_from_slice(b"},\"done\":false}\n"),
            Kind::Generate => l.extend_from_slice(b",\"done\":false}\n"),
        }
        out.chunk(&self.line);
    }

    fn send(out: &mut dyn ResponseOut, value: &Value) {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        out.chunk(&line);
    }

    /// Sends the stream's head on the first output, so a failure before it is a plain error.
    fn ensure_head(&mut self, out: &mut dyn ResponseOut) {
        if !self.head_sent {
            out.start_stream(200, "application/x-ndjson", &self.warnings);
            self.head_sent = true;
        }
    }

    fn emit(&mut self, thinking: bool, text: &str, out: &mut dyn ResponseOut) {
        if text.is_empty() {
            return;
        }
        if self.stream {
            self.ensure_head(out);
            self.write_text_line(thinking, text, SystemTime::now(), out);
        } else if thinking {
            self.thinking.push_str(text);
        } else {
            self.content.push_str(text);
        }
    }

    fn on_event(&mut self, event: Event<'_>, out: &mut dyn ResponseOut) {
        match event {
            Event::Reasoning(text) => self.emit(true, text, out),
            Event::Content(text) => self.emit(false, text, out),
            Event::Call(call) => self.emit_call(call, out),
        }
    }

    /// A call goes out on its own line when streaming, else in the last object.
    fn emit_call(&mut self, call: ToolCall, out: &mut dyn ResponseOut) {
        if self.stream {
            self.ensure_head(out);
            let mut o = self.object("", None, false, SystemTime::now());
            if let Some(m) = o.get_mut("message") {
                m["tool_calls"] = json!([ollama_call(&call)]);
            }
            Self::send(out, &Value::Object(o));
        }
        self.tool_calls.push(call);
    }

    /// The last object: the whole text (and thinking, when the answer had it) when not
    /// streaming (empty after a stream), the reason, and the statistics.
    fn last(&self, finish: &Finish, reason: &str, now: SystemTime) -> Value {
        let (text, thinking) = if self.stream {
            ("", None)
        } else {
            let thinking = self.filter.thought().then_some(self.thinking.as_str());
            (self.content.as_str(), thinking)
        };
        let mut o = self.object(text, thinking, true, now);
        if !self.stream && !self.tool_calls.is_empty() {
            if let Some(m) = o.get_mut("message") {
                let calls: Vec<Value> = self.tool_calls.iter().map(ollama_call).collect();
                m["tool_calls"] = json!(calls);
            }
        }
        o.insert("done_reason".into(), json!(reason));
        stats(&mut o, finish, self.received.elapsed().as_nanos());
        if self.kind == Kind::Generate {
            // rkllmd keeps no per-client token context to hand back; an empty one is valid.
            o.insert("context".into(), json!([]));
        }
        Value::Object(o)
    }
}

/// A tool call as Ollama sends it: `arguments` is an object.
fn ollama_call(call: &ToolCall) -> Value {
    json!({"function": {"name": call.name, "arguments": call.arguments}})
}

/// Ollama's statistics, in nanoseconds, from what was measured:
/// - `total_duration`: from routing the request to its end (queue wait included, as in Ollama);
/// - `load_duration`: 0, the model is loaded once at start and no request loads it;
/// - `prompt_eval_*` and `eval_*`: the runtime's own prefill and generate counts and times.
///
/// A run the daemon ended early (stop sequence, or the token cap on ABI 1.2) gets no statistics
/// from the runtime; then `eval_count` is the tokens we counted and the rest is left out rather
/// than made up (all of them are optional for clients).
fn stats(o: &mut Map<String, Value>, finish: &Finish, total_ns: u128) {
    let total = u64::try_from(total_ns).unwrap_or(u64::MAX);
    o.insert("total_duration".into(), json!(total));
    o.insert("load_duration".into(), json!(0));
    match finish.perf {
        Some(p) => {
            o.insert("prompt_eval_count".into(), json!(p.prefill_tokens));
            o.insert("prompt_eval_duration".into(), json!(ms_to_ns(p.prefill_ms)));
            o.insert("eval_count".into(), json!(p.generate_tokens));
            o.insert("eval_duration".into(), json!(ms_to_ns(p.generate_ms)));
        }
        None => {
            o.insert("eval_count".into(), json!(finish.generated_tokens));
        }
    }
}

/// The runtime reports float milliseconds; NaN and negatives become 0 (`as` saturates).
fn ms_to_ns(ms: f32) -> u64 {
    (f64::from(ms) * 1e6).round() as u64
}

fn done_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        // Ollama has no reason for a time limit or an abort: the answer was cut short.
        FinishReason::Length | FinishReason::Timeout | FinishReason::Aborted => "length",
    }
}

impl Responder for OllamaResponder {
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
        let reason = filter.reason(done_reason(finish.reason));
        self.filter = filter;
        let last = self.last(finish, reason, SystemTime::now());
        if self.stream {
            self.ensure_head(out);
            Self::send(out, &last);
            out.end_stream();
        } else {
            let mut response = FullResponse::json(200, &last);
            response.headers = std::mem::take(&mut self.warnings);
            out.full(response);
        }
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        let err = ApiError::from_engine(FLAVOR, error);
        if self.head_sent {
            Self::send(out, &err.body());
            out.end_stream();
        } else {
            out.full(err.response());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Perf, RuntimeError};
    use std::time::{Duration, UNIX_EPOCH};

    type Head = (u16, &'static str, Vec<(&'static str, String)>);

    /// Records what a responder does, in order.
    #[derive(Default)]
    struct Capture {
        head: Option<Head>,
        body: Vec<u8>,
        ended: bool,
        full: Option<FullResponse>,
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
        fn lines(&self) -> Vec<Value> {
            let text = std::str::from_utf8(&self.body).unwrap();
            assert!(text.ends_with('\n'), "{text:?}");
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn responder(kind: Kind, stream: bool) -> OllamaResponder {
        OllamaResponder::new(kind, "qwen \"2.5\":latest".into(), stream, Vec::new())
    }

    fn finish(perf: Option<Perf>) -> Finish {
        Finish {
            reason: FinishReason::Stop,
            perf,
            generated_tokens: 7,
            run_time: Duration::from_millis(30),
        }
    }

    const PERF: Perf = Perf {
        prefill_ms: 12.5,
        prefill_tokens: 21,
        generate_ms: 250.25,
        generate_tokens: 7,
        memory_mb: 3.0,
    };

    #[test]
    fn the_hand_written_token_line_equals_the_json_tree_version() {
        let now = UNIX_EPOCH + Duration::new(1_717_511_911, 837_530_123);
        for kind in [Kind::Chat, Kind::Generate] {
            let mut r = responder(kind, true);
            let mut out = Capture::default();
            out.start_stream(200, "application/x-ndjson", &[]);
            let text = "a \"quoted\"\n\t\\ 你好 🚀 \u{1}";
            for thinking in [false, true] {
                out.body.clear();
                r.write_text_line(thinking, text, now, &mut out);
                let line = std::str::from_utf8(&out.body).unwrap();
                let line = line.strip_suffix('\n').unwrap();
                assert!(!line.contains('\n'), "one line per object");
                let parsed: Value = serde_json::from_str(line).unwrap();
                let expected = if thinking {
                    r.object("", Some(text), false, now)
                } else {
                    r.object(text, None, false, now)
                };
                assert_eq!(parsed, Value::Object(expected), "{kind:?} {thinking}");
            }
        }
    }

    #[test]
    fn thinking_streams_in_its_own_field_and_stops_apply_to_the_content_only() {
        for kind in [Kind::Chat, Kind::Generate] {
            let mut r = responder(kind, true);
            r.filter = OutputFilter::new(true, None, vec!["END".into(), "hm".into()]);
            let mut out = Capture::default();
            for piece in ["<think>\nhm", "m\n</think>", "\n\nok E", "ND"] {
                r.text(piece, &mut out);
            }
            r.finished(&finish(None), &mut out);
            let lines = out.lines();
            let field = |l: &Value, key: &str| -> String {
                let o = if kind == Kind::Chat { &l["message"] } else { l };
                o[key].as_str().unwrap_or_default().to_owned()
            };
            let text_key = if kind == Kind::Chat {
                "content"
            } else {
                "response"
            };
            let thinking: String = lines.iter().map(|l| field(l, "thinking")).collect();
            let content: String = lines.iter().map(|l| field(l, text_key)).collect();
            assert_eq!(
                (thinking.as_str(), content.as_str()),
                ("hmm", "ok "),
                "{kind:?}"
            );
            assert_eq!(lines.last().unwrap()["done_reason"], "stop");
        }
    }

    #[test]
    fn without_streaming_thinking_is_returned_beside_the_content_only_when_there_was_some() {
        let mut r = responder(Kind::Chat, false);
        let mut out = Capture::default();
        r.text("<think>\nA.\n</think>\n\nB.", &mut out);
        r.finished(&finish(None), &mut out);
        let v: Value = serde_json::from_slice(&out.full.unwrap().body).unwrap();
        assert_eq!(
            v["message"],
            json!({"role": "assistant", "content": "B.", "thinking": "A."})
        );
        let mut r = responder(Kind::Generate, false);
        let mut out = Capture::default();
        r.text("B.", &mut out);
        r.finished(&finish(None), &mut out);
        let v: Value = serde_json::from_slice(&out.full.unwrap().body).unwrap();
        assert!(v.get("thinking").is_none() && v["response"] == "B.");
    }

    #[test]
    fn a_chat_stream_is_token_lines_then_a_done_line_with_the_runtime_statistics() {
        let mut r = responder(Kind::Chat, true);
        r.warnings.push(("X-Rkllmd-Warning", "w".into()));
        let mut out = Capture::default();
        r.started(&mut out);
        assert!(out.head.is_none(), "the head waits for output");
        assert_eq!(r.text("Hel", &mut out), Next::Continue);
        assert_eq!(r.text("lo", &mut out), Next::Continue);
        r.finished(&finish(Some(PERF)), &mut out);
        let (status, ct, headers) = out.head.clone().unwrap();
        assert_eq!((status, ct), (200, "application/x-ndjson"));
        assert_eq!(headers, vec![("X-Rkllmd-Warning", "w".to_owned())]);
        assert!(out.ended);
        let lines = out.lines();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0]["message"],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(lines[1]["done"], json!(false));
        let last = &lines[2];
        assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
        assert_eq!(last["done"], json!(true));
        assert_eq!(last["done_reason"], json!("stop"));
        assert_eq!(last["prompt_eval_count"], json!(21));
        assert_eq!(last["prompt_eval_duration"], json!(12_500_000));
        assert_eq!(last["eval_count"], json!(7));
        assert_eq!(last["eval_duration"], json!(250_250_000));
        assert_eq!(last["load_duration"], json!(0));
        assert!(last["total_duration"].is_u64());
        assert!(last.get("context").is_none());
        assert_eq!(last["model"], json!("qwen \"2.5\":latest"));
    }

    #[test]
    fn generate_without_streaming_is_one_object_with_the_whole_text_and_an_empty_context() {
        let mut r = responder(Kind::Generate, false);
        r.warnings.push(("X-Rkllmd-Warning", "w".into()));
        let mut out = Capture::default();
        r.text("Hel", &mut out);
        r.text("lo", &mut out);
        r.finished(
            &Finish {
                reason: FinishReason::Length,
                ..finish(Some(PERF))
            },
            &mut out,
        );
        let full = out.full.unwrap();
        assert_eq!((full.status, full.content_type), (200, "application/json"));
        assert_eq!(full.headers, vec![("X-Rkllmd-Warning", "w".to_owned())]);
        let v: Value = serde_json::from_slice(&full.body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "model",
            "created_at",
            "response",
            "done",
            "done_reason",
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
            "context",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["response"], json!("Hello"));
        assert_eq!(v["done_reason"], json!("length"));
        assert_eq!(v["context"], json!([]));
    }

    #[test]
    fn without_runtime_statistics_only_what_was_counted_is_reported() {
        let mut r = responder(Kind::Chat, false);
        let mut out = Capture::default();
        r.finished(&finish(None), &mut out);
        let v: Value = serde_json::from_slice(&out.full.unwrap().body).unwrap();
        assert_eq!(v["eval_count"], json!(7));
        for absent in ["prompt_eval_count", "prompt_eval_duration", "eval_duration"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn a_stop_sequence_ends_the_text_and_reports_stop() {
        let mut r = responder(Kind::Generate, true);
        r.filter = OutputFilter::new(true, None, vec!["END".into()]);
        let mut out = Capture::default();
        assert_eq!(r.text("one E", &mut out), Next::Continue);
        assert_eq!(r.text("ND two", &mut out), Next::Stop);
        // The matcher's verdict wins over however the engine saw the end.
        r.finished(
            &Finish {
                reason: FinishReason::Aborted,
                ..finish(None)
            },
            &mut out,
        );
        let lines = out.lines();
        let text: String = lines
            .iter()
            .filter_map(|l| l["response"].as_str())
            .collect();
        assert_eq!(text, "one ");
        assert_eq!(lines.last().unwrap()["done_reason"], json!("stop"));
    }

    #[test]
    fn a_failure_before_any_text_is_a_plain_error_response() {
        let mut r = responder(Kind::Chat, true);
        let mut out = Capture::default();
        r.failed(&EngineError::QueueFull { capacity: 2 }, &mut out);
        let full = out.full.unwrap();
        assert_eq!(full.status, 503);
        let v: Value = serde_json::from_slice(&full.body).unwrap();
        assert!(v["error"].is_string());
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn a_failure_mid_stream_is_a_last_error_line() {
        let mut r = responder(Kind::Chat, true);
        let mut out = Capture::default();
        r.text("Hi", &mut out);
        r.failed(
            &EngineError::Runtime(RuntimeError::RunFailed { code: -1 }),
            &mut out,
        );
        assert!(out.ended);
        let lines = out.lines();
        assert_eq!(lines.len(), 2);
        let err = lines[1].as_object().unwrap();
        assert_eq!(err.len(), 1);
        assert!(err["error"].as_str().is_some_and(|s| !s.is_empty()));
    }

    #[test]
    fn a_load_reply_is_done_at_once() {
        let v = responder(Kind::Generate, false).load_reply();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["created_at", "done", "done_reason", "model", "response"]
        );
        assert_eq!(
            (&v["response"], &v["done"], &v["done_reason"]),
            (&json!(""), &json!(true), &json!("load"))
        );
        let v = responder(Kind::Chat, true).load_reply();
        assert_eq!(v["message"], json!({"role": "assistant", "content": ""}));
    }

    #[test]
    fn durations_are_whole_nanoseconds() {
        assert_eq!(ms_to_ns(1.5), 1_500_000);
        assert_eq!(ms_to_ns(-3.0), 0);
        assert_eq!(ms_to_ns(f32::NAN), 0);
    }
}
