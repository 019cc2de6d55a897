//! The HTTP API: one routing `match` on (method, path), one file per endpoint family.
//! Handlers are pure: they see the request and a read-only view of the daemon, and return a
//! complete response or a generation to start with the responder that will format it.

mod conversation;
mod ctx;
mod embeddings;
mod error;
mod full_response;
mod generation;
mod health;
mod images;
mod json;
mod metrics;
mod ollama;
mod openai;
mod output;
mod params;
mod past_turn;
mod reply;
mod responder;
mod runtime_input;
mod stop;
mod think;
mod tools;

use crate::engine::KeepAlive;
use crate::http::{Method, Request};

pub use ctx::{tools_budget, Ctx};
pub use error::{ApiError, Flavor};
pub use full_response::FullResponse;
pub use output::{Event, OutputFilter};
pub use params::WARNING_HEADER;
pub use reply::Reply;
pub use responder::{Next, Responder, ResponseOut};
pub use stop::StopMatcher;
pub use tools::ToolCallParser;

/// A handler: the request, the daemon's state, and the id a generation it starts would get.
type Handler = fn(&Request, &Ctx<'_>, u64) -> Result<Reply, ApiError>;

/// Which paths a route answers.
enum Path {
    Exact(&'static str),
    /// Every path under a prefix; `label` names them all in metrics.
    Under {
        prefix: &'static str,
        label: &'static str,
    },
}

struct Route {
    method: Method,
    path: Path,
    handler: Handler,
}

impl Route {
    /// The route's label when it answers `path`.
    fn label_for(&self, path: &str) -> Option<&'static str> {
        match self.path {
            Path::Exact(p) => (p == path).then_some(p),
            Path::Under { prefix, label } => path.starts_with(prefix).then_some(label),
        }
    }
}

/// The one routing table: it routes, labels metrics and answers 405 with `Allow`.
static ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: Path::Exact("/"),
        handler: |_, _, _| Ok(Reply::Full(ollama::root())),
    },
    Route {
        method: Method::Get,
        path: Path::Exact("/health"),
        handler: |_, ctx, _| Ok(Reply::Full(health::handle(ctx))),
    },
    Route {
        method: Method::Get,
        path: Path::Exact("/metrics"),
        handler: |_, ctx, _| Ok(Reply::Full(metrics::handle(ctx))),
    },
    Route {
        method: Method::Get,
        path: Path::Exact("/v1/models"),
        handler: |_, ctx, _| Ok(Reply::Full(openai::models(ctx))),
    },
    Route {
        method: Method::Get,
        path: Path::Under {
            prefix: "/v1/models/",
            label: "/v1/models",
        },
        handler: |req, ctx, _| {
            openai::model(ctx, &req.path["/v1/models/".len()..]).map(Reply::Full)
        },
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/v1/chat/completions"),
        handler: openai::chat,
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/v1/responses"),
        handler: openai::responses,
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/v1/completions"),
        handler: openai::completion,
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/v1/embeddings"),
        handler: embeddings::openai,
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/embed"),
        handler: embeddings::ollama_embed,
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/embeddings"),
        handler: embeddings::ollama_embeddings,
    },
    Route {
        method: Method::Get,
        path: Path::Exact("/api/version"),
        handler: |_, _, _| Ok(Reply::Full(ollama::version())),
    },
    Route {
        method: Method::Get,
        path: Path::Exact("/api/tags"),
        handler: |_, ctx, _| Ok(Reply::Full(ollama::tags(ctx))),
    },
    Route {
        method: Method::Get,
        path: Path::Exact("/api/ps"),
        handler: |_, ctx, _| Ok(Reply::Full(ollama::ps(ctx))),
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/show"),
        handler: |req, ctx, _| ollama::show(req, ctx).map(Reply::Full),
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/pull"),
        handler: |req, _, _| Err(ollama::manage(&req.path)),
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/push"),
        handler: |req, _, _| Err(ollama::manage(&req.path)),
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/create"),
        handler: |req, _, _| Err(ollama::manage(&req.path)),
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/copy"),
        handler: |req, _, _| Err(ollama::manage(&req.path)),
    },
    Route {
        method: Method::Delete,
        path: Path::Exact("/api/delete"),
        handler: |req, _, _| Err(ollama::manage(&req.path)),
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/chat"),
        handler: ollama::chat,
    },
    Route {
        method: Method::Post,
        path: Path::Exact("/api/generate"),
        handler: ollama::generate,
    },
];

