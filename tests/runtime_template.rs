//! `--chat-template runtime`: the model's own template inside the runtime, which rkllmd gives
//! one input per run. The request's system prompt goes to `rkllm_set_function_tools` with its
//! tools (again when either changes, with empty tools when a request drops them), and tool
//! results go back with role `tool`, as the simulator's trace of its calls shows.

mod common;

use common::weather_tools;
use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

fn runtime_daemon(tag: &str) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 15", "answer_tokens_max = 25"],
    );
    Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", "runtime"])
        .start()
}

const QUESTION: &str = "What is the weather in Paris? Use get_weather.";

/// The `rkllm_set_function_tools` calls so far, as (system prompt, tools).
fn tool_calls(d: &Daemon) -> Vec<(String, String)> {
    d.trace_of("rkllm_set_function_tools")
        .iter()
        .map(|c| {
            assert_eq!(c["tool_response_str"], "tool_response", "{c}");
            (
                c["system_prompt"].as_str().unwrap().to_owned(),
                c["tools"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn finish_reason(r: &common::client::Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["finish_reason"].clone()
}

#[test]
fn the_system_prompt_goes_with_the_tools_and_a_change_or_a_removal_is_sent() {
    let d = runtime_daemon("rt-system");
    let ask = |system: Option<&str>, with_tools: bool| {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": QUESTION}));
        let mut body = json!({"messages": messages});
        if with_tools {
            body["tools"] = weather_tools();
        }
        d.client().post_json("/v1/chat/completions", &body)
    };

    assert_eq!(
        finish_reason(&ask(Some("You are a weather bot."), true)),
        "tool_calls"
    );
    let calls = tool_calls(&d);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "You are a weather bot.");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].1).unwrap(),
        weather_tools()
    );

    // The same again: the runtime holds them already.
    assert_eq!(
        finish_reason(&ask(Some("You are a weather bot."), true)),
        "tool_calls"
    );
    assert_eq!(tool_calls(&d).len(), 1);

    // Another system prompt; then none, which gives the documented default.
    assert_eq!(finish_reason(&ask(Some("Be brief."), true)), "tool_calls");
    assert_eq!(finish_reason(&ask(None, true)), "tool_calls");
    let calls = tool_calls(&d);
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[1].0, "Be brief.");
    assert_eq!(calls[2].0, "You are a helpful assistant.");
    assert_eq!(calls[2].1, calls[0].1);

    // Tools dropped: the runtime is told (empty tools), and the model no longer calls one.
    let r = ask(None, false);
    assert_eq!(finish_reason(&r), "stop");
    assert!(r.json()["choices"][0]["message"]
        .get("tool_calls")
        .is_none());
    let calls = tool_calls(&d);
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(
        calls[3],
        ("You are a helpful assistant.".to_owned(), String::new())
    );
    // Without tools a system prompt changes nothing in the runtime (rknn-llm#377).
    assert_eq!(finish_reason(&ask(Some("Be brief."), false)), "stop");
    assert_eq!(tool_calls(&d).len(), 4);

    // Every call came before the run it was for.
    let trace = d.trace();
    let fns: Vec<&str> = trace
        .iter()
        .filter_map(|v| v["fn"].as_str())
        .filter(|f| *f == "rkllm_run" || *f == "rkllm_set_function_tools")
        .collect();
    assert_eq!(
        fns,
        [
            "rkllm_set_function_tools",
            "rkllm_run",
            "rkllm_run",
            "rkllm_set_function_tools",
            "rkllm_run",
            "rkllm_set_function_tools",
            "rkllm_run",
            "rkllm_set_function_tools",
            "rkllm_run",
            "rkllm_run",
        ]
    );
}

#[test]
fn ollama_s_system_message_goes_with_its_tools() {
    let d = runtime_daemon("rt-system-ollama");
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "stream": false, "tools": weather_tools(), "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": QUESTION},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["message"]["tool_calls"].is_array(), "{}", r.text());
    let calls = tool_calls(&d);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "You are a weather bot.");
}

/// The request after a tool call: the conversation so far, the call, and `results`.
fn with_results(results: &[&str]) -> Vec<Value> {
    let mut messages = vec![
        json!({"role": "user", "content": QUESTION}),
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
        ]}),
    ];
    for (i, r) in results.iter().enumerate() {
        messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": r}));
    }
    messages
}

/// The last run's role and prompt.
fn last_run(d: &Daemon) -> (String, String) {
    let runs = d.trace_of("rkllm_run");
    let run = runs.last().expect("a run");
    (
        run["role"].as_str().unwrap().to_owned(),
        run["prompt"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn tool_results_go_to_the_runtime_with_role_tool() {
    let d = runtime_daemon("rt-tool-role");
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": with_results(&["Sunny, 22 C"]), "tools": weather_tools()}),
    );
    // The simulator answers a tool turn in prose.
    assert_eq!(finish_reason(&r), "stop");
    assert!(!r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(last_run(&d), ("tool".to_owned(), "Sunny, 22 C".to_owned()));

    // Several results of one turn: one run, a JSON array in the request's order.
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": with_results(&[r#"{"temperature": 22}"#, "rain in Rome"])}),
    );
    assert_eq!(finish_reason(&r), "stop");
    assert_eq!(
        last_run(&d),
        (
            "tool".to_owned(),
            r#"[{"temperature":22},"rain in Rome"]"#.to_owned()
        )
    );

    // A user message after them goes as the user's again.
    let mut messages = with_results(&["Sunny"]);
    messages.push(json!({"role": "assistant", "content": "It is sunny."}));
    messages.push(json!({"role": "user", "content": "Thanks!"}));
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(finish_reason(&r), "stop");
    assert_eq!(last_run(&d), ("user".to_owned(), "Thanks!".to_owned()));
}

#[test]
fn ollama_tool_results_go_to_the_runtime_with_role_tool() {
    let d = runtime_daemon("rt-tool-role-ollama");
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
    assert_eq!(r.json()["done_reason"], "stop", "{}", r.text());
    assert_eq!(last_run(&d), ("tool".to_owned(), "Sunny".to_owned()));
}
