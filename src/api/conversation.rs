//! From a request's messages to what the engine runs: the whole conversation rendered with the
//! model's chat template (so the engine can reuse the runtime's KV cache across turns), or, in
//! `runtime` template mode, the newest input alone for the runtime to template
//! (`runtime_input.rs`).

use std::fmt::Write as _;

use serde_json::Value;

use super::ctx::Ctx;
use super::error::{echo, ApiError, Flavor};
use super::images::{self, RequestImages};
use super::tools::{self, Cost, RequestTools};
use crate::chat::{PlacedImage, Role, SystemRole, ToolFormat, Turn};
use crate::engine::{Conversation, Job};

/// Longest list of left-out tool names a warning header carries, in bytes.
const DROPPED_NAMES_MAX_BYTES: usize = 1024;

/// OpenAI `messages`: content is a string, null (assistant turns with tool calls) or a list of
/// `text` and `image_url` parts (images as data URLs, see [`RequestImages::url`]). Assistant
/// tool calls are written in the tool format of the template the conversation is rendered with
/// (see [`tool_format`]).
pub fn openai_turns(
    messages: &[Value],
    tools: ToolFormat,
    images: &mut RequestImages,
) -> Result<Vec<Turn>, ApiError> {
    turns(messages, Flavor::OpenAi, tools, images)
}

/// Ollama `messages`: content is a string, `images` a list of base64 images.
pub fn ollama_turns(
    messages: &[Value],
    tools: ToolFormat,
    images: &mut RequestImages,
) -> Result<Vec<Turn>, ApiError> {
    turns(messages, Flavor::Ollama, tools, images)
}

/// The format tool calls are asked for and written in: the template's; with the runtime's own
/// template, Qwen's (what `rkllm_set_function_tools` writes, see the simulator's README).
pub fn tool_format(ctx: &Ctx<'_>) -> ToolFormat {
    ctx.template.map_or(ToolFormat::Hermes, |t| t.tool_format)
}

fn turns(
    messages: &[Value],
    flavor: Flavor,
    tools: ToolFormat,
    images: &mut RequestImages,
) -> Result<Vec<Turn>, ApiError> {
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
    for (i, m) in messages.iter().enumerate() {
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
        // Ollama's images have no place among the text: they go first (`at` 0).
        let mut turn_images = match m.get("images") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) if flavor == Flavor::Ollama => ollama_images(list, i, images)?,
            Some(Value::Array(list)) if list.is_empty() => Vec::new(),
            Some(_) if flavor == Flavor::OpenAi => {
                return Err(ApiError::bad_request(
                    flavor,
                    "'messages[].images' is not an OpenAI field: send images as 'image_url' \
                     content parts",
                    Some("messages"),
                ))
            }
            Some(_) => return Err(wrong("messages[].images", "an array of base64 strings")),
        };
        let mut content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) if flavor == Flavor::OpenAi => {
                let (text, part_images) = content_parts(parts, i, images)?;
                turn_images.extend(part_images);
                text
            }
            Some(_) => return Err(wrong("messages[].content", "a string")),
        };
        check_text(&content, flavor, "messages[].content")?;
        if role == Role::Assistant {
            if let Some(calls) = m.get("tool_calls") {
                super::tools::render_calls(&mut content, calls, flavor, tools)?;
                check_text(&content, flavor, "messages[].tool_calls")?;
            }
        }
        let mut turn = Turn::new(role, content);
        turn.images = turn_images;
        out.push(turn);
    }
    Ok(out)
}

