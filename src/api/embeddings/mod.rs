//! Embeddings: OpenAI's `POST /v1/embeddings`, Ollama's `POST /api/embed` and its older
//! `POST /api/embeddings`. Each text is one last-hidden-layer run of the runtime, queued with
//! the generations; the engine pools and normalises, the responder here truncates to
//! `dimensions` and writes the API's body.

mod base64;
mod responder;

use std::time::Instant;

use serde_json::{json, Value};

use super::conversation::check_text;
use super::ctx::Ctx;
use super::error::{ApiError, Flavor};
use super::full_response::FullResponse;
use super::params::{check_model, parse_json, Fields};
use super::reply::Reply;
use crate::engine::{EmbedInput, Job};
use crate::http::Request;
use responder::{Body, EmbeddingResponder};

/// `POST /v1/embeddings`.
pub fn openai(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    const FLAVOR: Flavor = Flavor::OpenAi;
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    let model = check_model(ctx, &f)?;
    let texts = texts(&f, "input", FLAVOR)?;
    let base64 = match f.str("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(f.wrong_type("encoding_format", "\"float\" or \"base64\"")),
    };
    let dimensions = f.count("dimensions")?;
    embed(
        ctx,
        job_id,
        texts,
        false,
        Body::OpenAi { model, base64 },
        dimensions,
    )
}

/// `POST /api/embed`: `input` is a string or an array of strings.
pub fn ollama_embed(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    const FLAVOR: Flavor = Flavor::Ollama;
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    let model = check_model(ctx, &f)?;
    let texts = texts(&f, "input", FLAVOR)?;
    // Ollama's default: an input over the context is cut to fit, not refused.
    let truncate = f.bool("truncate")?.unwrap_or(true);
    let dimensions = f.count("dimensions")?;
    let body = Body::OllamaEmbed {
        model,
        routed: Instant::now(),
    };
    embed(ctx, job_id, texts, truncate, body, dimensions)
}

/// `POST /api/embeddings`, Ollama's older endpoint: one `prompt`, one `embedding`.
pub fn ollama_embeddings(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Result<Reply, ApiError> {
    const FLAVOR: Flavor = Flavor::Ollama;
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    check_model(ctx, &f)?;
    let Some(prompt) = f.str("prompt")? else {
        return Err(ApiError::bad_request(
            FLAVOR,
            "'prompt' is required",
            Some("prompt"),
        ));
    };
    if prompt.is_empty() {
        // As Ollama answers it: no text, no vector.
        return Ok(Reply::Full(FullResponse::json(
            200,
            &json!({"embedding": []}),
        )));
    }
    check_text(prompt, FLAVOR, "prompt")?;
    embed(
        ctx,
        job_id,
        vec![prompt.to_owned()],
        true,
        Body::OllamaLegacy,
        None,
    )
}

fn embed(
    ctx: &Ctx<'_>,
    job_id: u64,
    texts: Vec<String>,
    truncate: bool,
    body: Body,
    dimensions: Option<u32>,
) -> Result<Reply, ApiError> {
    let count = texts.len();
    let mut job = Job::embed(
        job_id,
        EmbedInput {
            texts,
            pooling: ctx.embedding_pooling,
            truncate,
        },
    );
    // Never streamed: background under `background = non-streamed` (bulk indexing must not
    // hold up a chat; a query embedding is short and waits at most for the streams queued).
    job.set_priority(ctx.priority(false));
    Ok(Reply::Generate {
        job,
        responder: Box::new(EmbeddingResponder::new(body, count, dimensions)),
    })
}

/// The texts of `input`: a string or an array of strings, none empty. Token arrays (OpenAI
/// allows them) cannot be run: the runtime takes text, and rkllmd has no tokenizer to decode
/// them.
fn texts(f: &Fields<'_>, name: &str, flavor: Flavor) -> Result<Vec<String>, ApiError> {
    let token_arrays = || {
        ApiError::bad_request(
            flavor,
            format!("'{name}' as token arrays is not supported: send the text instead"),
            Some(name),
        )
    };
    let texts: Vec<String> = match f.obj.get(name) {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                flavor,
                format!("'{name}' is required"),
                Some(name),
            ))
        }
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::bad_request(
                flavor,
                format!("'{name}' must not be an empty array"),
                Some(name),
            ))
        }
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => texts.push(s.clone()),
                    Value::Number(_) | Value::Array(_) => return Err(token_arrays()),
                    _ => return Err(f.wrong_type(name, "a string or an array of strings")),
                }
            }
            texts
        }
        Some(Value::Number(_)) => return Err(token_arrays()),
        Some(_) => return Err(f.wrong_type(name, "a string or an array of strings")),
    };
    for (i, text) in texts.iter().enumerate() {
        let field = format!("{name}[{i}]");
        if text.is_empty() {
            return Err(ApiError::bad_request(
                flavor,
                format!("'{field}' is empty: there is nothing to embed"),
                Some(name),
            ));
        }
        check_text(text, flavor, &field)?;
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &Value) -> Result<Vec<String>, ApiError> {
        let f = Fields::parse_body(body, Flavor::OpenAi)?;
        texts(&f, "input", Flavor::OpenAi)
    }

    #[test]
    fn a_string_or_strings_in_order() {
        assert_eq!(parse(&json!({"input": "a"})).unwrap(), vec!["a"]);
        assert_eq!(
            parse(&json!({"input": ["b", "a"]})).unwrap(),
            vec!["b", "a"]
        );
    }

    #[test]
    fn token_arrays_are_refused_by_name() {
        for input in [json!([1, 2]), json!([[1, 2], [3]]), json!(5)] {
            let e = parse(&json!({ "input": input })).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains("token arrays"), "{}", e.message);
            assert_eq!(e.param.as_deref(), Some("input"));
        }
    }

    #[test]
    fn missing_empty_and_wrong_types_are_400() {
        for body in [
            json!({}),
            json!({"input": []}),
            json!({"input": ""}),
            json!({"input": ["a", ""]}),
            json!({"input": {"a": 1}}),
            json!({"input": [true]}),
        ] {
            assert_eq!(parse(&body).unwrap_err().status, 400, "{body}");
        }
    }
}
