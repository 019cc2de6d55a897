//! Request bodies of the generation endpoints (OpenAI chat and completions, Ollama chat and
//! generate), routed as the event loop routes them, and the responder each one returns run
//! on a model answer.
//!
//! Input: byte 0 picks the endpoint and the model answer, byte 1 the daemon's chat template
//! and runtime capabilities, the rest is the JSON body. Checked:
//! - a complete response is valid JSON with a 200 or 4xx status: bad input is the client's
//!   error, never a server error or a panic;
//! - a job never carries a NUL byte to the runtime (it takes C strings), its tools are a JSON
//!   array, its token cap is within the daemon's, and its rendered conversation keeps no more
//!   turns than it has;
//! - header values a handler or responder sets never hold CR, LF or NUL;
//! - the responder completes the response exactly once (a full response, or a stream that is
//!   started once and ended once), and every stream event is one JSON value.

#![no_main]

use std::path::Path;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rkllmd::api::{self, Ctx, FullResponse, Next, Reply, ResponseOut};
use rkllmd::board::Root;
use rkllmd::chat::{Template, PRESET_NAMES};
use rkllmd::engine::{
    BackgroundPolicy, Finish, FinishReason, Input, Job, Pooling, Resident, SharedCaches, State,
    ThinkDefault,
};
use rkllmd::http::{Method, Request, Version};
use rkllmd::metrics::Metrics;
use rkllmd::models::{Adapter, Catalog, Model};
use rkllmd::runtime::{Capabilities, ModelParams, Perf, RuntimeInfo, Sampling};

/// Picked by the first byte's low two bits; an OpenAI chat pick with bit 4 set goes to
/// `/v1/responses` instead (bits the older seeds leave clear, so they keep their endpoint).
const ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/api/chat",
    "/api/generate",
];

/// Model answers in simulator-sized tokens: plain text, reasoning, a tool call, stop-sequence
/// bait, and multibyte text.
const ANSWERS: [&[&str]; 4] = [
    &["Hello", ",", " world", "."],
    &[
        "<think>",
        "\n",
        "hmm",
        "\n",
        "</think>",
        "\n\n",
        "The answer",
        " is 4",
        "2.",
    ],
    &[
        "Let me check. <tool",
        "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_",
        "call>",
    ],
    &["你好", "🚀", " END", " Observation", ":", " more\n"],
];

const MAX_NEW_TOKENS: u32 = 512;

fuzz_target!(|data: &[u8]| {
    let [pick, setup, body @ ..] = data else {
        return;
    };
    let path = match ENDPOINTS[usize::from(pick % 4)] {
        "/v1/chat/completions" if pick & 0x10 != 0 => "/v1/responses",
        path => path,
    };
    let answer = ANSWERS[usize::from(pick / 4 % 4)];
    // Every preset, and the runtime's own template (None).
    let template = PRESET_NAMES
        .get(usize::from(setup % 16))
        .and_then(|name| Template::preset(name));
    let caps = Capabilities {
        run_sampling: setup & 0x10 != 0,
        run_max_new_tokens: setup & 0x10 != 0,
    };
    let info = RuntimeInfo {
        abi: "1.3",
        library: Some("/usr/lib/librkllmrt.so".into()),
        simulator: Some("fuzz".to_owned()),
    };
    let metrics = Metrics::default();
    // Only /metrics reads the board, and no fuzzed path is /metrics.
    let board_root = Root::new(Path::new("/nonexistent-fuzz-root"));
    let kv_caches = SharedCaches::default();
    // One model, rendered with the fuzzed template: requests may name it or not.
    let catalog = Catalog::of(vec![Model {
        name: "qwen2.5-1.5b".to_owned(),
        path: "/models/qwen2.5-1.5b.rkllm".into(),
        architecture: Some("qwen2".to_owned()),
        template: template.clone(),
        adapters: vec![Adapter {
            name: "style".to_owned(),
            path: "/models/qwen2.5-1.5b.lora/style.rkllm".into(),
            scale: 1.0,
        }],
        aliases: Vec::new(),
        params: ModelParams {
            max_context_len: 4096,
            max_new_tokens: MAX_NEW_TOKENS,
            sampling: Sampling::default(),
            base_domain_id: 0,
        },
        vision: None,
    }]);
    let ctx = Ctx {
        catalog: &catalog,
        model: 0,
        adapter: None,
        resident: &[Resident {
            model: 0,
            expires: None,
        }],
        model_name: "qwen2.5-1.5b",
        info: &info,
        state: &State::Ready,
        queue_depth: 0,
        queue_size: 8,
        running: false,
        draining: false,
        connections: 1,
        started: Instant::now(),
        load_time: Some(Duration::from_secs(1)),
        model_path: Path::new("/models/qwen2.5-1.5b.rkllm"),
        architecture: Some("qwen2"),
        max_new_tokens: MAX_NEW_TOKENS,
        max_context_len: 4096,
        sampling: Sampling::default(),
        caps,
        metrics: &metrics,
        template: template.as_ref(),
        tools_budget: 1024,
        tools_budget_percent: 25,
        bytes_per_token: 4.0,
        embedding_pooling: Pooling::Auto,
        embedding_pooling_cfg: Pooling::Auto,
        background: BackgroundPolicy::NonStreamed,
        think_default: ThinkDefault::Interactive,
        board_root: &board_root,
        kv_caches: &kv_caches,
        now: Instant::now(),
        image_limits: rkllmd::vision::image::ImageLimits::default(),
    };
    let request = Request {
        method: Method::Post,
        path: path.to_owned(),
        query: None,
        version: Version::Http11,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.to_vec(),
        keep_alive: true,
    };
    match api::route(&request, &ctx, 7) {
        Reply::Full(response) => check_full(&response),
        Reply::Generate { job, mut responder } => {
            check_job(&job);
            let mut out = Out::default();
            responder.started(&mut out);
            for token in answer {
                if responder.text(token, &mut out) == Next::Stop {
                    break;
                }
            }
            let finish = Finish {
                reason: FinishReason::Stop,
                perf: Some(Perf {
                    prefill_ms: 120.0,
                    prefill_tokens: 30,
                    generate_ms: 200.0,
                    generate_tokens: 9,
                    memory_mb: 700.0,
                }),
                generated_tokens: 9,
                cached_tokens: 4,
                run_time: Duration::from_millis(330),
            };
            responder.finished(&finish, &mut out);
            out.check();
        }
    }
});

