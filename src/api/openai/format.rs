//! A generation as OpenAI answers it: server-sent `chat.completion.chunk` or `text_completion`
//! events ending in `data: [DONE]`, or one `chat.completion` / `text_completion` object.
//! Reasoning is `reasoning_content`; calls are `tool_calls` with `arguments` as a JSON string.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::api::error::Flavor;
use crate::api::full_response::FullResponse;
use crate::api::generation::{Events, Format, Framing, Outcome, Part};
use crate::api::tools::ToolCall;
use crate::engine::Finish;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

pub struct OpenAiFormat {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    stream: bool,
    include_usage: bool,
}

impl OpenAiFormat {
    /// `created`: Unix seconds; the id derives from the job's.
    pub fn new(
        kind: Kind,
        job_id: u64,
        model: String,
        created: u64,
        stream: bool,
        include_usage: bool,
    ) -> OpenAiFormat {
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        OpenAiFormat {
            kind,
            id: format!("{prefix}-{job_id:x}"),
            created,
            model,
            stream,
            include_usage,
        }
    }

    fn object(&self) -> &'static str {
        match (self.kind, self.stream) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn chunk<'a>(&'a self, choices: &'a [Choice<'a>], usage: Option<Usage>) -> Chunk<'a> {
        Chunk {
            id: &self.id,
            object: self.object(),
            created: self.created,
            model: &self.model,
            choices,
            usage,
        }
    }

    /// A streamed choice: a chat delta, or a completion's text.
    fn streamed<'a>(&self, delta: Delta<'a>, finish_reason: Option<&'a str>) -> Choice<'a> {
        match self.kind {
            Kind::Chat => Choice::Delta {
                index: 0,
                delta,
                finish_reason,
            },
            Kind::Completion => Choice::Text {
                index: 0,
                text: delta.content.unwrap_or(""),
                logprobs: (),
                finish_reason,
            },
        }
    }
}

impl Format for OpenAiFormat {
    const FLAVOR: Flavor = Flavor::OpenAi;
    const FRAMING: Framing = Framing::Sse;
    const CONTENT_TYPE: &'static str = "text/event-stream";
    const STREAM_HEADERS: &'static [(&'static str, &'static str)] =
        &[("Cache-Control", "no-cache")];
    const END: &'static [u8] = b"data: [DONE]\n\n";

    /// A chat stream opens with the assistant's role.
    fn open(&mut self, events: &mut Events) {
        if self.kind == Kind::Chat {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            };
            let choice = self.streamed(delta, None);
            events.event(&self.chunk(std::slice::from_ref(&choice), None));
        }
    }

    /// Every text event of a stream has the same id, time and model: only the text differs.
    fn text(&mut self, part: Part, text: &str, events: &mut Events) {
        events.text_event(part, text, |text| {
            let delta = match part {
                Part::Content => Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                Part::Reasoning => Delta {
                    reasoning_content: Some(text),
                    ..Delta::default()
                },
            };
            Streamed {
                format: self,
                choice: self.streamed(delta, None),
            }
        });
    }

    fn call(&mut self, call: &ToolCall, index: usize, events: &mut Events) {
        let delta = Delta {
            tool_calls: Some([Call::of(call, Some(index))]),
            ..Delta::default()
        };
        let choice = self.streamed(delta, None);
        events.event(&self.chunk(std::slice::from_ref(&choice), None));
    }

    fn end(&mut self, outcome: &Outcome<'_>, events: &mut Events) {
        let choice = self.streamed(Delta::default(), Some(reason(outcome)));
        events.event(&self.chunk(std::slice::from_ref(&choice), None));
        if self.include_usage {
            events.event(&self.chunk(&[], Some(Usage::of(outcome.finish))));
        }
    }

    fn whole(&mut self, outcome: &Outcome<'_>) -> FullResponse {
        let choice = match self.kind {
            Kind::Chat => {
                let calls = &outcome.calls;
                Choice::Message {
                    index: 0,
                    message: Message {
                        role: "assistant",
                        // Null rather than empty beside calls, as OpenAI sends it.
                        content: (calls.is_empty() || !outcome.content.is_empty())
                            .then_some(outcome.content),
                        refusal: (),
                        reasoning_content: outcome.reasoning,
                        tool_calls: (!calls.is_empty())
                            .then(|| calls.iter().map(|c| Call::of(c, None)).collect()),
                    },
                    logprobs: (),
                    finish_reason: reason(outcome),
                }
            }
            Kind::Completion => Choice::Text {
                index: 0,
                text: outcome.content,
                logprobs: (),
                finish_reason: Some(reason(outcome)),
            },
        };
        let usage = Usage::of(outcome.finish);
        FullResponse::json(200, &self.chunk(std::slice::from_ref(&choice), Some(usage)))
    }
}

