//! OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::conversation;
use super::ctx::Ctx;
use super::error::{ApiError, Flavor};
use super::full_response::FullResponse;
use super::output::{Event, OutputFilter};
use super::params::WARNING_HEADER;
use super::params::{check_model, parse_json, Fields, GenParams, SamplingRequest};
use super::reply::Reply;
use super::responder::{Next, Responder, ResponseOut};
use super::tools::{self, Choice, ToolCall};
use crate::engine::{EngineError, Finish, FinishReason, Job};
use crate::http::Request;

const FLAVOR: Flavor = Flavor::OpenAi;

pub fn models(ctx: &Ctx<'_>) -> FullResponse {
    FullResponse::json(200, &json!({"object": "list", "data": [model_card(ctx)]}))
}

pub fn model(ctx: &Ctx<'_>, id: &str) -> Result<FullResponse, ApiError> {
    if ctx.model_matches(id) {
        Ok(FullResponse::json(200, &model_card(ctx)))
    } else {
        Err(ApiError::model_not_found(FLAVOR, id))
    }
}

fn model_card(ctx: &Ctx<'_>) -> Value {
    let created = unix_now().saturating_sub(ctx.started.elapsed().as_secs());
    json!({"id": ctx.model_name, "object": "model", "created": created, "owned_by": "rkllmd"})
}

pub fn chat(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    let messages = match f.array("messages")? {
        Some(m) if !m.is_empty() => m,
        Some(_) | None => {
            return Err(ApiError::bad_request(
                FLAVOR,
                "'messages' must be a non-empty array",
                Some("messages"),
            ))
        }
    };
    let turns = conversation::openai_turns(messages)?;
    let mut job = conversation::job_for(ctx, job_id, &turns, enable_thinking(&f)?, FLAVOR)?;
    let tools = tools::request_tools(&f)?;
    let choice = tools::tool_choice(&f)?;
    let mut note = None;
    if choice != Choice::None {
        if tools.is_some() && choice == Choice::Forced {
            note = Some(
                "tool_choice cannot force a call: the runtime decides whether to call a tool"
                    .to_owned(),
            );
        }
        job.set_tools(tools);
    }
    generate(&f, ctx, job, Kind::Chat, note)
}

/// Thinking on or off (Qwen3-style models): `enable_thinking` at the top level, or in
/// `chat_template_kwargs` as vLLM and SGLang clients send it.
fn enable_thinking(f: &Fields<'_>) -> Result<Option<bool>, ApiError> {
    if let Some(b) = f.bool("enable_thinking")? {
        return Ok(Some(b));
    }
    match f.object("chat_template_kwargs")? {
        Some(kwargs) => kwargs.bool("enable_thinking"),
        None => Ok(None),
    }
}

pub fn completion(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    let prompt = match f.obj.get("prompt") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_request(
                FLAVOR,
                "'prompt' must be one string: batches are not supported",
                Some("prompt"),
            ))
        }
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                FLAVOR,
                "'prompt' is required",
                Some("prompt"),
            ))
        }
        Some(_) => return Err(f.wrong_type("prompt", "a string")),
    };
    conversation::check_text(&prompt, FLAVOR, "prompt")?;
    // A completion continues the text as it is: with rkllmd's templates the runtime's own is off,
    // so the prompt reaches the model unchanged.
    generate(&f, ctx, Job::new(job_id, prompt), Kind::Completion, None)
}

