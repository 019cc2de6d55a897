//! Counters the event loop keeps, rendered as Prometheus text by `api::metrics`. Every count
//! is made through a method here, so what a number means is decided in one place.

mod rate;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::engine::{EngineError, Event, Finish, FinishReason, JobId, SnapshotUse};
pub use rate::{Current, TokenRate};

/// Bucket upper bounds in seconds, shared by the prefill and decode histograms.
pub const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Cumulative counts per bucket of `BUCKETS`.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, n) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Cumulative counts per bucket of `BUCKETS`.
    pub fn buckets(&self) -> &[u64; BUCKETS.len()] {
        &self.buckets
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Responses by (endpoint, HTTP status).
    requests: BTreeMap<(&'static str, u16), u64>,
    tokens_prefilled: u64,
    tokens_generated: u64,
    prefill_seconds: Histogram,
    decode_seconds: Histogram,
    /// Generations ended by an abort: client gone, request timeout, shutdown.
    aborts: u64,
    runtime_errors: u64,
    queue_rejections: u64,
    /// Background runs aborted for an interactive request and queued again.
    preemptions: u64,
    connections_accepted: u64,
    connections_refused: u64,
    /// Accepted connections since closed: accepted - closed = open, so a leak shows.
    connections_closed: u64,
    /// Generations handed to the engine, and those the event loop is done with (answered,
    /// failed, or their client left): the difference is what is in flight.
    generations_submitted: u64,
    generations_ended: u64,
    /// Tokens generated, by the second they arrived.
    token_rate: TokenRate,
    /// The generation running now, from its `Started` to its end.
    current: Option<Current>,
    /// When each generation still without its first token was submitted (at most the queue
    /// and the running one).
    awaiting_first_token: BTreeMap<JobId, Instant>,
    /// From submission (queue wait included) to the first token, as a client waits.
    ttft_seconds: Histogram,
    /// Loads and unloads, by model name.
    models: BTreeMap<String, ModelLoads>,
    /// Tools left out of requests to fit the tool budget, and the requests that had some.
    tools_left_out: u64,
    requests_with_tools_left_out: u64,
    /// KV-cache snapshots saved, and restored for a conversation that came back.
    kv_snapshots_saved: u64,
    kv_snapshots_restored: u64,
}

/// What one model's loads came to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelLoads {
    pub loads: u64,
    /// Loads that failed (not counted in `loads`).
    pub load_failures: u64,
    pub unloads: u64,
    /// Time spent loading, failed loads included.
    pub load_seconds: f64,
}

impl Metrics {
    /// A response was sent (or, with 499, its client left before one could be).
    pub fn response(&mut self, endpoint: &'static str, status: u16) {
        *self.requests.entry((endpoint, status)).or_default() += 1;
    }

    /// Counts what an engine event says about the runtime: finishes and runtime failures, and
    /// the tokens generated (`now`: when the event was handled).
    pub fn engine_event(&mut self, event: &Event, now: Instant) {
        match event {
            Event::Started { id } => self.current = Some(Current::started(*id)),
            Event::Text { id, tokens, .. } => {
                self.token_rate.add(now, *tokens);
                if let Some(submitted) = self.awaiting_first_token.remove(id) {
                    let waited = now.saturating_duration_since(submitted);
                    self.ttft_seconds.observe(waited.as_secs_f64());
                }
                if let Some(c) = self.current.as_mut().filter(|c| c.id == *id) {
                    c.text(now, *tokens);
                }
            }
            _ => {}
        }
        if let Event::Finished { id, .. } | Event::Failed { id, .. } | Event::Preempted { id } =
            event
        {
            if self.current.is_some_and(|c| c.id == *id) {
                self.current = None;
            }
        }
        if let Event::Finished { id, .. } | Event::Failed { id, .. } = event {
            self.awaiting_first_token.remove(id);
        }
        match event {
            Event::Finished { finish, .. } => self.finish(finish),
            Event::Failed {
                error: EngineError::Runtime(_),
                ..
            } => self.runtime_errors += 1,
            // Cut short by the request timeout: an abort, answered as an error.
            Event::Failed {
                error: EngineError::Timeout { .. },
                ..
            } => self.aborts += 1,
            Event::Preempted { .. } => self.preemptions += 1,
            Event::Snapshot(SnapshotUse::Saved) => self.kv_snapshots_saved += 1,
            Event::Snapshot(SnapshotUse::Restored) => self.kv_snapshots_restored += 1,
            _ => {}
        }
    }

