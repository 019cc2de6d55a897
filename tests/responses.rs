//! OpenAI's Responses API (`POST /v1/responses`) over the real socket: the answer as a
//! `response` object and as typed `response.*` events in order, input items, function tools and
//! their calls, reasoning items, the token cap, a stream cut short, and what rkllmd refuses
//! (it keeps no responses). `tests/clients/test_responses.py` validates the same bodies and events
//! against OpenAI's published schema and runs the official SDK.

mod common;

use common::client::sse_data;
use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

fn daemon(tag: &str, lines: &[&str], args: &[&str]) -> Daemon {
    let dir = TempDir::new(tag);
    let model = write_model(dir.path(), "m", lines);
    Daemon::builder(tag)
        .model(model)
        .args(args.iter().copied())
        .start()
}

/// The events of a Responses stream: `event:` names its type, each carries the next
/// `sequence_number`, and there is no `[DONE]`.
fn events(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let data = sse_data(body);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{text}");
    let evs: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(names.len(), evs.len(), "{text}");
    for (i, (name, e)) in names.iter().zip(&evs).enumerate() {
        assert_eq!(e["type"], *name, "{e}");
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    evs
}

fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn a_plain_answer_streamed_and_not() {
    let d = daemon(
        "resp-plain",
        &["answer_tokens_min = 6", "answer_tokens_max = 6"],
        &[],
    );
    let r = d.client().post_json(
        "/v1/responses",
        &json!({"model": "m", "input": "Hello", "instructions": "Be brief."}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert!(b["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(b["object"], "response");
    assert_eq!(b["status"], "completed");
    assert_eq!(b["instructions"], "Be brief.");
    assert_eq!(b["store"], false);
    let out = b["output"].as_array().unwrap();
    assert_eq!(out.len(), 1, "{b}");
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["content"][0]["type"], "output_text");
    let text = out[0]["content"][0]["text"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    let run = d.trace_of("run_end").pop().unwrap();
    assert_eq!(b["usage"]["input_tokens"], run["prefill_tokens"]);
    assert_eq!(b["usage"]["output_tokens"], run["generate_tokens"]);
    assert_eq!(b["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(b["usage"]["output_tokens_details"]["reasoning_tokens"], 0);
    let total = run["prefill_tokens"].as_u64().unwrap() + run["generate_tokens"].as_u64().unwrap();
    assert_eq!(b["usage"]["total_tokens"], total);
    // The runtime's own template (no preset for "m") sees the newest user message.
    assert_eq!(d.trace_of("rkllm_run").pop().unwrap()["prompt"], "Hello");

    let r = d.client().post_json(
        "/v1/responses",
        &json!({"model": "m", "input": "Hello", "stream": true}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let evs = events(&r.body);
    let t = types(&evs);
    assert_eq!(
        t[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        t[t.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert!(t[4..t.len() - 4]
        .iter()
        .all(|t| *t == "response.output_text.delta"));
    let streamed: String = evs.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(streamed, text, "the same answer either way");
    assert_eq!(evs[evs.len() - 4]["text"], text);
    let done = &evs.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], text);
    assert_eq!(evs[0]["response"]["status"], "in_progress");
    assert_eq!(evs[0]["response"]["output"], json!([]));
}

#[test]
fn items_with_calls_and_results_go_in_and_a_call_comes_out() {
    let d = daemon(
        "resp-tools",
        &["answer_tokens_min = 5", "answer_tokens_max = 9"],
        &["--chat-template", "qwen2.5"],
    );
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    for stream in [false, true] {
        let r = d.client().post_json(
            "/v1/responses",
            &json!({"input": [{"role": "user", "content": [{"type": "input_text",
                "text": "Weather in Paris? Use get_weather."}]}],
                "tools": tools, "stream": stream}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let b = if stream {
            let evs = events(&r.body);
            let t = types(&evs);
            assert!(
                t.windows(4).any(|w| w
                    == [
                        "response.output_item.added",
                        "response.function_call_arguments.delta",
                        "response.function_call_arguments.done",
                        "response.output_item.done"
                    ]),
                "{t:?}"
            );
            evs.last().unwrap()["response"].clone()
        } else {
            r.json()
        };
        assert_eq!(b["status"], "completed", "{b}");
        let call = b["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("no call: {b}"));
        assert_eq!(call["name"], "get_weather");
        assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(args.is_object());
        // The request's tools are echoed, with the fields the schema requires filled in.
        let mut echoed = tools.clone();
        echoed[0]["strict"] = Value::Null;
        assert_eq!(b["tools"], echoed);
    }
    let prompt = d.trace_of("rkllm_run").pop().unwrap()["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("<tools>") && prompt.contains("\"get_weather\""),
        "{prompt}"
    );

    // The call and its output go back in as the assistant's call and a tool turn.
    let r = d.client().post_json(
        "/v1/responses",
        &json!({"instructions": "You help.", "tools": tools, "input": [
            {"type": "message", "role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = d.trace_of("rkllm_run").pop().unwrap()["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.starts_with("<|im_start|>system\nYou help."),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_response>\nsunny\n</tool_response>"),
        "{prompt}"
    );
}

#[test]
fn the_think_block_is_a_reasoning_item_and_effort_none_switches_it_off() {
    let d = daemon(
        "resp-think",
        &[
            "thinking = 1",
            "answer_tokens_min = 5",
            "answer_tokens_max = 8",
        ],
        &["--chat-template", "qwen3"],
    );
    let b = d
        .client()
        .post_json("/v1/responses", &json!({"input": "Is 17 prime?"}))
        .json();
    let out = b["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "reasoning", "{b}");
    let summary = out[0]["summary"][0]["text"].as_str().unwrap();
    assert!(
        !summary.trim().is_empty() && !summary.contains("think>"),
        "{summary:?}"
    );
    assert_eq!(out[1]["type"], "message");
    assert!(!out[1]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("think>"));

    let r = d.client().post_json(
        "/v1/responses",
        &json!({"input": "Is 17 prime?", "stream": true}),
    );
    let evs = events(&r.body);
    let t = types(&evs);
    assert_eq!(
        t[2..5],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta"
        ]
    );
    assert!(t.contains(&"response.reasoning_summary_text.done"));
    assert_eq!(evs[2]["item"]["type"], "reasoning");
    let message_at = t
        .iter()
        .position(|t| *t == "response.content_part.added")
        .unwrap();
    assert_eq!(evs[message_at - 1]["type"], "response.output_item.added");
    assert_eq!(evs[message_at - 1]["output_index"], 1);

    let b = d
        .client()
        .post_json(
            "/v1/responses",
            &json!({"input": "Is 17 prime?", "reasoning": {"effort": "none"}}),
        )
        .json();
    assert_eq!(b["output"][0]["type"], "message", "{b}");
    assert_eq!(b["output"].as_array().unwrap().len(), 1);
    assert_eq!(b["reasoning"]["effort"], "none");
}

#[test]
fn the_token_cap_is_incomplete_and_a_cut_stream_fails() {
    let d = daemon(
        "resp-cut",
        &[
            "answer_tokens_min = 300",
            "answer_tokens_max = 300",
            "decode_us_per_token = 10000",
        ],
        &["--request-timeout", "0.3"],
    );
    let b = d
        .client()
        .post_json(
            "/v1/responses",
            &json!({"input": "go", "max_output_tokens": 3}),
        )
        .json();
    assert_eq!(b["status"], "incomplete", "{b}");
    assert_eq!(b["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(b["usage"]["output_tokens"], 3);
    let r = d.client().post_json(
        "/v1/responses",
        &json!({"input": "go", "max_output_tokens": 3, "stream": true}),
    );
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap()["type"], "response.incomplete");

    let r = d
        .client()
        .post_json("/v1/responses", &json!({"input": "go", "stream": true}));
    let evs = events(&r.body);
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{last}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert!(
        last["response"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request timeout"),
        "{last}"
    );
    assert!(!types(&evs).contains(&"response.completed"));
    let item_done = evs
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(item_done["item"]["status"], "incomplete");
}

#[test]
fn what_rkllmd_does_not_keep_or_serve_is_a_400_naming_the_field() {
    let d = daemon("resp-bad", &[], &[]);
    let cases = [
        (
            json!({"input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (json!({"input": "x", "background": true}), "background"),
        (json!({}), "input"),
        (json!({"input": 5}), "input"),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input",
        ),
        (
            json!({"input": "x", "tools": [{"type": "web_search"}]}),
            "tools",
        ),
        (
            json!({"input": "x", "tool_choice": {"type": "file_search"}}),
            "tool_choice",
        ),
        (
            json!({"input": "x", "reasoning": {"effort": "max"}}),
            "reasoning.effort",
        ),
        (
            json!({"input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (json!({"input": "x", "model": "gpt-4o"}), "model"),
    ];
    for (body, param) in cases {
        let r = d.client().post_json("/v1/responses", &body);
        assert!(r.status == 400 || r.status == 404, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
        assert!(e["error"]["message"].is_string());
    }
    let r = d.client().post_json(
        "/v1/responses",
        &json!({"input": "x", "previous_response_id": "resp_1"}),
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("keeps no responses"));
    let r = d.client().post_json(
        "/v1/responses",
        &json!({"input": "x", "text": {"format": {"type": "json_object"}}, "store": false}),
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("x-rkllmd-warning")
        .is_some_and(|w| w.contains("format json_object is not enforced")));
}
