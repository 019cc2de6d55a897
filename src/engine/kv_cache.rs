//! What the runtime's KV cache holds, so a conversation that extends it prefills only the new
//! part. rkllmd renders conversations itself (the runtime's own template is switched off). A run
//! with `keep_history` leaves the cache holding exactly the text fed so far plus the answer
//! generated; one without (a diverging conversation sent whole for the runtime's prefix reuse,
//! see `reuse`) leaves the prompt alone. Anything uncertain (an abort, a pause, an error, or a cache size after the
//! run other than before + prefilled + generated, as after a context shift) invalidates the
//! record, and the worker clears the runtime's cache before its next run of any kind: a partial
//! answer never poisons the next turn.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::bytes_per_token::{self, BytesPerToken, SharedRatio};
use super::job::Conversation;
use super::reuse;
use super::{EngineError, ModelId};

#[derive(Debug, Default)]
pub(super) struct KvCache {
    /// The text in the cache; meaningful only when `valid`.
    text: String,
    valid: bool,
    /// Tokens in the cache, as the runtime reports them.
    tokens: u32,
    /// Learnt from the runtime's prefill counts, robust to any one request.
    bytes_per_token: BytesPerToken,
    /// `tokens` while `valid`, published for `/metrics` (None: not published).
    shared: Option<Publisher>,
}

/// What each resident model's KV cache holds, as the inference thread last knew it, readable
/// from the event loop: one entry per resident model, gone once the model is unloaded.
#[derive(Clone, Debug, Default)]
pub struct SharedCaches(Arc<Mutex<BTreeMap<ModelId, CacheFigures>>>);

/// One resident model's KV cache, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Tokens in the cache; unknown after a run whose effect on it is uncertain.
    pub tokens: Option<u32>,
    /// Snapshots of its conversations held (`engine::snapshots`).
    pub snapshots: usize,
}

