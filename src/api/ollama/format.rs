//! A generation as Ollama answers it: NDJSON lines (`application/x-ndjson`), one per piece of
//! text and a last one with `done: true` and the run's statistics; or, without streaming, that
//! last object alone carrying the whole text. A `<think>` block that opens the answer is sent as
//! `thinking` (in `message` for chat), never as content.

use std::time::{Instant, SystemTime};

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::clock::Rfc3339;
use crate::api::error::Flavor;
use crate::api::full_response::FullResponse;
use crate::api::generation::{Events, Format, Framing, Outcome, Part};
use crate::api::tools::ToolCall;
use crate::engine::Finish;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Generate,
}

pub struct OllamaFormat {
    kind: Kind,
    /// The model as the request named it (Ollama echoes the name it was given).
    model: String,
    /// When the request was routed: `total_duration` runs from here.
    received: Instant,
}

/// What a line says besides its text.
#[derive(Default)]
struct Extra<'a> {
    thinking: Option<&'a str>,
    calls: Option<Calls<'a>>,
    last: Option<Last<'a>>,
}

impl OllamaFormat {
    pub fn new(kind: Kind, model: String) -> OllamaFormat {
        OllamaFormat {
            kind,
            model,
            received: Instant::now(),
        }
    }

    /// One line: model, time, and the text in this kind's fields. Calls go only in a chat's
    /// message (a generation never looks for them).
    fn line<'a>(&'a self, text: &'a str, extra: Extra<'a>, now: SystemTime) -> Line<'a> {
        let (message, response, thinking) = match self.kind {
            Kind::Chat => {
                let message = Message {
                    role: "assistant",
                    content: text,
                    thinking: extra.thinking,
                    tool_calls: extra.calls,
                };
                (Some(message), None, None)
            }
            Kind::Generate => (None, Some(text), extra.thinking),
        };
        Line {
            model: &self.model,
            created_at: Rfc3339(now),
            message,
            response,
            thinking,
            done: extra.last.is_some(),
            last: extra.last,
        }
    }

    /// The answer to a load call (`reason` "load") or an unload call ("unload"): done, nothing
    /// generated.
    pub fn lifecycle_reply(&self, reason: &'static str) -> FullResponse {
        let last = Last {
            done_reason: reason,
            ..Last::default()
        };
        let extra = Extra {
            last: Some(last),
            ..Extra::default()
        };
        FullResponse::json(200, &self.line("", extra, SystemTime::now()))
    }

    /// The last object: the whole text (and thinking, when the answer had it) when not
    /// streaming (empty after a stream), the reason, and the statistics.
    fn last<'a>(&'a self, outcome: &Outcome<'a>, streamed: bool, now: SystemTime) -> Line<'a> {
        let calls = (!streamed && !outcome.calls.is_empty()).then_some(Calls(outcome.calls));
        let last = Last {
            done_reason: outcome.reason,
            // rkllmd keeps no per-client token context to hand back; an empty one is valid.
            context: (self.kind == Kind::Generate).then_some([]),
            ..Last::stats(outcome.finish, self.received.elapsed().as_nanos())
        };
        let extra = Extra {
            thinking: outcome.reasoning,
            calls,
            last: Some(last),
        };
        self.line(outcome.content, extra, now)
    }

    fn text_at(&self, part: Part, text: &str, now: SystemTime, events: &mut Events) {
        let line = match part {
            Part::Content => self.line(text, Extra::default(), now),
            Part::Reasoning => {
                let extra = Extra {
                    thinking: Some(text),
                    ..Extra::default()
                };
                self.line("", extra, now)
            }
        };
        events.event(&line);
    }
}

impl Format for OllamaFormat {
    const FLAVOR: Flavor = Flavor::Ollama;
    const FRAMING: Framing = Framing::Ndjson;
    const CONTENT_TYPE: &'static str = "application/x-ndjson";

    fn text(&mut self, part: Part, text: &str, events: &mut Events) {
        self.text_at(part, text, SystemTime::now(), events);
    }

    /// A call goes out on its own line when streaming, else in the last object.
    fn call(&mut self, call: &ToolCall, _index: usize, events: &mut Events) {
        let extra = Extra {
            calls: Some(Calls(std::slice::from_ref(call))),
            ..Extra::default()
        };
        events.event(&self.line("", extra, SystemTime::now()));
    }

