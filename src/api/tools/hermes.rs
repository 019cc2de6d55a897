//! Qwen 2.5's tool format (the Hermes form, [`ToolFormat::Hermes`](crate::chat::ToolFormat)):
//! the definitions in a `<tools>` block of the system turn, calls as
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks anywhere in the answer.
//! Text that may be the start of a block is held back across tokens; a malformed or unclosed
//! block is released as plain text.

use serde_json::{Map, Value};

use super::{merge, write_json, CallIds, HistoryCall, Piece};
use crate::chat::{Role, Turn};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The turns with the definitions written into the system turn (one is added, with the
/// template's default system prompt, when the conversation has none), one JSON object per tool
/// and line, as Qwen 2.5's template writes them.
pub fn definitions(turns: &[Turn], tools: &[Value], default_system: Option<&str>) -> Vec<Turn> {
    let lines = tools
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let block = format!(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n\
         <tools>\n{lines}\n</tools>\n\n\
         For each function call, return a json object with function name and arguments within \
         <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>"
    );
    let mut out = Vec::with_capacity(turns.len() + 1);
    let rest = match turns.first() {
        Some(first) if first.role == Role::System => {
            out.push(Turn {
                content: join_system(&first.content, &block),
                ..first.clone()
            });
            &turns[1..]
        }
        _ => {
            out.push(Turn::new(
                Role::System,
                join_system(default_system.unwrap_or(""), &block),
            ));
            turns
        }
    };
    out.extend_from_slice(rest);
    out
}

/// See [`super::definition_bytes`]: one line.
pub fn definition_bytes(tool: &Value) -> usize {
    tool.to_string().len() + 1
}

/// See [`super::block_bytes`]: the block with no line, and the blank line before it.
pub fn block_bytes() -> usize {
    definitions(&[], &[], Some("-"))[0].content.len()
}

fn join_system(system: &str, block: &str) -> String {
    if system.is_empty() {
        block.to_owned()
    } else {
        format!("{system}\n\n{block}")
    }
}

/// Calls of a history message as the model writes them, appended to its content.
pub fn write_calls(content: &mut String, calls: &[HistoryCall]) {
    for call in calls {
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(OPEN);
        content.push_str("\n{\"name\": ");
        write_json(content, &Value::String(call.name.clone()));
        content.push_str(", \"arguments\": ");
        write_json(content, &call.arguments);
        content.push_str("}\n");
        content.push_str(CLOSE);
    }
}

#[derive(Debug, Default)]
pub struct Parser {
    held: String,
}

impl Parser {
    /// Adds generated text; returns what is settled now.
    pub fn push(&mut self, text: &str, ids: &mut CallIds) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            let Some(start) = self.held.find(OPEN) else {
                let keep = partial_open_suffix(&self.held);
                let emit = self.held.len() - keep;
                if emit > 0 {
                    let rest = self.held.split_off(emit);
                    out.push(Piece::Text(std::mem::replace(&mut self.held, rest)));
                }
                break;
            };
            let body_start = start + OPEN.len();
            let Some(len) = self.held[body_start..].find(CLOSE) else {
                // An open block: release the text before it, hold the rest.
                if start > 0 {
                    let rest = self.held.split_off(start);
                    out.push(Piece::Text(std::mem::replace(&mut self.held, rest)));
                }
                break;
            };
            let end = body_start + len + CLOSE.len();
            let rest = self.held.split_off(end);
            let block = std::mem::replace(&mut self.held, rest);
            match parse(&block[body_start..body_start + len]) {
                Some((name, arguments)) => {
                    if start > 0 {
                        out.push(Piece::Text(block[..start].to_owned()));
                    }
                    out.push(Piece::Call(ids.next(name, arguments)));
                }
                None => out.push(Piece::Text(block)),
            }
        }
        merge(out)
    }

    /// The generation ended: whatever is held (an unclosed block) is plain text.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.held);
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(rest)]
        }
    }
}

/// A block's body: `{"name": "...", "arguments": {...}}` (arguments may be absent or null).
fn parse(body: &str) -> Option<(String, Value)> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    let obj = value.as_object()?;
    let name = obj.get("name")?.as_str()?.to_owned();
    let arguments = match obj.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return None,
    };
    Some((name, arguments))
}