/// Ollama's `images` of message `i`: base64 strings, placed before the message's text.
fn ollama_images(
    list: &[Value],
    i: usize,
    images: &mut RequestImages,
) -> Result<Vec<PlacedImage>, ApiError> {
    list.iter()
        .enumerate()
        .map(|(j, v)| {
            let field = format!("messages[{i}].images[{j}]");
            match v.as_str() {
                Some(text) => images
                    .base64(text, &field)
                    .map(|image| PlacedImage { at: 0, image }),
                None => Err(ApiError::bad_request(
                    Flavor::Ollama,
                    format!("'{field}' must be a base64 string"),
                    Some("messages"),
                )),
            }
        })
        .collect()
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

/// The text and the images of message `i`'s content parts: the text parts joined as they
/// are, each image placed where it came among them. An `image_url` is an object with a `url`
/// (OpenAI's shape) or, as some clients send it, the URL itself.
fn content_parts(
    parts: &[Value],
    i: usize,
    images: &mut RequestImages,
) -> Result<(String, Vec<PlacedImage>), ApiError> {
    let mut text = String::new();
    let mut found = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some("image_url") => {
                let field = images.part_field(i, j);
                let url = match part.get("image_url") {
                    Some(Value::String(url)) => Some(url.as_str()),
                    Some(Value::Object(o)) => o.get("url").and_then(Value::as_str),
                    _ => None,
                };
                let Some(url) = url else {
                    return Err(ApiError::bad_request(
                        Flavor::OpenAi,
                        format!("'{field}' must be an object with a 'url' string"),
                        field.split('[').next(),
                    ));
                };
                found.push(PlacedImage {
                    at: text.len(),
                    image: images.url(url, &field)?,
                });
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
    Ok((text, found))
}

/// Builds the job: the rendered conversation when the daemon templates, else the newest input
/// (a user message or tool results) for the runtime's own template (which then sees only that).
/// `tools`: the request's tool definitions, of which those that fit the tool budget (see
/// `tools::select`) are written into the system turn when rkllmd renders the conversation, or
/// given to the runtime in `runtime` template mode. Returns the job and, when tools were left
/// out, a warning that names them.
pub fn job_for(
    ctx: &Ctx<'_>,
    job_id: u64,
    turns: &[Turn],
    thinking: Option<bool>,
    tools: Option<&RequestTools>,
    flavor: Flavor,
) -> Result<(Job, Option<String>), ApiError> {
    if !turns.iter().any(|t| t.role == Role::User) {
        return Err(ApiError::bad_request(
            flavor,
            "'messages' has no user message",
            Some("messages"),
        ));
    }
    images::check_accepted(ctx, turns, flavor)?;
    let request_images = images::in_prompt_order(ctx, turns, flavor)?;
    let (kept_tools, note) = match tools {
        Some(tools) => fit_tools(ctx, turns, tools),
        None => (Vec::new(), None),
    };
    let left_out = tools.map_or(0, |t| t.defs.len().saturating_sub(kept_tools.len()));
    let tools_json = (!kept_tools.is_empty()).then(|| Value::Array(kept_tools.clone()).to_string());
    let Some(template) = ctx.template else {
        let mut job = super::runtime_input::job(job_id, turns, thinking);
        job.set_tools(tools_json, left_out);
        return Ok((job, note));
    };
    let with_tools;
    let (turns, tools_bytes) = if kept_tools.is_empty() {
        (turns, 0)
    } else {
        with_tools = tools::with_definitions(turns, &kept_tools, template);
        let bytes = tools::block_bytes(template.tool_format)
            + kept_tools
                .iter()
                .map(|t| tools::definition_bytes(template.tool_format, t))
                .sum::<usize>();
        (&with_tools[..], bytes)
    };
    let rendered = template.render(turns, thinking);
    // Never left out: the leading system turns (and, where the family folds the system prompt
    // into the next turn, that turn too); without a system turn, the first turn, whose piece
    // carries the BOS text and any default system prompt.
    let systems = turns.iter().take_while(|t| t.role == Role::System).count();
    let folds = matches!(template.system_role, SystemRole::FoldIntoNextTurn { .. });
    let mut kept = match (systems, folds) {
        (0, _) => 1,
        (n, true) => n + 1,
        (n, false) => n,
    };
    // Llama writes the definitions into the first user turn: it stays while it carries them.
    if !kept_tools.is_empty() && template.tool_format == ToolFormat::Llama3Json {
        let first_user = turns.iter().position(|t| t.role == Role::User);
        kept = kept.max(first_user.map_or(0, |i| i + 1));
    }
    let kept = kept.min(turns.len());
    let mut job = Job::conversation(
        job_id,
        Conversation {
            pieces: rendered.pieces,
            kept,
            generation_prompt: rendered.generation_prompt,
            tools_bytes,
        },
    );
    job.set_tools(tools_json, left_out);
    job.set_images(request_images);
    job.set_past_turn(super::past_turn::for_template(
        template,
        !kept_tools.is_empty(),
    ));
    Ok((job, note))
}

/// The request's tools that fit the tool budget, costed as the prompt's tool format writes them
/// (in `runtime` template mode, as Qwen's, which is what the runtime's function-tools API
/// writes), and a warning naming those left out.
fn fit_tools(ctx: &Ctx<'_>, turns: &[Turn], tools: &RequestTools) -> (Vec<Value>, Option<String>) {
    let format = tool_format(ctx);
    let costs: Vec<Cost<'_>> = tools
        .defs
        .iter()
        .map(|t| Cost {
            name: tools::name(t),
            tokens: ctx.estimate_tokens(tools::definition_bytes(format, t)),
        })
        .collect();
    let fixed = ctx.estimate_tokens(tools::block_bytes(format));
    let newest_user = turns
        .iter()
        .rev()
        .find(|t| t.role == Role::User)
        .map_or("", |t| t.content.as_str());
    let budget = u64::from(ctx.tools_budget);
    let selection = tools::select(&costs, fixed, budget, &tools.called, newest_user);
    if selection.dropped.is_empty() {
        return (tools.defs.clone(), None);
    }
    log::debug!(
        "{} of {} tools left out to fit the tool budget of {budget} tokens",
        selection.dropped.len(),
        tools.defs.len()
    );
    let kept = selection
        .kept
        .iter()
        .map(|&i| tools.defs[i].clone())
        .collect();
    (kept, Some(dropped_note(&selection.dropped, budget)))
}

/// The warning for tools left out: their names, as header-safe text (visible ASCII; anything
/// else escaped), the list cut at `DROPPED_NAMES_MAX_BYTES`.
fn dropped_note(dropped: &[String], budget: u64) -> String {
    let mut names = String::new();
    for (i, name) in dropped.iter().enumerate() {
        let safe: String = name
            .chars()
            .flat_map(|c| {
                let plain = c.is_ascii_graphic() || c == ' ';
                let escaped = (!plain).then(|| c.escape_unicode());
                plain
                    .then_some(c)
                    .into_iter()
                    .chain(escaped.into_iter().flatten())
            })
            .collect();
        if names.len() + safe.len() > DROPPED_NAMES_MAX_BYTES {
            let _ = write!(names, " and {} more", dropped.len() - i);
            break;
        }
        if i > 0 {
            names.push_str(", ");
        }
        names.push_str(&safe);
    }
    format!(
        "{} tool(s) left out to fit the context (tools-budget: {budget} tokens): {names}",
        dropped.len()
    )
}

#[cfg(test)]
mod tests {
    use super::dropped_note;

    #[test]
    fn the_dropped_tools_warning_is_header_safe_and_bounded() {
        let names = [
            "ok_name".to_owned(),
            "bad\r\nX-Injected: 1".to_owned(),
            "météo".to_owned(),
        ];
        let note = dropped_note(&names, 1024);
        assert!(note.bytes().all(|b| (b' '..=b'~').contains(&b)), "{note}");
        assert_eq!(
            note,
            "3 tool(s) left out to fit the context (tools-budget: 1024 tokens): ok_name, \
             bad\\u{d}\\u{a}X-Injected: 1, m\\u{e9}t\\u{e9}o"
        );
        let many: Vec<String> = (0..500).map(|i| format!("tool_{i}")).collect();
        let note = dropped_note(&many, 10);
        assert!(note.len() < 1200, "{} bytes", note.len());
        assert!(note.ends_with(" more"), "{note}");
    }
}
