//! Reasoning separated from the answer: a `<think>…</think>` block that opens the answer (as
//! Qwen3 and DeepSeek-R1 write it) is the reasoning, the text after it the content. Tags split
//! across tokens are caught by holding back text that could still be part of one.
//!
//! Whitespace after `<think>`, before `</think>` and after `</think>` (the `\n\n` that separates
//! the block from the answer) belongs to neither part. An answer that does not open with
//! `<think>` (leading whitespace aside) is all content, unchanged.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace so far: the answer may still open with `<think>`.
    Start,
    /// After `<think>`, dropping whitespace.
    Opened,
    Reasoning,
    /// After `</think>`, dropping whitespace.
    Closed,
    Content,
}

/// What one piece of generated text holds: reasoning first, then content; either may be empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split<'a> {
    pub reasoning: &'a str,
    pub content: &'a str,
}

#[derive(Debug)]
pub struct ThinkSplitter {
    state: State,
    /// Text that may still be part of a tag, or whitespace not yet known to be inner.
    held: String,
    /// Held text joined with the next piece; reused.
    scratch: String,
    thought: bool,
}

impl Default for ThinkSplitter {
    fn default() -> Self {
        ThinkSplitter::new()
    }
}

impl ThinkSplitter {
    pub fn new() -> ThinkSplitter {
        ThinkSplitter {
            state: State::Start,
            held: String::new(),
            scratch: String::new(),
            thought: false,
        }
    }

    /// The answer opened with a think block.
    pub fn thought(&self) -> bool {
        self.thought
    }

    /// Adds generated text; returns what may be sent now.
    pub fn push<'a>(&'a mut self, text: &'a str) -> Split<'a> {
        let ThinkSplitter {
            state,
            held,
            scratch,
            thought,
        } = self;
        if *state == State::Content {
            return Split {
                reasoning: "",
                content: text,
            };
        }
        let s: &'a str = if held.is_empty() {
            text
        } else {
            scratch.clear();
            scratch.push_str(held);
            scratch.push_str(text);
            held.clear();
            scratch
        };
        let (split, hold_from) = scan(state, thought, s);
        held.push_str(&s[hold_from..]);
        split
    }

    /// The generation ended: what was held back is released (an unclosed block is reasoning).
    pub fn finish(&mut self) -> Split<'_> {
        std::mem::swap(&mut self.held, &mut self.scratch);
        self.held.clear();
        let s = self.scratch.as_str();
        match self.state {
            State::Start => Split {
                reasoning: "",
                content: s,
            },
            State::Reasoning => Split {
                reasoning: s.trim_end(),
                content: "",
            },
            State::Opened | State::Closed | State::Content => Split::default(),
        }
    }
}

