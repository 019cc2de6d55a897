//! How many bytes of prompt make one token, learnt from the runtime's prefill counts (its API
//! has no tokenizer). One request must not decide it for everyone: a prompt made of odd markers
//! (64 bytes to a token) or of rare bytes (1 to a token) is one sample among the last few, each
//! clamped to what tokenizers produce, and the typical ratio is their median with the prior
//! counted twice, so a single request, however odd, does not move it at all (two move it
//! halfway, three decide it while the window holds few samples).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Until a run has calibrated it: a typical BPE tokenizer on English text. It stays among the
/// values the median is taken over, twice.
const PRIOR: f64 = 4.0;

/// No tokenizer makes a token of less than one byte; more than 8 bytes to a token is beyond
/// English text on any real vocabulary (long markers are a handful per prompt).
const MIN: f64 = 1.0;
const MAX: f64 = 8.0;

/// Samples kept: the most recent runs.
const WINDOW: usize = 15;

/// Runs that prefill fewer tokens say too little about the ratio: a few markers and newlines,
/// or mostly the runtime's own template around a short prompt.
const MIN_SAMPLE_TOKENS: u32 = 32;

#[derive(Debug, Default)]
pub(super) struct BytesPerToken {
    samples: VecDeque<f64>,
    /// The typical ratio, published for the event loop's side.
    shared: SharedRatio,
}

/// The typical ratio as the inference thread last learnt it, readable from the event loop:
/// the API plans what fits the context (the tool budget) before a job reaches the worker, with
/// the same ratio the worker's plan then uses.
#[derive(Clone, Debug)]
pub struct SharedRatio(Arc<AtomicU64>);

impl Default for SharedRatio {
    fn default() -> SharedRatio {
        SharedRatio(Arc::new(AtomicU64::new(PRIOR.to_bits())))
    }
}

impl SharedRatio {
    /// Bytes per token.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, ratio: f64) {
        self.0.store(ratio.to_bits(), Ordering::Relaxed);
    }
}

impl BytesPerToken {
    /// Learns from a run that prefilled `bytes` as `tokens`.
    #[allow(clippy::cast_precision_loss)] // a ratio of byte counts far below 2^52
    pub fn learn(&mut self, bytes: usize, tokens: u32) {
        if tokens < MIN_SAMPLE_TOKENS || bytes == 0 {
            return;
        }
        let ratio = (bytes as f64 / f64::from(tokens)).clamp(MIN, MAX);
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(ratio);
        self.shared.set(self.typical());
    }

    /// Learns into `shared` from now on (the engine's handle, given to the event loop).
    pub fn share(&mut self, shared: SharedRatio) {
        shared.set(self.typical());
        self.shared = shared;
    }

    /// The ratio to plan with: the median of the recent samples and the prior (twice); of an
    /// even number of values, the mean of the middle two.
    pub fn typical(&self) -> f64 {
        let mut all: Vec<f64> = self.samples.iter().copied().collect();
        all.extend([PRIOR, PRIOR]);
        all.sort_by(f64::total_cmp);
        let mid = all.len() / 2;
        if all.len() % 2 == 1 {
            all[mid]
        } else {
            (all[mid - 1] + all[mid]) / 2.0
        }
    }
}

/// The most tokens `bytes` of prompt can be: one a byte. A prompt the runtime refused may have
/// been too long only if this exceeds the context.
pub(super) fn most_tokens(bytes: usize) -> u64 {
    tokens(bytes, MIN)
}

/// Tokens for `bytes` at `ratio` bytes per token, rounded up.
// Byte counts far below 2^52 divided by at least 1: never negative, and a float's rounding
// does not matter.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn tokens(bytes: usize, ratio: f64) -> u64 {
    (bytes as f64 / ratio.max(MIN)).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_a_run_is_seen_the_prior_holds() {
        let r = BytesPerToken::default();
        assert_eq!(r.typical(), PRIOR);
    }

    #[test]
    fn one_request_of_odd_markers_does_not_move_the_typical_ratio() {
        let mut r = BytesPerToken::default();
        r.learn(6400, 100); // 64 bytes a token: a prompt of `<|...|>` markers
        assert_eq!(r.typical(), PRIOR);
        let mut r = BytesPerToken::default();
        r.learn(100, 100); // 1 byte a token: punctuation
        assert_eq!(r.typical(), PRIOR);
        r.learn(300, 100); // 3 bytes a token, twice more: real traffic decides
        r.learn(300, 100);
        assert_eq!(r.typical(), 3.0);
    }

    #[test]
    fn samples_are_clamped_and_the_window_forgets() {
        let mut r = BytesPerToken::default();
        for _ in 0..WINDOW {
            r.learn(6400, 100);
        }
        assert_eq!(r.typical(), MAX, "even a flood stays within the clamp");
        for _ in 0..WINDOW {
            r.learn(50, 100); // half a byte a token cannot be: clamped
        }
        assert_eq!(r.typical(), MIN);
        for _ in 0..WINDOW {
            r.learn(300, 100);
        }
        assert_eq!(r.typical(), 3.0, "old samples are gone");
    }

    #[test]
    fn the_shared_ratio_follows_what_is_learnt() {
        let shared = SharedRatio::default();
        assert_eq!(shared.get(), PRIOR);
        let mut r = BytesPerToken::default();
        r.share(shared.clone());
        for _ in 0..3 {
            r.learn(300, 100);
        }
        assert_eq!(shared.get(), 3.0);
    }

    #[test]
    fn short_runs_teach_nothing() {
        let mut r = BytesPerToken::default();
        r.learn(200, 31);
        assert_eq!(r.typical(), PRIOR);
        assert_eq!((tokens(10, 4.0), most_tokens(10)), (3, 10));
    }
}