/// A stream chunk with one choice, owning it (for `Events::text_event`).
struct Streamed<'a> {
    format: &'a OpenAiFormat,
    choice: Choice<'a>,
}

impl Serialize for Streamed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.format
            .chunk(std::slice::from_ref(&self.choice), None)
            .serialize(serializer)
    }
}

/// An answer that called tools finishes with `tool_calls`.
fn reason(outcome: &Outcome<'_>) -> &'static str {
    if outcome.calls.is_empty() {
        outcome.reason
    } else {
        "tool_calls"
    }
}

/// Every OpenAI generation object: a stream chunk, or the whole answer.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Choice<'a> {
    Delta {
        index: u32,
        delta: Delta<'a>,
        finish_reason: Option<&'a str>,
    },
    Message {
        index: u32,
        message: Message<'a>,
        logprobs: (),
        finish_reason: &'a str,
    },
    Text {
        index: u32,
        text: &'a str,
        logprobs: (),
        finish_reason: Option<&'a str>,
    },
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[Call<'a>; 1]>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    /// Always null: the runtime has no refusal channel, but OpenAI's schema requires the field.
    refusal: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<Call<'a>>>,
}

/// A tool call as OpenAI sends it; streamed calls carry an index.
#[derive(Serialize)]
struct Call<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

impl Call<'_> {
    fn of(call: &ToolCall, index: Option<usize>) -> Call<'_> {
        Call {
            index,
            id: &call.id,
            kind: "function",
            function: Function {
                name: &call.name,
                arguments: JsonText(&call.arguments),
            },
        }
    }
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: JsonText<'a>,
}

/// A JSON value sent as a string of JSON (OpenAI's `arguments`).
struct JsonText<'a>(&'a Value);

impl Serialize for JsonText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

/// Token counts from the runtime's own statistics (never word counts). `prompt_tokens` is the
/// whole prompt, as OpenAI counts it: what the runtime prefilled plus the prefix it reused from
/// its KV cache, which `prompt_tokens_details.cached_tokens` tells apart.
#[derive(Serialize)]
#[allow(clippy::struct_field_names)] // OpenAI's names.
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

impl Usage {
    fn of(finish: &Finish) -> Usage {
        let (prompt, cached) = prompt_tokens(finish);
        let completion = u64::from(
            finish
                .perf
                .map_or(finish.generated_tokens, |p| p.generate_tokens),
        );
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: cached,
            },
        }
    }
}

