//! The tool budget (#20): a chat UI that sends its whole tool catalogue with every chat (36
//! definitions, ~25 KB, as Open WebUI's default native function calling does) gets answers on a
//! 4,096-token context, with the tools left out named in `X-Rkllmd-Warning`; a conversation
//! that cannot fit even so is a 400 with the counts, never a 500.

mod common;

use std::collections::BTreeSet;

use common::client::{sse_data, Response};
use common::tool_catalog::{tool_catalog, tool_names};
use common::{demo_model, Daemon};
use serde_json::{json, Value};

/// The warning that names the tools left out (`N tool(s) left out to fit the context ...
/// tokens): NAME, NAME`).
fn left_out_warning(r: &Response) -> &str {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-rkllmd-warning"))
        .map(|(_, v)| v.as_str())
        .find(|v| v.contains("left out to fit the context"))
        .unwrap_or_else(|| panic!("no warning naming the tools left out: {:?}", r.headers))
}

/// The names of the tools left out, from the warning.
fn dropped_tools(r: &Response) -> Vec<String> {
    let warning = left_out_warning(r);
    let (_, names) = warning.split_once("tokens): ").expect(warning);
    names.split(", ").map(str::to_owned).collect()
}

/// How many tools the warning says were left out.
fn dropped_count(r: &Response) -> u64 {
    let warning = left_out_warning(r);
    let (n, _) = warning.split_once(" tool(s) left out").expect(warning);
    n.parse().expect(warning)
}

/// The tool names written into the prompt of each run (Qwen's `<tools>` block).
fn tools_in_prompts(d: &Daemon) -> Vec<Vec<String>> {
    d.trace_of("rkllm_run")
        .iter()
        .filter_map(|run| {
            let prompt = run["prompt"].as_str()?;
            let start = prompt.find("<tools>\n")? + "<tools>\n".len();
            let end = start + prompt[start..].find("\n</tools>")?;
            let names = prompt[start..end]
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect();
            Some(names)
        })
        .collect()
}

/// Kept and dropped split the catalogue: every tool is in exactly one, kept in request order,
/// some of each.
fn assert_split(kept: &[String], dropped: &[String]) {
    let all = tool_names(&tool_catalog());
    assert!(
        !kept.is_empty() && !dropped.is_empty(),
        "{kept:?} / {dropped:?}"
    );
    let in_order: Vec<&String> = all.iter().filter(|n| kept.contains(n)).collect();
    assert_eq!(
        kept.iter().collect::<Vec<_>>(),
        in_order,
        "kept in request order"
    );
    let mut both: Vec<&String> = kept.iter().chain(dropped).collect();
    both.sort();
    let mut sorted: Vec<&String> = all.iter().collect();
    sorted.sort();
    assert_eq!(both, sorted, "each tool kept or dropped, once");
}

fn catalog_chat(content: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": content}],
        "tools": tool_catalog(),
    })
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

