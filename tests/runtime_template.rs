//! `--chat-template runtime`: the model's own template inside the runtime, which rkllmd gives
//! one input per run. The request's system prompt goes to `rkllm_set_function_tools` with its
//! tools (again when either changes, with empty tools when a request drops them), and tool
//! results go back with role `tool`, as the simulator's trace of its calls shows.

mod common;

use common::{turns, weather_tools};
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

fn question(turn: usize) -> String {
    format!("Question {turn}: tell me about the rivers of the north.")
}

/// Issue 19: the runtime keeps the conversation. Each turn of a conversation that continues
/// the one the runtime holds sends only its newest message, with `keep_history = 1`, and each
/// run starts from exactly what the one before left in the cache.
#[test]
fn a_continued_conversation_sends_only_its_newest_message_on_the_kept_history() {
    let d = runtime_daemon("rt-history");
    let answers = turns::content_only_turns(&d, Some("Be brief."), 4, question);
    for a in &answers {
        assert_eq!(a.warning, None, "{}", a.body);
    }
    let runs = d.trace_of("rkllm_run");
    let sent: Vec<(&str, &str, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["role"].as_str().unwrap(),
                r["prompt"].as_str().unwrap(),
                r["keep_history"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<String> = (1..=4).map(question).collect();
    let expected: Vec<(&str, &str, u64)> =
        expected.iter().map(|q| ("user", q.as_str(), 1)).collect();
    assert_eq!(sent, expected);
    let ends = d.trace_of("run_end");
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    for pair in ends.windows(2) {
        assert_eq!(
            n(&pair[1], "cache_tokens"),
            n(&pair[0], "cache_tokens")
                + n(&pair[1], "prefill_tokens")
                + n(&pair[1], "generate_tokens"),
            "a run did not start from what the one before left: {pair:?}"
        );
    }
    turns::assert_runtime_holds_the_first_turn(&d, &answers);
}

/// A conversation that does not continue the one the runtime holds (an edited turn) starts
/// over: the cache is cleared, keeping the runtime's system prompt, the newest message goes
/// alone, and the client is told, streamed or not. Continuing the new one is silent again; a
/// new conversation of one message starts over without a warning (nothing of it is left out).
#[test]
fn a_conversation_that_does_not_continue_starts_over_and_says_so() {
    let d = runtime_daemon("rt-history-over");
    let mut messages = vec![json!({"role": "user", "content": question(1)})];
    let first = turns::chat(&d, &messages);
    messages.push(json!({"role": "assistant", "content": first.message()["content"]}));
    messages.push(json!({"role": "user", "content": question(2)}));
    assert_eq!(turns::chat(&d, &messages).warning, None);
    assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());

    // The first answer edited: not what the runtime generated.
    messages[1] = json!({"role": "assistant", "content": "Something else entirely."});
    let mut c = d.client();
    c.send_post(
        "/v1/chat/completions",
        &json!({"stream": true, "messages": messages}),
    );
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 200);
    let warning = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-rkllmd-warning"))
        .map_or_else(|| panic!("no warning: {headers:?}"), |(_, v)| v.clone());
    assert!(warning.contains("started over"), "{warning}");
    let mut answer = String::new();
    while let Some(chunk) = c.read_chunk() {
        for data in common::client::sse_data(&chunk) {
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                answer.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            }
        }
    }
    let clears = d.trace_of("rkllm_clear_kv_cache");
    assert_eq!(clears.len(), 1, "{clears:?}");
    assert_eq!(clears[0]["keep_system_prompt"], 1);
    assert_eq!(last_run(&d), ("user".to_owned(), question(2)));
    assert_eq!(d.trace_of("rkllm_run").last().unwrap()["keep_history"], 1);

    // Continuing the edited conversation: the runtime holds its newest turn, nothing to say.
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": question(3)}));
    let third = turns::chat(&d, &messages);
    assert_eq!(third.warning, None, "{}", third.body);
    assert_eq!(d.trace_of("rkllm_clear_kv_cache").len(), 1);
    assert_eq!(last_run(&d), ("user".to_owned(), question(3)));

    // Non-streamed too; and a new conversation of one message starts over silently.
    messages[1] = json!({"role": "assistant", "content": "Edited again."});
    let r = turns::chat(&d, &messages);
    assert!(
        r.warning
            .as_deref()
            .is_some_and(|w| w.contains("started over")),
        "{}",
        r.body
    );
    let fresh = turns::chat(&d, &[json!({"role": "user", "content": "Hello?"})]);
    assert_eq!(fresh.warning, None);
    assert_eq!(d.trace_of("rkllm_clear_kv_cache").len(), 3);
}

/// Issue 19: a tool loop under the runtime's template, end to end. The question with tools
/// gets a call; the result goes in with role `tool` on top of the question and call the runtime
/// still holds, and the answer after it comes from that whole sequence: another result gives
/// another answer.
#[test]
fn a_tool_loop_answers_from_the_result_on_top_of_the_kept_question() {
    let loop_with = |tag: &str, result: &str| {
        let d = runtime_daemon(tag);
        let mut messages = vec![
            json!({"role": "system", "content": "You are a weather bot."}),
            json!({"role": "user", "content": QUESTION}),
        ];
        let body = |messages: &[Value]| json!({"messages": messages, "tools": weather_tools()});
        let r = d
            .client()
            .post_json("/v1/chat/completions", &body(&messages));
        assert_eq!(finish_reason(&r), "tool_calls");
        let call = r.json()["choices"][0]["message"].clone();
        assert_eq!(call["tool_calls"][0]["function"]["name"], "get_weather");
        let id = call["tool_calls"][0]["id"].clone();
        messages.push(call);
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
        let r = d
            .client()
            .post_json("/v1/chat/completions", &body(&messages));
        assert_eq!(finish_reason(&r), "stop");
        assert_eq!(r.header("X-Rkllmd-Warning"), None);
        let answer = r.json();

        let runs = d.trace_of("rkllm_run");
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[0]["role"].as_str(), runs[0]["prompt"].as_str()),
            (Some("user"), Some(QUESTION))
        );
        assert_eq!(
            (runs[1]["role"].as_str(), runs[1]["prompt"].as_str()),
            (Some("tool"), Some(result))
        );
        assert_eq!(runs[1]["keep_history"], 1);
        // The tools went in once, before the question; the cache was never cleared after.
        assert_eq!(tool_calls(&d).len(), 1);
        assert!(d.trace_of("rkllm_clear_kv_cache").is_empty());
        // The answer's run reused all the question's run left: question and call.
        let ends = d.trace_of("run_end");
        assert_eq!(
            answer["usage"]["prompt_tokens_details"]["cached_tokens"], ends[0]["cache_tokens"],
            "{answer}"
        );
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sunny = loop_with("rt-loop-sunny", "Sunny, 22 C");
    let rainy = loop_with("rt-loop-rainy", "Heavy rain, 9 C");
    assert!(!sunny.is_empty());
    assert_ne!(sunny, rainy, "the answer does not depend on the result");
}
