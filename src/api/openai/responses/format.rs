//! A generation as OpenAI's Responses API answers it: one `response` object whose `output` holds
//! typed items (a `reasoning` item for the think block, a `message` with `output_text`, one
//! `function_call` per call), or, streaming, the typed `response.*` events that build it, each
//! with its `sequence_number`, ending in `response.completed`, `response.incomplete` (the token
//! cap or the context) or `response.failed` (cut short). There is no `[DONE]`.

use serde_json::{json, Value};

use crate::api::error::{ApiError, Flavor};
use crate::api::full_response::FullResponse;
use crate::api::generation::{Events, Format, Framing, Outcome, Part};
use crate::api::tools::ToolCall;
use crate::engine::Finish;

/// What the request asked for, echoed in every `response` object as OpenAI does.
pub struct Echo {
    pub model: String,
    pub instructions: Option<String>,
    /// The request's `tools`, as given.
    pub tools: Value,
    pub tool_choice: Value,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_output_tokens: Option<u32>,
    pub effort: Option<String>,
    pub metadata: Value,
    pub text_format: Value,
}

/// One output item as it is built.
enum Item {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
    Call { id: String, call: ToolCall },
}

impl Item {
    fn part(&self) -> Option<Part> {
        match self {
            Item::Reasoning { .. } => Some(Part::Reasoning),
            Item::Message { .. } => Some(Part::Content),
            Item::Call { .. } => None,
        }
    }

    fn id(&self) -> &str {
        match self {
            Item::Reasoning { id, .. } | Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }

    fn to_json(&self, status: &str) -> Value {
        match self {
            Item::Reasoning { id, text } => json!({
                "type": "reasoning", "id": id, "status": status,
                "summary": [{"type": "summary_text", "text": text}],
            }),
            Item::Message { id, text } => json!({
                "type": "message", "id": id, "role": "assistant", "status": status,
                "content": [text_part(text)],
            }),
            Item::Call { id, call } => json!({
                "type": "function_call", "id": id, "call_id": call.id, "name": call.name,
                "arguments": call.arguments.to_string(), "status": status,
            }),
        }
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub struct ResponsesFormat {
    id: String,
    created_at: u64,
    echo: Echo,
    /// The next event's `sequence_number`.
    seq: u64,
    /// The items so far; only the last can be open (text still arriving).
    items: Vec<Item>,
    open: bool,
}

impl ResponsesFormat {
    pub fn new(job_id: u64, created_at: u64, echo: Echo) -> ResponsesFormat {
        ResponsesFormat {
            id: format!("resp_{job_id:x}"),
            created_at,
            echo,
            seq: 0,
            items: Vec::new(),
            open: false,
        }
    }

    fn item_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}_{}_{}",
            &self.id["resp_".len()..],
            self.items.len()
        )
    }

    /// Writes one event, numbered.
    fn emit(&mut self, events: &mut Events, mut event: Value) {
        event["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let name = event["type"].as_str().unwrap_or("error").to_owned();
        events.named(&name, &event);
    }

    /// The `response` object with the items so far.
    fn response(&self, status: &str, usage: Option<&Finish>, reason: Option<&str>) -> Value {
        let item_status = match status {
            "completed" => "completed",
            "in_progress" => "in_progress",
            _ => "incomplete",
        };
        let e = &self.echo;
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": reason.map(|r| json!({"reason": r})),
            "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens,
            "model": e.model,
            "output": self.items.iter().map(|i| i.to_json(item_status)).collect::<Vec<_>>(),
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": e.effort, "summary": null},
            // Nothing is kept: a response cannot be fetched or continued later.
            "store": false,
            "temperature": e.temperature,
            "text": {"format": e.text_format},
            "tool_choice": e.tool_choice,
            "tools": e.tools,
            "top_p": e.top_p,
            "truncation": "disabled",
            "metadata": e.metadata,
        });
        // The schema has no null usage: it is absent until the run has ended.
        if let Some(finish) = usage {
            response["usage"] = Self::usage(finish);
        }
        response
    }

    /// `input_tokens` is the whole prompt and `cached_tokens` the part of it reused from the
    /// KV cache, as for chat completions; reasoning tokens are not counted apart from the
    /// answer's.
    fn usage(finish: &Finish) -> Value {
        let (input, cached) = crate::api::openai::format::prompt_tokens(finish);
        let output = u64::from(
            finish
                .perf
                .map_or(finish.generated_tokens, |p| p.generate_tokens),
        );
        json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output,
        })
    }

    /// Opens an item for `part` (after closing the open one), with its first part.
    fn open_item(&mut self, part: Part, events: &mut Events) {
        self.close(events, "completed");
        let item = match part {
            Part::Reasoning => Item::Reasoning {
                id: self.item_id("rs"),
                text: String::new(),
            },
            Part::Content => Item::Message {
                id: self.item_id("msg"),
                text: String::new(),
            },
        };
        let index = self.items.len();
        let (id, added) = (item.id().to_owned(), item.to_json("in_progress"));
        self.items.push(item);
        self.open = true;
        self.emit(
            events,
            json!({"type": "response.output_item.added", "output_index": index, "item": added}),
        );
        let event = match part {
            Part::Reasoning => json!({
                "type": "response.reasoning_summary_part.added", "item_id": id,
                "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            }),
            Part::Content => json!({
                "type": "response.content_part.added", "item_id": id, "output_index": index,
                "content_index": 0, "part": text_part(""),
            }),
        };
        self.emit(events, event);
    }

    /// Closes the open item, if any, with its `.done` events.
    fn close(&mut self, events: &mut Events, status: &str) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        let index = self.items.len() - 1;
        let item = &self.items[index];
        let id = item.id().to_owned();
        let done = item.to_json(status);
        let (text_done, part_done) = match item {
            Item::Reasoning { text, .. } => (
                json!({
                    "type": "response.reasoning_summary_text.done", "item_id": id,
                    "output_index": index, "summary_index": 0, "text": text,
                }),
                json!({
                    "type": "response.reasoning_summary_part.done", "item_id": id,
                    "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": text},
                }),
            ),
            Item::Message { text, .. } => (
                json!({
                    "type": "response.output_text.done", "item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": [],
                }),
                json!({
                    "type": "response.content_part.done", "item_id": id, "output_index": index,
                    "content_index": 0, "part": text_part(text),
                }),
            ),
            Item::Call { .. } => return,
        };
        self.emit(events, text_done);
        self.emit(events, part_done);
        self.emit(
            events,
            json!({"type": "response.output_item.done", "output_index": index, "item": done}),
        );
    }

    /// The answer as items, when it was not streamed.
    fn items_of(&mut self, outcome: &Outcome<'_>) {
        if let Some(text) = outcome.reasoning.filter(|r| !r.is_empty()) {
            let id = self.item_id("rs");
            self.items.push(Item::Reasoning {
                id,
                text: text.to_owned(),
            });
        }
        if !outcome.content.is_empty() || outcome.calls.is_empty() {
            let id = self.item_id("msg");
            self.items.push(Item::Message {
                id,
                text: outcome.content.to_owned(),
            });
        }
        for call in outcome.calls {
            let id = self.item_id("fc");
            self.items.push(Item::Call {
                id,
                call: call.clone(),
            });
        }
    }
}

