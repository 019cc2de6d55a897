//! The HTTP API: one routing `match` on (method, path), one file per endpoint family.
//! Handlers are pure: they see the request and a read-only view of the daemon, and return a
//! complete response or a generation to start with the responder that will format it.

mod error;
mod health;
mod openai;
mod responder;
mod stop;

use std::time::Instant;

use crate::engine::{Job, State};
use crate::http::{Method, Request};
use crate::runtime::RuntimeInfo;

pub use error::{ApiError, Flavor};
pub use responder::{Responder, ResponseOut};
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
    pub max_new_tokens: u32,
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
    ("/v1/chat/completions", &[Method::Post]),
];

/// Routes a request. `job_id` is the id the job gets if the request starts a generation.
pub fn route(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Reply {
    let result = match (&req.method, req.path.as_str()) {
        (Method::Get, "/health") => Ok(Reply::Full(health::handle(ctx))),
        (Method::Post, "/v1/chat/completions") => openai::chat(req, ctx, job_id),
        (_, path) => Err(not_routed(&req.method, path)),
    };
    result.unwrap_or_else(|e| Reply::Full(e.response()))
}

fn not_routed(method: &Method, path: &str) -> ApiError {
    let flavor = Flavor::for_path(path);
    match ROUTES.iter().find(|(p, _)| *p == path) {
        Some((_, methods)) => {
            let allow = methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            ApiError::method_not_allowed(flavor, method.as_str(), allow)
        }
        None => ApiError::not_found(flavor, path),
    }
}
