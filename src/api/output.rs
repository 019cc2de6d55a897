//! What a generation's text becomes for a client, whatever the API: a leading `<think>` block
//! is reasoning, `<tool_call>` blocks in the content are calls, and stop sequences end the
//! content (reasoning is never cut by them). Events borrow their text: nothing is copied on the
//! per-token path unless a tag or a stop sequence may be pending.

use super::responder::Next;
use super::stop::StopMatcher;
use super::think::ThinkSplitter;
use super::tools::{Piece, ToolCall, ToolCallParser};

/// One piece of output, in order.
#[derive(Debug, PartialEq)]
pub enum Event<'a> {
    Reasoning(&'a str),
    Content(&'a str),
    Call(ToolCall),
}

#[derive(Debug, Default)]
pub struct OutputFilter {
    /// `None` when the text is not an answer that may open with reasoning (completions).
    think: Option<ThinkSplitter>,
    content: ContentFilter,
}

/// What happens to the content: tool calls found, then stop sequences applied.
#[derive(Debug, Default)]
struct ContentFilter {
    /// `None` when the request gave no tools.
    tools: Option<ToolCallParser>,
    stop: StopMatcher,
    calls: usize,
}

impl OutputFilter {
    /// `tools`: the parser for the format the prompt asked for calls in, when the request gave
    /// tools.
    pub fn new(think: bool, tools: Option<ToolCallParser>, stops: Vec<String>) -> OutputFilter {
        OutputFilter {
            think: think.then(ThinkSplitter::new),
            content: ContentFilter {
                tools,
                stop: StopMatcher::new(stops),
                calls: 0,
            },
        }
    }

    /// Feeds generated text; `emit` gets what may be sent now. `Stop` when a stop sequence
    /// matched and the generation should end.
    pub fn push(&mut self, text: &str, emit: &mut dyn FnMut(Event<'_>)) -> Next {
        let Some(think) = self.think.as_mut() else {
            return self.content.push(text, emit);
        };
        let split = think.push(text);
        emit_reasoning(split.reasoning, emit);
        self.content.push(split.content, emit)
    }

    /// The generation ended: releases what was held back.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Event<'_>)) {
        if let Some(think) = self.think.as_mut() {
            let split = think.finish();
            emit_reasoning(split.reasoning, emit);
            self.content.push(split.content, emit);
        }
        self.content.finish(emit);
    }

    /// The answer opened with a reasoning block.
    pub fn thought(&self) -> bool {
        self.think.as_ref().is_some_and(ThinkSplitter::thought)
    }

    /// Tool calls emitted so far.
    pub fn calls(&self) -> usize {
        self.content.calls
    }

    /// Whether a stop sequence ended the answer.
    pub fn stopped(&self) -> bool {
        self.content.stop.matched()
    }

    /// The finish reason: "stop" when a stop sequence ended the answer, else `otherwise`.
    pub fn reason<'a>(&self, otherwise: &'a str) -> &'a str {
        self.content.stop.reason(otherwise)
    }
}

fn emit_reasoning(text: &str, emit: &mut dyn FnMut(Event<'_>)) {
    if !text.is_empty() {
        emit(Event::Reasoning(text));
    }
}

impl ContentFilter {
    fn push(&mut self, text: &str, emit: &mut dyn FnMut(Event<'_>)) -> Next {
        let Some(parser) = self.tools.as_mut() else {
            return stopped(&mut self.stop, text, emit);
        };
        if text.is_empty() {
            return Next::Continue;
        }
        let pieces = parser.push(text);
        self.take(pieces, emit)
    }

    fn take(&mut self, pieces: Vec<Piece>, emit: &mut dyn FnMut(Event<'_>)) -> Next {
        for piece in pieces {
            match piece {
                Piece::Text(t) => {
                    if stopped(&mut self.stop, &t, emit) == Next::Stop {
                        return Next::Stop;
                    }
                }
                // Nothing after a stop sequence is sent, calls included.
                Piece::Call(_) if self.stop.matched() => return Next::Stop,
                Piece::Call(call) => {
                    self.calls += 1;
                    emit(Event::Call(call));
                }
            }
        }
        Next::Continue
    }

    fn finish(&mut self, emit: &mut dyn FnMut(Event<'_>)) {
        if let Some(rest) = self.tools.as_mut().map(ToolCallParser::finish) {
            self.take(rest, emit);
        }
        let rest = self.stop.finish();
        if !rest.is_empty() {
            emit(Event::Content(&rest));
        }
    }
}

fn stopped(stop: &mut StopMatcher, text: &str, emit: &mut dyn FnMut(Event<'_>)) -> Next {
    let (piece, next) = stop.filter(text);
    if !piece.is_empty() {
        emit(Event::Content(&piece));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolFormat;

    fn run(filter: &mut OutputFilter, pieces: &[&str]) -> (String, String, Vec<String>, Next) {
        let (mut reasoning, mut content, mut calls) = (String::new(), String::new(), Vec::new());
        let mut last = Next::Continue;
        let mut sink = |e: Event<'_>| match e {
            Event::Reasoning(t) => reasoning.push_str(t),
            Event::Content(t) => content.push_str(t),
            Event::Call(c) => calls.push(c.name),
        };
        for p in pieces {
            last = filter.push(p, &mut sink);
        }
        filter.finish(&mut sink);
        (reasoning, content, calls, last)
    }

    #[test]
    fn reasoning_content_and_calls_come_apart_across_token_boundaries() {
        let mut f = OutputFilter::new(
            true,
            Some(ToolCallParser::new(ToolFormat::Hermes, 7)),
            vec![],
        );
        let (r, c, calls, _) = run(
            &mut f,
            &[
                "<thi",
                "nk>\nplan</th",
                "ink>\n\nok <tool",
                "_call>\n{\"name\": \"w\", \"arguments\": {}}\n</tool_call>",
            ],
        );
        assert_eq!((r.as_str(), c.as_str()), ("plan", "ok "));
        assert_eq!(calls, ["w"]);
        assert!(f.thought());
        assert_eq!(f.calls(), 1);
    }

    #[test]
    fn a_stop_sequence_ends_the_content_but_never_cuts_reasoning() {
        let mut f = OutputFilter::new(true, None, vec!["END".into()]);
        let (r, c, _, last) = run(
            &mut f,
            &["<think>no END here</think>\n\nans", "wer E", "ND more"],
        );
        assert_eq!(
            (r.as_str(), c.as_str(), last),
            ("no END here", "answer ", Next::Stop)
        );
        assert_eq!(f.reason("length"), "stop");
    }

    #[test]
    fn without_think_or_tools_text_passes_through() {
        let mut f = OutputFilter::new(false, None, vec![]);
        let (r, c, calls, _) = run(&mut f, &["<think>x</think>", " <tool_call>{}</tool_call>"]);
        assert_eq!(
            (r.as_str(), c.as_str(), calls.len()),
            ("", "<think>x</think> <tool_call>{}</tool_call>", 0)
        );
    }
}
