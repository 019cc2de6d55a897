//! Ollama-compatible endpoints under `/api`: `/api/chat` and `/api/generate` (NDJSON streams by
//! default), and the model queries in `models.rs`. Errors here all take Ollama's shape,
//! `{"error": "..."}`.

mod clock;
mod format;
mod lifecycle;
mod models;
mod show;

use serde_json::Value;

use super::conversation;
use super::ctx::Ctx;
use super::error::{ApiError, Flavor};
use super::generation::Generation;
use super::images::{self, RequestImages};
use super::output::OutputFilter;
use super::params::{check_model, parse_json, Fields, GenParams, SamplingRequest, WARNING_HEADER};
use super::reply::Reply;
use super::tools::ToolCallParser;
use crate::chat::{PlacedImage, Role, Turn};
use std::time::Duration;

use crate::engine::{EngineError, Job, KeepAlive, State};
use crate::http::Request;
use format::{Kind, OllamaFormat};

pub use models::{manage, ps, root, tags, version};
pub use show::show;

const FLAVOR: Flavor = Flavor::Ollama;

/// The `options` rkllmd acts on; any other is reported in a warning header.
const OPTIONS: &[&str] = &[
    "num_predict",
    "temperature",
    "top_p",
    "top_k",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
];

/// Request fields accepted so that clients which send them work, but not acted on yet: the
/// prompt goes to the runtime as is, under the model's own template and system prompt, and no
/// output format or template control is passed on. A warning header names the ones a
/// request gave a value. (`keep_alive` is read for every Ollama request by `api::route`.)
const IGNORED_FIELDS: &[&str] = &["format", "template", "suffix", "context"];

pub fn chat(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    let head = Head::read(&f, ctx, Kind::Chat)?;
    let messages = f.array("messages")?.map_or(&[][..], Vec::as_slice);
    if messages.is_empty() {
        return load(req, ctx, head, job_id);
    }
    let mut images = RequestImages::new(ctx.image_limits, FLAVOR);
    let turns = conversation::ollama_turns(messages, conversation::tool_format(ctx), &mut images)?;
    let tools = super::tools::request_tools(&f, messages)?;
    let thinking = ctx.thinking(f.bool("think")?, head.stream);
    let (job, dropped) =
        conversation::job_for(ctx, job_id, &turns, thinking, tools.as_ref(), FLAVOR)?;
    start(&f, ctx, head, job, dropped.as_deref())
}

