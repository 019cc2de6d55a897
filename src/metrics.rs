//! Counters the event loop keeps, rendered as Prometheus text by `api::metrics`.

use std::collections::BTreeMap;

use crate::engine::{Finish, FinishReason};

/// Bucket upper bounds in seconds, shared by the prefill and decode histograms.
pub const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Cumulative counts per bucket of `BUCKETS`.
    pub buckets: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        for (bound, n) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Responses by (endpoint, HTTP status).
    pub requests: BTreeMap<(&'static str, u16), u64>,
    pub tokens_prefilled: u64,
    pub tokens_generated: u64,
    pub prefill_seconds: Histogram,
    pub decode_seconds: Histogram,
    /// Generations ended by an abort: client gone, request timeout, shutdown.
    pub aborts: u64,
    pub runtime_errors: u64,
    pub queue_rejections: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    /// Accepted connections since closed: accepted - closed = open, so a leak shows.
    pub connections_closed: u64,
    /// Generations handed to the engine, and those the event loop is done with (answered,
    /// failed, or their client left): the difference is what is in flight.
    pub generations_submitted: u64,
    pub generations_ended: u64,
}

impl Metrics {
    pub fn record_response(&mut self, endpoint: &'static str, status: u16) {
        *self.requests.entry((endpoint, status)).or_default() += 1;
    }

    pub fn record_finish(&mut self, finish: &Finish) {
        if matches!(finish.reason, FinishReason::Aborted | FinishReason::Timeout) {
            self.aborts += 1;
        }
        match finish.perf {
            Some(p) => {
                self.tokens_prefilled += u64::from(p.prefill_tokens);
                self.tokens_generated += u64::from(p.generate_tokens);
                self.prefill_seconds.observe(f64::from(p.prefill_ms) / 1e3);
                self.decode_seconds.observe(f64::from(p.generate_ms) / 1e3);
            }
            None => self.tokens_generated += u64::from(finish.generated_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.07);
        h.observe(3.0);
        assert_eq!(h.buckets[0], 0);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[6], 2);
        assert_eq!(h.count, 2);
        assert!((h.sum - 3.07).abs() < 1e-9);
    }
}