/// Length of the longest suffix of `text` that is a proper prefix of `<tool_call>`.
fn partial_open_suffix(text: &str) -> usize {
    let max = (OPEN.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&len| {
            let start = text.len() - len;
            text.is_char_boundary(start) && OPEN.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, same_at_every_cut, text};
    use super::super::{render_calls, Piece, ToolCall, ToolCallParser};
    use super::*;
    use crate::api::error::Flavor;
    use crate::chat::ToolFormat;
    use serde_json::json;

    const HERMES: ToolFormat = ToolFormat::Hermes;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "a"}}),
            json!({"function": {"name": "b"}}),
        ]
    }

    #[test]
    fn definitions_go_into_the_system_turn() {
        let lines = "<tools>\n{\"function\":{\"name\":\"a\"},\"type\":\"function\"}\n\
                     {\"function\":{\"name\":\"b\"}}\n</tools>";
        let user = Turn::new(Role::User, "hi");
        let with_system = definitions(
            &[Turn::new(Role::System, "Be brief."), user.clone()],
            &tools(),
            Some("unused"),
        );
        assert_eq!(with_system.len(), 2);
        assert!(with_system[0]
            .content
            .starts_with("Be brief.\n\n# Tools\n\n"));
        assert!(
            with_system[0].content.contains(lines),
            "{}",
            with_system[0].content
        );
        assert_eq!(with_system[1], user);
        let added = definitions(std::slice::from_ref(&user), &tools(), Some("Default."));
        assert_eq!(added[0].role, Role::System);
        assert!(added[0].content.starts_with("Default.\n\n# Tools"));
        assert_eq!(added[1], user);
        let bare = definitions(std::slice::from_ref(&user), &tools(), None);
        assert!(bare[0].content.starts_with("# Tools"));
        assert!(bare[0].content.ends_with("</tool_call>"));
    }

    #[test]
    fn a_block_split_across_tokens_becomes_a_call() {
        let out = run(
            HERMES,
            &[
                "Sure. <tool",
                "_call>\n{\"name\": \"get_weather\", ",
                "\"arguments\": {\"city\": \"Paris\"}}\n</tool_",
                "call> done",
            ],
        );
        assert_eq!(
            out,
            vec![
                text("Sure. "),
                Piece::Call(ToolCall {
                    id: "call_2a_0".into(),
                    name: "get_weather".into(),
                    arguments: json!({"city": "Paris"}),
                }),
                text(" done"),
            ]
        );
    }

    #[test]
    fn calls_and_text_are_the_same_however_the_output_is_cut() {
        let out = same_at_every_cut(
            HERMES,
            "Sure 🙂 <tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": \"<b>?\"}}\n\
             </tool_call> and <tool_call>{\"name\": \"g\"}</tool_call>",
        );
        let names: Vec<_> = out
            .iter()
            .filter_map(|p| match p {
                Piece::Call(c) => Some(c.name.as_str()),
                Piece::Text(_) => None,
            })
            .collect();
        assert_eq!(names, ["f", "g"], "{out:?}");
    }

    #[test]
    fn text_that_may_open_a_block_is_held_back_then_released() {
        let mut p = ToolCallParser::new(HERMES, 1);
        assert_eq!(p.push("a <tool"), vec![text("a ")]);
        assert_eq!(p.push("box>"), vec![text("<toolbox>")]);
    }

    #[test]
    fn malformed_blocks_are_plain_content() {
        for bad in [
            "<tool_call>\nnot json\n</tool_call>",
            "<tool_call>{\"name\": 3}</tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": \"x\"}</tool_call>",
            "<tool_call>[1]</tool_call>",
        ] {
            assert_eq!(same_at_every_cut(HERMES, bad), vec![text(bad)], "{bad}");
        }
    }

    #[test]
    fn an_unclosed_block_is_released_at_the_end() {
        let out = same_at_every_cut(HERMES, "x <tool_call>\n{\"name\": \"f\"");
        assert_eq!(out, vec![text("x <tool_call>\n{\"name\": \"f\"")]);
    }

    #[test]
    fn absent_arguments_are_an_empty_object_and_ids_count_up() {
        let out = run(HERMES, &["<tool_call>{\"name\": \"a\"}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>"]);
        let ids: Vec<_> = out
            .iter()
            .map(|p| match p {
                Piece::Call(c) => (c.id.clone(), c.arguments.clone()),
                Piece::Text(t) => panic!("text {t}"),
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("call_2a_0".into(), json!({})),
                ("call_2a_1".into(), json!({}))
            ]
        );
    }

    #[test]
    fn history_calls_render_as_the_model_writes_them() {
        let mut content = String::new();
        let calls = json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1,2],\"b\":\"x\"}"}}]);
        render_calls(&mut content, &calls, Flavor::OpenAi, HERMES).unwrap();
        assert_eq!(
            content,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2], \"b\": \"x\"}}\n</tool_call>"
        );
        let mut content = "Let me check.".to_owned();
        let calls = json!([{"function": {"name": "g", "arguments": {}}}]);
        render_calls(&mut content, &calls, Flavor::Ollama, HERMES).unwrap();
        assert_eq!(
            content,
            "Let me check.\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>"
        );
        assert!(render_calls(&mut content, &json!("x"), Flavor::OpenAi, HERMES).is_err());
    }
}
