//! Llama 3.1/3.2 JSON tool calling ([`ToolFormat::Llama3Json`](crate::chat::ToolFormat)), as the
//! official Instruct templates write it (`meta-llama/Llama-3.1-8B-Instruct` and
//! `meta-llama/Llama-3.2-3B-Instruct`, `tokenizer_config.json`; a copy of the 3.2 one in
//! llama.cpp `models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja`), with the template's
//! default `tools_in_user_message`:
//! - the system block opens with `Environment: ipython` and the knowledge and date lines;
//! - the definitions, each as JSON indented by 4, go into the first user message after the
//!   instructions;
//! - the model answers a call with a bare `{"name": ..., "parameters": {...}}` object (after
//!   `<|python_tag|>` when the runtime keeps special tokens), and nothing else;
//! - a call in the history is written back as that object (the template then drops the
//!   message's text).
//!
//! The prompt strings below are the templates' own, byte for byte (the model was trained on
//! them). The date is 3.1's default, "26 Jul 2024": 3.2's template writes today's date, which
//! would change the prompt, and so the KV cache's prefix, every day.

use serde::Serialize;
use serde_json::ser::{PrettyFormatter, Serializer};
use serde_json::{Map, Value};

use super::{write_json, CallIds, HistoryCall, Piece};
use crate::chat::{Role, Turn};

const SYSTEM_PREAMBLE: &str =
    "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
const INSTRUCTIONS: &str = "Given the following functions, please respond with a JSON for a \
    function call with its proper arguments that best answers the given prompt.\n\n\
    Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name \
    and its value}.Do not use variables.\n\n";
/// Opens a tool call when the runtime keeps special tokens in its output.
const PYTHON_TAG: &str = "<|python_tag|>";

/// The turns with the definitions in place: the system block (one is added when the
/// conversation has none; the template writes it always) gets the environment lines, the first
/// user turn the instructions and the definitions. The template takes whatever message follows
/// the system one as "the first user message"; here it is the first user turn (the same turn in
/// any conversation that starts with the user).
pub fn definitions(turns: &[Turn], tools: &[Value]) -> Vec<Turn> {
    let mut out = Vec::with_capacity(turns.len() + 1);
    let rest = match turns.first() {
        Some(first) if first.role == Role::System => {
            out.push(first.clone());
            &turns[1..]
        }
        _ => {
            out.push(Turn::new(Role::System, ""));
            turns
        }
    };
    out[0].preamble.insert_str(0, SYSTEM_PREAMBLE);
    out.extend_from_slice(rest);
    let mut defs = INSTRUCTIONS.to_owned();
    for tool in tools {
        write_indented(&mut defs, tool);
        defs.push_str("\n\n");
    }
    if let Some(user) = out.iter_mut().find(|t| t.role == Role::User) {
        user.preamble.insert_str(0, &defs);
    }
    out
}

/// See [`super::definition_bytes`]: indented, and a blank line.
pub fn definition_bytes(tool: &Value) -> usize {
    let mut out = String::new();
    write_indented(&mut out, tool);
    out.len() + 2
}

/// See [`super::block_bytes`]: the instructions and the system turn's environment lines.
pub fn block_bytes() -> usize {
    INSTRUCTIONS.len() + SYSTEM_PREAMBLE.len()
}

/// `tojson(indent=4)` in the templates: Python's `json.dumps(indent=4)`, which is serde's pretty
/// form with four spaces.
fn write_indented(out: &mut String, value: &Value) {
    let mut bytes = Vec::new();
    let mut ser = Serializer::with_formatter(&mut bytes, PrettyFormatter::with_indent(b"    "));
    if value.serialize(&mut ser).is_ok() {
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
}

/// A history message with calls is the call as the template writes it; its text is dropped, as
/// the template drops it. The template takes one call per message (it refuses more); several
/// are joined with `; `, the separator the parser reads.
pub fn write_calls(content: &mut String, calls: &[HistoryCall]) {
    if calls.is_empty() {
        return;
    }
    content.clear();
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            content.push_str("; ");
        }
        content.push_str("{\"name\": ");
        write_json(content, &Value::String(call.name.clone()));
        content.push_str(", \"parameters\": ");
        write_json(content, &call.arguments);
        content.push('}');
    }
}