fn generate(
    f: &Fields<'_>,
    ctx: &Ctx<'_>,
    mut job: Job,
    kind: Kind,
    note: Option<String>,
) -> Result<Reply, ApiError> {
    let model = check_model(ctx, f)?;
    if f.count("n")?.is_some_and(|n| n > 1) {
        return Err(ApiError::bad_request(
            FLAVOR,
            "'n' greater than 1 is not supported",
            Some("n"),
        ));
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.object("stream_options")? {
        Some(o) => o.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    let params = GenParams {
        max_tokens: f.count("max_completion_tokens")?.or(f.count("max_tokens")?),
        sampling: SamplingRequest::read(f)?,
        stop: f.stop("stop")?,
        seed: f.int("seed")?,
    };
    let mut warnings = params.apply(ctx, &mut job);
    warnings.extend(note.map(|n| (WARNING_HEADER, n)));
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    let responder = OpenAiResponder {
        kind,
        id: format!("{prefix}-{:x}", job.id()),
        created: unix_now(),
        model,
        stream,
        include_usage,
        warnings,
        head_sent: false,
        content: String::new(),
        reasoning: String::new(),
        // A completion continues raw text; only a chat answer's think block is reasoning, and
        // only a chat with tools looks for calls.
        filter: OutputFilter::new(
            kind == Kind::Chat,
            (kind == Kind::Chat && job.tools().is_some()).then_some(job.id()),
            params.stop,
        ),
        tool_calls: Vec::new(),
        event: Vec::new(),
    };
    Ok(Reply::Generate {
        job,
        responder: Box::new(responder),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Timeout | FinishReason::Aborted => "length",
    }
}

/// Token counts from the runtime's own statistics (never word counts). `prompt_tokens` is what
/// the runtime prefilled: a prompt prefix it reused from its cache is not counted again.
fn usage(finish: &Finish) -> Value {
    let prompt = finish.perf.map_or(0, |p| p.prefill_tokens);
    let completion = finish
        .perf
        .map_or(finish.generated_tokens, |p| p.generate_tokens);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// Which part of a chat answer a piece of text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Content,
    Reasoning,
}

impl Part {
    fn key(self) -> &'static str {
        match self {
            Part::Content => "content",
            Part::Reasoning => "reasoning_content",
        }
    }
}

struct OpenAiResponder {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    stream: bool,
    include_usage: bool,
    warnings: Vec<(&'static str, String)>,
    /// The stream's head went out: errors must now travel inside the stream.
    head_sent: bool,
    content: String,
    reasoning: String,
    /// Reasoning, content and tool calls out of the generated text; stop sequences.
    filter: OutputFilter,
    tool_calls: Vec<ToolCall>,
    /// Scratch buffer for one SSE event, reused for every token.
    event: Vec<u8>,
}

impl OpenAiResponder {
    fn object(&self) -> &'static str {
        match (self.kind, self.stream) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// A stream chunk as a JSON tree (first and last chunks; tokens take `write_text_event`).
    fn chunk(&self, part: Part, text: Option<&str>, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = text.map_or(json!({}), |t| json!({part.key(): t}));
                json!({"index": 0, "delta": delta, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(), "created": self.created, "model": self.model, "choices": [choice]})
    }

    fn send(out: &mut dyn ResponseOut, value: &Value) {
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(value.to_string().as_bytes());
        line.extend_from_slice(b"\n\n");
        out.chunk(&line);
    }

    /// The hot path: one event per token, written without building a JSON tree.
    fn write_text_event(&mut self, part: Part, text: &str, out: &mut dyn ResponseOut) {
        let object = self.object();
        let e = &mut self.event;
        e.clear();
        e.extend_from_slice(b"data: {\"id\":\"");
        e.extend_from_slice(self.id.as_bytes());
        e.extend_from_slice(b"\",\"object\":\"");
        e.extend_from_slice(object.as_bytes());
        e.extend_from_slice(b"\",\"created\":");
        e.extend_from_slice(self.created.to_string().as_bytes());
        e.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut *e, &self.model);
        match self.kind {
            Kind::Chat => {
                e.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{\"");
                e.extend_from_slice(part.key().as_bytes());
                e.extend_from_slice(b"\":");
            }
            Kind::Completion => e.extend_from_slice(b",\"choices\":[{\"index\":0,\"text\":"),
        }
        let _ = serde_json::to_writer(&mut *e, text);
        match self.kind {
            Kind::Chat => e.extend_from_slice(b"},\"finish_reason\":null}]}\n\n"),
            Kind::Completion => {
                e.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":null}]}\n\n")
            }
        }
        out.chunk(&self.event);
    }

    /// Sends the stream's head on the first output, so a failure before it is a plain error.
    fn ensure_head(&mut self, out: &mut dyn ResponseOut) {
        if self.head_sent {
            return;
        }
        let mut headers = vec![("Cache-Control", "no-cache".to_owned())];
        headers.extend(self.warnings.iter().cloned());
        out.start_stream(200, "text/event-stream", &headers);
        self.head_sent = true;
        if self.kind == Kind::Chat {
            let mut first = self.chunk(Part::Content, Some(""), None);
            first["choices"][0]["delta"]["role"] = json!("assistant");
            Self::send(out, &first);
        }
    }

    fn emit(&mut self, part: Part, text: &str, out: &mut dyn ResponseOut) {
        if text.is_empty() {
            return;
        }
        if self.stream {
            self.ensure_head(out);
            self.write_text_event(part, text, out);
        } else if part == Part::Reasoning {
            self.reasoning.push_str(text);
        } else {
            self.content.push_str(text);
        }
    }

    fn on_event(&mut self, event: Event<'_>, out: &mut dyn ResponseOut) {
        match event {
            Event::Reasoning(text) => self.emit(Part::Reasoning, text, out),
            Event::Content(text) => self.emit(Part::Content, text, out),
            Event::Call(call) => self.emit_call(call, out),
        }
    }

    fn emit_call(&mut self, call: ToolCall, out: &mut dyn ResponseOut) {
        if self.stream {
            self.ensure_head(out);
            let mut chunk = self.chunk(Part::Content, None, None);
            chunk["choices"][0]["delta"] = json!({"tool_calls": [
                openai_call(&call, Some(self.tool_calls.len()))
            ]});
            Self::send(out, &chunk);
        }
        self.tool_calls.push(call);
    }
}

/// A tool call as OpenAI sends it: `arguments` is a JSON string; streamed calls carry an index.
fn openai_call(call: &ToolCall, index: Option<usize>) -> Value {
    let mut v = json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    });
    if let Some(i) = index {
        v["index"] = json!(i);
    }
    v
}

