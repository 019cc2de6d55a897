//! Function calling: the request's tools (to the runtime's function-tools API), assistant tool
//! calls rendered back into the history, and `<tool_call>{...}</tool_call>` blocks in the model's
//! output turned into structured calls. Text that may be the start of a block is held back
//! across tokens; a malformed or unclosed block is released as plain text.

use serde_json::{Map, Value};

use super::error::{ApiError, Flavor};
use super::params::Fields;
use crate::chat::{Role, Turn};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

/// A piece of the model's output, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

#[derive(Debug)]
pub struct ToolCallParser {
    job_id: u64,
    calls: usize,
    held: String,
}

impl ToolCallParser {
    pub fn new(job_id: u64) -> ToolCallParser {
        ToolCallParser {
            job_id,
            calls: 0,
            held: String::new(),
        }
    }

    /// Adds generated text; returns what is settled now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
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
            match self.parse(&block[body_start..body_start + len]) {
                Some(call) => {
                    if start > 0 {
                        out.push(Piece::Text(block[..start].to_owned()));
                    }
                    out.push(Piece::Call(call));
                }
                None => out.push(Piece::Text(block)),
            }
        }
        merge(out)
    }

    /// The generation ended: whatever is held (an unclosed block) is plain text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn parse(&mut self, body: &str) -> Option<ToolCall> {
        let value: Value = serde_json::from_str(body.trim()).ok()?;
        let obj = value.as_object()?;
        let name = obj.get("name")?.as_str()?.to_owned();
        let arguments = match obj.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return None,
        };
        let id = format!("call_{:x}_{}", self.job_id, self.calls);
        self.calls += 1;
        Some(ToolCall {
            id,
            name,
            arguments,
        })
    }
}

/// Adjacent text pieces as one.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match (out.last_mut(), p) {
            (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
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

/// The request's `tools` as the JSON array text the runtime takes; `None` when absent or empty.
pub fn request_tools(f: &Fields<'_>) -> Result<Option<String>, ApiError> {
    let Some(tools) = f.array("tools")? else {
        return Ok(None);
    };
    for tool in tools {
        let ok = tool.as_object().is_some_and(|t| {
            t.get("type").is_none_or(|ty| ty == "function")
                && t.get("function")
                    .and_then(Value::as_object)
                    .is_some_and(|func| func.get("name").is_some_and(Value::is_string))
        });
        if !ok {
            return Err(f.wrong_type(
                "tools",
                "an array of {\"type\": \"function\", \"function\": {\"name\": ...}} objects",
            ));
        }
    }
    if tools.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Array(tools.clone()).to_string()))
}

/// The turns with the tool definitions written into the system turn (one is added, with the
/// template's default system prompt, when the conversation has none). rkllmd does this when it
/// renders conversations itself: the runtime's function-tools API fails under the empty chat
/// template rkllmd sets then (rknn-llm#397) and is not applied after a custom one (#431). The
/// block is the one Qwen 2.5's template writes, one JSON object per tool and line: the
/// `<tool_call>` form that `ToolCallParser` reads back is the one it asks for.
pub fn with_definitions(
    turns: &[Turn],
    tools_json: &str,
    default_system: Option<&str>,
) -> Vec<Turn> {
    let lines = match serde_json::from_str::<Vec<Value>>(tools_json) {
        Ok(tools) => tools
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => tools_json.to_owned(),
    };
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
            out.push(Turn::new(Role::System, join_system(&first.content, &block)));
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

fn join_system(system: &str, block: &str) -> String {
    if system.is_empty() {
        block.to_owned()
    } else {
        format!("{system}\n\n{block}")
    }
}

/// What an OpenAI request's `tool_choice` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    None,
    Auto,
    /// "required" or a named function: the runtime cannot force a call.
    Forced,
}

pub fn tool_choice(f: &Fields<'_>) -> Result<Choice, ApiError> {
    match f.obj.get("tool_choice") {
        None | Some(Value::Null) => Ok(Choice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(Choice::None),
            "auto" => Ok(Choice::Auto),
            "required" => Ok(Choice::Forced),
            _ => Err(f.wrong_type(
                "tool_choice",
                "\"none\", \"auto\", \"required\" or an object",
            )),
        },
        Some(Value::Object(o))
            if o.get("function")
                .and_then(|func| func.get("name"))
                .is_some_and(Value::is_string) =>
        {
            Ok(Choice::Forced)
        }
        Some(_) => Err(f.wrong_type(
            "tool_choice",
            "\"none\", \"auto\", \"required\" or an object",
        )),
    }
}