    fn end(&mut self, outcome: &Outcome<'_>, events: &mut Events) {
        events.event(&self.last(outcome, true, SystemTime::now()));
    }

    fn whole(&mut self, outcome: &Outcome<'_>) -> FullResponse {
        FullResponse::json(200, &self.last(outcome, false, SystemTime::now()))
    }
}

/// Every Ollama generation object: a streamed line, the last one, or the whole answer.
#[derive(Serialize)]
struct Line<'a> {
    model: &'a str,
    created_at: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    done: bool,
    #[serde(flatten)]
    last: Option<Last<'a>>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Calls<'a>>,
}

/// Tool calls as Ollama sends them: `arguments` is an object.
#[derive(Clone, Copy)]
struct Calls<'a>(&'a [ToolCall]);

impl Serialize for Calls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Call<'a> {
            function: Function<'a>,
        }
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            arguments: &'a Value,
        }
        serializer.collect_seq(self.0.iter().map(|c| Call {
            function: Function {
                name: &c.name,
                arguments: &c.arguments,
            },
        }))
    }
}

/// What the last line adds: why it ended, and Ollama's statistics in nanoseconds.
#[derive(Default, Serialize)]
struct Last<'a> {
    done_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_cached_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<[u32; 0]>,
}

impl Last<'_> {
    /// The statistics, from what was measured:
    /// - `total_duration`: from routing the request to its end (queue wait included, as in
    ///   Ollama);
    /// - `load_duration`: 0, the model is loaded once at start and no request loads it;
    /// - `prompt_eval_*` and `eval_*`: the runtime's own prefill and generate counts and times,
    ///   except that `prompt_eval_count` is the whole prompt, the part reused from the KV cache
    ///   included, which `prompt_eval_cached_count` gives when there is one (Ollama's own
    ///   meaning since it reports cache hits: ollama/ollama#16428 and #17943).
    ///
    /// A run the daemon ended early (stop sequence, or the token cap on ABI 1.2) gets no
    /// statistics from the runtime; then `eval_count` is the tokens we counted and the rest is
    /// left out rather than made up (all of them are optional for clients).
    fn stats(finish: &Finish, total_ns: u128) -> Last<'static> {
        let mut last = Last {
            total_duration: Some(u64::try_from(total_ns).unwrap_or(u64::MAX)),
            load_duration: Some(0),
            eval_count: Some(finish.generated_tokens),
            ..Last::default()
        };
        if let Some(p) = finish.perf {
            let cached = finish.cached_tokens;
            last.prompt_eval_count = Some(u64::from(p.prefill_tokens) + u64::from(cached));
            last.prompt_eval_cached_count = (cached > 0).then_some(cached);
            last.prompt_eval_duration = Some(ms_to_ns(p.prefill_ms));
            last.eval_count = Some(p.generate_tokens);
            last.eval_duration = Some(ms_to_ns(p.generate_ms));
        }
        last
    }
}

