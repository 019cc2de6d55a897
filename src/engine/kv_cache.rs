//! What the runtime's KV cache holds, so a conversation that extends it prefills only the new
//! part. rkllmd renders conversations itself (the runtime's own template is switched off) and
//! runs with `keep_history`, so after a run the cache holds exactly the text fed so far plus the
//! answer generated. Anything uncertain (an abort, a pause, an error, or a cache size after the
//! run other than before + prefilled + generated, as after a context shift) invalidates the
//! record, and the worker clears the runtime's cache before its next run of any kind: a partial
//! answer never poisons the next turn.

use super::job::Conversation;
use super::EngineError;

/// Until a run has calibrated it: a typical BPE tokenizer on English text.
const DEFAULT_BYTES_PER_TOKEN: f64 = 4.0;

#[derive(Debug, Default)]
pub(super) struct KvCache {
    /// The text in the cache; meaningful only when `valid`.
    text: String,
    valid: bool,
    /// Tokens in the cache, as the runtime reports them.
    tokens: u32,
    /// Learnt from the runtime's prefill counts; the largest ratio seen, so estimates err low.
    bytes_per_token: Option<f64>,
}

/// How one run is fed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// The whole conversation as rendered for this run.
    pub full: String,
    /// `full[send_from..]` is what the runtime is given.
    pub send_from: usize,
    /// Clear the cache first.
    pub clear: bool,
    /// Oldest turns left out to fit the context.
    pub dropped_turns: usize,
}

impl Plan {
    pub fn input(&self) -> &str {
        &self.full[self.send_from..]
    }
}