#[test]
fn a_chat_ui_s_whole_tool_catalogue_gets_answers_on_a_4096_token_context() {
    let catalog = tool_catalog();
    assert_eq!(catalog.as_array().unwrap().len(), 36);
    let bytes = catalog.to_string().len();
    assert!((24_000..28_000).contains(&bytes), "{bytes} bytes");
    let d = Daemon::builder("budget-demo").model(demo_model()).start();
    let short = |body: Value, ollama: bool| {
        if ollama {
            with(body, json!({"options": {"num_predict": 8}}))
        } else {
            with(body, json!({"max_tokens": 8}))
        }
    };

    let r = d.client().post_json(
        "/v1/chat/completions",
        &short(catalog_chat("Hello! What can you do?"), false),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(!content.is_empty(), "{v}");
    let dropped = dropped_tools(&r);
    let kept = tools_in_prompts(&d).pop().expect("a run with tools");
    assert_split(&kept, &dropped);

    let r = d.client().post_json(
        "/v1/chat/completions",
        &short(
            with(catalog_chat("And now?"), json!({"stream": true})),
            false,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!text.is_empty(), "{events:?}");
    assert_split(&tools_in_prompts(&d).pop().unwrap(), &dropped_tools(&r));

    for stream in [false, true] {
        let r = d.client().post_json(
            "/api/chat",
            &short(
                with(catalog_chat("Tell me more."), json!({"stream": stream})),
                true,
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let last: Value = r
            .text()
            .lines()
            .last()
            .map(|l| serde_json::from_str(l).unwrap())
            .unwrap();
        assert_eq!(last["done"], true, "{last}");
        let text: String = r
            .text()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter_map(|l| l["message"]["content"].as_str().map(str::to_owned))
            .collect();
        assert!(!text.is_empty(), "stream {stream}: {}", r.text());
        assert_split(&tools_in_prompts(&d).pop().unwrap(), &dropped_tools(&r));
    }
}

#[test]
fn tools_the_conversation_called_and_the_user_names_are_kept_first() {
    let d = Daemon::builder("budget-keep")
        .args(["--chat-template", "qwen2.5"])
        .start();
    let body = json!({
        "messages": [
            {"role": "user", "content": "Find my snippet about sorting."},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "search_code", "arguments": "{\"query\": \"sorting\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "[{\"id\": \"c7\"}]"},
            {"role": "user", "content": "Good. Now use update_contacts to send it to Ann."}
        ],
        "tools": tool_catalog(),
    });
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let dropped = dropped_tools(&r);
    let kept = tools_in_prompts(&d).pop().unwrap();
    assert_split(&kept, &dropped);
    // /metrics counts them as the warning does.
    let n = dropped_count(&r);
    assert_eq!(n, dropped.len() as u64);
    assert_eq!(d.metric("rkllmd_tools_left_out_total"), n);
    assert_eq!(d.metric("rkllmd_requests_with_tools_left_out_total"), 1);
    // Both come late in the catalogue: without their priority they would be left out.
    let all = tool_names(&tool_catalog());
    let first_dropped = all.iter().position(|n| dropped.contains(n)).unwrap();
    for name in ["search_code", "update_contacts"] {
        assert!(kept.contains(&name.to_owned()), "{name} not in {kept:?}");
        assert!(all.iter().position(|n| n == name).unwrap() > first_dropped);
    }
    // The others follow in request order (assert_split), from the catalogue's first tool on.
    let others: Vec<&String> = kept
        .iter()
        .filter(|n| *n != "search_code" && *n != "update_contacts")
        .collect();
    assert_eq!(others.first(), all.first().as_ref(), "{kept:?}");
}

#[test]
fn tools_that_fit_their_budget_go_in_whole_without_a_warning() {
    let d = Daemon::builder("budget-fits")
        .args(["--tools-budget", "100%", "--max-context-len", "16384"])
        .args(["--chat-template", "qwen2.5"])
        .start();
    let r = d
        .client()
        .post_json("/v1/chat/completions", &catalog_chat("Hello"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !r.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-rkllmd-warning") && v.contains("left out")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        tools_in_prompts(&d).pop().unwrap(),
        tool_names(&tool_catalog())
    );
    assert_eq!(d.metric("rkllmd_tools_left_out_total"), 0);
    assert_eq!(d.metric("rkllmd_requests_with_tools_left_out_total"), 0);
}

/// The counts a 400 for a conversation that cannot fit gives, from its message.
fn assert_counts(message: &str, context: u32) {
    assert!(
        message.starts_with(&format!(
            "This model's maximum context length is {context} tokens. However, your messages \
             resulted in "
        )),
        "{message}"
    );
    for part in [
        " for the tool definitions, ",
        " for the messages that cannot be left out), with ",
        " more kept for the answer.",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert!(
        !message.contains(": 0 for the tool definitions"),
        "the tools that fit their budget are counted: {message}"
    );
}

#[test]
fn a_conversation_that_cannot_fit_beside_its_tools_is_a_400_with_the_counts() {
    for template in ["qwen2.5", "runtime"] {
        let d = Daemon::builder("budget-400")
            .args(["--max-context-len", "2048", "--chat-template", template])
            .start();
        let huge = "word ".repeat(2000);
        for stream in [false, true] {
            let r = d.client().post_json(
                "/v1/chat/completions",
                &with(catalog_chat(&huge), json!({"stream": stream})),
            );
            assert_eq!(r.status, 400, "{template}: {}", r.text());
            let e = r.json();
            assert_eq!(e["error"]["code"], "context_length_exceeded", "{e}");
            assert_counts(e["error"]["message"].as_str().unwrap(), 2048);
        }
        let r = d.client().post_json("/api/chat", &catalog_chat(&huge));
        assert_eq!(r.status, 400, "{template}: {}", r.text());
        let e = r.json();
        assert_eq!(e.as_object().unwrap().len(), 1, "Ollama's shape: {e}");
        assert_counts(e["error"].as_str().unwrap(), 2048);
        assert!(
            d.trace_of("rkllm_run").is_empty(),
            "{template}: refused before the runtime saw it"
        );
        // The daemon serves the next request.
        let r = d
            .client()
            .post_json("/v1/chat/completions", &catalog_chat("Hi"));
        assert_eq!(r.status, 200, "{template}: {}", r.text());
    }
}

#[test]
fn under_the_runtime_s_template_the_runtime_gets_the_tools_that_fit() {
    let d = Daemon::builder("budget-runtime")
        .args(["--chat-template", "runtime"])
        .start();
    for path in ["/v1/chat/completions", "/api/chat"] {
        let body = with(catalog_chat("Hello there"), json!({"stream": false}));
        let r = d.client().post_json(path, &body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let dropped = dropped_tools(&r);
        let given: BTreeSet<String> = d
            .trace_of("rkllm_set_function_tools")
            .last()
            .map(|t| serde_json::from_str::<Value>(t["tools"].as_str().unwrap()).unwrap())
            .map(|tools| tool_names(&tools).into_iter().collect())
            .expect("tools given to the runtime");
        assert_split(
            &tool_names(&tool_catalog())
                .into_iter()
                .filter(|n| given.contains(n))
                .collect::<Vec<_>>(),
            &dropped,
        );
    }
}

/// Under the runtime's template, a request with tools after one without (a chat UI's title
/// request between two chats) gives the runtime its tools again, and that run prefills them.
/// What it teaches about bytes per token must count them: counted as the prompt's few bytes
/// for a run of tools, the ratio fell to one byte a token and the budget shrank with it.
#[test]
fn tools_given_again_under_the_runtime_s_template_do_not_shrink_the_budget() {
    let d = Daemon::builder("budget-learn")
        .args(["--chat-template", "runtime"])
        .start();
    let mut kept = Vec::new();
    for _ in 0..5 {
        let title = json!({"messages": [{"role": "user", "content": "Title for: hello"}]});
        let r = d.client().post_json("/v1/chat/completions", &title);
        assert_eq!(r.status, 200, "{}", r.text());
        let r = d
            .client()
            .post_json("/v1/chat/completions", &catalog_chat("Hello there"));
        assert_eq!(r.status, 200, "{}", r.text());
        kept.push(36 - dropped_tools(&r).len());
    }
    // The simulator's JSON is about 3 bytes a token: three tools fit the 1,024-token budget
    // beside the block around them. At one byte a token, only one would.
    assert!(
        kept.iter().all(|&k| k >= 2),
        "tools kept per chat: {kept:?}"
    );
}
