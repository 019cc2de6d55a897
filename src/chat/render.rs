//! Turning a conversation into prompt text.

use super::template::{Reasoning, SystemRole, Template};
use super::{Role, Turn};
use crate::runtime::IMAGE_PLACEHOLDER;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// A rendered conversation: `pieces.concat() + generation_prompt` is the prompt.
///
/// `pieces[i]` is the text of turn `i`; the BOS text and a default system prompt are part of
/// the first piece. Text that belongs to no single turn follows these rules: a Gemma system turn
/// has no text of its own (its content is in the piece of the turn it is folded into), and in
/// a run of consecutive Qwen tool turns the first piece opens the shared user turn and the last
/// one closes it.
///
/// # The prefix property
///
/// Rendering is append-only: the pieces of turns `0..k` are a prefix of the rendering of any
/// conversation that starts with the same `k` turns. With an assistant turn holding the model's
/// answer `A`, the previous prompt plus `A` is a prefix of the next one:
/// `render([sys, u1]).full() + A` starts `render([sys, u1, A, u2]).full()`, and the text after
/// it begins with the assistant suffix. This is what lets the runtime reuse its KV cache across
/// turns. It does not hold:
/// - for `qwen3` and `deepseek-r1` when `A` has a reasoning block: their templates remove it
///   from assistant turns of the history (see [`Reasoning`]), so the cache matches only up to
///   the assistant tag. For `deepseek-r1` it never holds, because its generation prompt opens
///   `<think>\n` and history turns do not have it; for `qwen3` with thinking off, likewise
///   (the empty think block is not kept in history);
/// - for families that trim content (`llama3`, `gemma2`) when `A` starts or ends with
///   whitespace;
/// - across a run of tool turns that grows: the piece of the last tool turn of a run closes
///   the run. (A request never ends with a tool turn that the next request follows with
///   another, because the model answers in between.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub pieces: Vec<String>,
    pub generation_prompt: String,
}

impl Rendered {
    /// The whole prompt.
    pub fn full(&self) -> String {
        let mut s = self.pieces.concat();
        s.push_str(&self.generation_prompt);
        s
    }
}

/// Where a turn stands in its conversation, for the rules that look beyond the turn itself.
// Independent facts about one turn, read by different rules: not a state machine in disguise.
#[allow(clippy::struct_excessive_bools)]
#[derive(Default)]
struct Position<'a> {
    is_first: bool,
    /// System text folded into this turn, separator included.
    folded: &'a str,
    after_tool: bool,
    before_tool: bool,
    /// After the last user turn (a tool-calling round in progress).
    after_last_query: bool,
}

impl Template {
    /// The text of one turn on its own, as `render` writes it when no neighbour affects it:
    /// `is_first` adds the BOS text and, unless the turn is a system turn, the default system
    /// prompt. Assistant turns are treated as history (reasoning removed where the family
    /// removes it); a tool turn is a run of one. A system turn of a family without a system
    /// role has no text of its own: `render` folds it into the next turn.
    pub fn render_turn(&self, turn: &Turn, is_first: bool) -> String {
        let position = Position {
            is_first,
            ..Position::default()
        };
        self.piece(turn, &position)
    }

    /// Renders a conversation, followed by the generation prompt.
    ///
    /// `thinking` switches reasoning on or off for families that have the switch (`None`: the
    /// family's default); other families ignore it. See [`Rendered`] for the prefix property
    /// that the KV-cache reuse relies on and the families where it does not hold.
    pub fn render(&self, turns: &[Turn], thinking: Option<bool>) -> Rendered {
        let last_query = turns.iter().rposition(is_query);
        let mut pieces = Vec::with_capacity(turns.len());
        let mut folded = String::new();
        let is_tool = |i: Option<usize>| {
            i.and_then(|i| turns.get(i))
                .is_some_and(|t| t.role == Role::Tool)
        };
        for (i, turn) in turns.iter().enumerate() {
            let position = Position {
                is_first: i == 0,
                folded: &folded,
                after_tool: is_tool(i.checked_sub(1)),
                before_tool: is_tool(i.checked_add(1)),
                after_last_query: last_query.is_some_and(|q| i > q),
            };
            pieces.push(self.piece(turn, &position));
            match (&self.system_role, turn.role) {
                (SystemRole::FoldIntoNextTurn { separator }, Role::System) => {
                    folded.push_str(&turn.preamble);
                    folded.push_str(&turn.content);
                    folded.push_str(separator);
                }
                (_, Role::System) => {}
                _ => folded.clear(),
            }
        }
        let mut generation_prompt = String::new();
        if turns.is_empty() {
            generation_prompt.push_str(self.bos.as_deref().unwrap_or(""));
        }
        generation_prompt.push_str(&self.generation_prompt);
        match &self.thinking {
            Some(t) if thinking.unwrap_or(t.default_on) => generation_prompt.push_str(&t.on),
            Some(t) => generation_prompt.push_str(&t.off),
            None if thinking.is_some() => {
                log::debug!("template {} has no thinking switch; ignored", self.name);
            }
            None => {}
        }
        Rendered {
            pieces,
            generation_prompt,
        }
    }