/// The whole prompt and the part of it reused from the KV cache, in tokens (0 and 0 for a run
/// the runtime gave no statistics for). Shared by the chat and Responses formats.
pub(super) fn prompt_tokens(finish: &Finish) -> (u64, u64) {
    match finish.perf {
        Some(p) => {
            let cached = u64::from(finish.cached_tokens);
            (u64::from(p.prefill_tokens) + cached, cached)
        }
        None => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::generation::testing::Capture;
    use crate::api::generation::Generation;
    use crate::api::output::OutputFilter;
    use crate::api::responder::{Next, Responder};
    use crate::api::tools::ToolCallParser;
    use crate::chat::ToolFormat;
    use crate::engine::FinishReason;
    use serde_json::json;
    use std::time::Duration;

    fn hermes_calls() -> ToolCallParser {
        ToolCallParser::new(ToolFormat::Hermes, 0x7)
    }

    fn format(kind: Kind, stream: bool) -> OpenAiFormat {
        OpenAiFormat::new(kind, 7, "qwen \"2.5\"".into(), 1_700_000_000, stream, false)
    }

    fn responder(kind: Kind, filter: OutputFilter) -> Generation<OpenAiFormat> {
        Generation::new(format(kind, true), true, filter, Vec::new())
    }

    fn events(body: &[u8]) -> Vec<Value> {
        std::str::from_utf8(body)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }

    fn deltas(out: &Capture) -> Vec<Value> {
        events(&out.body)
            .into_iter()
            .map(|v| v["choices"][0]["delta"].clone())
            .filter(|d| d.get("role").is_none())
            .collect()
    }

    fn finish() -> Finish {
        Finish {
            reason: FinishReason::Stop,
            perf: None,
            generated_tokens: 3,
            cached_tokens: 0,
            run_time: Duration::from_millis(5),
        }
    }

    #[test]
    fn a_token_event_is_one_sse_event_in_openai_order() {
        let text = "a \"quoted\"\n 你好 🚀";
        let cases = [
            (
                Kind::Chat,
                Part::Content,
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null}),
            ),
            (
                Kind::Chat,
                Part::Reasoning,
                json!({"index": 0, "delta": {"reasoning_content": text}, "finish_reason": null}),
            ),
            (
                Kind::Completion,
                Part::Content,
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null}),
            ),
        ];
        for (kind, part, choice) in cases {
            let mut f = format(kind, true);
            let mut e = Events::new(Framing::Sse);
            f.text(part, text, &mut e);
            let s = String::from_utf8(e.take()).unwrap();
            let payload = s
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            let object = if kind == Kind::Chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            let expected = json!({"id": f.id, "object": object, "created": 1_700_000_000,
                "model": "qwen \"2.5\"", "choices": [choice]});
            assert_eq!(serde_json::from_str::<Value>(payload).unwrap(), expected);
            let order = [
                "\"id\"",
                "\"object\"",
                "\"created\"",
                "\"model\"",
                "\"choices\"",
            ];
            let at: Vec<usize> = order.iter().map(|k| payload.find(k).unwrap()).collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{payload}");
        }
    }

    #[test]
    fn a_streamed_think_block_is_reasoning_deltas_and_stops_apply_to_the_content_only() {
        let filter = OutputFilter::new(true, None, vec!["END".into(), "see".into()]);
        let mut r = responder(Kind::Chat, filter);
        let mut out = Capture::default();
        for piece in [
            "<think>\n",
            "let me see",
            "\n</th",
            "ink>\n\nAn",
            "swer END more",
        ] {
            if r.text(piece, &mut out) == Next::Stop {
                break;
            }
        }
        let d = deltas(&out);
        let reasoning: String = d
            .iter()
            .filter_map(|v| v["reasoning_content"].as_str())
            .collect();
        let content: String = d.iter().filter_map(|v| v["content"].as_str()).collect();
        assert_eq!(
            (reasoning.as_str(), content.as_str()),
            ("let me see", "Answer ")
        );
        assert!(d.iter().all(|v| v.as_object().unwrap().len() == 1), "{d:?}");
    }

    #[test]
    fn streamed_calls_are_deltas_and_malformed_ones_stay_content() {
        let mut r = responder(
            Kind::Chat,
            OutputFilter::new(true, Some(hermes_calls()), vec![]),
        );
        let mut out = Capture::default();
        for piece in [
            "Checking. <tool_",
            "call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
            "<tool_call>oops</tool_call>",
        ] {
            assert_eq!(r.text(piece, &mut out), Next::Continue);
        }
        let d = deltas(&out);
        let content: String = d.iter().filter_map(|v| v["content"].as_str()).collect();
        assert_eq!(content, "Checking. <tool_call>oops</tool_call>");
        let calls: Vec<&Value> = d.iter().filter_map(|v| v.get("tool_calls")).collect();
        assert_eq!(
            calls,
            vec![&json!([{"index": 0, "id": "call_7_0", "type": "function",
                "function": {"name": "f", "arguments": "{\"x\":1}"}}])]
        );
        // The one call is recorded: the answer finishes with "tool_calls".
        r.finished(&finish(), &mut out);
        let last = events(&out.body).pop().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_completion_passes_a_think_block_through_as_text() {
        let mut r = responder(Kind::Completion, OutputFilter::new(false, None, vec![]));
        let mut out = Capture::default();
        r.text("<think>x</think>", &mut out);
        let e = events(&out.body);
        assert_eq!(e[0]["choices"][0]["text"], "<think>x</think>");
    }

    #[test]
    fn a_whole_chat_answer_with_calls_has_null_content_and_reasoning_beside_it() {
        let filter = OutputFilter::new(true, Some(hermes_calls()), vec![]);
        let mut r = Generation::new(format(Kind::Chat, false), false, filter, Vec::new());
        let mut out = Capture::default();
        r.text(
            "<think>hm</think>\n\n<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
            &mut out,
        );
        r.finished(&finish(), &mut out);
        let v = out.json();
        assert_eq!(
            v["choices"][0],
            json!({"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "refusal": null, "reasoning_content": "hm",
                "tool_calls": [{"id": "call_7_0", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]}})
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 0}})
        );
        assert_eq!(v["object"], "chat.completion");
    }
}