/// The runtime reports float milliseconds. `as` saturates, NaN and negatives becoming 0, which
/// is what a duration wants.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ms_to_ns(ms: f32) -> u64 {
    (f64::from(ms) * 1e6).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::generation::testing::Capture;
    use crate::api::generation::Generation;
    use crate::api::output::OutputFilter;
    use crate::api::responder::{Next, Responder};
    use crate::engine::{EngineError, FinishReason};
    use crate::runtime::{Perf, RuntimeError};
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    impl Capture {
        fn lines(&self) -> Vec<Value> {
            let text = std::str::from_utf8(&self.body).unwrap();
            assert!(text.ends_with('\n'), "{text:?}");
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    const MODEL: &str = "qwen \"2.5\":latest";

    fn with(
        kind: Kind,
        stream: bool,
        stops: &[&str],
        warnings: Vec<(&'static str, String)>,
    ) -> Generation<OllamaFormat> {
        let stops = stops.iter().map(|s| (*s).to_owned()).collect();
        let filter = OutputFilter::new(true, None, stops);
        Generation::new(
            OllamaFormat::new(kind, MODEL.into()),
            stream,
            filter,
            warnings,
        )
    }

    fn responder(kind: Kind, stream: bool) -> Generation<OllamaFormat> {
        with(kind, stream, &[], Vec::new())
    }

    fn finish(perf: Option<Perf>) -> Finish {
        Finish {
            reason: FinishReason::Stop,
            perf,
            generated_tokens: 7,
            cached_tokens: 0,
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
    fn a_token_line_is_one_json_line_in_ollama_order() {
        let now = UNIX_EPOCH + Duration::new(1_717_511_911, 837_530_123);
        let at = "2024-06-04T14:38:31.837530123Z";
        let text = "a \"quoted\"\n\t\\ 你好 🚀 \u{1}";
        let cases = [
            (
                Kind::Chat,
                Part::Content,
                json!({"model": MODEL, "created_at": at,
                "message": {"role": "assistant", "content": text}, "done": false}),
            ),
            (
                Kind::Chat,
                Part::Reasoning,
                json!({"model": MODEL, "created_at": at,
                "message": {"role": "assistant", "content": "", "thinking": text}, "done": false}),
            ),
            (
                Kind::Generate,
                Part::Content,
                json!({"model": MODEL, "created_at": at,
                "response": text, "done": false}),
            ),
            (
                Kind::Generate,
                Part::Reasoning,
                json!({"model": MODEL, "created_at": at,
                "response": "", "thinking": text, "done": false}),
            ),
        ];
        for (kind, part, expected) in cases {
            let f = OllamaFormat::new(kind, MODEL.into());
            let mut events = Events::new(Framing::Ndjson);
            f.text_at(part, text, now, &mut events);
            let body = events.take();
            let line = std::str::from_utf8(&body).unwrap();
            let line = line.strip_suffix('\n').unwrap();
            assert!(!line.contains('\n'), "one line per object");
            let parsed: Value = serde_json::from_str(line).unwrap();
            assert_eq!(parsed, expected, "{kind:?} {part:?}");
            let order = ["\"model\"", "\"created_at\"", "\"done\""];
            let at: Vec<usize> = order.iter().map(|k| line.find(k).unwrap()).collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        }
    }

    #[test]
    fn thinking_streams_in_its_own_field_and_stops_apply_to_the_content_only() {
        for kind in [Kind::Chat, Kind::Generate] {
            let mut r = with(kind, true, &["END", "hm"], Vec::new());
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
        let mut r = with(
            Kind::Chat,
            true,
            &[],
            vec![("X-Rkllmd-Warning", "w".into())],
        );
        let mut out = Capture::default();
        r.started(&mut out);
        assert!(out.head.is_none(), "the head waits for output");
        assert_eq!(r.text("Hel", &mut out), Next::Continue);
        assert_eq!(r.text("lo", &mut out), Next::Continue);
        r.finished(&finish(Some(PERF)), &mut out);
        let (status, ct, headers) = out.head.clone().unwrap();
        assert_eq!((status, ct), (200, "application/x-ndjson"));
        assert_eq!(
            headers,
            vec![
                ("X-Accel-Buffering", "no".to_owned()),
                ("X-Rkllmd-Warning", "w".to_owned())
            ]
        );
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
        let mut r = with(
            Kind::Generate,
            false,
            &[],
            vec![("X-Rkllmd-Warning", "w".into())],
        );
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
        let mut r = with(Kind::Generate, true, &["END"], Vec::new());
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
    fn an_aborted_answer_without_a_stop_match_never_looks_complete() {
        let mut r = with(Kind::Chat, true, &["END"], Vec::new());
        let mut out = Capture::default();
        assert_eq!(r.text("one two", &mut out), Next::Continue);
        r.finished(
            &Finish {
                reason: FinishReason::Aborted,
                ..finish(None)
            },
            &mut out,
        );
        let lines = out.lines();
        let last = lines.last().unwrap();
        assert!(last["error"].is_string(), "{last}");
        assert!(
            lines.iter().all(|l| l.get("done_reason").is_none()),
            "{lines:?}"
        );
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
        let load = |kind| {
            let reply = OllamaFormat::new(kind, MODEL.into()).lifecycle_reply("load");
            serde_json::from_slice::<Value>(&reply.body).unwrap()
        };
        let v = load(Kind::Generate);
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
        let v = load(Kind::Chat);
        assert_eq!(v["message"], json!({"role": "assistant", "content": ""}));
    }

    #[test]
    fn durations_are_whole_nanoseconds() {
        assert_eq!(ms_to_ns(1.5), 1_500_000);
        assert_eq!(ms_to_ns(-3.0), 0);
        assert_eq!(ms_to_ns(f32::NAN), 0);
    }
}
