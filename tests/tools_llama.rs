//! Function calling with the `llama3` preset: the tools reach the model in Llama 3.1's own form
//! (the environment lines in the system block, the definitions in the first user message), the
//! model's bare JSON answer comes back as structured calls in both APIs, the call and its result
//! go back into the history as Llama's template writes them, and a request without tools has
//! none of it. The simulator answers with a scripted text (its `answer` key).

mod common;

use common::client::sse_data;
use common::weather_tools;
use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

const CALL: &str = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;

fn llama_daemon(tag: &str, answer: &str) -> Daemon {
    let dir = TempDir::new(tag);
    let answer_line = format!("answer = {answer}");
    let model = write_model(dir.path(), "m", &[answer_line.as_str()]);
    Daemon::builder(tag)
        .model(model)
        .args(["--chat-template", "llama3"])
        .start()
}

const QUESTION: &str = "What is the weather in Paris?";

/// The prompts of the runs that answered clients (not the re-seats of the KV cache after an
/// answer the next request renders otherwise, as a call after `<|python_tag|>`).
fn prompts(d: &Daemon) -> Vec<String> {
    common::turns::client_runs(d)
        .iter()
        .map(|(run, _)| run["prompt"].as_str().unwrap().to_owned())
        .collect()
}

/// The start of the prompt Llama 3.1's template writes for `QUESTION` with `weather_tools()`:
/// the definition indented by 4, keys in `serde_json`'s order.
const LLAMA_PROMPT: &str = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
    Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n\
    <|eot_id|><|start_header_id|>user<|end_header_id|>\n\n\
    Given the following functions, please respond with a JSON for a function call with its \
    proper arguments that best answers the given prompt.\n\n\
    Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name \
    and its value}.Do not use variables.\n\n\
    {\n    \"function\": {\n        \"description\": \"The weather in a city.\",\n        \
    \"name\": \"get_weather\",\n        \"parameters\": {\n            \"properties\": {\n                \
    \"city\": {\n                    \"type\": \"string\"\n                }\n            },\n            \
    \"type\": \"object\"\n        }\n    },\n    \"type\": \"function\"\n}\n\n\
    What is the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

#[test]
fn openai_tools_are_written_in_llamas_form_and_its_json_answer_is_a_call() {
    let d = llama_daemon("llama-tools-openai", CALL);
    let body = json!({
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": weather_tools(),
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["content"], Value::Null, "{v}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));

    let sent = prompts(&d);
    assert_eq!(sent, [LLAMA_PROMPT]);
    assert!(d.trace_of("rkllm_set_function_tools").is_empty());

    // Streamed: one tool_calls delta, none of the call's JSON as content.
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": body["messages"], "tools": weather_tools(), "stream": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let events: Vec<Value> = sse_data(&r.body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(deltas.len(), 1, "{events:?}");
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
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
fn ollama_gets_the_call_as_an_object_streamed_or_not_after_the_python_tag_too() {
    let d = llama_daemon("llama-tools-ollama", &format!("<|python_tag|>{CALL}"));
    for stream in [false, true] {
        let body = json!({
            "model": "m",
            "messages": [{"role": "user", "content": QUESTION}],
            "tools": weather_tools(),
            "stream": stream,
        });
        let r = d.client().post_json("/api/chat", &body);
        assert_eq!(r.status, 200, "{}", r.text());
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
            &json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
        );
        let content: String = lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        assert_eq!(content, "", "stream {stream}: {lines:?}");
        assert_eq!(lines.last().unwrap()["done"], true);
    }
    assert!(prompts(&d).iter().all(|p| p == LLAMA_PROMPT));
}

#[test]
fn the_call_and_its_result_go_back_as_llama_writes_them_and_removing_tools_works() {
    let d = llama_daemon("llama-tools-history", CALL);
    let mut messages = vec![json!({"role": "user", "content": QUESTION})];
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": weather_tools()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let message = r.json()["choices"][0]["message"].clone();
    assert_eq!(
        message["tool_calls"][0]["function"]["name"], "get_weather",
        "{message}"
    );
    let id = message["tool_calls"][0]["id"].clone();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "Sunny, 22 C"}));
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": weather_tools()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let sent = prompts(&d);
    assert_eq!(sent.len(), 2);
    // The runtime's cache held the first prompt and the call the model wrote: only what
    // follows the call is new, the tool result in an `ipython` turn, JSON-encoded.
    assert_eq!(
        sent[1],
        "<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"Sunny, 22 C\"<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );

    // The same conversation without tools: no definitions, no environment line, and the same
    // JSON answer is plain content.
    let r = d
        .client()
        .post_json("/v1/chat/completions", &json!({"messages": messages}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], CALL, "{v}");
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
    let sent = prompts(&d);
    let last = sent.last().unwrap();
    assert!(
        last.starts_with(
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n\
             What is the weather in Paris?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \
             \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>"
        ),
        "{last}"
    );
    assert!(!last.contains("Environment: ipython") && !last.contains("Given the following"));

    // A history written by the client (Ollama: arguments as an object): the call as the
    // template writes it, the message's text dropped as the template drops it.
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "m", "stream": false, "tools": weather_tools(), "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ]},
            {"role": "tool", "content": "Sunny"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = prompts(&d);
    let last = sent.last().unwrap();
    let want = format!(
        "{LLAMA_PROMPT}{CALL}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\
         \"Sunny\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(*last, want);
}

/// Llama writes the definitions into the first user message: when old turns are left out to fit
/// the context, that message stays while it carries them (it went first, and the tools with
/// it).
#[test]
fn the_turn_that_carries_the_definitions_is_never_left_out() {
    let dir = TempDir::new("llama-keep-defs");
    let model = write_model(dir.path(), "m", &[]);
    let d = Daemon::builder("llama-keep-defs")
        .model(model)
        .args(["--chat-template", "llama3", "--max-context-len", "1024"])
        .start();
    let mut messages = vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "The first question."}),
    ];
    for i in 0..6 {
        messages.push(json!({"role": "assistant", "content": format!("answer {i} ").repeat(60)}));
        messages.push(json!({"role": "user", "content": format!("question {i} ").repeat(60)}));
    }
    messages.push(json!({"role": "assistant", "content": "ok"}));
    messages.push(json!({"role": "user", "content": QUESTION}));
    let body = json!({"messages": messages, "tools": weather_tools()});
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = prompts(&d).pop().unwrap();
    assert!(
        !prompt.contains("answer 0 answer 0"),
        "old turns were left out: {prompt}"
    );
    assert!(
        prompt.contains("Given the following functions")
            && prompt.contains("The first question.")
            && prompt.contains("\"get_weather\""),
        "{prompt}"
    );
}
