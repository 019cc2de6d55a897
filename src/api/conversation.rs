//! From a request's messages to what the engine runs: the whole conversation rendered with the
//! model's chat template (so the engine can reuse the runtime's KV cache across turns), or, in
//! `runtime` template mode, the newest input alone for the runtime to template
//! (`runtime_input.rs`).

use serde_json::Value;

use super::ctx::Ctx;
use super::error::{echo, ApiError, Flavor};
use crate::chat::{Role, SystemRole, ToolFormat, Turn};
use crate::engine::{Conversation, Job};

/// OpenAI `messages`: content is a string, null (assistant turns with tool calls) or a list of
/// parts whose text parts count; image parts are refused until vision models are supported.
/// Assistant tool calls are written in the tool format of the template the conversation is
/// rendered with (see [`tool_format`]).
pub fn openai_turns(messages: &[Value], tools: ToolFormat) -> Result<Vec<Turn>, ApiError> {
    turns(messages, Flavor::OpenAi, tools)
}

/// Ollama `messages`: content is a string; `images` are refused.
pub fn ollama_turns(messages: &[Value], tools: ToolFormat) -> Result<Vec<Turn>, ApiError> {
    turns(messages, Flavor::Ollama, tools)
}

/// The format tool calls are asked for and written in: the template's; with the runtime's own
/// template, Qwen's (what `rkllm_set_function_tools` writes, see the simulator's README).
pub fn tool_format(ctx: &Ctx<'_>) -> ToolFormat {
    ctx.template.map_or(ToolFormat::Hermes, |t| t.tool_format)
}

fn turns(messages: &[Value], flavor: Flavor, tools: ToolFormat) -> Result<Vec<Turn>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            flavor,
            "'messages' must be a non-empty array",
            Some("messages"),
        ));
    }
    let wrong = |field: &str, expected: &str| {
        ApiError::bad_request(
            flavor,
            format!("'{field}' must be {expected}"),
            Some("messages"),
        )
    };
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let Some(m) = m.as_object() else {
            return Err(wrong("messages[]", "an object"));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool" | "function") => Role::Tool,
            Some(other) => {
                return Err(ApiError::bad_request(
                    flavor,
                    format!(
                        "'messages[].role' '{}' is not one of system, user, assistant, tool",
                        echo(other)
                    ),
                    Some("messages"),
                ))
            }
            None => return Err(wrong("messages[].role", "a string")),
        };
        if m.get("images")
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(ApiError::bad_request(
                flavor,
                "'messages': this model does not take images",
                Some("messages"),
            ));
        }
        let mut content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) if flavor == Flavor::OpenAi => text_parts(parts)?,
            Some(_) => return Err(wrong("messages[].content", "a string")),
        };
        check_text(&content, flavor, "messages[].content")?;
        if role == Role::Assistant {
            if let Some(calls) = m.get("tool_calls") {
                super::tools::render_calls(&mut content, calls, flavor, tools)?;
                check_text(&content, flavor, "messages[].tool_calls")?;
            }
        }
        out.push(Turn::new(role, content));
    }
    Ok(out)
}

/// The runtime takes C strings: a NUL byte in a prompt is the client's error, never a runtime one.
pub fn check_text(text: &str, flavor: Flavor, field: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        let param = field.split(['[', '.']).next().unwrap_or(field);
        return Err(ApiError::bad_request(
            flavor,
            format!("'{field}' contains a NUL byte"),
            Some(param),
        ));
    }
    Ok(())
}

fn text_parts(parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some(other) => {
                return Err(ApiError::bad_request(
                    Flavor::OpenAi,
                    format!(
                        "'messages': content parts of type '{}' are not supported by this model",
                        echo(other)
                    ),
                    Some("messages"),
                ))
            }
            None => {
                return Err(ApiError::bad_request(
                    Flavor::OpenAi,
                    "'messages[].content[].type' must be a string",
                    Some("messages"),
                ))
            }
        }
    }
    Ok(text)
}

/// Builds the job: the rendered conversation when the daemon templates, else the newest input
/// (a user message or tool results) for the runtime's own template (which then sees only that).
/// `tools`: the request's tool definitions (JSON array), written into the system turn when
/// rkllmd renders the conversation; in `runtime` template mode the engine gives them to the
/// runtime instead.
pub fn job_for(
    ctx: &Ctx<'_>,
    job_id: u64,
    turns: &[Turn],
    thinking: Option<bool>,
    tools: Option<&str>,
    flavor: Flavor,
) -> Result<Job, ApiError> {
    if !turns.iter().any(|t| t.role == Role::User) {
        return Err(ApiError::bad_request(
            flavor,
            "'messages' has no user message",
            Some("messages"),
        ));
    }
    let Some(template) = ctx.template else {
        return Ok(super::runtime_input::job(job_id, turns, thinking));
    };
    let with_tools;
    let turns = match tools {
        Some(json) => {
            with_tools = super::tools::with_definitions(turns, json, template);
            &with_tools[..]
        }
        None => turns,
    };
    let rendered = template.render(turns, thinking);
    // Never left out: the leading system turns (and, where the family folds the system prompt
    // into the next turn, that turn too); without a system turn, the first turn, whose piece
    // carries the BOS text and any default system prompt.
    let systems = turns.iter().take_while(|t| t.role == Role::System).count();
    let folds = matches!(template.system_role, SystemRole::FoldIntoNextTurn { .. });
    let kept = match (systems, folds) {
        (0, _) => 1,
        (n, true) => n + 1,
        (n, false) => n,
    }
    .min(turns.len());
    let mut job = Job::conversation(
        job_id,
        Conversation {
            pieces: rendered.pieces,
            kept,
            generation_prompt: rendered.generation_prompt,
        },
    );
    job.set_past_turn(super::past_turn::for_template(template, tools.is_some()));
    Ok(job)
}