    fn finish(&mut self, finish: &Finish) {
        if finish.reason == FinishReason::Aborted {
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

    /// A model was loaded (`Ok`) or failed to load (`Err`) in `took`.
    pub fn model_load(&mut self, name: &str, took: std::time::Duration, ok: bool) {
        let m = self.models.entry(name.to_owned()).or_default();
        m.load_seconds += took.as_secs_f64();
        if ok {
            m.loads += 1;
        } else {
            m.load_failures += 1;
        }
    }

    pub fn model_unloaded(&mut self, name: &str) {
        self.models.entry(name.to_owned()).or_default().unloads += 1;
    }

    pub fn model_loads(&self) -> &BTreeMap<String, ModelLoads> {
        &self.models
    }

    /// A generation request went to the engine with `n` of its tools left out to fit the tool
    /// budget (0: all of them fitted, or it had none).
    pub fn tools_left_out(&mut self, n: usize) {
        if n > 0 {
            self.requests_with_tools_left_out += 1;
            self.tools_left_out += u64::try_from(n).unwrap_or(u64::MAX);
        }
    }

    /// Tools left out, summed over requests, and the requests that had some left out.
    pub fn tools_left_out_totals(&self) -> (u64, u64) {
        (self.tools_left_out, self.requests_with_tools_left_out)
    }

    /// KV-cache snapshots saved, and restored.
    pub fn kv_snapshots(&self) -> (u64, u64) {
        (self.kv_snapshots_saved, self.kv_snapshots_restored)
    }

    pub fn queue_rejected(&mut self) {
        self.queue_rejections += 1;
    }

    pub fn connection_accepted(&mut self) {
        self.connections_accepted += 1;
    }

    /// Refused at accept time: over the connection limit, or credentials not allowed.
    pub fn connection_refused(&mut self) {
        self.connections_refused += 1;
    }

    /// An accepted connection is gone (refusals are not counted here).
    pub fn connection_closed(&mut self) {
        self.connections_closed += 1;
    }

    pub fn generation_submitted(&mut self, id: JobId, now: Instant) {
        self.generations_submitted += 1;
        self.awaiting_first_token.insert(id, now);
    }

    /// The event loop is done with generation `id` (answered, failed, or its client left).
    pub fn generation_ended(&mut self, id: JobId) {
        self.generations_ended += 1;
        self.awaiting_first_token.remove(&id);
    }

    /// Time to first token of the generations that had one.
    pub fn ttft_seconds(&self) -> &Histogram {
        &self.ttft_seconds
    }

    /// Responses by (endpoint, HTTP status).
    pub fn requests(&self) -> &BTreeMap<(&'static str, u16), u64> {
        &self.requests
    }

    pub fn tokens_prefilled(&self) -> u64 {
        self.tokens_prefilled
    }

    pub fn tokens_generated(&self) -> u64 {
        self.tokens_generated
    }

    pub fn prefill_seconds(&self) -> &Histogram {
        &self.prefill_seconds
    }

    pub fn decode_seconds(&self) -> &Histogram {
        &self.decode_seconds
    }

    pub fn aborts(&self) -> u64 {
        self.aborts
    }

    pub fn runtime_errors(&self) -> u64 {
        self.runtime_errors
    }

    pub fn queue_rejections(&self) -> u64 {
        self.queue_rejections
    }

    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted
    }

    pub fn connections_refused(&self) -> u64 {
        self.connections_refused
    }

    pub fn connections_closed(&self) -> u64 {
        self.connections_closed
    }

    pub fn generations_submitted(&self) -> u64 {
        self.generations_submitted
    }

    pub fn generations_ended(&self) -> u64 {
        self.generations_ended
    }

    /// Tokens generated per second over the last minute.
    pub fn tokens_per_second(&self, now: Instant) -> f64 {
        self.token_rate.per_second(now)
    }

    /// The generation running now, if any.
    pub fn current(&self) -> Option<&Current> {
        self.current.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn token_events_feed_the_rates_and_the_current_generation() {
        let t0 = Instant::now();
        let mut m = Metrics::default();
        m.generation_submitted(4, t0 - Duration::from_millis(300));
        m.engine_event(&Event::Started { id: 4 }, t0);
        for (ms, tokens) in [(0, 1), (100, 2), (200, 1)] {
            let text = Event::Text {
                id: 4,
                text: "x".into(),
                tokens,
            };
            m.engine_event(&text, t0 + Duration::from_millis(ms));
        }
        let c = m.current().copied().unwrap();
        assert_eq!((c.id, c.tokens, c.per_second()), (4, 4, Some(15.0)));
        assert_eq!(m.tokens_per_second(t0 + Duration::from_secs(1)), 4.0 / 60.0);
        // The queue wait counts: submitted 300 ms before the first token.
        assert_eq!((m.ttft_seconds().count(), m.ttft_seconds().sum()), (1, 0.3));
        let failed = Event::Failed {
            id: 4,
            error: EngineError::QueueFull { capacity: 1 },
        };
        m.engine_event(&failed, t0 + Duration::from_secs(1));
        assert!(m.current().is_none());
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.07);
        h.observe(3.0);
        assert_eq!(h.buckets()[0], 0);
        assert_eq!(h.buckets()[1], 1);
        assert_eq!(h.buckets()[6], 2);
        assert_eq!(h.count(), 2);
        assert!((h.sum() - 3.07).abs() < 1e-9);
    }

    #[test]
    fn responses_are_counted_by_endpoint_and_status() {
        let mut m = Metrics::default();
        m.response("/health", 200);
        m.response("/health", 200);
        m.response("other", 408);
        assert_eq!(m.requests().get(&("/health", 200)), Some(&2));
        assert_eq!(m.requests().get(&("other", 408)), Some(&1));
    }

    #[test]
    fn a_preemption_is_counted_and_is_no_abort() {
        let mut m = Metrics::default();
        m.engine_event(&Event::Preempted { id: 3 }, Instant::now());
        assert_eq!((m.preemptions(), m.aborts()), (1, 0));
    }

    #[test]
    fn tools_left_out_are_summed_and_their_requests_counted() {
        let mut m = Metrics::default();
        m.tools_left_out(3);
        m.tools_left_out(0);
        m.tools_left_out(2);
        assert_eq!(m.tools_left_out_totals(), (5, 2));
    }

    #[test]
    fn snapshot_events_are_counted() {
        let mut m = Metrics::default();
        let now = Instant::now();
        m.engine_event(&Event::Snapshot(SnapshotUse::Saved), now);
        m.engine_event(&Event::Snapshot(SnapshotUse::Saved), now);
        m.engine_event(&Event::Snapshot(SnapshotUse::Restored), now);
        assert_eq!(m.kv_snapshots(), (2, 1));
    }
}