impl SharedCaches {
    /// Each resident model's figures, by model.
    pub fn by_model(&self) -> BTreeMap<ModelId, CacheFigures> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ModelId, CacheFigures>> {
        // The map is left consistent by every update: a panic elsewhere does not spoil it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A resident model's entry in `SharedCaches`, removed when it is dropped with its model.
#[derive(Debug)]
pub(super) struct Publisher {
    shared: SharedCaches,
    model: ModelId,
}

impl Publisher {
    pub fn new(shared: SharedCaches, model: ModelId) -> Publisher {
        shared.lock().insert(model, CacheFigures::default());
        Publisher { shared, model }
    }

    fn update(&self, f: impl FnOnce(&mut CacheFigures)) {
        f(self.shared.lock().entry(self.model).or_default());
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shared.lock().remove(&self.model);
    }
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
    /// Run with `keep_history`: the input extends the cache exactly. Without it the whole
    /// conversation is sent and the runtime reuses its longest common prefix with the cache
    /// (see `reuse`).
    pub keep_history: bool,
    /// Oldest turns left out to fit the context.
    pub dropped_turns: usize,
}

impl Plan {
    pub fn input(&self) -> &str {
        &self.full[self.send_from..]
    }
}

impl KvCache {
    /// About how many tokens `bytes` of prompt are, at the typical ratio of recent runs.
    pub fn estimate_tokens(&self, bytes: usize) -> u64 {
        bytes_per_token::tokens(bytes, self.bytes_per_token.typical())
    }

    /// Publishes the ratio it learns through `shared`.
    pub fn share_ratio(&mut self, shared: SharedRatio) {
        self.bytes_per_token.share(shared);
    }

    /// Publishes the cache's token count through `publisher` from now on.
    pub fn share_tokens(&mut self, publisher: Publisher) {
        self.shared = Some(publisher);
        self.publish();
    }

    fn publish(&self) {
        let tokens = self.valid.then_some(self.tokens);
        if let Some(p) = &self.shared {
            p.update(|f| f.tokens = tokens);
        }
    }

    /// Publishes, beside the tokens, how many snapshots the model's conversations have.
    pub fn publish_snapshots(&self, held: usize) {
        if let Some(p) = &self.shared {
            p.update(|f| f.snapshots = held);
        }
    }

    /// Learns bytes per token from a run that prefilled `bytes` as `tokens`.
    pub fn calibrate(&mut self, bytes: usize, tokens: u32) {
        self.bytes_per_token.learn(bytes, tokens);
    }

    /// Decides what to send. Drops the oldest non-kept turns (never the newest) while the
    /// conversation plus `reserve` tokens for the answer would not fit `max_context`. Linear
    /// in the conversation's size: lengths decide what is dropped, and the text is put
    /// together once.
    pub fn plan(
        &self,
        conv: &Conversation,
        max_context: u32,
        reserve: u32,
    ) -> Result<Plan, EngineError> {
        let max = u64::from(max_context);
        let ratio = self.bytes_per_token.typical();
        let estimate = |bytes: usize| bytes_per_token::tokens(bytes, ratio);
        let kept = conv.kept.min(conv.pieces.len());
        let newest = conv.pieces.len().saturating_sub(1);
        let mut first_kept_history = kept.min(newest);
        let mut len =
            conv.pieces.iter().map(String::len).sum::<usize>() + conv.generation_prompt.len();
        // Within the loop `kept <= first_kept_history < newest`: the piece dropped is history.
        while estimate(len) + u64::from(reserve) > max && first_kept_history < newest {
            len -= conv.pieces[first_kept_history].len();
            first_kept_history += 1;
        }
        let mut full = String::with_capacity(len);
        for p in conv.pieces[..kept]
            .iter()
            .chain(&conv.pieces[first_kept_history.max(kept)..])
        {
            full.push_str(p);
        }
        full.push_str(&conv.generation_prompt);
        // What cannot be left out: the kept turns (tool definitions included) and the newest.
        self.check_fits(full.len(), conv.tools_bytes, max_context, reserve)?;
        let dropped_turns = first_kept_history - kept.min(newest);
        // An empty delta is no run with history kept (the prompt would be empty, and the last
        // answer, dropped from a cache without history, would not be regenerated from it).
        let reusable = self.valid
            && dropped_turns == 0
            && full.len() > self.text.len()
            && full.starts_with(&self.text);
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
                keep_history: true,
                dropped_turns,
            });
        }
        let first_len = conv.pieces.first().map_or(0, String::len);
        if self.valid && reuse::worth_a_prefix_run(&self.text, &full, first_len) {
            return Ok(Plan {
                full,
                send_from: 0,
                clear: false,
                keep_history: false,
                dropped_turns,
            });
        }
        // A cache known to be empty needs no clearing.
        let clear = !(self.valid && self.tokens == 0);
        Ok(Plan {
            full,
            send_from: 0,
            clear,
            keep_history: true,
            dropped_turns,
        })
    }

    /// Refuses, before it runs, a prompt of `bytes` (of which `tools_bytes` are tool
    /// definitions) that with `reserve` tokens for the answer would not fit `max_context`: the
    /// runtime reports an overflow only as a failed run, with nothing to tell the client.
    pub fn check_fits(
        &self,
        bytes: usize,
        tools_bytes: usize,
        max_context: u32,
        reserve: u32,
    ) -> Result<(), EngineError> {
        let total = self.estimate_tokens(bytes);
        if total + u64::from(reserve) <= u64::from(max_context) {
            return Ok(());
        }
        Err(EngineError::PromptTooLong {
            estimated_tokens: total,
            prompt_bytes: bytes,
            max_context,
            by_runtime: false,
            tools_tokens: self.estimate_tokens(tools_bytes.min(bytes)),
            reserve,
        })
    }

    /// After a run that finished normally: the cache holds the conversation and, when history
    /// was kept, the answer (without, the runtime drops the generated tokens).
    pub fn finished(&mut self, plan: Plan, answer: &str, tokens: u32) {
        let keep = plan.keep_history;
        self.text = plan.full;
        if keep {
            self.text.push_str(answer);
        }
        self.tokens = tokens;
        self.valid = true;
        self.publish();
    }

    /// The text the cache holds and its tokens, when known.
    pub fn held(&self) -> Option<(&str, u32)> {
        self.valid.then_some((self.text.as_str(), self.tokens))
    }

    /// Bytes of `full` the cache holds already (its common prefix with the cache's text).
    pub fn shared_with(&self, full: &str) -> usize {
        if !self.valid {
            return 0;
        }
        reuse::common_prefix_len(&self.text, full)
    }

    /// Whether the record is known.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// Whether `full` starts with what the cache is known to hold.
    pub fn is_prefix_of(&self, full: &str) -> bool {
        self.valid && full.starts_with(&self.text)
    }

    /// After a cleared cache.
    pub fn cleared(&mut self) {
        self.text.clear();
        self.tokens = 0;
        self.valid = true;
        self.publish();
    }

    /// After a run whose effect on the cache is not known for certain.
    pub fn invalidate(&mut self) {
        self.valid = false;
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(pieces: &[&str]) -> Conversation {
        Conversation {
            pieces: pieces.iter().map(ToString::to_string).collect(),
            kept: 1,
            generation_prompt: "<a>".into(),
            tools_bytes: 0,
        }
    }

    #[test]
    fn each_model_publishes_its_own_cache_until_it_is_dropped() {
        let shared = SharedCaches::default();
        let (mut a, mut b) = (KvCache::default(), KvCache::default());
        a.share_tokens(Publisher::new(shared.clone(), 0));
        b.share_tokens(Publisher::new(shared.clone(), 2));
        a.cleared();
        let plan = a.plan(&conv(&["<s>", "<u>hi</u>"]), 4096, 100).unwrap();
        a.finished(plan, "hello", 12);
        b.invalidate();
        b.publish_snapshots(3);
        let figures = |tokens, snapshots| CacheFigures { tokens, snapshots };
        assert_eq!(
            shared.by_model().into_iter().collect::<Vec<_>>(),
            [(0, figures(Some(12), 0)), (2, figures(None, 3))]
        );
        drop(a);
        assert_eq!(shared.by_model().keys().collect::<Vec<_>>(), [&2]);
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
    fn an_edited_history_is_sent_whole_without_history_for_prefix_reuse() {
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
        assert!(!other.clear && !other.keep_history, "{other:?}");
        assert_eq!(other.send_from, 0);
    }

    #[test]
    fn another_conversation_from_its_first_message_on_resets() {
        let mut c = KvCache::default();
        c.cleared();
        let first = c.plan(&conv(&["<s>", "<u>hi</u>"]), 4096, 100).unwrap();
        c.finished(first, "hello", 12);
        let other = c.plan(&conv(&["<S>", "<u>hi</u>"]), 4096, 100).unwrap();
        assert!(other.clear && other.keep_history, "{other:?}");
        assert_eq!(other.send_from, 0);
    }

    #[test]
    fn after_a_run_without_history_the_cache_holds_the_prompt_alone() {
        let mut c = KvCache::default();
        c.cleared();
        let first = c.plan(&conv(&["<s>", "<u>hi</u>"]), 4096, 100).unwrap();
        c.finished(first, "<think>x</think>hello", 12);
        // The template dropped the reasoning: the record does not match past the first turn.
        let pieces = ["<s>", "<u>hi</u>", "<a>hello</a>", "<u>more</u>"];
        let second = c.plan(&conv(&pieces), 4096, 100).unwrap();
        assert!(!second.keep_history && !second.clear);
        c.finished(second, "<think>y</think>fine", 20);
        let mut next = pieces.to_vec();
        next.extend(["<a>fine</a>", "<u>end</u>"]);
        let third = c.plan(&conv(&next), 4096, 100).unwrap();
        assert!(third.keep_history && !third.clear, "{third:?}");
        assert_eq!(third.input(), "fine</a><u>end</u><a>");
    }

    #[test]
    fn old_turns_are_dropped_to_fit_and_the_newest_never_is() {
        let mut c = KvCache::default();
        c.cleared();
        c.calibrate(400, 100); // 4 bytes per token
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
    fn what_cannot_be_left_out_must_fit_with_the_reserve_and_its_tools_are_counted_apart() {
        let mut c = KvCache::default();
        c.cleared();
        c.calibrate(400, 100); // 4 bytes per token
        let system = format!("<s>{}", "t".repeat(397)); // 100 tokens, all tool definitions
        let newest = "q".repeat(200); // 50 tokens
        let mut conversation = conv(&[system.as_str(), newest.as_str()]);
        conversation.tools_bytes = 397;
        // 151 tokens in all (the generation prompt's 3 bytes round up): fits 160 alone, not
        // with 20 for the answer.
        assert!(c.plan(&conversation, 171, 20).is_ok());
        let e = c.plan(&conversation, 170, 20).unwrap_err();
        assert_eq!(
            e,
            EngineError::PromptTooLong {
                estimated_tokens: 151,
                prompt_bytes: 603,
                max_context: 170,
                by_runtime: false,
                tools_tokens: 100,
                reserve: 20,
            }
        );
    }

    #[test]
    fn a_full_cache_resets_instead_of_overflowing() {
        let mut c = KvCache::default();
        c.cleared();
        for _ in 0..8 {
            c.calibrate(100, 100); // 1 byte per token
        }
        let first = c.plan(&conv(&["<s>", "<u>hi</u>"]), 100, 10).unwrap();
        c.finished(first, "hello", 95);
        let next = c
            .plan(
                &conv(&["<s>", "<u>hi</u>", "<a>hello</a>", "<u>more</u>"]),
                100,
                10,
            )
            .unwrap();
        assert!(
            next.send_from == 0 && !next.keep_history,
            "95 cached tokens + the delta do not fit: sent whole, which fits"
        );
    }

    #[test]
    fn one_request_of_odd_markers_does_not_change_what_is_dropped_next() {
        let mut c = KvCache::default();
        c.cleared();
        c.calibrate(6400, 100); // 64 bytes a token
        let long = "x".repeat(400); // 100 tokens at the usual 4 bytes
        let pieces = ["<s>", long.as_str(), long.as_str(), "<u>q</u>"];
        let p = c.plan(&conv(&pieces), 150, 20).unwrap();
        assert_eq!(p.dropped_turns, 1, "as if the odd request had not come");
        assert_eq!(c.estimate_tokens(500), 125);
    }

    #[test]
    fn dropping_turns_is_linear_in_the_conversation() {
        // 32k turns of which nearly all must go: the text is put together once, so the work
        // is the conversation's bytes, not turns x bytes. Counted through the allocator's view:
        // the plan's text is allocated once, at its final size.
        let mut c = KvCache::default();
        c.cleared();
        let turn = "t".repeat(64);
        let mut pieces = vec!["<s>"];
        pieces.extend(std::iter::repeat_n(turn.as_str(), 32_000));
        let p = c.plan(&conv(&pieces), 1000, 100).unwrap();
        assert!(p.dropped_turns > 31_900, "{}", p.dropped_turns);
        assert_eq!(p.full.capacity(), p.full.len(), "put together once");
    }
}