pub fn generate(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    let head = Head::read(&f, ctx, Kind::Generate)?;
    let mut images = RequestImages::new(ctx.image_limits, FLAVOR);
    let prompt_images = f
        .array("images")?
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
        .map(|(j, v)| match v.as_str() {
            Some(text) => images.base64(text, &format!("images[{j}]")),
            None => Err(f.wrong_type("images", "an array of base64 strings")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = match f.str("prompt")? {
        None | Some("") => return load(req, ctx, head, job_id),
        Some(prompt) => prompt,
    };
    conversation::check_text(prompt, FLAVOR, "prompt")?;
    if let Some(system) = f.str("system")? {
        conversation::check_text(system, FLAVOR, "system")?;
    }
    // raw: the prompt goes to the model as it is. rkllmd can honour that only when it renders
    // templates itself (the runtime's own template is then off).
    let raw = f.bool("raw")?.unwrap_or(false);
    let mut user = Turn::new(Role::User, prompt);
    // Before the prompt, as upstream's multimodal demo writes its prompts.
    user.images = prompt_images
        .into_iter()
        .map(|image| PlacedImage { at: 0, image })
        .collect();
    images::check_accepted(ctx, std::slice::from_ref(&user), FLAVOR)?;
    let job = if raw && ctx.template.is_some() {
        // A raw prompt places its images itself, with one '<image>' each.
        let mut job = Job::new(job_id, prompt);
        job.set_images(user.images.into_iter().map(|p| p.image).collect());
        job
    } else {
        let mut turns = Vec::with_capacity(2);
        if let Some(system) = f.str("system")?.filter(|s| !s.is_empty()) {
            turns.push(Turn::new(Role::System, system));
        }
        turns.push(user);
        let thinking = ctx.thinking(f.bool("think")?, head.stream);
        conversation::job_for(ctx, job_id, &turns, thinking, None, FLAVOR)?.0
    };
    let note = (raw && ctx.template.is_none()).then_some(
        "raw was ignored: the runtime applies the model's template (chat-template = runtime)",
    );
    start(&f, ctx, head, job, note)
}

/// What every generation request names first.
struct Head {
    kind: Kind,
    model: String,
    stream: bool,
}

impl Head {
    fn read(f: &Fields<'_>, ctx: &Ctx<'_>, kind: Kind) -> Result<Head, ApiError> {
        Ok(Head {
            kind,
            model: check_model(ctx, f)?,
            // Ollama streams unless told not to.
            stream: f.bool("stream")?.unwrap_or(true),
        })
    }
}

/// An empty prompt (no messages for chat) is how Ollama clients ask for the model to be
/// loaded, and with `keep_alive: 0` unloaded: a job that does just that when its turn comes.
fn load(req: &Request, ctx: &Ctx<'_>, head: Head, job_id: u64) -> Result<Reply, ApiError> {
    let not_ready = match ctx.state {
        State::Ready => None,
        // As before several models: the call answers once the first model is in.
        State::Loading => Some(EngineError::Loading),
        State::LoadFailed(reason) => Some(EngineError::LoadFailed {
            reason: reason.clone(),
        }),
        State::Wedged => Some(EngineError::Wedged),
        State::ShuttingDown | State::Stopped => Some(EngineError::ShuttingDown),
    };
    if let Some(e) = not_ready {
        return Err(ApiError::from_engine(FLAVOR, &e));
    }
    let unload = crate::api::keep_alive(req)? == Some(KeepAlive::For(Duration::ZERO));
    let (mut job, reason) = if unload {
        (Job::unload_model(job_id), "unload")
    } else {
        (Job::load_model(job_id), "load")
    };
    job.set_priority(ctx.priority(head.stream));
    let format = OllamaFormat::new(head.kind, head.model);
    Ok(Reply::Generate {
        job,
        responder: Box::new(lifecycle::Lifecycle::new(format, head.stream, reason)),
    })
}

fn start(
    f: &Fields<'_>,
    ctx: &Ctx<'_>,
    head: Head,
    mut job: Job,
    note: Option<&str>,
) -> Result<Reply, ApiError> {
    let (params, ignored_options) = read_options(f)?;
    job.set_priority(ctx.priority(head.stream));
    let mut warnings = params.apply(ctx, &mut job);
    warnings.extend(note.map(|n| (WARNING_HEADER, n.to_owned())));
    if let Some(w) = name_list(&ignored_options) {
        warnings.push((
            WARNING_HEADER,
            format!("options not supported by rkllmd were ignored: {w}"),
        ));
    }
    let fields: Vec<&str> = IGNORED_FIELDS
        .iter()
        .copied()
        .filter(|name| f.obj.get(*name).is_some_and(has_value))
        .collect();
    if let Some(w) = name_list(&fields) {
        warnings.push((
            WARNING_HEADER,
            format!("request fields not supported by rkllmd were ignored: {w}"),
        ));
    }
    let calls = (head.kind == Kind::Chat && job.tools().is_some())
        .then(|| ToolCallParser::new(conversation::tool_format(ctx), job.id()));
    let filter = OutputFilter::new(true, calls, params.stop);
    let format = OllamaFormat::new(head.kind, head.model);
    Ok(Reply::Generate {
        job,
        responder: Box::new(Generation::new(format, head.stream, filter, warnings)),
    })
}

/// Reads `options`, naming fields `options.<name>` in errors. Returns the parameters and the
/// names of the options that were given but are not acted on.
fn read_options<'a>(f: &Fields<'a>) -> Result<(GenParams, Vec<&'a str>), ApiError> {
    let Some(o) = f.object("options")? else {
        return Ok((GenParams::default(), Vec::new()));
    };
    let o = o.named_under("options.");
    let max_tokens = match o.int("num_predict")? {
        // -1 is "no limit" and -2 "until the context is full": both mean the daemon's cap.
        None | Some(-1 | -2) => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(_) => {
            return Err(o.wrong_type("num_predict", "a positive integer, or -1 for no limit"))
        }
    };
    let params = GenParams {
        max_tokens,
        sampling: SamplingRequest::read(&o)?,
        stop: o.stop("stop")?,
        seed: o.int("seed")?,
    };
    let ignored = o
        .obj
        .iter()
        .filter(|(name, v)| !v.is_null() && !OPTIONS.contains(&name.as_str()))
        .map(|(name, _)| name.as_str())
        .collect();
    Ok((params, ignored))
}

/// A value that asks for something: not null, false, "" or empty.
fn has_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Names for a header value. They come from the client, so only plain identifiers are echoed
/// (a header must never carry CR/LF a client chose); the rest are counted.
fn name_list(names: &[&str]) -> Option<String> {
    let plain =
        |n: &str| n.len() <= 40 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let mut list: Vec<String> = names
        .iter()
        .filter(|n| plain(n))
        .map(|n| (*n).to_owned())
        .collect();
    let others = names.len() - list.len();
    if others > 0 {
        list.push(format!("{others} other(s)"));
    }
    (!list.is_empty()).then(|| list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(v: &Value) -> Result<(GenParams, Vec<String>), ApiError> {
        let body = json!({ "options": v });
        let f = Fields::parse_body(&body, FLAVOR).unwrap();
        read_options(&f).map(|(p, ignored)| (p, ignored.into_iter().map(str::to_owned).collect()))
    }

    fn error_of(r: Result<(GenParams, Vec<String>), ApiError>) -> (u16, Value) {
        let e = r.expect_err("an error");
        (e.status, e.body())
    }

    #[test]
    fn options_become_generation_parameters() {
        let (p, ignored) = options(&json!({
            "num_predict": 5, "temperature": 0.3, "top_p": 0.5, "top_k": 7, "repeat_penalty": 1.2,
            "frequency_penalty": 0.1, "presence_penalty": -0.1, "stop": ["a", "b"], "seed": 42,
            "num_ctx": 8192, "mirostat": null,
        }))
        .unwrap();
        assert_eq!(p.max_tokens, Some(5));
        let s = p.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.top_k),
            (Some(0.3), Some(0.5), Some(7))
        );
        assert_eq!(
            (s.repeat_penalty, s.frequency_penalty, s.presence_penalty),
            (Some(1.2), Some(0.1), Some(-0.1))
        );
        assert_eq!(p.stop, vec!["a", "b"]);
        assert_eq!(p.seed, Some(42));
        assert_eq!(ignored, vec!["num_ctx"]);
    }

    #[test]
    fn num_predict_minus_one_or_absent_is_the_default() {
        for v in [
            json!({"num_predict": -1}),
            json!({"num_predict": -2}),
            json!({}),
            json!(null),
        ] {
            let (p, _) = options(&v).unwrap();
            assert_eq!(p.max_tokens, None, "{v}");
        }
        let body = json!({});
        let (p, ignored) = read_options(&Fields::parse_body(&body, FLAVOR).unwrap()).unwrap();
        assert_eq!((p.max_tokens, p.stop.len(), ignored.len()), (None, 0, 0));
    }

    #[test]
    fn wrong_options_are_400_in_ollama_shape_naming_the_field() {
        let cases = [
            (json!({"temperature": "hot"}), "options.temperature"),
            (json!({"temperature": 9}), "options.temperature"),
            (json!({"top_k": 1.5}), "options.top_k"),
            (json!({"num_predict": 0}), "options.num_predict"),
            (json!({"num_predict": -3}), "options.num_predict"),
            (json!({"num_predict": "5"}), "options.num_predict"),
            (json!({"stop": [1]}), "options.stop"),
            (json!({"seed": "x"}), "options.seed"),
        ];
        for (v, field) in cases {
            let (status, body) = error_of(options(&v));
            assert_eq!(status, 400, "{v}");
            let msg = body["error"].as_str().unwrap();
            assert!(msg.contains(&format!("'{field}'")), "{v}: {msg}");
            assert_eq!(body.as_object().unwrap().len(), 1, "only 'error': {body}");
        }
        let (status, body) = error_of(options(&json!([1])));
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("'options'"),
            "{body}"
        );
    }

    #[test]
    fn only_meaningful_values_count_as_given() {
        for v in [json!(null), json!(false), json!(""), json!([]), json!({})] {
            assert!(!has_value(&v), "{v}");
        }
        for v in [
            json!(true),
            json!("json"),
            json!([1]),
            json!({"type": "object"}),
            json!(0),
        ] {
            assert!(has_value(&v), "{v}");
        }
    }

    #[test]
    fn header_values_never_echo_what_is_not_a_plain_name() {
        assert_eq!(name_list(&[]), None);
        assert_eq!(
            name_list(&["num_ctx", "mirostat"]).as_deref(),
            Some("num_ctx, mirostat")
        );
        let evil = "x\r\nSet-Cookie: a=b";
        assert_eq!(
            name_list(&["num_ctx", evil]).as_deref(),
            Some("num_ctx, 1 other(s)")
        );
        assert_eq!(name_list(&[evil]).as_deref(), Some("1 other(s)"));
    }
}