    fn piece(&self, turn: &Turn, at: &Position<'_>) -> String {
        let mut out = String::new();
        let mut folded = at.folded.to_owned();
        if at.is_first {
            out.push_str(self.bos.as_deref().unwrap_or(""));
            if let (Some(default), true) = (&self.default_system, turn.role != Role::System) {
                match &self.system_role {
                    SystemRole::Native => {
                        out.push_str(&self.system.prefix);
                        out.push_str(default);
                        out.push_str(&self.system.suffix);
                    }
                    SystemRole::FoldIntoNextTurn { separator } => {
                        folded = format!("{default}{separator}");
                    }
                }
            }
        }
        let (wrap, content) = match turn.role {
            Role::System => {
                if let SystemRole::FoldIntoNextTurn { .. } = self.system_role {
                    return out;
                }
                (&self.system, self.trimmed(&turn.content).to_owned())
            }
            Role::User => (&self.user, self.user_content(turn)),
            Role::Assistant => (&self.assistant, self.assistant_content(turn, at)),
            Role::Tool => (&self.tool, self.tool_content(&turn.content)),
        };
        let run = self.tool_run.as_ref().filter(|_| turn.role == Role::Tool);
        if let (Some(run), false) = (run, at.after_tool) {
            out.push_str(&run.prefix);
        }
        out.push_str(&wrap.prefix);
        out.push_str(&folded);
        out.push_str(&turn.preamble);
        out.push_str(&content);
        out.push_str(&wrap.suffix);
        if let (Some(run), false) = (run, at.before_tool) {
            out.push_str(&run.suffix);
        }
        out
    }

    fn trimmed<'a>(&self, content: &'a str) -> &'a str {
        if self.trim_content {
            content.trim()
        } else {
            content
        }
    }

    /// A user turn's text with one image placeholder where each image was sent among its
    /// text: the runtime puts each image's embeddings there. An image placed in whitespace
    /// that trimming drops goes to that edge of the text.
    fn user_content(&self, turn: &Turn) -> String {
        let text = self.trimmed(&turn.content);
        let start = turn.content.len() - turn.content.trim_start().len();
        let start = if self.trim_content { start } else { 0 };
        let mut out =
            String::with_capacity(text.len() + turn.images.len() * IMAGE_PLACEHOLDER.len());
        let mut done = 0;
        for placed in &turn.images {
            let mut at = placed.at.saturating_sub(start).clamp(done, text.len());
            while !text.is_char_boundary(at) {
                at += 1;
            }
            out.push_str(&text[done..at]);
            out.push_str(IMAGE_PLACEHOLDER);
            done = at;
        }
        out.push_str(&text[done..]);
        out
    }

    fn assistant_content(&self, turn: &Turn, at: &Position<'_>) -> String {
        let content = turn.content.as_str();
        let kept = match self.reasoning {
            Reasoning::Keep => content.to_owned(),
            Reasoning::DropAll => after_reasoning(content).to_owned(),
            Reasoning::DropBeforeLastQuery if at.after_last_query => rewrap_reasoning(content),
            Reasoning::DropBeforeLastQuery => {
                after_reasoning(content).trim_start_matches('\n').to_owned()
            }
        };
        self.trimmed(&kept).to_owned()
    }

    fn tool_content(&self, content: &str) -> String {
        if self.tool_content_json {
            serde_json::Value::String(content.to_owned()).to_string()
        } else {
            self.trimmed(content).to_owned()
        }
    }
}

/// A user turn that asks something: Qwen3 does not count a user turn that only carries tool
/// results in `<tool_response>` tags.
fn is_query(turn: &Turn) -> bool {
    let c = turn.content.as_str();
    turn.role == Role::User
        && !(c.starts_with("<tool_response>") && c.ends_with("</tool_response>"))
}

/// The text after the last `</think>`, or all of it when there is none.
fn after_reasoning(content: &str) -> &str {
    content
        .rsplit_once(THINK_CLOSE)
        .map_or(content, |(_, after)| after)
}

/// Qwen3's form for assistant turns of the round in progress: the reasoning (between the last
/// `<think>` before the first `</think>`, and that `</think>`) and the answer, newlines around
/// each removed, joined by a canonical think block; without reasoning, the answer alone.
fn rewrap_reasoning(content: &str) -> String {
    let Some((before, _)) = content.split_once(THINK_CLOSE) else {
        return content.to_owned();
    };
    let before = before.trim_end_matches('\n');
    let reasoning = before
        .rsplit_once(THINK_OPEN)
        .map_or(before, |(_, r)| r)
        .trim_matches('\n');
    let answer = after_reasoning(content).trim_start_matches('\n');
    if reasoning.is_empty() {
        answer.to_owned()
    } else {
        format!("{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}")
    }
}