/// Reads an answer that may be a call. While the answer so far could still be one (blank, a
/// start of `<|python_tag|>`, or JSON that opened with `{`) it is held back; as soon as it
/// cannot, it is released and everything after passes through. A call is known only at the
/// end: text after the object makes the whole answer content.
#[derive(Debug, Default)]
pub struct Parser {
    held: String,
    /// The answer is content: text passes through.
    content: bool,
    scan: Depth,
}

impl Parser {
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        if self.content {
            return text_piece(text.to_owned());
        }
        self.held.push_str(text);
        // Text that stays inside an object cannot settle the answer: the object has to close
        // first. Any other text is judged, so that the answer is released as early however it
        // is cut into tokens.
        if !self.scan.feed(text) {
            return Vec::new();
        }
        match judge(&self.held, false) {
            Verdict::Undecided | Verdict::Calls(_) => Vec::new(),
            Verdict::Content => {
                self.content = true;
                text_piece(std::mem::take(&mut self.held))
            }
        }
    }

    /// The generation ended: the held answer is calls, or content.
    pub fn finish(&mut self, ids: &mut CallIds) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        match judge(&held, true) {
            Verdict::Calls(calls) if !self.content => calls
                .into_iter()
                .map(|(name, arguments)| Piece::Call(ids.next(name, arguments)))
                .collect(),
            _ => text_piece(held),
        }
    }
}

fn text_piece(text: String) -> Vec<Piece> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![Piece::Text(text)]
    }
}

/// Nesting depth of JSON text fed so far, strings skipped: an object can only close when it
/// returns to 0, which is when the parser looks at the whole answer again.
#[derive(Debug, Default)]
struct Depth {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Depth {
    /// Takes `text`; true when any of it was outside every value, or closed one.
    fn feed(&mut self, text: &str) -> bool {
        let mut top = false;
        for b in text.bytes() {
            top |= self.depth == 0;
            top |= self.step(b);
        }
        top
    }

    /// Takes one byte; true when it closed a value opened at depth 0.
    fn step(&mut self, b: u8) -> bool {
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
            return false;
        }
        match b {
            b'"' if self.depth > 0 => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth > 0 => {
                self.depth -= 1;
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// Could still become a call.
    Undecided,
    Content,
    /// Complete calls and nothing else.
    Calls(Vec<(String, Value)>),
}

/// What `answer` is: one or more call objects separated by `;`, after optional blanks and
/// `<|python_tag|>`, or content. `ended`: no more text will come.
fn judge(answer: &str, ended: bool) -> Verdict {
    let s = answer.trim_start();
    let mut rest = match s.strip_prefix(PYTHON_TAG) {
        Some(after) => after.trim_start(),
        None if !ended && PYTHON_TAG.starts_with(s) => return Verdict::Undecided,
        None => s,
    };
    let mut calls = Vec::new();
    loop {
        if rest.is_empty() {
            return match (ended, calls.is_empty()) {
                (false, _) => Verdict::Undecided,
                (true, true) => Verdict::Content,
                (true, false) => Verdict::Calls(calls),
            };
        }
        if !rest.starts_with('{') {
            return Verdict::Content;
        }
        let Some(end) = object_end(rest) else {
            return if ended {
                Verdict::Content
            } else {
                Verdict::Undecided
            };
        };
        let Some(call) = as_call(&rest[..end]) else {
            return Verdict::Content;
        };
        calls.push(call);
        rest = rest[end..].trim_start();
        if let Some(after) = rest.strip_prefix(';') {
            rest = after.trim_start();
        }
    }
}

/// Where the object that opens `text` ends (just past its `}`), if it has ended.
fn object_end(text: &str) -> Option<usize> {
    let mut depth = Depth::default();
    text.bytes().position(|b| depth.step(b)).map(|i| i + 1)
}

/// `{"name": "...", "parameters": {...}}` (or `"arguments"`, which some fine-tunes write).
fn as_call(json: &str) -> Option<(String, Value)> {
    let value: Value = serde_json::from_str(json).ok()?;
    let Value::Object(mut obj) = value else {
        return None;
    };
    let Value::String(name) = obj.remove("name")? else {
        return None;
    };
    let arguments = match obj
        .remove("parameters")
        .or_else(|| obj.remove("arguments"))?
    {
        Value::Null => Value::Object(Map::new()),
        v @ Value::Object(_) => v,
        _ => return None,
    };
    Some((name, arguments))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, same_at_every_cut, text};
    use super::super::{render_calls, with_definitions, Piece, ToolCallParser};
    use super::*;
    use crate::api::error::Flavor;
    use crate::chat::{Template, ToolFormat};
    use serde_json::json;

    const LLAMA: ToolFormat = ToolFormat::Llama3Json;

    fn llama3() -> Template {
        Template::preset("llama3").unwrap()
    }

    const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","description":"Weather.","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]"#;