/// Routes a request. `job_id` is the id the job gets if the request starts a generation.
pub fn route(req: &Request, ctx: &Ctx<'_>, job_id: u64) -> Reply {
    // HEAD is GET without the body (the connection leaves the body out).
    let method = if req.method == Method::Head {
        &Method::Get
    } else {
        &req.method
    };
    let path = req.path.as_str();
    // The request's view is of the model it names; a name not served leaves the default's,
    // and the handler answers 404 in its API's shape when it checks the name.
    let ctx = match requested_model(req).and_then(|m| ctx.catalog.select(Some(&m))) {
        Some(sel) => ctx.for_selection(sel),
        None => ctx.for_model(ctx.model),
    };
    let result = match ROUTES
        .iter()
        .find(|r| r.method == *method && r.label_for(path).is_some())
    {
        Some(r) => (r.handler)(req, &ctx, job_id),
        None => Err(not_routed(&req.method, path)),
    };
    match result {
        Ok(Reply::Generate { mut job, responder }) => {
            job.set_model(ctx.model);
            job.set_adapter(ctx.adapter);
            if path.starts_with("/api/") {
                match keep_alive(req) {
                    Ok(k) => job.set_keep_alive(k),
                    Err(e) => return Reply::Full(e.response()),
                }
            }
            Reply::Generate { job, responder }
        }
        Ok(reply) => reply,
        Err(e) => Reply::Full(e.response()),
    }
}

/// Ollama's `keep_alive`: a duration string or a number of seconds; absent or null: the
/// configured default.
fn keep_alive(req: &Request) -> Result<Option<KeepAlive>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Kept {
        keep_alive: Option<serde_json::Value>,
    }
    let bad = |what: String| ApiError::bad_request(Flavor::Ollama, what, Some("keep_alive"));
    let Ok(Kept { keep_alive }) = serde_json::from_slice::<Kept>(&req.body) else {
        return Ok(None);
    };
    match keep_alive {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => KeepAlive::parse(&s)
            .map(Some)
            .map_err(|e| bad(format!("invalid keep_alive: {e}"))),
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .and_then(KeepAlive::seconds)
            .map(Some)
            .ok_or_else(|| bad(format!("invalid keep_alive: {n} seconds"))),
        Some(_) => Err(bad(
            "'keep_alive' must be a duration string or a number of seconds".into(),
        )),
    }
}

/// The `model` field of a JSON body, when it has a string one (its other fields are skipped
/// unread; a body that is not JSON is the handler's to refuse).
fn requested_model(req: &Request) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
        /// `/api/show`'s older field.
        name: Option<String>,
    }
    if req.method != Method::Post {
        return None;
    }
    let named = serde_json::from_slice::<Named>(&req.body).ok()?;
    named.model.filter(|m| !m.is_empty()).or(named.name)
}

/// The endpoint label for metrics: a routed path, or "other" (never a client's raw path).
pub fn endpoint_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find_map(|r| r.label_for(path))
        .unwrap_or("other")
}

/// 405 with the methods the path takes, or 404 when no route takes it.
fn not_routed(method: &Method, path: &str) -> ApiError {
    let flavor = Flavor::for_path(path);
    let mut allow: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.label_for(path).is_some())
        .map(|r| r.method.as_str())
        .collect();
    if allow.is_empty() {
        return ApiError::not_found(flavor, path);
    }
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    ApiError::method_not_allowed(flavor, method.as_str(), allow.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_labels_routed_paths_and_nothing_else() {
        assert_eq!(endpoint_label("/api/chat"), "/api/chat");
        assert_eq!(endpoint_label("/v1/models/qwen"), "/v1/models");
        assert_eq!(endpoint_label("/v1/chat/completions/x"), "other");
        assert_eq!(endpoint_label("/secret"), "other");
    }

    #[test]
    fn a_known_path_with_another_method_is_405_with_its_methods() {
        let e = not_routed(&Method::Delete, "/v1/models");
        assert_eq!(e.status, 405);
        assert_eq!(e.headers, vec![("Allow", "GET, HEAD".to_owned())]);
        let e = not_routed(&Method::Get, "/api/chat");
        assert_eq!(e.headers, vec![("Allow", "POST".to_owned())]);
        assert_eq!(e.flavor, Flavor::Ollama);
        assert_eq!(not_routed(&Method::Get, "/nope").status, 404);
    }
}
