//! `POST /v1/responses`, OpenAI's Responses API. The request's `instructions`, `input` items
//! and flat function tools are translated into the chat form (`messages`, nested `tools`,
//! `tool_choice`), which the shared conversation and tools code then reads as it reads a chat
//! completion's; the answer goes through the one responder core in `format.rs`'s shape.
//!
//! rkllmd keeps no responses: `store` is always false in the answer, and `previous_response_id`
//! (or a `conversation`) is a 400 asking for the whole conversation in `input`.

mod format;

use serde_json::{json, Map, Value};

use super::{format_note, reasoning_effort, unix_now};
use crate::api::conversation;
use crate::api::ctx::Ctx;
use crate::api::error::{ApiError, Flavor};
use crate::api::generation::Generation;
use crate::api::images::RequestImages;
use crate::api::output::OutputFilter;
use crate::api::params::WARNING_HEADER;
use crate::api::params::{check_model, parse_json, Fields, GenParams, SamplingRequest};
use crate::api::reply::Reply;
use crate::api::tools::{self, Choice, ToolCallParser};
use crate::http::Request;
use format::{Echo, ResponsesFormat};

const FLAVOR: Flavor = Flavor::OpenAi;

pub fn create(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    for field in ["previous_response_id", "conversation"] {
        if f.obj.get(field).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(
                FLAVOR,
                format!(
                    "'{field}' is not supported: rkllmd keeps no responses; send the whole \
                     conversation in 'input'"
                ),
                Some(field),
            ));
        }
    }
    if f.bool("background")? == Some(true) {
        return Err(ApiError::bad_request(
            FLAVOR,
            "'background' is not supported: rkllmd keeps no responses to poll",
            Some("background"),
        ));
    }
    let model = check_model(ctx, &f)?;
    let instructions = f.str("instructions")?;
    let chat = chat_tools(&f)?;
    let chat_fields = Fields::parse_body(&chat, FLAVOR)?;
    let choice = tools::tool_choice(&chat_fields)?;
    let messages = messages(&f, instructions)?;
    let tool_defs =
        tools::request_tools(&chat_fields, &messages)?.filter(|_| choice != Choice::None);
    let stream = f.bool("stream")?.unwrap_or(false);
    let effort = match f.object("reasoning")? {
        Some(r) => reasoning_effort(&r.named_under("reasoning."), "effort")?,
        None => None,
    };
    let thinking = ctx.thinking(effort, stream);
    let mut images = RequestImages::for_responses(ctx.image_limits);
    let turns = conversation::openai_turns(&messages, conversation::tool_format(ctx), &mut images)?;
    let (mut job, dropped) =
        conversation::job_for(ctx, job_id, &turns, thinking, tool_defs.as_ref(), FLAVOR)?;
    job.set_priority(ctx.priority(stream));

    let params = GenParams {
        max_tokens: f.count("max_output_tokens")?,
        sampling: SamplingRequest::read(&f)?,
        stop: Vec::new(),
        seed: None,
    };
    let mut warnings = params.apply(ctx, &mut job);
    warnings.extend(dropped.map(|n| (WARNING_HEADER, n)));
    if job.tools().is_some() && choice == Choice::Forced {
        warnings.push((
            WARNING_HEADER,
            "tool_choice cannot force a call: the runtime decides whether to call a tool".into(),
        ));
    }
    let text = f.object("text")?;
    let text_format = match &text {
        Some(t) => {
            warnings.extend(format_note(t, "format")?.map(|n| (WARNING_HEADER, n)));
            t.obj.get("format").cloned().unwrap_or(Value::Null)
        }
        None => Value::Null,
    };
    let calls = job
        .tools()
        .is_some()
        .then(|| ToolCallParser::new(conversation::tool_format(ctx), job.id()));
    let filter = OutputFilter::new(true, calls, Vec::new());
    let echo = Echo {
        model,
        instructions: instructions.map(str::to_owned),
        tools: echoed_tools(&f)?,
        tool_choice: body
            .get("tool_choice")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| json!("auto")),
        temperature: params.sampling.temperature,
        top_p: params.sampling.top_p,
        max_output_tokens: params.max_tokens,
        effort: f.object("reasoning")?.and_then(|r| {
            r.obj
                .get("effort")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }),
        metadata: body
            .get("metadata")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({})),
        text_format: if text_format.is_null() {
            json!({"type": "text"})
        } else {
            text_format
        },
    };
    let format = ResponsesFormat::new(job.id(), unix_now(), echo);
    Ok(Reply::Generate {
        job,
        responder: Box::new(Generation::new(format, stream, filter, warnings)),
    })
}

/// `instructions` and `input` as chat messages: a string is one user message; items are
/// messages (content a string or `input_text` / `output_text` parts), `function_call`s (joined
/// into the assistant message before them, as chat completions carry them) and
/// `function_call_output`s (tool messages). Reasoning items are left out: the templates drop
/// earlier reasoning from the history.
fn messages(f: &Fields<'_>, instructions: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(i) = instructions.filter(|i| !i.is_empty()) {
        out.push(json!({"role": "system", "content": i}));
    }
    match f.obj.get("input") {
        Some(Value::String(s)) => out.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                push_item(&mut out, item)?;
            }
        }
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                FLAVOR,
                "'input' is required",
                Some("input"),
            ))
        }
        Some(_) => return Err(f.wrong_type("input", "a string or an array of items")),
    }
    Ok(out)
}