    /// The definitions as the official template writes them for `TOOLS` (Python's
    /// `json.dumps(indent=4)`; keys in `serde_json`'s order).
    const DEFS: &str = "Given the following functions, please respond with a JSON for a function \
        call with its proper arguments that best answers the given prompt.\n\nRespond in the \
        format {\"name\": function name, \"parameters\": dictionary of argument name and its \
        value}.Do not use variables.\n\n{\n    \"function\": {\n        \"description\": \
        \"Weather.\",\n        \"name\": \"get_weather\",\n        \"parameters\": {\n            \
        \"properties\": {\n                \"city\": {\n                    \"type\": \
        \"string\"\n                }\n            },\n            \"required\": [\n                \
        \"city\"\n            ],\n            \"type\": \"object\"\n        }\n    },\n    \
        \"type\": \"function\"\n}\n\n";

    fn render(turns: &[Turn]) -> String {
        let t = llama3();
        let tools: Vec<Value> = serde_json::from_str(TOOLS).unwrap();
        t.render(&with_definitions(turns, &tools, &t), None).full()
    }

    #[test]
    fn definitions_are_where_the_official_template_writes_them() {
        let want = format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Environment: ipython\nCutting Knowledge Date: December 2023\n\
             Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n\
             {DEFS}Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            render(&[Turn::new(Role::User, "  Weather in Paris?\n")]),
            want
        );
        // A system message goes after the environment lines, trimmed.
        let with_system = render(&[
            Turn::new(Role::System, " Be brief. "),
            Turn::new(Role::User, "Weather in Paris?"),
        ]);
        assert!(
            with_system.starts_with(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                 Environment: ipython\nCutting Knowledge Date: December 2023\n\
                 Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user"
            ),
            "{with_system}"
        );
        // The blank lines around the definitions survive an empty message.
        let empty = render(&[Turn::new(Role::User, "")]);
        assert!(empty.contains(&format!("{DEFS}<|eot_id|>")), "{empty}");
    }

    #[test]
    fn only_the_first_user_turn_carries_the_definitions() {
        let turns = [
            Turn::new(Role::User, "one"),
            Turn::new(Role::Assistant, "ok"),
            Turn::new(Role::User, "two"),
        ];
        let prompt = render(&turns);
        assert_eq!(prompt.matches("Given the following functions").count(), 1);
        assert!(prompt.contains(&format!("{DEFS}one<|eot_id|>")), "{prompt}");
        assert!(
            prompt.contains("<|start_header_id|>user<|end_header_id|>\n\ntwo<|eot_id|>"),
            "{prompt}"
        );
    }

