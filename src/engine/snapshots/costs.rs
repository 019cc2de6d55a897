//! Whether a snapshot of the KV cache pays: what saving and restoring one cost, measured on this
//! board, against what re-prefilling the conversation would cost, weighed by how often a saved
//! conversation has come back.
//!
//! A save is one extra run (the cached text sent whole without history, so the runtime reuses
//! all of it, then writes its prompt cache; its one token comes from that prefill, no decode
//! step); a restore is
//! `rkllm_load_prompt_cache` plus whatever the loaded cache failed to cover. Both are measured
//! on every use; a runtime on which a loaded cache does not shorten the prefill shows a restore
//! as costly as the prefill itself, and snapshots stop.

use std::time::Duration;

use crate::runtime::Perf;

/// Weight of a new measurement in the running averages.
const NEW: f64 = 0.25;

/// Before any conversation has come back: assume one in two does.
const PRIOR_RETURN_RATE: f64 = 0.5;

/// A snapshot must be expected to spare at least this much (us): below it the file, the extra
/// run and the risk of a runtime surprise are not worth it (a model whose prefill is nearly free
/// never gets snapshots).
const MIN_GAIN_US: f64 = 10_000.0;

#[derive(Debug, Default)]
pub(in crate::engine) struct Costs {
    /// Prefill time per token, from the runtime's own figures (`perf`).
    prefill_us: Option<f64>,
    /// A save run's time per cached token (the whole run, measured).
    save_us: Option<f64>,
    /// A restore's time per restored token, including tokens it failed to cover.
    restore_us: Option<f64>,
    saved: u32,
    restored: u32,
}

fn blend(avg: &mut Option<f64>, x: f64) {
    *avg = Some(match *avg {
        Some(old) => old * (1.0 - NEW) + x * NEW,
        None => x,
    });
}

impl Costs {
    /// Learns the prefill speed from a finished run. Short prefills say little (fixed costs
    /// dominate them).
    pub fn learn_run(&mut self, perf: &Perf) {
        if perf.prefill_tokens >= 8 && perf.prefill_ms > 0.0 {
            blend(
                &mut self.prefill_us,
                f64::from(perf.prefill_ms) * 1000.0 / f64::from(perf.prefill_tokens),
            );
        }
    }

    /// A save run of `tokens` cached tokens took `took`.
    pub fn learn_save(&mut self, tokens: u32, took: Duration) {
        self.saved = self.saved.saturating_add(1);
        blend(
            &mut self.save_us,
            took.as_secs_f64() * 1e6 / f64::from(tokens.max(1)),
        );
    }

    /// A restore of `tokens` tokens took `took` to load and left `uncovered` of them to prefill.
    pub fn learn_restore(&mut self, tokens: u32, took: Duration, uncovered: u32) {
        self.restored = self.restored.saturating_add(1);
        let extra = f64::from(uncovered) * self.prefill_us.unwrap_or(0.0);
        blend(
            &mut self.restore_us,
            (took.as_secs_f64() * 1e6 + extra) / f64::from(tokens.max(1)),
        );
    }

    /// How often a saved conversation came back, with one imagined save at the prior rate so
    /// that the first few do not swing it to 0 or 1.
    fn return_rate(&self) -> f64 {
        (f64::from(self.restored) + PRIOR_RETURN_RATE) / (f64::from(self.saved) + 1.0)
    }

    /// Whether saving a cache of `tokens` tokens is expected to save time: the prefill it
    /// spares, times the chance the conversation comes back, against the save (paid now) and
    /// the restore (paid when it comes back). Unknown prefill speed: no evidence that it pays.
    pub fn pays(&self, tokens: u32) -> bool {
        let Some(prefill) = self.prefill_us else {
            return false;
        };
        let n = f64::from(tokens);
        let rate = self.return_rate().min(1.0);
        let spared = n * prefill * rate;
        let save = n * self.save_us.unwrap_or(0.0);
        let restore = n * self.restore_us.unwrap_or(0.0) * rate;
        spared > save + restore + MIN_GAIN_US
    }

    /// For the log: the figures behind `pays`, in microseconds per token.
    pub fn describe(&self) -> String {
        let f = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
        format!(
            "prefill {} us/token, save {} us/token, restore {} us/token, {} of {} saved came \
             back",
            f(self.prefill_us),
            f(self.save_us),
            f(self.restore_us),
            self.restored,
            self.saved
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perf(prefill_ms: f32, prefill_tokens: u32, generate_ms: f32, generate_tokens: u32) -> Perf {
        Perf {
            prefill_ms,
            prefill_tokens,
            generate_ms,
            generate_tokens,
            memory_mb: 0.0,
        }
    }

    #[test]
    fn without_a_measured_prefill_nothing_pays() {
        assert!(!Costs::default().pays(1000));
    }

    #[test]
    fn a_long_conversation_at_board_speed_pays_and_a_short_one_does_not() {
        let mut c = Costs::default();
        // Qwen2.5-1.5B on RK3588: 2.95 ms a prefilled token.
        c.learn_run(&perf(377.6, 128, 5988.0, 100));
        assert!(c.pays(200), "{}", c.describe());
        assert!(
            !c.pays(5),
            "5 tokens' prefill at half odds spare too little"
        );
        // A save measured at 2 ms a token (a slow card, not a tmpfs), and it did not come back:
        // no size pays.
        c.learn_save(20, Duration::from_millis(40));
        assert!(!c.pays(2000), "{}", c.describe());
    }

    #[test]
    fn a_free_prefill_never_pays() {
        let mut c = Costs::default();
        c.learn_run(&perf(0.001, 128, 1.0, 100));
        assert!(!c.pays(2000));
    }

    #[test]
    fn a_runtime_whose_loaded_cache_does_not_cover_the_prompt_stops_snapshots() {
        let mut c = Costs::default();
        c.learn_run(&perf(377.6, 128, 5988.0, 100));
        assert!(c.pays(300));
        for _ in 0..8 {
            c.learn_save(300, Duration::from_millis(65));
            // Loaded in 5 ms, yet every token prefilled again.
            c.learn_restore(300, Duration::from_millis(5), 300);
        }
        assert!(!c.pays(300), "{}", c.describe());
    }

    #[test]
    fn conversations_that_never_come_back_stop_snapshots() {
        let mut c = Costs::default();
        c.learn_run(&perf(377.6, 128, 5988.0, 100));
        assert!(c.pays(60));
        for _ in 0..20 {
            c.learn_save(60, Duration::from_millis(3));
        }
        assert!(!c.pays(60), "{}", c.describe());
    }
}