fn check_full(response: &FullResponse) {
    assert!(
        response.status == 200 || (400..500).contains(&response.status),
        "status {}",
        response.status
    );
    check_headers(response.headers.iter().map(|(n, v)| (*n, v.as_str())));
    // One JSON value; a one-line stream ends with its newline.
    let text = std::str::from_utf8(&response.body).expect("the body is UTF-8");
    let _: serde_json::Value = serde_json::from_str(text.trim_end_matches('\n'))
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"));
}

fn check_job(job: &Job) {
    match job.input() {
        Input::Prompt(prompt) => assert!(!prompt.contains('\0'), "NUL in prompt"),
        Input::Conversation(c) => {
            assert!(!c.pieces.is_empty());
            assert!(c.kept <= c.pieces.len());
            for piece in c.pieces.iter().chain([&c.generation_prompt]) {
                assert!(!piece.contains('\0'), "NUL in a rendered turn");
            }
        }
        Input::RuntimeTurns(t) => {
            let inputs = t.history.iter().map(|e| &e.input).chain([&t.newest]);
            for text in inputs {
                assert!(!text.contains('\0'), "NUL in a runtime input");
            }
        }
        // Not reached: no embedding endpoint is among this target's paths.
        Input::Embed(e) => assert!(!e.texts.is_empty(), "an embedding job without texts"),
        Input::Reseat => panic!("the API built a re-seat, which only the engine makes"),
        // Ollama's load and unload calls (an empty chat or generate).
        Input::Load | Input::Unload => {}
    }
    if let Some(tools) = job.tools() {
        assert!(!tools.contains('\0'), "NUL in tools");
        let parsed: serde_json::Value = serde_json::from_str(tools).expect("tools are JSON");
        assert!(parsed.as_array().is_some_and(|a| !a.is_empty()));
    }
    assert!(job.max_new_tokens().is_none_or(|n| n <= MAX_NEW_TOKENS));
}

fn check_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) {
    for (name, value) in headers {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
            "header name {name:?}"
        );
        assert!(
            !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "header {name}: {value:?}"
        );
    }
}

/// Records what a responder writes and checks the order of the calls.
#[derive(Default)]
struct Out {
    streaming: bool,
    stream_ended: bool,
    full: Option<FullResponse>,
    stream: Vec<u8>,
}

impl ResponseOut for Out {
    fn start_stream(
        &mut self,
        status: u16,
        content_type: &'static str,
        headers: &[(&'static str, String)],
    ) {
        assert!(!self.streaming && self.full.is_none(), "a second response");
        assert_eq!(status, 200);
        assert!(content_type == "text/event-stream" || content_type == "application/x-ndjson");
        check_headers(headers.iter().map(|(n, v)| (*n, v.as_str())));
        self.streaming = true;
    }

    fn chunk(&mut self, data: &[u8]) {
        assert!(
            self.streaming && !self.stream_ended,
            "a chunk outside a stream"
        );
        self.stream.extend_from_slice(data);
    }

    fn end_stream(&mut self) {
        assert!(self.streaming && !self.stream_ended, "end without a stream");
        self.stream_ended = true;
    }

    fn full(&mut self, response: FullResponse) {
        assert!(!self.streaming && self.full.is_none(), "a second response");
        self.full = Some(response);
    }
}

impl Out {
    fn check(&self) {
        if let Some(full) = &self.full {
            check_full(full);
            return;
        }
        assert!(self.stream_ended, "the response was never completed");
        let text = std::str::from_utf8(&self.stream).expect("the stream is UTF-8");
        // SSE events (`data: ...` and a blank line; the Responses API's have an `event:` line
        // first and no [DONE]) or NDJSON lines.
        let events: Vec<&str> = if text.starts_with("data: ") || text.starts_with("event: ") {
            assert!(
                text.ends_with("data: [DONE]\n\n") || text.starts_with("event: "),
                "SSE without [DONE]: {text}"
            );
            text.split_terminator("\n\n")
                .map(|e| {
                    e.lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("an SSE data line")
                })
                .filter(|e| *e != "[DONE]")
                .collect()
        } else {
            assert!(
                text.ends_with('\n'),
                "NDJSON without its last newline: {text}"
            );
            text.lines().collect()
        };
        assert!(!events.is_empty());
        for event in events {
            let _: serde_json::Value = serde_json::from_str(event)
                .unwrap_or_else(|e| panic!("event is not JSON ({e}): {event}"));
        }
    }
}
