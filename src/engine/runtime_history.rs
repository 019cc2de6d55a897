//! `runtime` template mode: what the runtime's KV cache holds of a conversation, so that a
//! request that continues it sends only its newest input with `keep_history = 1`.
//!
//! Under its own template the runtime is given one input per run (`api::runtime_input`) and
//! templates it itself, so a conversation lives only in its KV cache. The record is the inputs
//! sent and the answers generated, with the system prompt and tools the conversation ran under
//! (`rkllm_set_function_tools`, see `runtime_tools`). A request continues it when its earlier
//! turns are exactly those inputs, its assistant turns match the answers as the client got
//! them back (the job's answer key: content without the reasoning, and the tool calls by name
//! and arguments; see `api::runtime_input::answer_key`), and its system prompt and tools are the
//! same. Anything else starts over: the cache is cleared (the runtime's system prompt kept) and
//! the newest input is sent alone, which the client hears about when its earlier turns are
//! thereby not given to the model.

use super::job::{Exchange, RuntimeTurns};

#[derive(Debug)]
pub(super) struct RuntimeHistory {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// The cache holds something the record does not follow (after a raw completion, a refused
    /// tools call, ...): clear it before starting over.
    Unknown,
    /// Nothing but the runtime's system prompt.
    Empty,
    Conversation(Record),
}

#[derive(Debug)]
struct Record {
    system: Option<String>,
    tools: Option<String>,
    /// The conversation's exchanges as the client has them; the runtime holds `exchanges[from..]`
    /// (the ones before were not sent: the conversation was started over at `from`).
    exchanges: Vec<Exchange>,
    from: usize,
    /// Tokens in the cache after the last run.
    tokens: u32,
}

/// How a request's run starts.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Start {
    /// Clear the cache (keeping the runtime's system prompt) first.
    pub clear: bool,
    /// The request's earlier turns are not in the cache and will not reach the model: said in
    /// `X-Rkllmd-Warning`.
    pub warning: Option<&'static str>,
    /// Index of the first exchange the runtime will hold after the run.
    from: usize,
}

/// The request's conversation does not continue what the runtime holds.
pub(super) const NOT_CONTINUED: &str = "the conversation does not continue the one the runtime \
    holds (chat template 'runtime' keeps one conversation in the runtime): it was started over \
    with the newest message, and the model does not see the earlier turns";

/// The conversation continues but no longer fits the context.
pub(super) const NO_ROOM: &str = "the conversation no longer fits the context (chat template \
    'runtime'): it was started over with the newest message, and the model does not see the \
    earlier turns";

impl Default for RuntimeHistory {
    /// A runtime just loaded: an empty cache.
    fn default() -> Self {
        RuntimeHistory { held: Held::Empty }
    }
}

