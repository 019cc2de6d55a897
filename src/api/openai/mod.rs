//! OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, and
//! (in `responses/`) `/v1/responses`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::conversation;
use super::ctx::Ctx;
use super::error::{ApiError, Flavor};
use super::full_response::FullResponse;
use super::generation::Generation;
use super::images::RequestImages;
use super::output::OutputFilter;
use super::params::{check_model, parse_json, Fields, GenParams, SamplingRequest, WARNING_HEADER};
use super::reply::Reply;
use super::tools::{self, Choice, ToolCallParser};
use crate::engine::Job;
use crate::http::Request;
use format::{Kind, OpenAiFormat};

mod format;
mod responses;

pub use responses::create as responses;

const FLAVOR: Flavor = Flavor::OpenAi;

/// Every model served, the default first.
pub fn models(ctx: &Ctx<'_>) -> FullResponse {
    let data: Vec<Value> = ctx
        .catalog
        .selections()
        .filter_map(|sel| ctx.catalog.name_of(sel))
        .map(|name| model_card(ctx, &name))
        .collect();
    FullResponse::json(200, &json!({"object": "list", "data": data}))
}

pub fn model(ctx: &Ctx<'_>, id: &str) -> Result<FullResponse, ApiError> {
    match ctx
        .catalog
        .select(Some(id))
        .and_then(|s| ctx.catalog.name_of(s))
    {
        Some(name) if !id.is_empty() => Ok(FullResponse::json(200, &model_card(ctx, &name))),
        _ => Err(ApiError::unknown_model(FLAVOR, ctx.catalog, id)),
    }
}

fn model_card(ctx: &Ctx<'_>, name: &str) -> Value {
    let created = unix_now().saturating_sub(ctx.started.elapsed().as_secs());
    json!({"id": name, "object": "model", "created": created, "owned_by": "rkllmd"})
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
    let mut images = RequestImages::new(ctx.image_limits, FLAVOR);
    let turns = conversation::openai_turns(messages, conversation::tool_format(ctx), &mut images)?;
    let choice = tools::tool_choice(&f)?;
    let tools = tools::request_tools(&f, messages)?.filter(|_| choice != Choice::None);
    let thinking = ctx.thinking(enable_thinking(&f)?, streams(&f)?);
    let (job, dropped) =
        conversation::job_for(ctx, job_id, &turns, thinking, tools.as_ref(), FLAVOR)?;
    let mut notes: Vec<String> = dropped.into_iter().collect();
    if tools.is_some() && choice == Choice::Forced {
        notes.push(
            "tool_choice cannot force a call: the runtime decides whether to call a tool"
                .to_owned(),
        );
    }
    notes.extend(format_note(&f, "response_format")?);
    generate(&f, ctx, job, Kind::Chat, notes)
}

/// OpenAI answers in one piece unless `stream` is true.
pub(super) fn streams(f: &Fields<'_>) -> Result<bool, ApiError> {
    Ok(f.bool("stream")?.unwrap_or(false))
}

/// Thinking on or off (Qwen3-style models): `enable_thinking` at the top level, or in
/// `chat_template_kwargs` as vLLM and SGLang clients send it; failing both, OpenAI's
/// `reasoning_effort`, where `"none"` is off and any level is on (the template's switch has
/// no levels between).
fn enable_thinking(f: &Fields<'_>) -> Result<Option<bool>, ApiError> {
    if let Some(b) = f.bool("enable_thinking")? {
        return Ok(Some(b));
    }
    if let Some(b) = match f.object("chat_template_kwargs")? {
        Some(kwargs) => kwargs.bool("enable_thinking")?,
        None => None,
    } {
        return Ok(Some(b));
    }
    reasoning_effort(f, "reasoning_effort")
}

/// An OpenAI reasoning effort as the template's thinking switch.
pub(super) fn reasoning_effort(f: &Fields<'_>, name: &str) -> Result<Option<bool>, ApiError> {
    match f.str(name)? {
        None => Ok(None),
        Some("none") => Ok(Some(false)),
        Some("minimal" | "low" | "medium" | "high" | "xhigh") => Ok(Some(true)),
        Some(_) => Err(f.wrong_type(name, "one of none, minimal, low, medium, high, xhigh")),
    }
}

/// An output format (chat's `response_format`, the Responses API's `text.format`): plain text
/// is what the model writes; JSON output cannot be enforced, since the runtime samples with no
/// grammar or logit hook, so it is named in a warning rather than pretended.
pub(super) fn format_note(parent: &Fields<'_>, name: &str) -> Result<Option<String>, ApiError> {
    let Some(format) = parent.object(name)? else {
        return Ok(None);
    };
    match format.obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some(kind @ ("json_object" | "json_schema")) => Ok(Some(format!(
            "{name} {kind} is not enforced: the runtime cannot constrain sampling, so the \
             answer is the model's own text"
        ))),
        _ => Err(parent.wrong_type(
            name,
            "an object whose type is text, json_object or json_schema",
        )),
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
    if prompt.is_empty() {
        // With rkllmd's templates the runtime would get no input at all and fail the run.
        return Err(ApiError::bad_request(
            FLAVOR,
            "'prompt' must not be empty: there is nothing to continue",
            Some("prompt"),
        ));
    }
    conversation::check_text(&prompt, FLAVOR, "prompt")?;
    // A completion continues the text as it is: with rkllmd's templates the runtime's own is off,
    // so the prompt reaches the model unchanged.
    generate(
        &f,
        ctx,
        Job::new(job_id, prompt),
        Kind::Completion,
        Vec::new(),
    )
}

fn generate(
    f: &Fields<'_>,
    ctx: &Ctx<'_>,
    mut job: Job,
    kind: Kind,
    notes: Vec<String>,
) -> Result<Reply, ApiError> {
    let model = check_model(ctx, f)?;
    if f.count("n")?.is_some_and(|n| n > 1) {
        return Err(ApiError::bad_request(
            FLAVOR,
            "'n' greater than 1 is not supported",
            Some("n"),
        ));
    }
    let stream = streams(f)?;
    job.set_priority(ctx.priority(stream));
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
    warnings.extend(notes.into_iter().map(|n| (WARNING_HEADER, n)));
    // A completion continues raw text; only a chat answer's think block is reasoning, and only
    // a chat with tools looks for calls.
    let chat = kind == Kind::Chat;
    let calls = (chat && job.tools().is_some())
        .then(|| ToolCallParser::new(conversation::tool_format(ctx), job.id()));
    let filter = OutputFilter::new(chat, calls, params.stop);
    let format = OpenAiFormat::new(kind, job.id(), model, unix_now(), stream, include_usage);
    Ok(Reply::Generate {
        job,
        responder: Box::new(Generation::new(format, stream, filter, warnings)),
    })
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