impl Responder for OpenAiResponder {
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
        let reason = if filter.calls() == 0 {
            filter.reason(finish_reason(finish.reason))
        } else {
            "tool_calls"
        };
        self.filter = filter;
        if self.stream {
            self.ensure_head(out);
            Self::send(out, &self.chunk(Part::Content, None, Some(reason)));
            if self.include_usage {
                let mut last = self.chunk(Part::Content, None, None);
                last["choices"] = json!([]);
                last["usage"] = usage(finish);
                Self::send(out, &last);
            }
            out.chunk(b"data: [DONE]\n\n");
            out.end_stream();
            return;
        }
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": self.content});
                if !self.tool_calls.is_empty() {
                    if self.content.is_empty() {
                        message["content"] = Value::Null;
                    }
                    let calls: Vec<Value> = self
                        .tool_calls
                        .iter()
                        .map(|c| openai_call(c, None))
                        .collect();
                    message["tool_calls"] = json!(calls);
                }
                if thought {
                    message["reasoning_content"] = json!(self.reasoning);
                }
                json!({
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": reason,
                })
            }
            Kind::Completion => {
                json!({"index": 0, "text": self.content, "logprobs": null, "finish_reason": reason})
            }
        };
        let body = json!({
            "id": self.id, "object": self.object(), "created": self.created, "model": self.model,
            "choices": [choice],
            "usage": usage(finish),
        });
        let mut response = FullResponse::json(200, &body);
        response.headers = std::mem::take(&mut self.warnings);
        out.full(response);
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        let err = ApiError::from_engine(FLAVOR, error);
        if self.head_sent {
            Self::send(out, &err.body());
            out.chunk(b"data: [DONE]\n\n");
            out.end_stream();
        } else {
            out.full(err.response());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Capture(Vec<u8>);

    impl ResponseOut for Capture {
        fn start_stream(&mut self, _: u16, _: &'static str, _: &[(&'static str, String)]) {}
        fn chunk(&mut self, data: &[u8]) {
            self.0.extend_from_slice(data);
        }
        fn end_stream(&mut self) {}
        fn full(&mut self, _: FullResponse) {}
    }

    fn responder(kind: Kind) -> OpenAiResponder {
        OpenAiResponder {
            kind,
            id: "x-7".into(),
            created: 1_700_000_000,
            model: "qwen \"2.5\"".into(),
            stream: true,
            include_usage: false,
            warnings: Vec::new(),
            head_sent: true,
            content: String::new(),
            reasoning: String::new(),
            filter: OutputFilter::new(kind == Kind::Chat, None, vec![]),
            tool_calls: Vec::new(),
            event: Vec::new(),
        }
    }

    #[test]
    fn the_hand_written_token_event_equals_the_json_tree_version() {
        for (kind, part) in [
            (Kind::Chat, Part::Content),
            (Kind::Chat, Part::Reasoning),
            (Kind::Completion, Part::Content),
        ] {
            let mut r = responder(kind);
            let mut out = Capture::default();
            let text = "a \"quoted\"\n 你好 🚀";
            r.write_text_event(part, text, &mut out);
            let s = String::from_utf8(out.0).unwrap();
            let payload = s
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            let parsed: Value = serde_json::from_str(payload).unwrap();
            assert_eq!(parsed, r.chunk(part, Some(text), None), "{kind:?} {part:?}");
        }
    }

    fn deltas(out: &Capture) -> Vec<Value> {
        events(&out.0)
            .into_iter()
            .map(|v| v["choices"][0]["delta"].clone())
            .collect()
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

    #[test]
    fn a_streamed_think_block_is_reasoning_deltas_and_stops_apply_to_the_content_only() {
        let mut r = responder(Kind::Chat);
        r.filter = OutputFilter::new(true, None, vec!["END".into(), "see".into()]);
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
        let mut r = responder(Kind::Chat);
        r.filter = OutputFilter::new(true, Some(0x7), vec![]);
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
        assert_eq!(r.tool_calls.len(), 1);
    }

    #[test]
    fn a_completion_passes_a_think_block_through_as_text() {
        let mut r = responder(Kind::Completion);
        let mut out = Capture::default();
        r.text("<think>x</think>", &mut out);
        let e = events(&out.0);
        assert_eq!(e[0]["choices"][0]["text"], "<think>x</think>");
    }
}