fn bad_item(what: impl Into<String>) -> ApiError {
    ApiError::bad_request(FLAVOR, what, Some("input"))
}

fn push_item(out: &mut Vec<Value>, item: &Value) -> Result<(), ApiError> {
    let Some(obj) = item.as_object() else {
        return Err(bad_item("'input[]' must be an object"));
    };
    let str_of = |name: &str| -> Result<&str, ApiError> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad_item(format!("'input[].{name}' must be a string")))
    };
    let kind = match obj.get("type") {
        None | Some(Value::Null) => "message",
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(bad_item("'input[].type' must be a string")),
    };
    match kind {
        "message" => {
            let role = str_of("role")?;
            let content = match obj.get("content") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Array(parts)) => Value::Array(chat_parts(parts)?),
                _ => return Err(bad_item("'input[].content' must be a string or parts")),
            };
            out.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call = json!({
                "id": str_of("call_id")?,
                "type": "function",
                "function": {"name": str_of("name")?, "arguments": str_of("arguments")?},
            });
            match out.last_mut().and_then(Value::as_object_mut) {
                Some(last) if last.get("role").is_some_and(|r| r == "assistant") => {
                    let calls = last.entry("tool_calls").or_insert_with(|| json!([]));
                    if let Some(calls) = calls.as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match obj.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_of(parts)?,
                _ => return Err(bad_item("'input[].output' must be a string or text parts")),
            };
            out.push(
                json!({"role": "tool", "tool_call_id": str_of("call_id")?, "content": output}),
            );
        }
        "reasoning" => {}
        "item_reference" => {
            return Err(bad_item(
                "'input[]' item_reference is not supported: rkllmd keeps no items",
            ))
        }
        other => {
            return Err(bad_item(format!(
                "'input[].type' '{other}' is not supported (message, function_call, \
                 function_call_output, reasoning)"
            )))
        }
    }
    Ok(())
}

/// A message's content parts as chat completions' parts: text parts as `text`, `input_image`
/// as `image_url` (a data URL; the chat path checks it). An image by `file_id` is refused:
/// rkllmd keeps no files.
fn chat_parts(parts: &[Value]) -> Result<Vec<Value>, ApiError> {
    parts
        .iter()
        .map(|part| match part.get("type").and_then(Value::as_str) {
            Some("input_image") => match part.get("image_url") {
                Some(Value::String(url)) => {
                    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
                }
                _ if part.get("file_id").is_some_and(|v| !v.is_null()) => Err(bad_item(
                    "'input[].content[]' input_image by file_id is not supported: rkllmd keeps \
                     no files; send the image in 'image_url' as a data URL",
                )),
                _ => Err(bad_item(
                    "'input[].content[].image_url' must be a data URL string",
                )),
            },
            _ => Ok(json!({"type": "text", "text": text_of(std::slice::from_ref(part))?})),
        })
        .collect()
}

/// The text of content parts; an image or a file here (a tool's output) is refused.
fn text_of(parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text" | "summary_text") => {
                text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some(other) => {
                return Err(bad_item(format!(
                    "'input[].content[]' parts of type '{other}' are not supported by this model"
                )))
            }
            None => return Err(bad_item("'input[].content[].type' must be a string")),
        }
    }
    Ok(text)
}

/// The request's function tools as a response lists them: `strict` and `parameters` always
/// present (null when not given), as the schema requires.
fn echoed_tools(f: &Fields<'_>) -> Result<Value, ApiError> {
    let tools = f.array("tools")?.map_or(&[][..], Vec::as_slice);
    Ok(tools
        .iter()
        .map(|t| {
            let field = |k: &str| t.get(k).cloned().unwrap_or(Value::Null);
            json!({"type": "function", "name": field("name"), "description": field("description"),
                   "parameters": field("parameters"), "strict": field("strict")})
        })
        .collect())
}

/// The flat function tools (`{"type": "function", "name", "description", "parameters"}`) and
/// `tool_choice` in the chat form the tools code reads. Built-in tools (web search, file
/// search, ...) do not exist here and are refused.
fn chat_tools(f: &Fields<'_>) -> Result<Value, ApiError> {
    let mut chat = Map::new();
    if let Some(tools) = f.array("tools")? {
        let mut out = Vec::with_capacity(tools.len());
        for tool in tools {
            let ok = tool.get("type").and_then(Value::as_str) == Some("function")
                && tool.get("name").is_some_and(Value::is_string);
            if !ok {
                return Err(f.wrong_type(
                    "tools",
                    "an array of {\"type\": \"function\", \"name\": ...} tools (only function \
                     tools are served)",
                ));
            }
            let mut function = Map::new();
            for key in ["name", "description", "parameters"] {
                if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                    function.insert(key.into(), v.clone());
                }
            }
            out.push(json!({"type": "function", "function": function}));
        }
        chat.insert("tools".into(), Value::Array(out));
    }
    let choice =
        match f.obj.get("tool_choice") {
            Some(Value::Object(o)) => match (o.get("type").and_then(Value::as_str), o.get("name")) {
                (Some("function"), Some(Value::String(name))) => {
                    json!({"type": "function", "function": {"name": name}})
                }
                _ => return Err(f.wrong_type(
                    "tool_choice",
                    "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                )),
            },
            Some(v) => v.clone(),
            None => Value::Null,
        };
    chat.insert("tool_choice".into(), choice);
    Ok(Value::Object(chat))
}
