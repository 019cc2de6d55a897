//! How the next request of a conversation renders the answer being generated, handed to the
//! engine with the job so it can re-seat the KV cache between turns (see `engine::reseat`):
//! the answer goes through the output filter the client's response went through (reasoning
//! split off, tool calls parsed), and what the client gets back and sends again (its content,
//! its tool calls as `messages[].tool_calls`) is rendered as a past assistant turn, exactly as
//! `conversation` renders such a message.

use serde_json::{json, Value};

use super::error::Flavor;
use super::output::{Event, OutputFilter};
use super::tools::{self, ToolCallParser};
use crate::chat::{Role, Template, Turn};
use crate::engine::PastTurn;

/// `tools`: the request gave tools, so calls in the answer are parsed (as its responder does).
pub fn for_template(template: &Template, tools: bool) -> PastTurn {
    let template = template.clone();
    PastTurn::new(move |answer| render(&template, tools, answer))
}

fn render(template: &Template, tools: bool, answer: &str) -> Option<String> {
    let parser = tools.then(|| ToolCallParser::new(template.tool_format, 0));
    let mut filter = OutputFilter::new(true, parser, Vec::new());
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut emit = |e: Event<'_>| match e {
        Event::Content(t) => content.push_str(t),
        Event::Call(call) => {
            calls.push(json!({"function": {"name": call.name, "arguments": call.arguments}}));
        }
        Event::Reasoning(_) => {}
    };
    filter.push(answer, &mut emit);
    filter.finish(&mut emit);
    if !calls.is_empty() {
        let calls = Value::Array(calls);
        tools::render_calls(&mut content, &calls, Flavor::OpenAi, template.tool_format).ok()?;
    }
    Some(template.render_turn(&Turn::new(Role::Assistant, content), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen3() -> Template {
        Template::preset("qwen3").unwrap()
    }

    #[test]
    fn a_thinking_answer_is_rendered_as_the_next_request_renders_its_content() {
        let t = qwen3();
        let past = render(&t, false, "<think>\nhmm\n</think>\n\nParis is sunny.").unwrap();
        // What `conversation` renders for the message a client sends back.
        let sent_back = t.render_turn(&Turn::new(Role::Assistant, "Paris is sunny."), false);
        assert_eq!(past, sent_back);
        assert!(!past.contains("hmm"), "{past}");
    }

    #[test]
    fn tool_calls_are_rendered_as_the_client_sends_them_back() {
        let t = qwen3();
        let answer = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let past = render(&t, true, answer).unwrap();
        let mut content = String::new();
        let calls = json!([{"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]);
        tools::render_calls(&mut content, &calls, Flavor::OpenAi, t.tool_format).unwrap();
        let sent_back = t.render_turn(&Turn::new(Role::Assistant, content), false);
        assert_eq!(past, sent_back);
    }
}
