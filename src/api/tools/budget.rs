//! The tool budget: which of a request's tool definitions go into the prompt when they do not
//! all fit the share of the context they may take (`tools-budget`). Clients such as Open WebUI
//! send every tool they know with every chat (36 definitions, about 9,000 tokens, for a model
//! with a 4,096-token context); sent whole, they leave no room for the conversation.
//!
//! Kept first are the tools the conversation already called (the history shows the calls, so
//! the model must still know them), then those the newest user message names (the user asked
//! for them), then the others in request order, each while it still fits. The kept tools are
//! written in request order, so a conversation's prompt keeps the same tool block from turn to
//! turn while the selection does not change.

use serde_json::Value;

/// One candidate tool: its name and what its definition costs, in tokens.
#[derive(Clone, Copy, Debug)]
pub struct Cost<'a> {
    pub name: &'a str,
    pub tokens: u64,
}

/// What the budget keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    /// Indices of the kept tools, in request order.
    pub kept: Vec<usize>,
    /// Names of the tools left out, in request order.
    pub dropped: Vec<String>,
}

/// Selects tools whose definitions, plus `fixed` tokens for the block around them (counted once
/// any tool is kept), fit `budget` tokens. `called`: names of the tools the conversation's
/// assistant messages called; `newest_user`: the newest user message's text.
pub fn select(
    tools: &[Cost<'_>],
    fixed: u64,
    budget: u64,
    called: &[String],
    newest_user: &str,
) -> Selection {
    let total = fixed + tools.iter().map(|t| t.tokens).sum::<u64>();
    if total <= budget {
        return Selection {
            kept: (0..tools.len()).collect(),
            dropped: Vec::new(),
        };
    }
    let rank = |t: &Cost<'_>| {
        if called.iter().any(|c| c == t.name) {
            0
        } else if names(newest_user, t.name) {
            1
        } else {
            2
        }
    };
    let mut order: Vec<usize> = (0..tools.len()).collect();
    // Stable: request order within each rank.
    order.sort_by_key(|&i| rank(&tools[i]));
    let mut keep = vec![false; tools.len()];
    let mut used = fixed;
    for i in order {
        if used + tools[i].tokens <= budget {
            used += tools[i].tokens;
            keep[i] = true;
        }
    }
    let (kept, dropped): (Vec<usize>, Vec<usize>) = (0..tools.len()).partition(|&i| keep[i]);
    Selection {
        kept,
        dropped: dropped
            .into_iter()
            .map(|i| tools[i].name.to_owned())
            .collect(),
    }
}

/// Whether `text` names the tool `name`: the name as a word of its own (not inside a longer
/// identifier), whatever the case.
fn names(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let text = text.to_lowercase();
    let name = name.to_lowercase();
    text.match_indices(&name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The names of the tools the assistant messages of `messages` called (OpenAI's and Ollama's
/// `tool_calls[].function.name`), each once.
pub fn called_names(messages: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let calls = messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten();
    for call in calls {
        let name = call
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        if let Some(name) = name {
            if !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn costs<'a>(tools: &[(&'a str, u64)]) -> Vec<Cost<'a>> {
        tools
            .iter()
            .map(|&(name, tokens)| Cost { name, tokens })
            .collect()
    }

    #[test]
    fn tools_that_fit_are_all_kept() {
        let tools = costs(&[("a", 10), ("b", 10)]);
        let s = select(&tools, 5, 25, &[], "");
        assert_eq!(s.kept, [0, 1]);
        assert!(s.dropped.is_empty());
    }

    #[test]
    fn the_others_go_in_request_order_while_they_fit_and_the_rest_is_named() {
        let tools = costs(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)]);
        let s = select(&tools, 5, 30, &[], "hello");
        assert_eq!(s.kept, [0, 1]);
        assert_eq!(s.dropped, ["c", "d"]);
    }

    #[test]
    fn a_tool_too_large_for_what_is_left_does_not_keep_out_smaller_ones_after_it() {
        let tools = costs(&[("a", 10), ("big", 50), ("c", 10)]);
        let s = select(&tools, 0, 25, &[], "");
        assert_eq!(s.kept, [0, 2]);
        assert_eq!(s.dropped, ["big"]);
    }

    #[test]
    fn called_tools_come_first_then_named_ones_then_the_rest() {
        let tools = costs(&[
            ("web_search", 10),
            ("get_weather", 10),
            ("send_mail", 10),
            ("read_file", 10),
        ]);
        let called = vec!["read_file".to_owned()];
        // Room for two: the called one and the named one, written in request order.
        let s = select(&tools, 0, 20, &called, "Please use send_mail to tell Bob.");
        assert_eq!(s.kept, [2, 3]);
        assert_eq!(s.dropped, ["web_search", "get_weather"]);
        // Room for one: the called one wins over the named one.
        let s = select(&tools, 0, 10, &called, "Please use send_mail to tell Bob.");
        assert_eq!(s.kept, [3]);
        // Room for three: the rest in request order after them.
        let s = select(&tools, 0, 30, &called, "Please use send_mail.");
        assert_eq!(s.kept, [0, 2, 3]);
        assert_eq!(s.dropped, ["get_weather"]);
    }

    #[test]
    fn a_name_counts_only_as_a_word_of_its_own() {
        assert!(names("Use Search_Web, please", "search_web"));
        assert!(names("(search_web)", "search_web"));
        assert!(!names("research_web_pages", "search_web"));
        assert!(!names("search_web2", "search_web"));
        assert!(!names("anything", ""));
        let tools = costs(&[("search", 10), ("memory", 10)]);
        let s = select(&tools, 0, 10, &[], "some research on memory");
        assert_eq!(s.kept, [1], "'research' does not name 'search'");
    }

    #[test]
    fn nothing_fits_a_budget_below_the_fixed_part() {
        let tools = costs(&[("a", 1)]);
        let s = select(&tools, 30, 20, &[], "a");
        assert!(s.kept.is_empty());
        assert_eq!(s.dropped, ["a"]);
    }

    #[test]
    fn called_names_come_from_assistant_tool_calls_once_each() {
        let messages = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "content": "sunny", "tool_calls": [{"function": {"name": "not_a_call"}}]},
            {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {}}}]}
        ]);
        assert_eq!(
            called_names(messages.as_array().unwrap()),
            ["get_weather", "get_time"]
        );
    }
}
