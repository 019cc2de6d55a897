//! OpenAI-compatible chat completions.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{ApiError, Ctx, Flavor, FullResponse, Reply, Responder, ResponseOut};
use crate::engine::{EngineError, Finish, FinishReason, Job};
use crate::http::Request;

const FLAVOR: Flavor = Flavor::OpenAi;

pub fn chat(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(
            FLAVOR,
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
            None,
        )
    })?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request(
            FLAVOR,
            "the request body must be a JSON object",
            None,
        ));
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => ctx.model_name.to_owned(),
        Some(Value::String(m)) if m == ctx.model_name => m.clone(),
        Some(Value::String(m)) => return Err(ApiError::model_not_found(FLAVOR, m)),
        Some(_) => return Err(wrong_type("model", "a string")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong_type("stream", "a boolean")),
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                FLAVOR,
                "'messages' must be a non-empty array",
                Some("messages"),
            ))
        }
        Some(_) => return Err(wrong_type("messages", "an array")),
    };
    let prompt = last_user_text(messages)?;
    let max_tokens = match obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX).min(ctx.max_new_tokens)),
            _ => return Err(wrong_type("max_tokens", "a positive integer")),
        },
    };
    let mut job = Job::new(job_id, prompt);
    job.max_new_tokens = max_tokens;
    let responder = ChatResponder {
        id: format!("chatcmpl-{job_id:x}"),
        created: unix_now(),
        model,
        stream,
        head_sent: false,
        content: String::new(),
        event: Vec::new(),
    };
    Ok(Reply::Generate {
        job,
        responder: Box::new(responder),
    })
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::bad_request(FLAVOR, format!("'{field}' must be {expected}"), Some(field))
}

/// The newest user turn's text. Content is a string or a list of parts whose text parts count.
fn last_user_text(messages: &[Value]) -> Result<String, ApiError> {
    let last = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .ok_or_else(|| {
            ApiError::bad_request(FLAVOR, "'messages' has no user message", Some("messages"))
        })?;
    match last.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some(other) => {
                        return Err(ApiError::bad_request(
                            FLAVOR,
                            format!(
                                "content parts of type '{other}' are not supported by this model"
                            ),
                            Some("messages"),
                        ))
                    }
                    None => return Err(wrong_type("messages[].content[].type", "a string")),
                }
            }
            Ok(text)
        }
        _ => Err(wrong_type(
            "messages[].content",
            "a string or an array of parts",
        )),
    }
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

struct ChatResponder {
    id: String,
    created: u64,
    model: String,
    stream: bool,
    /// The stream's head went out: errors must now travel inside the stream.
    head_sent: bool,
    content: String,
    /// Scratch buffer for one SSE event, reused for every token.
    event: Vec<u8>,
}

impl ChatResponder {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn send_event(out: &mut dyn ResponseOut, value: &Value) {
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(value.to_string().as_bytes());
        line.extend_from_slice(b"\n\n");
        out.chunk(&line);
    }
}

fn usage(finish: &Finish) -> Value {
    let prompt = finish.perf.map_or(0, |p| p.prefill_tokens);
    let completion = finish
        .perf
        .map_or(finish.generated_tokens, |p| p.generate_tokens);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

impl Responder for ChatResponder {
    fn started(&mut self, out: &mut dyn ResponseOut) {
        if self.stream {
            out.start_stream(
                200,
                "text/event-stream",
                &[("Cache-Control", "no-cache".into())],
            );
            self.head_sent = true;
            Self::send_event(
                out,
                &self.chunk(json!({"role": "assistant", "content": ""}), None),
            );
        }
    }

    fn text(&mut self, text: &str, out: &mut dyn ResponseOut) {
        if self.stream {
            // The hot path: one event per token, written without building a JSON tree.
            self.event.clear();
            self.event.extend_from_slice(b"data: {\"id\":\"");
            self.event.extend_from_slice(self.id.as_bytes());
            self.event
                .extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
            self.event
                .extend_from_slice(self.created.to_string().as_bytes());
            self.event.extend_from_slice(b",\"model\":");
            let _ = serde_json::to_writer(&mut self.event, &self.model);
            self.event
                .extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{\"content\":");
            let _ = serde_json::to_writer(&mut self.event, text);
            self.event
                .extend_from_slice(b"},\"finish_reason\":null}]}\n\n");
            out.chunk(&self.event);
        } else {
            self.content.push_str(text);
        }
    }

    fn finished(&mut self, finish: &Finish, out: &mut dyn ResponseOut) {
        let reason = finish_reason(finish.reason);
        if self.stream {
            let mut last = self.chunk(json!({}), Some(reason));
            last["usage"] = usage(finish);
            Self::send_event(out, &last);
            out.chunk(b"data: [DONE]\n\n");
            out.end_stream();
        } else {
            let body = json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "finish_reason": reason,
                }],
                "usage": usage(finish),
            });
            out.full(FullResponse::json(200, &body));
        }
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        let err = ApiError::from_engine(FLAVOR, error);
        if self.head_sent {
            Self::send_event(out, &err.body());
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
    use crate::api::FullResponse;

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

    #[test]
    fn the_hand_written_token_event_equals_the_json_tree_version() {
        let mut r = ChatResponder {
            id: "chatcmpl-7".into(),
            created: 1700000000,
            model: "qwen \"2.5\"".into(),
            stream: true,
            head_sent: true,
            content: String::new(),
            event: Vec::new(),
        };
        let mut out = Capture::default();
        r.text("a \"quoted\"\n 你好 🚀", &mut out);
        let text = String::from_utf8(out.0).unwrap();
        let payload = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let parsed: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(
            parsed,
            r.chunk(json!({"content": "a \"quoted\"\n 你好 🚀"}), None)
        );
    }
}
