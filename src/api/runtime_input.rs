//! `runtime` template mode: the model's own template lives in the runtime, which is given one
//! message per run (`RKLLMInput.prompt_input` with its `role`), not the conversation. rkllmd
//! sends the newest input: the newest user message, or, when the conversation ends with tool
//! results, those results with role `tool` (the runtime wraps them in the model's
//! tool-response turn), as Rockchip's own server does (`get_last_input` in
//! `examples/rkllm_server_demo/rkllm_server/flask_server.py`, airockchip/rknn-llm). The
//! request's system messages go with its tools (see `engine::runtime_tools`).

use serde_json::Value;

use crate::chat::{Role, Turn};
use crate::engine::Job;
use crate::runtime::Role as InputRole;

/// The job for `turns` (which hold a user message) under the runtime's template.
pub fn job(job_id: u64, turns: &[Turn], thinking: Option<bool>) -> Job {
    let (role, prompt) = newest_input(turns);
    let mut job = Job::new(job_id, prompt);
    job.set_role(role);
    job.set_system_prompt(system_prompt(turns));
    job.set_enable_thinking(thinking.unwrap_or(false));
    job
}

/// The newest user or tool message. Tool results that follow one another (the answers to one
/// turn's parallel calls) go in one run, since the runtime takes one input per run: one result
/// as it is; several as a JSON array of their contents, each parsed when it is JSON, as
/// Rockchip's server merges them. Their order is the request's.
fn newest_input(turns: &[Turn]) -> (InputRole, String) {
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

    fn sent(job: &Job) -> (InputRole, &str) {
        match job.input() {
            Input::Prompt(p) => (job.role(), p.as_str()),
            Input::Conversation(_) | Input::Embed(_) => panic!("not a prompt in runtime mode"),
        }
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
}
