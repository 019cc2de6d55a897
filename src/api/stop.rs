//! Stop sequences matched across token boundaries: text that could still turn out to be the
//! start of a stop sequence is held back, and nothing at or after a match is ever sent.

use super::responder::Next;

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    matched: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher {
            stops,
            held: String::new(),
            matched: false,
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
    pub fn push(&mut self, text: &str) -> String {
        if self.matched {
            return String::new();
        }
        if self.stops.is_empty() {
            return text.to_owned();
        }
        self.held.push_str(text);
        // The match that ends first is the one a token-by-token run completes first; taking
        // the one that starts first instead would make the answer depend on where the tokens
        // split. Of matches ending at the same place, the longest wins.
        let first_match = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|pos| (pos + s.len(), pos)))
            .min();
        if let Some((_, pos)) = first_match {
            self.matched = true;
            self.held.truncate(pos);
            return std::mem::take(&mut self.held);
        }
        let keep = self.longest_partial_suffix();
        let emit_len = self.held.len() - keep;
        let rest = self.held.split_off(emit_len);
        std::mem::replace(&mut self.held, rest)
    }

    /// The generation ended: what was held back was not a stop sequence after all.
    pub fn finish(&mut self) -> String {
        if self.matched {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
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
}
