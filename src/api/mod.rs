//! The HTTP API: one routing `match` on (method, path), one file per endpoint family.
//! Handlers are pure: they see the request and a read-only view of the daemon, and return a
//! complete response or a generation to start with the responder that will format it.

mod conversation;
mod error;
mod health;
mod metrics;
mod ollama;
mod openai;
mod output;
mod params;
mod responder;
mod stop;
mod think;
mod tools;

use std::time::Instant;

use crate::engine::{Job, State};
use crate::http::{Method, Request};
use crate::runtime::{Capabilities, RuntimeInfo, Sampling};

pub use error::{ApiError, Flavor};
pub use output::{Event, OutputFilter};
pub use params::WARNING_HEADER;
pub use responder::{Next, Responder, ResponseOut};
pub use stop::StopMatcher;

/// What handlers may know about the daemon.
pub struct Ctx<'a> {
    pub model_name: &'a str,
    pub info: &'a RuntimeInfo,
    pub state: &'a State,
    pub queue_depth: usize,
    pub running: bool,
    pub connections: usize,
    pub started: Instant,
    /// How long the model took to load, once it has.
    pub load_time: Option<std::time::Duration>,
    pub model_path: &'a std::path::Path,
    pub max_new_tokens: u32,
    pub max_context_len: u32,
    /// The configured sampling, which requests may override on ABI 1.3.
    pub sampling: Sampling,
    pub caps: Capabilities,
    pub metrics: &'a crate::metrics::Metrics,
    /// The chat template conversations are rendered with; `None`: the runtime's own.
    pub template: Option<&'a crate::chat::Template>,
}

impl Ctx<'_> {
    /// The loaded model answers to its name, and to `NAME:latest` (Ollama clients add the tag).
    pub fn model_matches(&self, requested: &str) -> bool {
        requested == self.model_name || requested.strip_suffix(":latest") == Some(self.model_name)
    }
}

pub enum Reply {
    Full(FullResponse),
    Generate {
        job: Job,
        responder: Box<dyn Responder>,
    },
}

pub struct FullResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl FullResponse {
    pub fn json(status: u16, value: &serde_json::Value) -> FullResponse {
        FullResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

const ROUTES: &[(&str, &[Method])] = &[
    ("/health", &[Method::Get]),
    ("/metrics", &[Method::Get]),
    ("/v1/models", &[Method::Get]),
    ("/v1/chat/completions", &[Method::Post]),
    ("/v1/completions", &[Method::Post]),
    ("/api/version", &[Method::Get]),
    ("/api/tags", &[Method::Get]),
    ("/api/ps", &[Method::Get]),
    ("/api/show", &[Method::Post]),
    ("/api/chat", &[Method::Post]),
    ("/api/generate", &[Method::Post]),
];

/// Routes a request. `job_id` is the id the job gets if the request starts a generation.
pub fn route(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Reply {
    // HEAD is GET without the body (the connection leaves the body out).
    let method = if req.method == Method::Head {
        &Method::Get
    } else {
        &req.method
    };
    let result = match (method, req.path.as_str()) {
        (Method::Get, "/health") => Ok(Reply::Full(health::handle(ctx))),
        (Method::Get, "/metrics") => Ok(Reply::Full(metrics::handle(ctx))),
        (Method::Get, "/v1/models") => Ok(Reply::Full(openai::models(ctx))),
        (Method::Get, path) if path.starts_with("/v1/models/") => {
            openai::model(ctx, &path["/v1/models/".len()..]).map(Reply::Full)
        }
        (Method::Post, "/v1/chat/completions") => openai::chat(req, ctx, job_id),
        (Method::Post, "/v1/completions") => openai::completion(req, ctx, job_id),
        (Method::Get, "/api/version") => Ok(Reply::Full(ollama::version())),
        (Method::Get, "/api/tags") => Ok(Reply::Full(ollama::tags(ctx))),
        (Method::Get, "/api/ps") => Ok(Reply::Full(ollama::ps(ctx))),
        (Method::Post, "/api/show") => ollama::show(req, ctx).map(Reply::Full),
        (Method::Post, "/api/chat") => ollama::chat(req, ctx, job_id),
        (Method::Post, "/api/generate") => ollama::generate(req, ctx, job_id),
        (_, path) => Err(not_routed(&req.method, path)),
    };
    result.unwrap_or_else(|e| Reply::Full(e.response()))
}

/// The endpoint label for metrics: a routed path, or "other" (never a client's raw path).
pub fn endpoint_label(path: &str) -> &'static str {
    if path.starts_with("/v1/models/") {
        return "/v1/models";
    }
    ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("other", |(p, _)| p)
}

fn not_routed(method: &Method, path: &str) -> ApiError {
    let flavor = Flavor::for_path(path);
    match ROUTES.iter().find(|(p, _)| *p == path) {
        Some((_, methods)) => {
            let mut allow: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
            if methods.contains(&Method::Get) {
                allow.push("HEAD");
            }
            let allow = allow.join(", ");
            ApiError::method_not_allowed(flavor, method.as_str(), allow)
        }
        None => ApiError::not_found(flavor, path),
    }
}
