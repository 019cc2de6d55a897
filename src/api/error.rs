//! Errors in the API's own shape: OpenAI `{"error":{message,type,param,code}}` under `/v1`,
//! Ollama `{"error":"..."}` under `/api`, and the OpenAI shape elsewhere.

use std::borrow::Cow;

use serde_json::json;

use super::full_response::FullResponse;
use crate::engine::EngineError;
use crate::http::HttpError;
use crate::models::Catalog;

/// The most of a client's own input an error message repeats: enough to recognise it, while a
/// megabyte model name cannot make every refusal a megabyte to buffer and send.
const ECHO_MAX_BYTES: usize = 200;

/// `text` as an error message may repeat it: cut at `ECHO_MAX_BYTES` (on a character
/// boundary) with an ellipsis.
pub(super) fn echo(text: &str) -> Cow<'_, str> {
    if text.len() <= ECHO_MAX_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = ECHO_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Ollama,
}

impl Flavor {
    pub fn for_path(path: &str) -> Flavor {
        if path.starts_with("/api/") {
            Flavor::Ollama
        } else {
            Flavor::OpenAi
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub flavor: Flavor,
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// OpenAI's machine-readable `code`, when one applies.
    pub code: Option<&'static str>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// The same error naming `field` as the one at fault, when it names one at all (an engine
    /// error names a chat's field; another endpoint's input has another name).
    #[must_use]
    pub fn naming_field(self, field: &str) -> ApiError {
        match self.param {
            Some(_) => ApiError {
                param: Some(field.to_owned()),
                ..self
            },
            None => self,
        }
    }

    fn new(flavor: Flavor, status: u16, kind: &'static str, message: String) -> ApiError {
        ApiError {
            flavor,
            status,
            kind,
            message,
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    pub fn bad_request(
        flavor: Flavor,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> ApiError {
        let mut e = ApiError::new(flavor, 400, "invalid_request_error", message.into());
        e.param = param.map(str::to_owned);
        e
    }

    pub fn not_found(flavor: Flavor, path: &str) -> ApiError {
        ApiError::new(
            flavor,
            404,
            "not_found_error",
            format!("no such endpoint: {}", echo(path)),
        )
    }

    pub fn model_not_found(flavor: Flavor, model: &str) -> ApiError {
        let mut e = ApiError::new(
            flavor,
            404,
            "not_found_error",
            format!("model '{}' not found", echo(model)),
        );
        e.param = Some("model".into());
        e
    }

    /// 404 for a name the catalog does not serve; for `MODEL:TAG` of a served model, one that
    /// says the model has no such adapter and which it has.
    pub fn unknown_model(flavor: Flavor, catalog: &Catalog, requested: &str) -> ApiError {
        let Some((model, tag)) = catalog.missing_adapter(requested) else {
            return ApiError::model_not_found(flavor, requested);
        };
        let known: Vec<&str> = catalog
            .find(Some(model))
            .and_then(|id| catalog.get(id))
            .map(|m| m.adapters.iter().map(|a| a.name.as_str()).collect())
            .unwrap_or_default();
        let has = if known.is_empty() {
            "it has none".to_owned()
        } else {
            format!("it has {}", known.join(", "))
        };
        let mut e = ApiError::model_not_found(flavor, requested);
        e.message = format!(
            "model '{}' has no LoRA adapter '{}' ({has}; '{}:latest' is the model alone)",
            echo(model),
            echo(tag),
            echo(model)
        );
        e
    }

    pub fn method_not_allowed(flavor: Flavor, method: &str, allow: String) -> ApiError {
        let mut e = ApiError::new(
            flavor,
            405,
            "invalid_request_error",
            format!("method {} is not allowed here", echo(method)),
        );
        e.headers.push(("Allow", allow));
        e
    }

    pub fn unauthorized(flavor: Flavor) -> ApiError {
        let mut e = ApiError::new(
            flavor,
            401,
            "authentication_error",
            "a valid API key is required".into(),
        );
        e.headers.push(("WWW-Authenticate", "Bearer".into()));
        e
    }

    /// A Unix-socket peer whose uid and gid are not allowed (`allow-uid`, `allow-gid`).
    pub fn forbidden() -> ApiError {
        ApiError::new(
            Flavor::OpenAi,
            403,
            "permission_error",
            "this user may not use rkllmd".into(),
        )
    }

    /// The connection limit is reached; answered before the request is read, so in the OpenAI
    /// shape whatever the path.
    pub fn too_many_connections() -> ApiError {
        ApiError::new(
            Flavor::OpenAi,
            503,
            "server_error",
            "too many connections".into(),
        )
    }

    /// A request that did not arrive whole within the header timeout. Its path may be unknown.
    pub fn request_timeout() -> ApiError {
        ApiError::new(
            Flavor::OpenAi,
            408,
            "timeout_error",
            "the request took too long to arrive".into(),
        )
    }

    /// A request the HTTP parser refused, in the shape of the API its path names (the OpenAI
    /// shape when the request line was not read).
    pub fn from_http(flavor: Flavor, err: &HttpError) -> ApiError {
        ApiError::new(
            flavor,
            err.status(),
            "invalid_request_error",
            err.to_string(),
        )
    }

    /// The one mapping from engine failures to HTTP status.
    pub fn from_engine(flavor: Flavor, err: &EngineError) -> ApiError {
        let (status, kind) = match err {
            EngineError::QueueFull { .. } => (503, "server_busy"),
            EngineError::QueueTimeout { .. } => (503, "timeout_error"),
            EngineError::Loading => (503, "model_loading"),
            EngineError::LoadFailed { .. } | EngineError::Wedged | EngineError::WorkerGone => {
                (503, "server_error")
            }
            EngineError::ModelUnavailable { .. } | EngineError::AdapterUnavailable { .. } => {
                (503, "model_unavailable")
            }
            EngineError::ShuttingDown => (503, "server_shutting_down"),
            EngineError::Draining => (503, "server_draining"),
            EngineError::Timeout { .. } => (504, "timeout_error"),
            // As nginx logs a client that left; no client is there to read it.
            EngineError::Cancelled => (499, "request_cancelled"),
            EngineError::PromptTooLong { .. } | EngineError::BadImage { .. } => {
                (400, "invalid_request_error")
            }
            EngineError::Encoder { .. } => (500, "runtime_error"),
            EngineError::Runtime(_) => (500, "runtime_error"),
        };
        let mut e = ApiError::new(flavor, status, kind, err.to_string());
        if let EngineError::PromptTooLong {
            estimated_tokens,
            prompt_bytes,
            max_context,
            by_runtime,
            tools_tokens,
            reserve,
        } = err
        {
            // OpenAI's own wording: client libraries recognise an overflow by it (litellm's
            // ContextWindowExceededError matches "this model's maximum context length is").
            // When the runtime refused the prompt, our estimate may be under the context: the
            // message then says so instead of a count that would contradict it.
            let resulted = if *by_runtime {
                format!(
                    "more: the runtime refused them ({prompt_bytes} bytes, estimated at \
                     {estimated_tokens} tokens)"
                )
            } else {
                // The counts a client needs to see what to cut: the tool definitions, the
                // messages that could not be left out, the answer's room.
                let history = estimated_tokens.saturating_sub(*tools_tokens);
                format!(
                    "{estimated_tokens} tokens (estimated from {prompt_bytes} bytes: \
                     {tools_tokens} for the tool definitions, {history} for the messages that \
                     cannot be left out), with {reserve} more kept for the answer"
                )
            };
            e.message = format!(
                "This model's maximum context length is {max_context} tokens. However, your \
                 messages resulted in {resulted}. Please reduce the length of the messages."
            );
            e.param = Some("messages".into());
            e.code = Some("context_length_exceeded");
        }
        if matches!(
            err,
            EngineError::QueueFull { .. }
                | EngineError::QueueTimeout { .. }
                | EngineError::Loading
                | EngineError::Draining
        ) {
            e.headers.push(("Retry-After", "1".into()));
        }
        e
    }

    pub fn body(&self) -> serde_json::Value {
        match self.flavor {
            Flavor::OpenAi => json!({
                "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
            }),
            Flavor::Ollama => json!({"error": self.message}),
        }
    }

    pub fn response(&self) -> FullResponse {
        FullResponse::json(self.status, &self.body()).with_headers(self.headers.iter().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeError;
    use std::time::Duration;

    #[test]
    fn engine_errors_map_to_status() {
        let cases = [
            (EngineError::QueueFull { capacity: 8 }, 503),
            (
                EngineError::QueueTimeout {
                    waited: Duration::from_secs(3),
                },
                503,
            ),
            (EngineError::Loading, 503),
            (EngineError::LoadFailed { reason: "x".into() }, 503),
            (EngineError::Wedged, 503),
            (
                EngineError::ModelUnavailable {
                    model: "m".into(),
                    reason: "x".into(),
                },
                503,
            ),
            (
                EngineError::AdapterUnavailable {
                    model: "m".into(),
                    adapter: "a".into(),
                    reason: "x".into(),
                },
                503,
            ),
            (EngineError::ShuttingDown, 503),
            (EngineError::WorkerGone, 503),
            (
                EngineError::Timeout {
                    after: Duration::from_secs(300),
                },
                504,
            ),
            (EngineError::Cancelled, 499),
            (
                EngineError::BadImage {
                    reason: "image 1 does not decode".into(),
                },
                400,
            ),
            (
                EngineError::Encoder {
                    model: "m".into(),
                    reason: "rknn_run failed".into(),
                },
                500,
            ),
            (
                EngineError::Runtime(RuntimeError::RunFailed { code: -1 }),
                500,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(
                ApiError::from_engine(Flavor::OpenAi, &err).status,
                status,
                "{err:?}"
            );
        }
    }

    #[test]
    fn an_overflow_is_worded_as_openai_words_it() {
        let err = EngineError::PromptTooLong {
            estimated_tokens: 300,
            prompt_bytes: 1200,
            max_context: 64,
            by_runtime: false,
            tools_tokens: 120,
            reserve: 16,
        };
        for flavor in [Flavor::OpenAi, Flavor::Ollama] {
            let e = ApiError::from_engine(flavor, &err);
            assert_eq!(e.status, 400);
            assert_eq!(
                e.message,
                "This model's maximum context length is 64 tokens. However, your messages \
                 resulted in 300 tokens (estimated from 1200 bytes: 120 for the tool definitions, \
                 180 for the messages that cannot be left out), with 16 more kept for the \
                 answer. Please reduce the length of the messages."
            );
        }
    }

    #[test]
    fn an_overflow_the_runtime_found_does_not_claim_a_count_under_the_context() {
        let err = EngineError::PromptTooLong {
            estimated_tokens: 50,
            prompt_bytes: 900,
            max_context: 64,
            by_runtime: true,
            tools_tokens: 0,
            reserve: 0,
        };
        let e = ApiError::from_engine(Flavor::OpenAi, &err);
        assert_eq!(e.status, 400);
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(
            e.message,
            "This model's maximum context length is 64 tokens. However, your messages resulted \
             in more: the runtime refused them (900 bytes, estimated at 50 tokens). Please reduce \
             the length of the messages."
        );
    }

    #[test]
    fn queue_full_carries_retry_after() {
        let e = ApiError::from_engine(Flavor::Ollama, &EngineError::QueueFull { capacity: 1 });
        assert!(e.headers.iter().any(|(k, _)| *k == "Retry-After"));
        assert_eq!(e.body(), json!({"error": e.message}));
    }

    #[test]
    fn draining_is_a_503_with_retry_after_in_both_shapes() {
        for flavor in [Flavor::OpenAi, Flavor::Ollama] {
            let e = ApiError::from_engine(flavor, &EngineError::Draining);
            assert_eq!((e.status, e.kind), (503, "server_draining"));
            assert!(e
                .headers
                .iter()
                .any(|(k, v)| *k == "Retry-After" && v == "1"));
        }
    }

    #[test]
    fn openai_shape_has_all_fields() {
        let e = ApiError::bad_request(Flavor::OpenAi, "bad", Some("messages"));
        assert_eq!(
            e.body(),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": null}})
        );
    }

    #[test]
    fn echoed_input_is_cut_with_an_ellipsis() {
        let long = "é".repeat(1000);
        let e = ApiError::model_not_found(Flavor::OpenAi, &long);
        let echoed = e.message.trim_start_matches("model '");
        let echoed = echoed.trim_end_matches("' not found");
        assert!(echoed.ends_with('…'), "{echoed}");
        assert!(echoed.len() <= ECHO_MAX_BYTES + '…'.len_utf8());
        assert!(long.starts_with(echoed.trim_end_matches('…')));
        let short = ApiError::not_found(Flavor::Ollama, "/x");
        assert_eq!(short.message, "no such endpoint: /x");
    }

    #[test]
    fn flavor_follows_path() {
        assert_eq!(Flavor::for_path("/api/chat"), Flavor::Ollama);
        assert_eq!(Flavor::for_path("/v1/models"), Flavor::OpenAi);
    }
}
