//! The Ollama-compatible API over the real socket: every endpoint streaming and not, NDJSON
//! framing, the statistics against the simulator's trace, options, errors in Ollama's shape, the
//! load call, and a runtime error mid-stream.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, write_model, Client, Daemon, TempDir};
use serde_json::{json, Value};

fn chat(content: &str) -> Value {
    json!({"model": "fast", "messages": [{"role": "user", "content": content}]})
}

fn generate(prompt: &str) -> Value {
    json!({"model": "fast:latest", "prompt": prompt})
}

fn with(mut body: Value, extra: Value) -> Value {
    let Value::Object(extra) = extra else {
        panic!("extra fields must be an object: {extra}");
    };
    for (k, v) in extra {
        body[k] = v;
    }
    body
}

/// A model named `fast` (the name clients use) with the given simulator settings.
fn daemon_with(tag: &str, lines: &[&str]) -> Daemon {
    let b = Daemon::builder(tag);
    let model = write_model(b.dir(), "fast", lines);
    b.model(model).start()
}

/// Every line of an NDJSON body, parsed; the body must end with a newline.
fn ndjson(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("UTF-8 body");
    assert!(
        text.ends_with('\n'),
        "NDJSON must end with a newline: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

/// Sends a request and reads a streamed answer chunk by chunk: each chunk must hold whole lines.
fn stream(c: &mut Client, path: &str, body: &Value) -> (Vec<(String, String)>, Vec<Value>) {
    c.send_post(path, body);
    let (status, headers) = c.read_head().expect("a response head");
    assert_eq!(status, 200, "{headers:?}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    let mut lines = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        lines.extend(ndjson(&chunk));
    }
    (headers, lines)
}

fn text_of(lines: &[Value], field: &str) -> String {
    lines
        .iter()
        .filter_map(|l| match field {
            "message" => l["message"]["content"].as_str(),
            _ => l[field].as_str(),
        })
        .collect()
}

/// The last line's statistics against the simulator's own account of the last run.
fn assert_counts_match_the_trace(d: &Daemon, last: &Value) {
    let run_end = d.trace_of("run_end").pop().expect("a run_end line");
    assert_eq!(last["eval_count"], run_end["generate_tokens"], "{last}");
    // The whole prompt: what was prefilled and what was reused (tests/token_counts.rs).
    let cached = last["prompt_eval_cached_count"].as_u64().unwrap_or(0);
    assert_eq!(
        last["prompt_eval_count"],
        run_end["prefill_tokens"].as_u64().unwrap() + cached,
        "{last}"
    );
    for field in ["total_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(last[field].is_u64(), "{field} in {last}");
    }
    assert_eq!(last["load_duration"], 0);
    assert!(
        last["total_duration"].as_u64() >= last["eval_duration"].as_u64(),
        "{last}"
    );
}

/// A lone `{"error": "..."}`, Ollama's error shape.
fn assert_ollama_error(v: &Value) -> String {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(obj.len(), 1, "only 'error': {v}");
    let msg = obj["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string: {v}"));
    assert!(!msg.is_empty());
    msg.to_owned()
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 30
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
}

#[test]
fn version_tags_and_ps_describe_the_loaded_model() {
    let d = Daemon::start("oltags");
    let v = d.client().get("/api/version");
    assert_eq!(v.status, 200);
    assert_eq!(v.json(), json!({"version": env!("CARGO_PKG_VERSION")}));

    let tags = d.client().get("/api/tags").json();
    let models = tags["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{tags}");
    let m = &models[0];
    assert_eq!(m["name"], "fast:latest");
    assert_eq!(m["model"], "fast:latest");
    let path = common::fast_model();
    assert_eq!(m["size"], std::fs::metadata(&path).unwrap().len());
    let modified = m["modified_at"].as_str().unwrap();
    assert!(is_rfc3339_utc(modified), "{modified}");
    let date = Command::new("date")
        .args(["-u", "-r"])
        .arg(&path)
        .arg("+%Y-%m-%dT%H:%M:%S")
        .output()
        .unwrap();
    let mtime = String::from_utf8(date.stdout).unwrap();
    assert_eq!(&modified[..19], mtime.trim(), "the file's mtime");
    let digest = m["digest"].as_str().unwrap();
    assert!(
        digest.len() >= 12 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    assert_eq!(
        d.client().get("/api/tags").json()["models"][0]["digest"],
        digest,
        "stable"
    );
    let details = &m["details"];
    assert_eq!(details["format"], "rkllm");
    for field in ["family", "parameter_size", "quantization_level"] {
        assert!(details[field].is_string(), "{field} in {details}");
    }

    let ps = d.client().get("/api/ps").json();
    let loaded = &ps["models"][0];
    assert_eq!(ps["models"].as_array().unwrap().len(), 1, "{ps}");
    for field in ["name", "model", "size", "digest", "details"] {
        assert_eq!(loaded[field], m[field], "{field}");
    }
    assert_eq!(loaded["size_vram"], 0);
    // The model never unloads: a time far ahead.
    assert!(loaded["expires_at"].as_str().unwrap() > "2100", "{loaded}");
    assert!(loaded["context_length"].as_u64().unwrap() > 0);
}

#[test]
fn ps_is_empty_and_the_load_call_is_503_while_the_model_loads() {
    let b = Daemon::builder("olloading");
    let model = write_model(b.dir(), "fast", &["load_ms = 1500"]);
    let mut d = b.model(model).no_wait().start();
    // The file appears at bind(2), a moment before listen(2): wait until it takes connections.
    wait_until(Duration::from_secs(10), "the socket to listen", || {
        std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
    });
    assert_eq!(d.client().get("/health").status, 503, "still loading");
    assert_eq!(d.client().get("/api/ps").json(), json!({"models": []}));
    assert_eq!(
        d.client().get("/api/tags").json()["models"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = d
        .client()
        .post_json("/api/generate", &json!({"model": "fast"}));
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_ollama_error(&r.json());
    d.wait_ready(Duration::from_secs(20));
    assert_eq!(
        d.client().get("/api/ps").json()["models"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn show_describes_the_model_and_404s_an_unknown_one() {
    let d = Daemon::start("olshow");
    for body in [
        json!({"model": "fast"}),
        json!({"model": "fast:latest"}),
        json!({"name": "fast"}),
    ] {
        let r = d.client().post_json("/api/show", &body);
        assert_eq!(r.status, 200, "{body}");
        let s = r.json();
        assert_eq!(s["details"]["format"], "rkllm");
        // fast.rkllm has no preset: the runtime's template, tools through the runtime.
        assert_eq!(
            s["model_info"],
            json!({"general.architecture": "rkllm", "rkllm.context_length": 4096})
        );
        assert_eq!(s["capabilities"], json!(["completion", "tools"]));
        assert!(s["template"].as_str().unwrap().ends_with("{{ .Prompt }}"));
        assert!(s["modelfile"].as_str().unwrap().contains("FROM "), "{s}");
        assert!(s["template"].is_string());
        let params = s["parameters"].as_str().unwrap();
        assert!(
            params.lines().any(|l| l.starts_with("temperature ")),
            "{params}"
        );
        assert!(
            params.lines().any(|l| l.starts_with("num_ctx ")),
            "{params}"
        );
    }
    let r = d
        .client()
        .post_json("/api/show", &json!({"model": "llama3"}));
    assert_eq!(r.status, 404);
    assert!(assert_ollama_error(&r.json()).contains("llama3"));
    let r = d.client().post_json("/api/show", &json!({}));
    assert_eq!(r.status, 400);
    assert!(assert_ollama_error(&r.json()).contains("'model'"));
    let r = d.client().get("/api/show");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_ollama_error(&r.json());
}

#[test]
fn show_reports_vision_for_a_model_with_an_encoder_beside_it() {
    let dir = TempDir::new("olshow-vision");
    let vl = write_model(dir.path(), "qwen2-vl-2b", &[]);
    std::fs::write(dir.path().join("qwen2-vl-2b.rknn"), "rknn-sim 1\n").unwrap();
    let text = write_model(dir.path(), "qwen2.5-1.5b", &[]);
    let d = Daemon::builder("olshow-vision")
        .no_model()
        .args(["--models-dir", dir.path().to_str().unwrap()])
        .start();
    let caps = |name: &str| {
        let r = d.client().post_json("/api/show", &json!({"model": name}));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        r.json()["capabilities"].clone()
    };
    let (vl, text) = (stem(&vl), stem(&text));
    assert_eq!(caps(&vl), json!(["completion", "tools", "vision"]));
    assert_eq!(caps(&text), json!(["completion", "tools"]));
}

fn stem(path: &std::path::Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn show_reports_what_the_template_supports() {
    let dir = TempDir::new("olshow-qwen3");
    let model = write_model(dir.path(), "Qwen3-1.7B_W8A8_RK3588", &[]);
    let d = Daemon::builder("olshow-qwen3")
        .model(model)
        .args(["--max-context-len", "2048"])
        .start();
    let r = d
        .client()
        .post_json("/api/show", &json!({"model": "Qwen3-1.7B_W8A8_RK3588"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(
        s["capabilities"],
        json!(["completion", "tools", "thinking"])
    );
    assert_eq!(
        s["model_info"],
        json!({"general.architecture": "qwen3", "qwen3.context_length": 2048})
    );
    let template = s["template"].as_str().unwrap();
    assert!(template.contains("rkllmd template 'qwen3'"), "{template}");
    assert!(
        template.contains("<|im_start|>user\n{{ .Content }}<|im_end|>"),
        "{template}"
    );
    assert!(template.contains(".Tools"), "{template}");
    assert!(s["modelfile"].as_str().unwrap().contains("TEMPLATE \"\"\""));

    let d = Daemon::builder("olshow-gemma")
        .args(["--chat-template", "gemma3"])
        .start();
    let s = d
        .client()
        .post_json("/api/show", &json!({"model": "fast"}))
        .json();
    assert_eq!(s["capabilities"], json!(["completion", "tools"]), "{s}");
    assert_eq!(s["model_info"]["general.architecture"], "gemma3");
    assert!(s["template"]
        .as_str()
        .unwrap()
        .contains("<start_of_turn>user\n"));
}

#[test]
fn chat_streams_ndjson_lines_and_ends_with_the_runtime_counts() {
    let d = Daemon::start("olchat");
    let mut c = d.client();
    // `stream` is true unless a request says otherwise.
    let (_, lines) = stream(&mut c, "/api/chat", &chat("tell me about chips"));
    let (last, pieces) = lines.split_last().unwrap();
    assert!(!pieces.is_empty());
    for l in pieces {
        assert_eq!(l["done"], false, "{l}");
        assert_eq!(l["model"], "fast");
        assert_eq!(l["message"]["role"], "assistant");
        assert!(!l["message"]["content"].as_str().unwrap().is_empty());
        assert!(is_rfc3339_utc(l["created_at"].as_str().unwrap()), "{l}");
    }
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
    assert_counts_match_the_trace(&d, last);
    let streamed = text_of(pieces, "message");

    // The same prompt without streaming: the same answer in one object, on the same connection.
    let r = c.post_json(
        "/api/chat",
        &with(chat("tell me about chips"), json!({"stream": false})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json();
    assert_eq!(b["message"]["content"], streamed.as_str());
    assert_eq!(b["message"]["role"], "assistant");
    assert_eq!(
        (&b["done"], &b["done_reason"]),
        (&json!(true), &json!("stop"))
    );
    assert_counts_match_the_trace(&d, &b);
    assert!(b.get("context").is_none(), "chat has no context: {b}");
}

#[test]
fn generate_streams_and_not_with_an_empty_context() {
    let d = Daemon::start("olgen");
    let mut c = d.client();
    let (_, lines) = stream(&mut c, "/api/generate", &generate("Why is the sky blue?"));
    let (last, pieces) = lines.split_last().unwrap();
    for l in pieces {
        assert_eq!(l["done"], false, "{l}");
        assert_eq!(l["model"], "fast:latest");
        assert!(l["response"].is_string());
        assert!(l.get("message").is_none());
    }
    assert_eq!(
        (&last["done"], &last["done_reason"]),
        (&json!(true), &json!("stop"))
    );
    assert_eq!(last["response"], "");
    assert_eq!(last["context"], json!([]));
    assert_counts_match_the_trace(&d, last);
    let run = d.trace_of("rkllm_run").pop().unwrap();
    assert_eq!(run["prompt"], "Why is the sky blue?");

    let b = c
        .post_json(
            "/api/generate",
            &with(generate("Why is the sky blue?"), json!({"stream": false})),
        )
        .json();
    assert_eq!(b["response"], text_of(pieces, "response").as_str());
    assert_eq!(b["context"], json!([]));
    assert_counts_match_the_trace(&d, &b);
}

#[test]
fn num_predict_caps_the_answer_and_ends_with_length() {
    let d = daemon_with(
        "olcap",
        &["answer_tokens_min = 30", "answer_tokens_max = 40"],
    );
    for streaming in [false, true] {
        let body = with(
            generate("count"),
            json!({"stream": streaming, "options": {"num_predict": 5}}),
        );
        let last = if streaming {
            stream(&mut d.client(), "/api/generate", &body)
                .1
                .pop()
                .unwrap()
        } else {
            d.client().post_json("/api/generate", &body).json()
        };
        assert_eq!(last["done_reason"], "length", "stream={streaming}: {last}");
        assert_eq!(last["eval_count"], 5, "{last}");
        assert_eq!(d.trace_of("run_end").pop().unwrap()["generate_tokens"], 5);
    }
    // -1 is Ollama's "no limit": the answer ends by itself.
    let body = with(
        generate("count"),
        json!({"stream": false, "options": {"num_predict": -1}}),
    );
    let b = d.client().post_json("/api/generate", &body).json();
    assert_eq!(b["done_reason"], "stop", "{b}");
    assert!(b["eval_count"].as_u64().unwrap() >= 30);
}

#[test]
fn a_stop_option_ends_the_answer_before_it() {
    // A little decode time, so the run is still going when the stop matches.
    let d = daemon_with(
        "olstop",
        &[
            "answer_tokens_min = 60",
            "answer_tokens_max = 60",
            "decode_us_per_token = 3000",
        ],
    );
    let full = d
        .client()
        .post_json(
            "/api/chat",
            &with(chat("tell me"), json!({"stream": false})),
        )
        .json()["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // Five characters from the middle of the answer.
    let start = (full.len() / 2..full.len())
        .find(|&i| full.is_char_boundary(i))
        .unwrap();
    let stop: String = full[start..].chars().take(5).collect();
    let cut = full.find(&stop).unwrap();
    for streaming in [false, true] {
        let body = with(
            chat("tell me"),
            json!({"stream": streaming, "options": {"stop": [stop.clone(), "zzzz-never"]}}),
        );
        let (text, last) = if streaming {
            let (_, lines) = stream(&mut d.client(), "/api/chat", &body);
            (text_of(&lines, "message"), lines.last().unwrap().clone())
        } else {
            let b = d.client().post_json("/api/chat", &body).json();
            (b["message"]["content"].as_str().unwrap().to_owned(), b)
        };
        assert_eq!(text, full[..cut], "stream={streaming}");
        assert_eq!(last["done_reason"], "stop");
        let run_end = d.trace_of("run_end").pop().unwrap();
        assert_eq!(last["eval_count"], run_end["generate_tokens"], "{last}");
        assert!(
            run_end["generate_tokens"].as_u64().unwrap() < 60,
            "the run was ended early"
        );
    }
}

#[test]
fn options_reach_the_runtime_on_1_3_and_warn_on_1_2() {
    let d = Daemon::start("olopts");
    let body = with(
        chat("hi"),
        json!({"stream": false, "options": {"temperature": 0.2, "top_k": 7, "top_p": 0.5}}),
    );
    let r = d.client().post_json("/api/chat", &body);
    assert_eq!(r.status, 200);
    let run = d.trace_of("rkllm_run").pop().unwrap();
    if env!("RKLLMD_ABI") == "1.3" {
        assert!(r.header("x-rkllmd-warning").is_none());
        let s = &run["sampling"];
        assert!(
            (s["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6,
            "{run}"
        );
        assert_eq!(s["top_k"], 7);
    } else {
        let w = r.header("x-rkllmd-warning").expect("a warning on ABI 1.2");
        assert!(w.contains("ABI 1.2"), "{w}");
    }
    // What cannot be honoured is said, on streams too.
    let body = with(
        chat("hi"),
        json!({"options": {"seed": 42, "num_ctx": 8192}, "format": "json", "keep_alive": "5m"}),
    );
    let (headers, _) = stream(&mut d.client(), "/api/chat", &body);
    let warnings: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-rkllmd-warning"))
        .map(|(_, v)| v.as_str())
        .collect();
    let all = warnings.join(" | ");
    for word in ["seed", "num_ctx", "format"] {
        assert!(all.contains(word), "{word} in {all}");
    }
    assert!(!all.contains("keep_alive"), "{all}");
}

#[test]
fn wrong_types_are_400_naming_the_field() {
    let d = Daemon::start("oltypes");
    let cases = [
        (
            "/api/chat",
            with(chat("hi"), json!({"options": {"temperature": "hot"}})),
            "options.temperature",
        ),
        (
            "/api/chat",
            with(chat("hi"), json!({"options": {"num_predict": 1.5}})),
            "options.num_predict",
        ),
        (
            "/api/chat",
            with(chat("hi"), json!({"options": {"stop": 5}})),
            "options.stop",
        ),
        (
            "/api/chat",
            with(chat("hi"), json!({"options": [1]})),
            "options",
        ),
        (
            "/api/chat",
            with(chat("hi"), json!({"stream": "yes"})),
            "stream",
        ),
        ("/api/chat", with(chat("hi"), json!({"model": 5})), "model"),
        (
            "/api/chat",
            with(chat("hi"), json!({"messages": "hi"})),
            "messages",
        ),
        (
            "/api/chat",
            with(
                chat("hi"),
                json!({"messages": [{"role": "user", "content": 1}]}),
            ),
            "messages[].content",
        ),
        (
            "/api/generate",
            with(generate("hi"), json!({"prompt": 5})),
            "prompt",
        ),
        (
            "/api/generate",
            with(generate("hi"), json!({"options": {"top_p": 2}})),
            "options.top_p",
        ),
    ];
    for (path, body, field) in cases {
        let r = d.client().post_json(path, &body);
        assert_eq!(r.status, 400, "{path} {body}");
        let msg = assert_ollama_error(&r.json());
        assert!(msg.contains(&format!("'{field}'")), "{path} {body}: {msg}");
    }
    let mut c = d.client();
    c.send_raw(b"POST /api/chat HTTP/1.1\r\nContent-Length: 5\r\n\r\n{oops");
    let r = c.read_response();
    assert_eq!(r.status, 400);
    assert!(assert_ollama_error(&r.json()).contains("invalid JSON"));
    assert!(
        d.trace_of("rkllm_run").is_empty(),
        "no bad request reached the runtime"
    );
}

#[test]
fn images_are_refused_with_400() {
    let d = Daemon::start("olimages");
    let msg = json!([{"role": "user", "content": "what is this?", "images": ["aGVsbG8="]}]);
    let r = d
        .client()
        .post_json("/api/chat", &json!({"model": "fast", "messages": msg}));
    assert_eq!(r.status, 400);
    assert!(assert_ollama_error(&r.json()).contains("images"));
    let r = d.client().post_json(
        "/api/generate",
        &with(generate("what?"), json!({"images": ["aGVsbG8="]})),
    );
    assert_eq!(r.status, 400);
    assert!(assert_ollama_error(&r.json()).contains("images"));
}

#[test]
fn an_unknown_model_is_404_in_ollama_shape() {
    let d = Daemon::start("olunknown");
    for (path, body) in [
        ("/api/chat", with(chat("hi"), json!({"model": "llama3:8b"}))),
        (
            "/api/generate",
            with(generate("hi"), json!({"model": "llama3:8b"})),
        ),
        ("/api/generate", json!({"model": "llama3:8b"})),
        ("/api/show", json!({"model": "llama3:8b"})),
    ] {
        let r = d.client().post_json(path, &body);
        assert_eq!(r.status, 404, "{path} {body}");
        assert!(assert_ollama_error(&r.json()).contains("llama3:8b"));
    }
    let r = d
        .client()
        .post_json("/api/pull", &json!({"model": "llama3"}));
    // Model management is not offered (see tests/models.rs): a clear error, not a 404.
    assert_eq!(r.status, 501);
    assert_ollama_error(&r.json());
    let r = d.client().get("/api/chat");
    assert_eq!(r.status, 405);
    assert_ollama_error(&r.json());
    assert!(d.trace_of("rkllm_run").is_empty());
}

#[test]
fn the_load_call_answers_at_once_without_running_the_model() {
    let d = Daemon::start("olload");
    // Streaming by default: one NDJSON line.
    let r = d
        .client()
        .post_json("/api/generate", &json!({"model": "fast"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = ndjson(&r.body);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(
        (&l["done"], &l["done_reason"], &l["response"]),
        (&json!(true), &json!("load"), &json!(""))
    );
    assert_eq!(l["model"], "fast");
    let r = d.client().post_json(
        "/api/generate",
        &json!({"model": "fast", "prompt": "", "stream": false}),
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["done_reason"], "load");
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "fast", "messages": [], "stream": false}),
    );
    let b = r.json();
    assert_eq!(b["done_reason"], "load");
    assert_eq!(b["message"], json!({"role": "assistant", "content": ""}));
    assert!(d.trace_of("rkllm_run").is_empty(), "nothing was generated");
}

#[test]
fn a_runtime_error_mid_stream_ends_it_with_an_error_line_and_service_goes_on() {
    let d = daemon_with(
        "olrterr",
        &["error_after_tokens = 5", "answer_tokens_min = 30"],
    );
    let mut c = d.client();
    let (_, lines) = stream(&mut c, "/api/chat", &chat("hi"));
    let (last, pieces) = lines.split_last().unwrap();
    assert!(
        !text_of(pieces, "message").is_empty(),
        "text before the error arrives"
    );
    assert!(pieces.iter().all(|l| l["done"] == false));
    assert_ollama_error(last);
    // The same connection carries the next request.
    assert_eq!(c.get("/api/version").status, 200);
    // Not streaming: nothing was sent yet, so it is a plain 500.
    let r = d.client().post_json(
        "/api/generate",
        &with(generate("hi"), json!({"stream": false})),
    );
    assert_eq!(r.status, 500);
    assert_ollama_error(&r.json());
    assert_eq!(d.client().get("/health").json()["status"], "ok");
}

/// Issue 19: the architecture the model file declares is what `/api/show` and the listings
/// report, whatever the file's name or the template chosen.
#[test]
fn show_and_the_listings_report_the_architecture_the_file_declares() {
    let dir = TempDir::new("olshow-arch");
    let model = write_model(dir.path(), "m", &["general.architecture = qwen2"]);
    let d = Daemon::builder("olshow-arch")
        .model(model)
        .args(["--chat-template", "qwen3"])
        .start();
    let s = d
        .client()
        .post_json("/api/show", &json!({"model": "m"}))
        .json();
    assert_eq!(
        s["model_info"],
        json!({"general.architecture": "qwen2", "qwen2.context_length": 4096}),
        "{s}"
    );
    assert_eq!(s["details"]["family"], "qwen2", "{s}");
    for path in ["/api/tags", "/api/ps"] {
        let listing = d.client().get(path).json();
        assert_eq!(
            listing["models"][0]["details"]["families"],
            json!(["qwen2"]),
            "{path}: {listing}"
        );
    }
}
