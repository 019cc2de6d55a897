//! The output pipeline (think block, tool calls, stop sequences) on arbitrary model text cut
//! into arbitrary tokens.
//!
//! Input: byte 0 says whether reasoning and tool calls are looked for, and in which format
//! (bit 0: reasoning, bit 1: tool calls, bit 2: Llama 3's JSON calls instead of Hermes); the rest is text (lossy
//! UTF-8) made of NUL-separated fields: the model's output, where U+0001 marks token
//! boundaries, then up to four stop sequences. Checked:
//! - the events a client gets (reasoning, content and calls, in order, adjacent text joined),
//!   whether the generation was stopped, and the finish reason, are the same for the tokens
//!   as cut, for the whole text in one piece and for one character per piece;
//! - without tools, the content never holds a stop sequence;
//! - text is never lost: with no think block, no call and no stop, the content is the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkllmd::api::{Event, Next, OutputFilter, ToolCallParser};
use rkllmd::chat::ToolFormat;

/// An event with its text owned, so runs can be compared.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Reasoning(String),
    Content(String),
    Call {
        id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<Owned>,
    stopped: bool,
    thought: bool,
    calls: usize,
    reason: String,
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let think = flags & 1 != 0;
    let tools = (flags & 2 != 0).then_some(if flags & 4 != 0 {
        ToolFormat::Llama3Json
    } else {
        ToolFormat::Hermes
    });
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.split('\0');
    let output = fields.next().unwrap_or_default();
    let stops: Vec<String> = fields.take(4).map(str::to_owned).collect();

    let tokens: Vec<&str> = output.split('\u{1}').collect();
    let whole = output.replace('\u{1}', "");
    let by_char: Vec<String> = whole.chars().map(String::from).collect();

    let as_cut = run(think, tools, &stops, tokens.iter().copied());
    let at_once = run(think, tools, &stops, std::iter::once(whole.as_str()));
    let per_char = run(think, tools, &stops, by_char.iter().map(String::as_str));
    assert_eq!(as_cut, at_once, "tokens as cut vs the whole text");
    assert_eq!(
        per_char, at_once,
        "one character per token vs the whole text"
    );

    let content: String = at_once
        .events
        .iter()
        .filter_map(|e| match e {
            Owned::Content(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    if tools.is_none() {
        for stop in stops.iter().filter(|s| !s.is_empty()) {
            assert!(
                !content.contains(stop.as_str()),
                "content holds stop {stop:?}"
            );
        }
    }
    if !at_once.thought && at_once.calls == 0 && at_once.reason != "stop" {
        assert_eq!(content, whole, "text was lost");
        assert!(at_once
            .events
            .iter()
            .all(|e| matches!(e, Owned::Content(_))));
    }
});

/// Feeds the pieces until the filter asks to stop, then finishes, as a responder does.
fn run<'a>(
    think: bool,
    tools: Option<ToolFormat>,
    stops: &[String],
    pieces: impl Iterator<Item = &'a str>,
) -> Run {
    let mut filter = OutputFilter::new(
        think,
        tools.map(|format| ToolCallParser::new(format, 0x2a)),
        stops.to_vec(),
    );
    let mut events: Vec<Owned> = Vec::new();
    let mut sink = |event: Event<'_>| {
        let owned = match event {
            Event::Reasoning(t) => Owned::Reasoning(t.to_owned()),
            Event::Content(t) => Owned::Content(t.to_owned()),
            Event::Call(call) => Owned::Call {
                id: call.id,
                name: call.name,
                arguments: call.arguments.to_string(),
            },
        };
        assert!(
            !matches!(&owned, Owned::Reasoning(t) | Owned::Content(t) if t.is_empty()),
            "an empty event"
        );
        match (events.last_mut(), owned) {
            (Some(Owned::Reasoning(a)), Owned::Reasoning(b)) => a.push_str(&b),
            (Some(Owned::Content(a)), Owned::Content(b)) => a.push_str(&b),
            (_, owned) => {
                assert!(
                    !(matches!(owned, Owned::Reasoning(_))
                        && events.iter().any(|e| !matches!(e, Owned::Reasoning(_)))),
                    "reasoning after the answer began"
                );
                events.push(owned);
            }
        }
    };
    let mut stopped = false;
    for piece in pieces {
        if filter.push(piece, &mut sink) == Next::Stop {
            stopped = true;
            break;
        }
    }
    filter.finish(&mut sink);
    Run {
        events,
        stopped,
        thought: filter.thought(),
        calls: filter.calls(),
        reason: filter.reason("length").to_owned(),
    }
}
