//! `runtime` template mode: the model's own template lives in the runtime, which is given one
//! message per run (`RKLLMInput.prompt_input` with its `role`), not the conversation, and keeps
//! the conversation in its KV cache (`keep_history = 1`). rkllmd sends the newest input: the
//! newest user message, or, when the conversation ends with tool results, those results with
//! role `tool` (the runtime wraps them in the model's tool-response turn), as Rockchip's own
//! server does (`get_last_input` in `examples/rkllm_server_demo/rkllm_server/flask_server.py`,
//! airockchip/rknn-llm). The earlier turns go with it as exchanges (each input as it was sent
//! and the answer after it), for the engine to tell whether the runtime holds them
//! (`engine::runtime_history`). The request's system messages go with its tools (see
//! `engine::runtime_tools`).

use serde_json::Value;

use super::output::{Event, OutputFilter};
use super::tools::ToolCallParser;
use crate::chat::{Role, ToolFormat, Turn};
use crate::engine::{Exchange, Job, RuntimeTurns};
use crate::runtime::Role as InputRole;

/// The job for `turns` (which hold a user message) under the runtime's template.
pub fn job(job_id: u64, turns: &[Turn], thinking: Option<bool>) -> Job {
    let body: Vec<&Turn> = turns.iter().filter(|t| t.role != Role::System).collect();
    let last = body
        .iter()
        .rposition(|t| matches!(t.role, Role::User | Role::Tool));
    // The newest input is the last run of user and tool messages; a trailing assistant turn
    // after it is left out.
    let newest_from = last.map_or(0, |last| {
        body[..last]
            .iter()
            .rposition(|t| t.role == Role::Assistant)
            .map_or(0, |i| i + 1)
    });
    let (role, newest) = match last {
        Some(last) => newest_input(&body[newest_from..=last]),
        None => (InputRole::User, String::new()),
    };
    let history = exchanges(&body[..newest_from]);
    let mut job = Job::runtime_turns(job_id, RuntimeTurns { history, newest });
    job.set_role(role);
    job.set_system_prompt(system_prompt(turns));
    job.set_enable_thinking(thinking.unwrap_or(false));
    job.set_answer_key(answer_key);
    job
}

/// Earlier turns as exchanges: each run of user and tool messages (what was sent of it, as
/// [`newest_input`] picks it) and the assistant turns after it (their contents joined).
fn exchanges(body: &[&Turn]) -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let inputs = i;
        while i < body.len() && body[i].role != Role::Assistant {
            i += 1;
        }
        let answers = i;
        while i < body.len() && body[i].role == Role::Assistant {
            i += 1;
        }
        let (role, input) = newest_input(&body[inputs..answers]);
        let answer: String = body[answers..i]
            .iter()
            .map(|t| t.content.as_str())
            .collect();
        out.push(Exchange {
            role,
            input,
            answer: answer_key(&answer),
        });
    }
    out
}

/// An answer as the client got it back and sends it again: its content without a leading
/// think block (clients send the reasoning back apart or not at all), without the whitespace
/// around it, and its tool calls by name and arguments (an assistant turn's `tool_calls` come
/// here written in Qwen's form, the one the runtime's template has the model use, so their
/// spacing and key order do not matter). The same filter as the one the client's answer went
/// through, so what the client saw is what is compared.
pub fn answer_key(text: &str) -> String {
    let mut filter = OutputFilter::new(
        true,
        Some(ToolCallParser::new(ToolFormat::Hermes, 0)),
        Vec::new(),
    );
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut emit = |e: Event<'_>| match e {
        Event::Content(t) => content.push_str(t),
        Event::Call(call) => calls.push((call.name, call.arguments.to_string())),
        Event::Reasoning(_) => {}
    };
    filter.push(text, &mut emit);
    filter.finish(&mut emit);
    // NUL never occurs in a message (`conversation::check_text`): it separates the parts.
    let mut key = content.trim().to_owned();
    for (name, arguments) in calls {
        key.push('\0');
        key.push_str(&name);
        key.push('\0');
        key.push_str(&arguments);
    }
    key
}

/// The input of a run of user and tool messages: the newest user or tool message. Tool results
/// that follow one another (the answers to one turn's parallel calls) go in one run, since the
/// runtime takes one input per run: one result as it is; several as a JSON array of their
/// contents, each parsed when it is JSON, as Rockchip's server merges them. Their order is the
/// request's.
fn newest_input(turns: &[&Turn]) -> (InputRole, String) {
    let Some(last) = turns
        .iter()
        .rposition(|t| matches!(t.role, Role::User | Role::Tool))
    else {
        return (InputRole::User, String::new());
    };
    if turns[last].role == Role::User {
        return (InputRole::User, turns[last].content.clone());
    }
    let first = turns[..last]
        .iter()
        .rposition(|t| t.role != Role::Tool)
        .map_or(0, |i| i + 1);
    let results = &turns[first..=last];
    if let [one] = results {
        return (InputRole::Tool, one.content.clone());
    }
    let merged: Vec<Value> = results
        .iter()
        .map(|t| {
            serde_json::from_str(&t.content).unwrap_or_else(|_| Value::String(t.content.clone()))
        })
        .collect();
    (InputRole::Tool, Value::Array(merged).to_string())
}