/// An assistant message's `tool_calls` as the model wrote them (Qwen's format), appended to its
/// content, so the previous answer stays a prefix of the next prompt. OpenAI sends `arguments`
/// as a JSON string, Ollama as an object.
pub fn render_calls(content: &mut String, calls: &Value, flavor: Flavor) -> Result<(), ApiError> {
    let wrong = || {
        ApiError::bad_request(
            flavor,
            "'messages[].tool_calls' must be an array of {\"function\": {\"name\", \"arguments\"}}",
            Some("messages"),
        )
    };
    let calls = match calls {
        Value::Null => return Ok(()),
        Value::Array(a) => a,
        _ => return Err(wrong()),
    };
    for call in calls {
        let func = call.get("function").ok_or_else(wrong)?;
        let name = func.get("name").and_then(Value::as_str).ok_or_else(wrong)?;
        let arguments = match func.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v) if v.is_object() => v,
                _ => return Err(wrong()),
            },
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(wrong()),
        };
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(OPEN);
        content.push_str("\n{\"name\": ");
        write_json(content, &Value::String(name.to_owned()));
        content.push_str(", \"arguments\": ");
        write_json(content, &arguments);
        content.push_str("}\n");
        content.push_str(CLOSE);
    }
    Ok(())
}

/// JSON on one line with Python's `json.dumps` separators (", " and ": "), as models write it.
fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(out, item);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definitions_go_into_the_system_turn() {
        let tools = r#"[{"type":"function","function":{"name":"a"}},{"function":{"name":"b"}}]"#;
        let lines = "<tools>\n{\"function\":{\"name\":\"a\"},\"type\":\"function\"}\n\
                     {\"function\":{\"name\":\"b\"}}\n</tools>";
        let user = Turn::new(Role::User, "hi");
        let with_system = with_definitions(
            &[Turn::new(Role::System, "Be brief."), user.clone()],
            tools,
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
        let added = with_definitions(std::slice::from_ref(&user), tools, Some("Default."));
        assert_eq!(added[0].role, Role::System);
        assert!(added[0].content.starts_with("Default.\n\n# Tools"));
        assert_eq!(added[1], user);
        let bare = with_definitions(std::slice::from_ref(&user), tools, None);
        assert!(bare[0].content.starts_with("# Tools"));
        assert!(bare[0].content.ends_with("</tool_call>"));
    }

    fn run(pieces: &[&str]) -> Vec<Piece> {
        let mut p = ToolCallParser::new(0x2a);
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece));
        }
        let rest = p.finish();
        if !rest.is_empty() {
            out.push(Piece::Text(rest));
        }
        merge(out)
    }

    fn text(s: &str) -> Piece {
        Piece::Text(s.into())
    }

    #[test]
    fn a_block_split_across_tokens_becomes_a_call() {
        let out = run(&[
            "Sure. <tool",
            "_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool_",
            "call> done",
        ]);
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
    fn text_that_may_open_a_block_is_held_back_then_released() {
        let mut p = ToolCallParser::new(1);
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
            assert_eq!(run(&[bad]), vec![text(bad)], "{bad}");
        }
    }

    #[test]
    fn an_unclosed_block_is_released_at_the_end() {
        assert_eq!(
            run(&["x <tool_call>\n{\"name\": \"f\""]),
            vec![text("x <tool_call>\n{\"name\": \"f\"")]
        );
    }

    #[test]
    fn absent_arguments_are_an_empty_object_and_ids_count_up() {
        let out = run(&["<tool_call>{\"name\": \"a\"}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>"]);
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
        render_calls(&mut content, &calls, Flavor::OpenAi).unwrap();
        assert_eq!(
            content,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2], \"b\": \"x\"}}\n</tool_call>"
        );
        let mut content = "Let me check.".to_owned();
        let calls = json!([{"function": {"name": "g", "arguments": {}}}]);
        render_calls(&mut content, &calls, Flavor::Ollama).unwrap();
        assert_eq!(
            content,
            "Let me check.\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>"
        );
        assert!(render_calls(&mut content, &json!("x"), Flavor::OpenAi).is_err());
    }
}