/// Walks `s` from `state`; returns the parts and where the text to hold back starts.
fn scan<'a>(state: &mut State, thought: &mut bool, s: &'a str) -> (Split<'a>, usize) {
    let mut split = Split::default();
    let mut pos = 0;
    loop {
        let rest = &s[pos..];
        match *state {
            State::Start => {
                let t = rest.trim_start();
                if let Some(after) = t.strip_prefix(OPEN) {
                    *state = State::Opened;
                    *thought = true;
                    pos = s.len() - after.len();
                } else if t.is_empty() || OPEN.starts_with(t) {
                    return (split, pos);
                } else {
                    *state = State::Content;
                    split.content = rest;
                    return (split, s.len());
                }
            }
            State::Opened | State::Closed => {
                let t = rest.trim_start();
                if t.is_empty() {
                    return (split, s.len());
                }
                pos = s.len() - t.len();
                *state = if *state == State::Opened {
                    State::Reasoning
                } else {
                    State::Content
                };
            }
            State::Reasoning => {
                if let Some(i) = rest.find(CLOSE) {
                    split.reasoning = rest[..i].trim_end();
                    *state = State::Closed;
                    pos += i + CLOSE.len();
                    continue;
                }
                let keep = partial_suffix(rest, CLOSE);
                let emit = rest[..rest.len() - keep].trim_end();
                split.reasoning = emit;
                return (split, pos + emit.len());
            }
            State::Content => {
                split.content = rest;
                return (split, s.len());
            }
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag` (an ASCII tag, so the
/// suffix starts on a char boundary).
fn partial_suffix(s: &str, tag: &str) -> usize {
    let max = (tag.len() - 1).min(s.len());
    (1..=max)
        .rev()
        .find(|&len| tag.as_bytes().starts_with(&s.as_bytes()[s.len() - len..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::ThinkSplitter;

    /// Feeds the pieces; returns (reasoning, content) as a client would assemble them.
    fn run(pieces: &[&str]) -> (String, String) {
        let mut t = ThinkSplitter::new();
        let (mut reasoning, mut content) = (String::new(), String::new());
        for p in pieces {
            let s = t.push(p);
            reasoning.push_str(s.reasoning);
            content.push_str(s.content);
        }
        let s = t.finish();
        reasoning.push_str(s.reasoning);
        content.push_str(s.content);
        (reasoning, content)
    }

    fn pair(r: &str, c: &str) -> (String, String) {
        (r.to_owned(), c.to_owned())
    }

    #[test]
    fn a_think_block_in_simulator_sized_pieces_is_split_from_the_answer() {
        let pieces = [
            "<think>", "\n", "Let", " me", " see", ".", "\n", "</think>", "\n", "\n", "Yes", ".",
        ];
        assert_eq!(run(&pieces), pair("Let me see.", "Yes."));
    }

    #[test]
    fn tags_split_anywhere_are_caught() {
        let text = "<think>\nhmm, a < b\n\nso\n</think>\n\nAnswer: 42";
        for cut in 1..text.len() {
            for cut2 in cut..text.len() {
                let pieces = [&text[..cut], &text[cut..cut2], &text[cut2..]];
                assert_eq!(
                    run(&pieces),
                    pair("hmm, a < b\n\nso", "Answer: 42"),
                    "{pieces:?}"
                );
            }
        }
    }

    #[test]
    fn an_answer_without_a_think_block_is_unchanged_and_passed_through_at_once() {
        let mut t = ThinkSplitter::new();
        assert_eq!(t.push("Hello").content, "Hello");
        assert_eq!(t.push(" <think>x</think>").content, " <think>x</think>");
        assert!(!t.thought());
        assert_eq!(run(&["<th", "ing>"]), pair("", "<thing>"));
        assert_eq!(run(&["\n", " Hi"]), pair("", "\n Hi"));
        assert_eq!(run(&["\n<thi"]), pair("", "\n<thi"));
    }

    #[test]
    fn reasoning_streams_as_it_arrives_holding_back_only_a_possible_tag() {
        let mut t = ThinkSplitter::new();
        assert_eq!(t.push("<think>\n").reasoning, "");
        assert!(t.thought());
        assert_eq!(t.push("one").reasoning, "one");
        assert_eq!(t.push(" two </").reasoning, " two");
        assert_eq!(t.push("b>").reasoning, " </b>");
        let s = t.push("</think>\n\nok");
        assert_eq!((s.reasoning, s.content), ("", "ok"));
        assert!(t.thought());
    }

    #[test]
    fn an_unclosed_block_is_all_reasoning() {
        assert_eq!(
            run(&["<think>\nstill going\n</thi"]),
            pair("still going\n</thi", "")
        );
        assert_eq!(run(&["<think>"]), pair("", ""));
    }

    #[test]
    fn an_empty_block_gives_empty_reasoning_and_the_content() {
        assert_eq!(run(&["<think>\n\n</think>\n\nHi"]), pair("", "Hi"));
    }

    #[test]
    fn multibyte_text_around_the_tags() {
        assert_eq!(
            run(&["<think>你", "好🚀</", "think>\n\n世界"]),
            pair("你好🚀", "世界")
        );
    }
}
