//! Function calling: the request's tools (written into the prompt in the model family's own
//! format, or given to the runtime's function-tools API), assistant tool calls rendered back into
//! the history, and calls in the model's output turned into structured calls. One file per
//! format ([`ToolFormat`]): `hermes.rs` (Qwen), `llama3.rs` (Llama 3.1/3.2 JSON).

use serde_json::{Map, Value};

use super::error::{ApiError, Flavor};
use super::params::Fields;
use crate::chat::{Template, ToolFormat, Turn};

mod budget;
mod hermes;
mod llama3;

pub use budget::{select, Cost};

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

/// Call ids: `call_<job id in hex>_<n>`, counting the calls of one answer.
#[derive(Debug)]
pub struct CallIds {
    job_id: u64,
    calls: usize,
}

impl CallIds {
    fn next(&mut self, name: String, arguments: Value) -> ToolCall {
        let id = format!("call_{:x}_{}", self.job_id, self.calls);
        self.calls += 1;
        ToolCall {
            id,
            name,
            arguments,
        }
    }
}

/// Finds calls in streamed output, in the format the prompt asked for.
#[derive(Debug)]
pub struct ToolCallParser {
    ids: CallIds,
    parser: Parser,
}

#[derive(Debug)]
enum Parser {
    Hermes(hermes::Parser),
    Llama3(llama3::Parser),
}

impl ToolCallParser {
    pub fn new(format: ToolFormat, job_id: u64) -> ToolCallParser {
        ToolCallParser {
            ids: CallIds { job_id, calls: 0 },
            parser: match format {
                ToolFormat::Hermes => Parser::Hermes(hermes::Parser::default()),
                ToolFormat::Llama3Json => Parser::Llama3(llama3::Parser::default()),
            },
        }
    }

    /// Adds generated text; returns what is settled now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        match &mut self.parser {
            Parser::Hermes(p) => p.push(text, &mut self.ids),
            Parser::Llama3(p) => p.push(text),
        }
    }

    /// The generation ended: what was held back, as text or calls.
    pub fn finish(&mut self) -> Vec<Piece> {
        match &mut self.parser {
            Parser::Hermes(p) => p.finish(),
            Parser::Llama3(p) => p.finish(&mut self.ids),
        }
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

/// A request's tool definitions, and the tools its conversation already called (which the
/// tool budget keeps first).
#[derive(Clone, Debug)]
pub struct RequestTools {
    pub defs: Vec<Value>,
    pub called: Vec<String>,
}

/// The request's `tools` (`None` when absent or empty), with the names of the tools the
/// assistant messages of `messages` called.
pub fn request_tools(f: &Fields<'_>, messages: &[Value]) -> Result<Option<RequestTools>, ApiError> {
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
    Ok(Some(RequestTools {
        defs: tools.clone(),
        called: budget::called_names(messages),
    }))
}

/// A tool's name (`request_tools` checked that it has one).
pub fn name(tool: &Value) -> &str {
    tool.pointer("/function/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The bytes one tool's definition takes in the prompt, written as `format` writes it.
pub fn definition_bytes(format: ToolFormat, tool: &Value) -> usize {
    match format {
        ToolFormat::Hermes => hermes::definition_bytes(tool),
        ToolFormat::Llama3Json => llama3::definition_bytes(tool),
    }
}

/// The bytes `format` writes around the definitions (instructions, tags), once.
pub fn block_bytes(format: ToolFormat) -> usize {
    match format {
        ToolFormat::Hermes => hermes::block_bytes(),
        ToolFormat::Llama3Json => llama3::block_bytes(),
    }
}

/// The turns with the tool definitions written in, where and as the template's family writes
/// them. rkllmd does this when it renders conversations itself: the runtime's function-tools API
/// fails under the empty chat template rkllmd sets then (rknn-llm#397) and is not applied after
/// a custom one (#431). The form asked for is the one `ToolCallParser` reads back.
pub fn with_definitions(turns: &[Turn], tools: &[Value], template: &Template) -> Vec<Turn> {
    match template.tool_format {
        ToolFormat::Hermes => hermes::definitions(turns, tools, template.default_system.as_deref()),
        ToolFormat::Llama3Json => llama3::definitions(turns, tools),
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

/// A call of a history message.
#[derive(Debug)]
pub struct HistoryCall {
    name: String,
    /// A JSON object.
    arguments: Value,
}

/// An assistant message's `tool_calls` as the model writes them in `format`, put into its
/// content, so the previous answer stays a prefix of the next prompt. OpenAI sends `arguments`
/// as a JSON string, Ollama as an object.
pub fn render_calls(
    content: &mut String,
    calls: &Value,
    flavor: Flavor,
    format: ToolFormat,
) -> Result<(), ApiError> {
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
    let mut parsed = Vec::with_capacity(calls.len());
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
        parsed.push(HistoryCall {
            name: name.to_owned(),
            arguments,
        });
    }
    match format {
        ToolFormat::Hermes => hermes::write_calls(content, &parsed),
        ToolFormat::Llama3Json => llama3::write_calls(content, &parsed),
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

/// Test helpers shared by the formats' tests.
#[cfg(test)]
mod testing {
    use super::{merge, Piece, ToolCallParser};
    use crate::chat::ToolFormat;

    /// The pieces a parser gives for `pieces` pushed in order, then finished, adjacent text
    /// joined.
    pub fn run(format: ToolFormat, pieces: &[&str]) -> Vec<Piece> {
        let mut p = ToolCallParser::new(format, 0x2a);
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece));
        }
        out.extend(p.finish());
        merge(out)
    }

    /// `text` cut into two pieces at every character boundary, and into one piece per byte
    /// boundary character: each gives the same result as `text` whole.
    pub fn same_at_every_cut(format: ToolFormat, text: &str) -> Vec<Piece> {
        let whole = run(format, &[text]);
        for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let (a, b) = text.split_at(cut);
            assert_eq!(run(format, &[a, b]), whole, "{text:?} cut at {cut}");
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(
            run(format, &chars),
            whole,
            "{text:?} one character at a time"
        );
        whole
    }

    pub fn text(s: &str) -> Piece {
        Piece::Text(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;
    use serde_json::json;

    /// The budget costs tools as they are rendered: the definitions' bytes plus the block around
    /// them are what writing them adds to the prompt, within a byte per tool (separators) and,
    /// for Llama without a system message, the markers of the system turn the tools add (about
    /// 50 bytes, a dozen tokens: not worth a per-template count).
    #[test]
    fn definition_costs_are_what_the_rendering_adds() {
        let tools: Vec<Value> = (0..5)
            .map(|i| {
                json!({"type": "function", "function": {
                    "name": format!("tool_{i}"),
                    "description": "Does one thing. ".repeat(i + 1),
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}
                }})
            })
            .collect();
        for preset in ["qwen2.5", "llama3", "chatml"] {
            let template = Template::preset(preset).unwrap();
            for system in [true, false] {
                let mut turns = Vec::new();
                if system {
                    turns.push(Turn::new(Role::System, "Be brief."));
                }
                turns.push(Turn::new(Role::User, "Hello"));
                let plain = template.render(&turns, None).full().len();
                let with = template
                    .render(&with_definitions(&turns, &tools, &template), None)
                    .full()
                    .len();
                let format = template.tool_format;
                let costed = block_bytes(format)
                    + tools
                        .iter()
                        .map(|t| definition_bytes(format, t))
                        .sum::<usize>();
                let added = with - plain;
                assert!(
                    costed.abs_diff(added) <= tools.len() + 64,
                    "{preset} (system: {system}): costed {costed}, rendering added {added}"
                );
            }
        }
    }
}
