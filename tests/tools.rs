//! Function calling: request tools reach the model (written into the system turn when rkllmd
//! renders the conversation, through the runtime's function-tools API with the runtime's
//! template), the simulator's `<tool_call>` answers come back as structured calls, and tool
//! results go back in.

mod common;

use common::client::sse_data;
use common::weather_tools;
use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

fn qwen_daemon(tag: &str) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 15", "answer_tokens_max = 25"],
    );
    Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .start()
}

const QUESTION: &str = "What is the weather in Paris? Use get_weather.";

/// The tool definitions rkllmd wrote into each prompt that has them (one JSON object per line
/// between `<tools>` and `</tools>`), as JSON arrays. With rkllmd's own template the runtime's
/// function-tools API is never used: it fails under the empty template (rknn-llm#397).
fn tools_in_prompts(d: &Daemon) -> Vec<Value> {
    assert!(
        d.trace_of("rkllm_set_function_tools").is_empty(),
        "rkllm_set_function_tools called although rkllmd renders the template"
    );
    d.trace_of("rkllm_run")
        .iter()
        .filter_map(|run| {
            let prompt = run["prompt"].as_str()?;
            let start = prompt.find("<tools>\n")? + "<tools>\n".len();
            let end = start + prompt[start..].find("\n</tools>")?;
            let tools = prompt[start..end]
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            Some(Value::Array(tools))
        })
        .collect()
}

#[test]
fn openai_tools_reach_the_runtime_and_a_call_comes_back_structured() {
    let d = qwen_daemon("tools-openai");
    let body = json!({
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": weather_tools(),
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], "{}");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));

    assert_eq!(tools_in_prompts(&d), [weather_tools()]);
    let prompt = d.trace_of("rkllm_run")[0]["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    // In the system turn (Qwen 2.5's default system prompt, as its template writes it with
    // tools), before the user's turn.
    assert!(
        prompt.starts_with("<|im_start|>system\nYou are Qwen") && prompt.contains("\n\n# Tools\n"),
        "{prompt}"
    );
    assert!(
        prompt.find("</tools>") < prompt.find("<|im_start|>user"),
        "{prompt}"
    );
}

#[test]
fn with_the_runtimes_template_the_tools_go_through_its_function_tools_api() {
    let dir = TempDir::new("tools-runtime");
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 15", "answer_tokens_max = 25"],
    );
    let d = Daemon::builder("tools-runtime")
        .model(model)
        .args(["--chat-template", "runtime"])
        .start();
    let body = json!({
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": weather_tools(),
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let set = d.trace_of("rkllm_set_function_tools");
    assert_eq!(set.len(), 1, "{set:?}");
    let sent: Value = serde_json::from_str(set[0]["tools"].as_str().unwrap()).unwrap();
    assert_eq!(sent, weather_tools());
    // No system message: the documented default (engine/runtime_tools.rs).
    assert_eq!(set[0]["system_prompt"], "You are a helpful assistant.");
    assert_eq!(set[0]["tool_response_str"], "tool_response");
    let prompt = d.trace_of("rkllm_run")[0]["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!prompt.contains("<tools>"), "{prompt}");
}

#[test]
fn a_streamed_call_is_a_tool_calls_delta_and_the_last_chunk_says_tool_calls() {
    let d = qwen_daemon("tools-openai-stream");
    let body = json!({
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": weather_tools(),
        "stream": true,
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let events: Vec<Value> = sse_data(&r.body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    let call = &calls[0][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{}");
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "");
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[test]
fn ollama_tools_come_back_as_objects_streamed_or_not() {
    let d = qwen_daemon("tools-ollama");
    for stream in [false, true] {
        let body = json!({
            "model": "m",
            "messages": [{"role": "user", "content": QUESTION}],
            "tools": weather_tools(),
            "stream": stream,
        });
        let r = d.client().post_json("/api/chat", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r
            .header("X-Rkllmd-Warning")
            .is_none_or(|w| !w.contains("tools")));
        let lines: Vec<Value> = r
            .text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let calls: Vec<&Value> = lines
            .iter()
            .filter_map(|l| l["message"].get("tool_calls"))
            .collect();
        assert_eq!(calls.len(), 1, "stream {stream}: {lines:?}");
        assert_eq!(
            calls[0],
            &json!([{"function": {"name": "get_weather", "arguments": {}}}])
        );
        let last = lines.last().unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(last["message"]["content"], "");
    }
    let sent = tools_in_prompts(&d);
    assert!(!sent.is_empty() && sent.iter().all(|t| *t == weather_tools()));
}

#[test]
fn tool_choice_none_sends_no_tools_and_the_answer_is_text() {
    let d = qwen_daemon("tools-none");
    let body = json!({
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": weather_tools(),
        "tool_choice": "none",
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert!(tools_in_prompts(&d).is_empty());
}

#[test]
fn required_tool_choice_is_sent_with_a_warning() {
    let d = qwen_daemon("tools-required");
    let body = json!({
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": weather_tools(),
        "tool_choice": "required",
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("X-Rkllmd-Warning")
        .is_some_and(|w| w.contains("tool_choice")));
    assert_eq!(tools_in_prompts(&d), [weather_tools()]);
}

#[test]
fn wrong_types_are_400_naming_the_field() {
    let d = qwen_daemon("tools-bad");
    for (field, value) in [
        ("tools", json!("get_weather")),
        ("tools", json!([{"type": "function"}])),
        ("tool_choice", json!(3)),
        ("tool_choice", json!("sometimes")),
    ] {
        let mut body = json!({
            "messages": [{"role": "user", "content": QUESTION}],
            "tools": weather_tools(),
        });
        body[field] = value;
        let r = d.client().post_json("/v1/chat/completions", &body);
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], field, "{}", r.text());
    }
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": {}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("tools"));
}

#[test]
fn a_tool_result_goes_back_in_and_is_answered() {
    let d = qwen_daemon("tools-result");
    let mut messages = vec![json!({"role": "user", "content": QUESTION})];
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": weather_tools()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let message = r.json()["choices"][0]["message"].clone();
    let id = message["tool_calls"][0]["id"].clone();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "Sunny, 22 C"}));
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": weather_tools()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());

    let runs = d.trace_of("rkllm_run");
    assert_eq!(runs.len(), 2);
    let first = runs[0]["prompt"].as_str().unwrap();
    let second = runs[1]["prompt"].as_str().unwrap();
    // The answer with the call stayed in the cache: only the tool result is new.
    assert!(!second.contains("get_weather"), "{second}");
    assert!(
        second.contains("<|im_start|>user\n<tool_response>\nSunny, 22 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
        "{second}"
    );
    assert!(first.ends_with("<|im_start|>assistant\n"), "{first}");
    // The definitions were prefilled once, with the first turn, and stayed in the cache.
    assert_eq!(tools_in_prompts(&d), [weather_tools()]);
    assert!(d.trace_of("rkllm_clear_kv_cache").len() <= 1);
}

#[test]
fn the_tool_call_is_rendered_in_the_history_for_a_fresh_daemon() {
    // Ollama sends arguments as an object; the rendered prompt has the call as the model wrote it.
    let d = qwen_daemon("tools-history");
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ]},
        {"role": "tool", "content": "Sunny"},
    ]);
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "messages": messages, "stream": false}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let runs = d.trace_of("rkllm_run");
    let prompt = runs.last().unwrap()["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nSunny\n</tool_response><|im_end|>\n"),
        "{prompt}"
    );
}