/// The request's system messages, in order, a blank line between them; `None` without any.
fn system_prompt(turns: &[Turn]) -> Option<String> {
    let parts: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == Role::System && !t.content.is_empty())
        .map(|t| t.content.as_str())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Input;

    fn t(role: Role, content: &str) -> Turn {
        Turn::new(role, content)
    }

    fn runtime_turns(job: &Job) -> &RuntimeTurns {
        match job.input() {
            Input::RuntimeTurns(t) => t,
            other => panic!("not runtime turns: {other:?}"),
        }
    }

    fn sent(job: &Job) -> (InputRole, &str) {
        (job.role(), runtime_turns(job).newest.as_str())
    }

    #[test]
    fn the_newest_user_message_goes_as_the_user_s() {
        let turns = [
            t(Role::User, "first"),
            t(Role::Assistant, "answer"),
            t(Role::User, "second"),
        ];
        let job = job(1, &turns, None);
        assert_eq!(sent(&job), (InputRole::User, "second"));
        assert_eq!(job.system_prompt(), None);
    }

    #[test]
    fn a_tool_result_goes_with_role_tool() {
        let turns = [
            t(Role::User, "Weather in Paris?"),
            t(Role::Assistant, "<tool_call>...</tool_call>"),
            t(Role::Tool, "Sunny, 22 C"),
        ];
        assert_eq!(
            sent(&job(1, &turns, None)),
            (InputRole::Tool, "Sunny, 22 C")
        );
    }

    #[test]
    fn consecutive_tool_results_go_as_one_json_array_in_order() {
        let turns = [
            t(Role::User, "Weather in Paris and Rome?"),
            t(Role::Tool, "old result"),
            t(Role::User, "And now?"),
            t(Role::Assistant, ""),
            t(Role::Tool, r#"{"city": "Paris", "sky": "sunny"}"#),
            t(Role::Tool, "rainy in Rome"),
        ];
        assert_eq!(
            sent(&job(1, &turns, None)),
            (
                InputRole::Tool,
                r#"[{"city":"Paris","sky":"sunny"},"rainy in Rome"]"#
            )
        );
    }

    #[test]
    fn a_trailing_assistant_turn_leaves_the_newest_input_as_it_was() {
        let turns = [
            t(Role::User, "q"),
            t(Role::Tool, "result"),
            t(Role::Assistant, "partial"),
        ];
        assert_eq!(sent(&job(1, &turns, None)), (InputRole::Tool, "result"));
    }

    #[test]
    fn system_messages_are_joined_and_empty_ones_ignored() {
        let turns = [
            t(Role::System, "Be brief."),
            t(Role::System, ""),
            t(Role::User, "q"),
            t(Role::System, "Answer in French."),
        ];
        assert_eq!(
            job(1, &turns, None).system_prompt(),
            Some("Be brief.\n\nAnswer in French.")
        );
        let only_empty = [t(Role::System, ""), t(Role::User, "q")];
        assert_eq!(job(1, &only_empty, None).system_prompt(), None);
    }

    #[test]
    fn thinking_is_passed_on_and_off_by_default() {
        let turns = [t(Role::User, "q")];
        assert!(job(1, &turns, Some(true)).enable_thinking());
        assert!(!job(1, &turns, None).enable_thinking());
    }

    #[test]
    fn earlier_turns_become_exchanges_of_what_was_sent_and_the_answer() {
        let turns = [
            t(Role::System, "Be brief."),
            t(Role::User, "Weather in Paris?"),
            t(
                Role::Assistant,
                "<tool_call>\n{\"name\": \"w\", \"arguments\": {}}\n</tool_call>",
            ),
            t(Role::Tool, "Sunny"),
            t(Role::Assistant, "It is sunny."),
            t(Role::User, "And tomorrow?"),
        ];
        let job = job(1, &turns, None);
        let rt = runtime_turns(&job);
        assert_eq!(rt.newest, "And tomorrow?");
        let history: Vec<_> = rt
            .history
            .iter()
            .map(|e| (e.role, e.input.as_str(), e.answer.as_str()))
            .collect();
        assert_eq!(
            history,
            [
                (InputRole::User, "Weather in Paris?", "\0w\0{}"),
                (InputRole::Tool, "Sunny", "It is sunny."),
            ]
        );
    }

    #[test]
    fn an_answer_s_key_is_what_the_client_saw_of_it() {
        // The reasoning is dropped and the whitespace around the content.
        assert_eq!(
            answer_key("<think>\nhmm\n</think>\n\nParis is sunny.\n"),
            answer_key("Paris is sunny.")
        );
        // A call the model wrote and the same call rendered back from a client's tool_calls.
        assert_eq!(
            answer_key(
                "<tool_call>\n{\"name\":\"w\",\"arguments\":{\"b\":1,\"a\":2}}\n</tool_call>"
            ),
            answer_key(
                "<tool_call>\n{\"name\": \"w\", \"arguments\": {\"a\": 2, \"b\": 1}}\n</tool_call>"
            )
        );
        assert_ne!(answer_key("Paris is sunny."), answer_key("Paris is rainy."));
        assert_ne!(
            answer_key("<tool_call>\n{\"name\": \"w\", \"arguments\": {\"a\": 1}}\n</tool_call>"),
            answer_key("<tool_call>\n{\"name\": \"w\", \"arguments\": {\"a\": 2}}\n</tool_call>")
        );
    }
}