impl RuntimeHistory {
    /// How to run `turns` under `system` and `tools`; `fits(tokens)`: whether the newest input
    /// and its answer fit on top of `tokens` in the cache.
    pub fn start(
        &self,
        turns: &RuntimeTurns,
        system: Option<&str>,
        tools: Option<&str>,
        fits: impl Fn(u32) -> bool,
    ) -> Start {
        let over = |clear: bool, warning: &'static str| Start {
            clear,
            warning: (!turns.history.is_empty()).then_some(warning),
            from: turns.history.len(),
        };
        match &self.held {
            Held::Unknown => over(true, NOT_CONTINUED),
            Held::Empty if turns.history.is_empty() => Start {
                clear: false,
                warning: None,
                from: 0,
            },
            Held::Empty => over(false, NOT_CONTINUED),
            Held::Conversation(r) => {
                let continues = r.system.as_deref() == system
                    && r.tools.as_deref() == tools
                    && r.exchanges == turns.history;
                if !continues {
                    over(true, NOT_CONTINUED)
                } else if !fits(r.tokens) {
                    over(true, NO_ROOM)
                } else {
                    Start {
                        clear: false,
                        warning: None,
                        from: r.from,
                    }
                }
            }
        }
    }

    /// After a run that finished as expected with history kept: the cache holds `tokens`, the
    /// exchanges of `turns` from `start` on, and the newest input with `answer` (its key).
    pub fn finished(
        &mut self,
        start: Start,
        turns: &RuntimeTurns,
        role: crate::runtime::Role,
        (system, tools): (Option<&str>, Option<&str>),
        answer: String,
        tokens: u32,
    ) {
        let mut exchanges = turns.history.clone();
        exchanges.push(Exchange {
            role,
            input: turns.newest.clone(),
            answer,
        });
        self.held = Held::Conversation(Record {
            system: system.map(str::to_owned),
            tools: tools.map(str::to_owned),
            exchanges,
            from: start.from,
            tokens,
        });
    }

    /// The cache was cleared (or emptied by `rkllm_set_function_tools`).
    pub fn cleared(&mut self) {
        self.held = Held::Empty;
    }

    /// The cache holds something else now, or its state is not known.
    pub fn invalidate(&mut self) {
        self.held = Held::Unknown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Role;

    fn ex(input: &str, answer: &str) -> Exchange {
        Exchange {
            role: Role::User,
            input: input.into(),
            answer: answer.into(),
        }
    }

    fn turns(history: &[Exchange], newest: &str) -> RuntimeTurns {
        RuntimeTurns {
            history: history.to_vec(),
            newest: newest.into(),
        }
    }

    const ALWAYS: fn(u32) -> bool = |_| true;

    /// The record after `turns` ran from a fresh start and answered `answer`.
    fn after(t: &RuntimeTurns, answer: &str) -> RuntimeHistory {
        let mut h = RuntimeHistory::default();
        let start = h.start(t, Some("sys"), None, ALWAYS);
        h.finished(start, t, Role::User, (Some("sys"), None), answer.into(), 50);
        h
    }

    #[test]
    fn a_first_message_on_an_empty_cache_runs_as_it_is() {
        let h = RuntimeHistory::default();
        let s = h.start(&turns(&[], "hi"), None, None, ALWAYS);
        assert_eq!((s.clear, s.warning), (false, None));
    }

    #[test]
    fn a_conversation_that_continues_the_record_sends_only_its_newest_input() {
        let h = after(&turns(&[], "hi"), "hello");
        let s = h.start(
            &turns(&[ex("hi", "hello")], "more"),
            Some("sys"),
            None,
            ALWAYS,
        );
        assert_eq!((s.clear, s.warning), (false, None));
    }

    #[test]
    fn another_answer_input_system_prompt_or_tools_starts_over_with_a_warning() {
        let h = after(&turns(&[], "hi"), "hello");
        let next = |history: &[Exchange], system, tools| {
            h.start(&turns(history, "more"), system, tools, ALWAYS)
        };
        for s in [
            next(&[ex("hi", "HELLO")], Some("sys"), None),
            next(&[ex("HI", "hello")], Some("sys"), None),
            next(&[ex("hi", "hello")], Some("other"), None),
            next(&[ex("hi", "hello")], Some("sys"), Some("[]")),
            next(&[ex("hi", "hello"), ex("more", "x")], Some("sys"), None),
        ] {
            assert_eq!((s.clear, s.warning), (true, Some(NOT_CONTINUED)));
        }
        // A new conversation of one message starts over silently: nothing of it is left out.
        let s = next(&[], Some("sys"), None);
        assert_eq!((s.clear, s.warning), (true, None));
    }

    #[test]
    fn a_conversation_that_no_longer_fits_starts_over_and_says_so() {
        let h = after(&turns(&[], "hi"), "hello");
        let s = h.start(
            &turns(&[ex("hi", "hello")], "more"),
            Some("sys"),
            None,
            |t| t < 50,
        );
        assert_eq!((s.clear, s.warning), (true, Some(NO_ROOM)));
    }

    #[test]
    fn after_starting_over_the_client_s_whole_history_is_what_continues() {
        // Started over at turn 2: the runtime holds turn 2 on, the client still sends turn 1.
        let mut h = RuntimeHistory::default();
        h.invalidate();
        let t2 = turns(&[ex("hi", "hello")], "more");
        let s = h.start(&t2, None, None, ALWAYS);
        assert_eq!((s.clear, s.warning), (true, Some(NOT_CONTINUED)));
        h.finished(s, &t2, Role::User, (None, None), "sure".into(), 30);
        let t3 = turns(&[ex("hi", "hello"), ex("more", "sure")], "end");
        let s = h.start(&t3, None, None, ALWAYS);
        assert_eq!((s.clear, s.warning, s.from), (false, None, 1));
    }

    #[test]
    fn an_unknown_or_emptied_cache_holds_no_conversation() {
        let mut h = after(&turns(&[], "hi"), "hello");
        let t = turns(&[ex("hi", "hello")], "more");
        h.invalidate();
        let s = h.start(&t, Some("sys"), None, ALWAYS);
        assert_eq!((s.clear, s.warning), (true, Some(NOT_CONTINUED)));
        h.cleared();
        let s = h.start(&t, Some("sys"), None, ALWAYS);
        assert_eq!((s.clear, s.warning), (false, Some(NOT_CONTINUED)));
    }
}