/// How a finished answer ends: complete, or incomplete for the token cap or a full context.
fn ending(outcome: &Outcome<'_>) -> (&'static str, Option<&'static str>) {
    if outcome.reason == "length" && outcome.calls.is_empty() {
        ("incomplete", Some("max_output_tokens"))
    } else {
        ("completed", None)
    }
}

impl Format for ResponsesFormat {
    const FLAVOR: Flavor = Flavor::OpenAi;
    const FRAMING: Framing = Framing::Sse;
    const CONTENT_TYPE: &'static str = "text/event-stream";
    const STREAM_HEADERS: &'static [(&'static str, &'static str)] =
        &[("Cache-Control", "no-cache")];

    fn open(&mut self, events: &mut Events) {
        let created = self.response("in_progress", None, None);
        self.emit(
            events,
            json!({"type": "response.created", "response": created}),
        );
        self.emit(
            events,
            json!({"type": "response.in_progress", "response": created}),
        );
    }

    fn text(&mut self, part: Part, text: &str, events: &mut Events) {
        let current = self.items.last().filter(|_| self.open).and_then(Item::part);
        if current != Some(part) {
            self.open_item(part, events);
        }
        let index = self.items.len() - 1;
        let (id, delta) = match self.items.last_mut() {
            Some(Item::Reasoning { id, text: all }) => {
                all.push_str(text);
                (
                    id.clone(),
                    json!({"type": "response.reasoning_summary_text.delta", "summary_index": 0}),
                )
            }
            Some(Item::Message { id, text: all }) => {
                all.push_str(text);
                (
                    id.clone(),
                    json!({"type": "response.output_text.delta", "content_index": 0, "logprobs": []}),
                )
            }
            Some(Item::Call { .. }) | None => return,
        };
        let mut delta = delta;
        delta["item_id"] = json!(id);
        delta["output_index"] = json!(index);
        delta["delta"] = json!(text);
        self.emit(events, delta);
    }

    fn call(&mut self, call: &ToolCall, _index: usize, events: &mut Events) {
        self.close(events, "completed");
        let index = self.items.len();
        let id = self.item_id("fc");
        let item = Item::Call {
            id: id.clone(),
            call: call.clone(),
        };
        let mut added = item.to_json("in_progress");
        added["arguments"] = json!("");
        let arguments = call.arguments.to_string();
        self.emit(
            events,
            json!({"type": "response.output_item.added", "output_index": index, "item": added}),
        );
        self.emit(
            events,
            json!({
                "type": "response.function_call_arguments.delta", "item_id": id,
                "output_index": index, "delta": arguments,
            }),
        );
        self.emit(
            events,
            json!({
                "type": "response.function_call_arguments.done", "item_id": id,
                "output_index": index, "name": call.name, "arguments": arguments,
            }),
        );
        self.emit(
            events,
            json!({"type": "response.output_item.done", "output_index": index, "item": item.to_json("completed")}),
        );
        self.items.push(item);
    }

    fn end(&mut self, outcome: &Outcome<'_>, events: &mut Events) {
        let (status, reason) = ending(outcome);
        if self.items.is_empty() {
            // An empty answer is still an (empty) message.
            self.open_item(Part::Content, events);
        }
        self.close(
            events,
            if reason.is_some() {
                "incomplete"
            } else {
                "completed"
            },
        );
        let response = self.response(status, Some(outcome.finish), reason);
        let kind = if reason.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(events, json!({"type": kind, "response": response}));
    }

    fn whole(&mut self, outcome: &Outcome<'_>) -> FullResponse {
        self.items_of(outcome);
        let (status, reason) = ending(outcome);
        FullResponse::json(200, &self.response(status, Some(outcome.finish), reason))
    }

    /// A stream cut short (deadline, shutdown, runtime error) ends with `response.failed`,
    /// whose error carries the reason; the items so far are marked incomplete.
    fn error(&mut self, err: &ApiError, events: &mut Events) {
        self.close(events, "incomplete");
        let mut response = self.response("failed", None, None);
        // The Responses schema has no code for a deadline or a shutdown: all are server errors.
        response["error"] = json!({"code": "server_error", "message": err.message});
        self.emit(
            events,
            json!({"type": "response.failed", "response": response}),
        );
    }
}
