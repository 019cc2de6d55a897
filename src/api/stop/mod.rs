//! Stop sequences matched across token boundaries: text that could still turn out to be the
//! start of a stop sequence is held back, and nothing at or after a match is ever sent.
//!
//! Matching runs on the event loop's thread, so its cost per token must not depend on what a
//! client sends: an automaton built once per request (`automaton.rs`) looks at each byte of
//! generated text a bounded number of times however many stops there are, and the API limits
//! the stops' number and total size (`MAX_STOPS`, `MAX_STOP_BYTES`), which bounds the build and
//! the text held back.

mod automaton;

use super::responder::Next;
use automaton::{Automaton, START};

/// The most stop sequences a request may give. OpenAI allows 4 and Ollama sets no limit; this
/// leaves room for any real use while keeping a request's automaton small.
pub const MAX_STOPS: usize = 64;

/// The most bytes all of a request's stop sequences may hold together (so also the most text a
/// stream holds back).
pub const MAX_STOP_BYTES: usize = 8192;

#[derive(Debug, Default)]
pub struct StopMatcher {
    /// `None` without stops: text passes through.
    automaton: Option<Automaton>,
    state: u32,
    /// The text the state stands for: what could still become a stop.
    held: String,
    matched: bool,
    /// Automaton steps taken so far: the matching work, which tests bound.
    steps: u64,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher {
            automaton: (!stops.is_empty()).then(|| Automaton::new(&stops)),
            state: START,
            held: String::new(),
            matched: false,
            steps: 0,
        }
    }

    pub fn matched(&self) -> bool {
        self.matched
    }

    /// `push` for a responder: the text to send now, and whether the generation must end.
    pub fn filter(&mut self, text: &str) -> (String, Next) {
        let piece = self.push(text);
        let next = if self.matched {
            Next::Stop
        } else {
            Next::Continue
        };
        (piece, next)
    }

    /// The finish reason to report: "stop" when a stop sequence ended the answer.
    pub fn reason<'a>(&self, otherwise: &'a str) -> &'a str {
        if self.matched {
            "stop"
        } else {
            otherwise
        }
    }

    /// Adds generated text; returns what may be sent now. After a match, returns nothing more.
    ///
    /// The match that ends first is the one a token-by-token run completes first; taking the
    /// one that starts first instead would make the answer depend on where the tokens split.
    /// Of matches ending at the same place, the longest wins. Stops are whole UTF-8 strings, so
    /// a match, and a held-back prefix of one, always start on a character boundary.
    pub fn push(&mut self, text: &str) -> String {
        if self.matched {
            return String::new();
        }
        let Some(automaton) = &self.automaton else {
            return text.to_owned();
        };
        let mut state = self.state;
        for (i, &b) in text.as_bytes().iter().enumerate() {
            state = automaton.step(state, b, &mut self.steps);
            if let Some(len) = automaton.matched(state) {
                self.matched = true;
                let start = self.held.len() + i + 1 - len;
                let mut out = std::mem::take(&mut self.held);
                if start <= out.len() {
                    out.truncate(start);
                } else {
                    out.push_str(&text[..start - out.len()]);
                }
                return out;
            }
        }
        self.state = state;
        let keep = automaton.depth(state);
        let emit = self.held.len() + text.len() - keep;
        if emit <= self.held.len() {
            let mut rest = self.held.split_off(emit);
            rest.push_str(text);
            std::mem::replace(&mut self.held, rest)
        } else {
            let split = emit - self.held.len();
            let mut out = std::mem::take(&mut self.held);
            out.push_str(&text[..split]);
            self.held.push_str(&text[split..]);
            out
        }
    }

    /// The generation ended: what was held back was not a stop sequence after all.
    pub fn finish(&mut self) -> String {
        if self.matched {
            return String::new();
        }
        self.state = START;
        std::mem::take(&mut self.held)
    }

    /// Automaton steps taken so far (at most twice the bytes pushed).
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(ToString::to_string).collect());
        let mut out = String::new();
        for p in pieces {
            out.push_str(&m.push(p));
        }
        out.push_str(&m.finish());
        (out, m.matched())
    }

    #[test]
    fn no_stops_passes_everything_at_once() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc"), "abc");
    }

    #[test]
    fn a_stop_split_across_pieces_is_caught_and_nothing_after_it_is_sent() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D and more"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn a_partial_match_that_fails_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("the E"), "the ");
        assert_eq!(m.push("Nx"), "ENx");
        assert!(!m.matched());
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["world", "lo w"], &["hel", "lo world"]),
            ("hel".into(), true)
        );
    }

    #[test]
    fn the_stop_that_ends_first_wins_wherever_the_tokens_split() {
        // Found by fuzz/output_filter: "abc" starts first, but "b" is complete first.
        let stops = ["abc", "b"];
        assert_eq!(run(&stops, &["abc"]), ("a".into(), true));
        assert_eq!(run(&stops, &["a", "b", "c"]), ("a".into(), true));
        // Ending at the same place, the longer one wins.
        assert_eq!(run(&["xbc", "c"], &["axbc"]), ("a".into(), true));
    }

    #[test]
    fn held_text_is_flushed_at_the_end() {
        assert_eq!(run(&["###"], &["a #", "#"]), ("a ##".into(), false));
    }

    #[test]
    fn multibyte_text_is_split_only_on_char_boundaries() {
        assert_eq!(
            run(&["世界!"], &["你好世", "界", "!"]),
            ("你好".into(), true)
        );
        assert_eq!(run(&["🚀x"], &["a🚀", "y"]), ("a🚀y".into(), false));
    }

    #[test]
    fn the_work_per_token_does_not_grow_with_the_stops_or_the_held_text() {
        // The most stops of the most bytes a request may give, each a long run of one letter
        // that fails only at its end: a matcher that re-scans the held text for every stop at
        // every token does (stops x held) work per token here.
        let each = super::MAX_STOP_BYTES / super::MAX_STOPS;
        let stops: Vec<String> = (0..super::MAX_STOPS)
            .map(|i| {
                format!(
                    "{}{}",
                    "a".repeat(each - 2),
                    char::from(b'0' + u8::try_from(i % 10).unwrap())
                )
            })
            .collect();
        let mut m = StopMatcher::new(stops);
        let mut bytes = 0u64;
        for _ in 0..20_000 {
            let sent = m.push("a");
            bytes += 1;
            assert!(sent.len() <= 1);
        }
        assert!(!m.matched());
        assert!(
            m.steps() <= 2 * bytes,
            "{} steps for {bytes} bytes",
            m.steps()
        );
        m.push("a0");
        assert!(m.matched(), "a stop still matches at the end");
    }

    /// The rule stated plainly, on the whole text at once: the match that ends first, the
    /// longest of those ending there.
    fn reference(stops: &[&str], text: &str) -> (String, bool) {
        let best = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s).map(|pos| (pos + s.len(), pos)))
            .min();
        match best {
            Some((_, pos)) => (text[..pos].to_owned(), true),
            None => (text.to_owned(), false),
        }
    }

    #[test]
    fn any_split_of_any_text_gives_what_the_rule_gives_on_the_whole_text() {
        let alphabet = ["a", "b", "ab", "é", "世"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % u64::try_from(n).unwrap()).unwrap()
        };
        for _ in 0..3000 {
            let stops: Vec<String> = (0..=next(4))
                .map(|_| (0..=next(4)).map(|_| alphabet[next(5)]).collect())
                .collect();
            let pieces: Vec<String> = (0..next(8))
                .map(|_| (0..next(4)).map(|_| alphabet[next(5)]).collect())
                .collect();
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            assert_eq!(
                run(&stop_refs, &piece_refs),
                reference(&stop_refs, &pieces.concat()),
                "{stops:?} {pieces:?}"
            );
        }
    }
}