impl KvCache {
    // An estimate from byte counts far below 2^52, divided by at least 1: never negative, and
    // a float's rounding does not matter.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub fn estimate_tokens(&self, bytes: usize) -> u64 {
        (bytes as f64
            / self
                .bytes_per_token
                .unwrap_or(DEFAULT_BYTES_PER_TOKEN)
                .max(1.0))
        .ceil() as u64
    }

    /// Learns bytes per token from a run that prefilled `bytes` as `tokens`.
    #[allow(clippy::cast_precision_loss)] // a ratio of byte counts far below 2^52
    pub fn calibrate(&mut self, bytes: usize, tokens: u32) {
        if tokens > 0 && bytes > 0 {
            let ratio = bytes as f64 / f64::from(tokens);
            self.bytes_per_token = Some(self.bytes_per_token.map_or(ratio, |r| r.max(ratio)));
        }
    }

    /// Decides what to send. Drops the oldest non-kept turns (never the newest) while the
    /// conversation plus `reserve` tokens for the answer would not fit `max_context`.
    pub fn plan(
        &self,
        conv: &Conversation,
        max_context: u32,
        reserve: u32,
    ) -> Result<Plan, EngineError> {
        let max = u64::from(max_context);
        let newest = conv.pieces.len().saturating_sub(1);
        let mut first_kept_history = conv.kept.min(newest);
        let render = |from: usize| -> String {
            let mut s: String = conv.pieces[..conv.kept.min(conv.pieces.len())].concat();
            for p in &conv.pieces[from.max(conv.kept).min(conv.pieces.len())..] {
                s.push_str(p);
            }
            s.push_str(&conv.generation_prompt);
            s
        };
        let mut full = render(first_kept_history);
        while self.estimate_tokens(full.len()) + u64::from(reserve) > max
            && first_kept_history < newest
        {
            first_kept_history += 1;
            full = render(first_kept_history);
        }
        let estimate = self.estimate_tokens(full.len());
        if estimate > max {
            return Err(EngineError::PromptTooLong {
                estimated_tokens: estimate,
                prompt_bytes: full.len(),
                max_context,
            });
        }
        let dropped_turns = first_kept_history - conv.kept.min(newest);
        let reusable = self.valid && dropped_turns == 0 && full.starts_with(&self.text);
        let delta_fits = |from: usize| {
            u64::from(self.tokens) + self.estimate_tokens(full.len() - from) + u64::from(reserve)
                <= max
        };
        if reusable && delta_fits(self.text.len()) {
            let send_from = self.text.len();
            return Ok(Plan {
                full,
                send_from,
                clear: false,
                dropped_turns,
            });
        }
        // A cache known to be empty needs no clearing.
        let clear = !(self.valid && self.tokens == 0);
        Ok(Plan {
            full,
            send_from: 0,
            clear,
            dropped_turns,
        })
    }

    /// After a run that finished normally: the cache holds the conversation and the answer.
    pub fn finished(&mut self, plan: Plan, answer: &str, tokens: u32) {
        self.text = plan.full;
        self.text.push_str(answer);
        self.tokens = tokens;
        self.valid = true;
    }

    /// After a cleared cache.
    pub fn cleared(&mut self) {
        self.text.clear();
        self.tokens = 0;
        self.valid = true;
    }

    /// After a run whose effect on the cache is not known for certain.
    pub fn invalidate(&mut self) {
        self.valid = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(pieces: &[&str]) -> Conversation {
        Conversation {
            pieces: pieces.iter().map(|s| s.to_string()).collect(),
            kept: 1,
            generation_prompt: "<a>".into(),
        }
    }

    #[test]
    fn an_empty_or_unknown_cache_is_cleared_and_everything_sent() {
        let mut c = KvCache::default();
        c.invalidate();
        let p = c.plan(&conv(&["<s>", "<u>hi</u>"]), 4096, 100).unwrap();
        assert_eq!(p.input(), "<s><u>hi</u><a>");
        assert!(p.clear);
    }

    #[test]
    fn a_conversation_that_extends_the_cache_sends_only_the_new_part() {
        let mut c = KvCache::default();
        c.cleared();
        let first = c.plan(&conv(&["<s>", "<u>hi</u>"]), 4096, 100).unwrap();
        assert!(!first.clear, "a known-empty cache needs no clearing");
        c.finished(first, "hello", 12);
        let next = c
            .plan(
                &conv(&["<s>", "<u>hi</u>", "<a>hello</a>", "<u>more</u>"]),
                4096,
                100,
            )
            .unwrap();
        assert!(!next.clear);
        assert_eq!(next.input(), "</a><u>more</u><a>");
    }

    #[test]
    fn an_edited_history_resets() {
        let mut c = KvCache::default();
        c.cleared();
        let first = c.plan(&conv(&["<s>", "<u>hi</u>"]), 4096, 100).unwrap();
        c.finished(first, "hello", 12);
        let other = c
            .plan(
                &conv(&["<s>", "<u>HI</u>", "<a>hello</a>", "<u>more</u>"]),
                4096,
                100,
            )
            .unwrap();
        assert!(other.clear);
        assert_eq!(other.send_from, 0);
    }

    #[test]
    fn old_turns_are_dropped_to_fit_and_the_newest_never_is() {
        let mut c = KvCache::default();
        c.cleared();
        c.calibrate(4, 1); // 4 bytes per token
        let long = "x".repeat(400); // 100 tokens
        let pieces = ["<s>", long.as_str(), long.as_str(), "<u>q</u>"];
        let p = c.plan(&conv(&pieces), 150, 20).unwrap();
        assert_eq!(p.dropped_turns, 1, "one old turn out is enough");
        assert_eq!(p.full, format!("<s>{long}<u>q</u><a>"));
        let p = c.plan(&conv(&pieces), 100, 20).unwrap();
        assert_eq!(p.dropped_turns, 2);
        assert_eq!(p.full, "<s><u>q</u><a>");
        let huge = "y".repeat(1000);
        let e = c.plan(&conv(&["<s>", huge.as_str()]), 150, 20).unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::PromptTooLong {
                    max_context: 150,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_full_cache_resets_instead_of_overflowing() {
        let mut c = KvCache::default();
        c.cleared();
        c.calibrate(1, 1);
        let first = c.plan(&conv(&["<s>", "<u>hi</u>"]), 100, 10).unwrap();
        c.finished(first, "hello", 95);
        let next = c
            .plan(
                &conv(&["<s>", "<u>hi</u>", "<a>hello</a>", "<u>more</u>"]),
                100,
                10,
            )
            .unwrap();
        assert!(next.clear, "95 cached tokens + the delta do not fit");
    }

    #[test]
    fn calibration_keeps_the_largest_ratio() {
        let mut c = KvCache::default();
        c.calibrate(100, 50);
        c.calibrate(100, 20);
        c.calibrate(100, 40);
        assert_eq!(c.estimate_tokens(500), 100);
    }
}