    #[test]
    fn history_calls_and_results_render_as_the_template_writes_them() {
        let mut content = "Let me look.".to_owned();
        let calls = json!([{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":[1,2]}"}}]);
        render_calls(&mut content, &calls, Flavor::OpenAi, LLAMA).unwrap();
        assert_eq!(
            content,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": [1, 2]}}"
        );
        let t = llama3();
        let turns = [
            Turn::new(Role::Assistant, content),
            Turn::new(Role::Tool, "Sunny, 22 C"),
        ];
        let prompt = t.render(&turns, None).full();
        assert!(
            prompt.ends_with(
                "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \
                 \"parameters\": {\"city\": \"Paris\", \"days\": [1, 2]}}<|eot_id|>\
                 <|start_header_id|>ipython<|end_header_id|>\n\n\"Sunny, 22 C\"<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
            "{prompt}"
        );
        // Ollama's object arguments; several calls joined as the parser reads them.
        let mut content = String::new();
        let calls =
            json!([{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b"}}]);
        render_calls(&mut content, &calls, Flavor::Ollama, LLAMA).unwrap();
        assert_eq!(
            content,
            "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {}}"
        );
        let names: Vec<_> = run(LLAMA, &[&content])
            .into_iter()
            .map(|p| match p {
                Piece::Call(c) => c.name,
                Piece::Text(t) => panic!("text {t}"),
            })
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    fn call(id: &str, name: &str, arguments: Value) -> Piece {
        Piece::Call(super::super::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        })
    }

    #[test]
    fn a_bare_json_answer_is_a_call_however_it_is_cut() {
        let paris = json!({"city": "Paris"});
        for answer in [
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            "\n <|python_tag|> {\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n",
            "{\"parameters\": {\"city\": \"Paris\"}, \"name\": \"get_weather\"}",
        ] {
            assert_eq!(
                same_at_every_cut(LLAMA, answer),
                vec![call("call_2a_0", "get_weather", paris.clone())],
                "{answer:?}"
            );
        }
        assert_eq!(
            same_at_every_cut(
                LLAMA,
                "{\"name\": \"a\", \"parameters\": {\"s\": \"} {\\\"\"}}; {\"name\": \"b\", \"parameters\": null}"
            ),
            vec![
                call("call_2a_0", "a", json!({"s": "} {\""})),
                call("call_2a_1", "b", json!({}))
            ]
        );
    }

    #[test]
    fn anything_else_is_content_unchanged() {
        for answer in [
            "The weather is fine. {\"name\": \"f\", \"parameters\": {}}",
            "{\"name\": \"Ada\", \"born\": 1815}",
            "{\"name\": \"f\", \"parameters\": {}} is the call I would make.",
            "{\"name\": \"f\", \"parameters\": \"x\"}",
            "{\"name\": 3, \"parameters\": {}}",
            "{not json} at all",
            "{\"name\": \"f\", \"parameters\": {}",
            "<|python_tag|>print(1)",
            "<|pyth",
            "[{\"name\": \"f\", \"parameters\": {}}]",
            " \n",
            "café 🙂 {}",
        ] {
            assert_eq!(
                same_at_every_cut(LLAMA, answer),
                vec![text(answer)],
                "{answer:?}"
            );
        }
        assert_eq!(same_at_every_cut(LLAMA, ""), vec![]);
    }

    #[test]
    fn text_that_cannot_be_a_call_is_released_by_the_push_that_shows_it() {
        let cases: [&[&str]; 3] = [
            // Not the python tag, although an object opens after it (found by fuzzing).
            &["\n<|pythonGat_|>{\"name\": \"f\", \"parameters\": { world"],
            &["{\"name\"", ": \"f\", \"parameters\": {}} x {\"a\": "],
            &["{\"name\": \"f\", \"parameters\": {}}", " {\"b\": 1} x"],
        ];
        for pieces in cases {
            let mut p = ToolCallParser::new(LLAMA, 1);
            let (last, first) = pieces.split_last().unwrap();
            for piece in first {
                assert_eq!(p.push(piece), vec![], "{pieces:?}");
            }
            assert_eq!(p.push(last), vec![text(&pieces.concat())], "{pieces:?}");
        }
    }

    #[test]
    fn plain_answers_stream_at_once_and_calls_never_leak() {
        let mut p = ToolCallParser::new(LLAMA, 1);
        assert_eq!(p.push("\n"), vec![]);
        assert_eq!(p.push("Hel"), vec![text("\nHel")]);
        assert_eq!(p.push("lo {"), vec![text("lo {")]);
        assert_eq!(p.finish(), vec![]);

        let mut p = ToolCallParser::new(LLAMA, 1);
        for piece in [
            "<|python",
            "_tag|>",
            "{\"name\": \"f\", ",
            "\"parameters\": {}}",
            "\n",
        ] {
            assert_eq!(p.push(piece), vec![], "{piece:?}");
        }
        assert_eq!(p.finish(), vec![call("call_1_0", "f", json!({}))]);

        // JSON that is not a call is released as soon as its object closes.
        let mut p = ToolCallParser::new(LLAMA, 1);
        assert_eq!(p.push("{\"a\": {\"b\": 1}"), vec![]);
        assert_eq!(p.push("} and"), vec![text("{\"a\": {\"b\": 1}} and")]);
    }
}
