//! Token rates kept from the token events the event loop already handles: no thread, no timer.

use std::time::{Duration, Instant};

use crate::engine::JobId;

/// The window of [`TokenRate::per_second`], in one-second slots.
const WINDOW: usize = 60;

/// Tokens generated per second over the last minute.
#[derive(Clone, Debug)]
pub struct TokenRate {
    /// Slot times are whole seconds since this instant (the first token).
    origin: Option<Instant>,
    /// `(second, tokens)` at index `second % WINDOW`; a slot of an older second is stale.
    slots: [(u64, u64); WINDOW],
}

impl Default for TokenRate {
    fn default() -> TokenRate {
        TokenRate {
            origin: None,
            slots: [(0, 0); WINDOW],
        }
    }
}

impl TokenRate {
    pub fn add(&mut self, now: Instant, tokens: u32) {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs();
        let slot = &mut self.slots[(second % WINDOW as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += u64::from(tokens);
    }

    /// Tokens in the current second and the 59 before it, divided by 60.
    #[allow(clippy::cast_precision_loss)] // token counts far below 2^52
    pub fn per_second(&self, now: Instant) -> f64 {
        let Some(origin) = self.origin else {
            return 0.0;
        };
        let second = now.saturating_duration_since(origin).as_secs();
        let tokens: u64 = self
            .slots
            .iter()
            .filter(|(s, _)| *s <= second && second - *s < WINDOW as u64)
            .map(|(_, n)| n)
            .sum();
        tokens as f64 / WINDOW as f64
    }
}

/// The generation running now, as its events show it.
#[derive(Clone, Copy, Debug)]
pub struct Current {
    pub id: JobId,
    /// Tokens generated so far.
    pub tokens: u64,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

impl Current {
    pub fn started(id: JobId) -> Current {
        Current {
            id,
            tokens: 0,
            first_token: None,
            last_token: None,
        }
    }

    pub fn text(&mut self, now: Instant, tokens: u32) {
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        self.tokens += u64::from(tokens);
    }

    /// The decode rate: tokens after the first over the time they took; `None` before there
    /// are two.
    #[allow(clippy::cast_precision_loss)] // token counts far below 2^52
    pub fn per_second(&self) -> Option<f64> {
        let span = self
            .last_token?
            .saturating_duration_since(self.first_token?);
        (span > Duration::ZERO && self.tokens > 1)
            .then(|| (self.tokens - 1) as f64 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_last_minute_of_tokens_over_sixty_seconds() {
        let t0 = Instant::now();
        let mut r = TokenRate::default();
        assert_eq!(r.per_second(t0), 0.0);
        r.add(t0, 60);
        r.add(t0 + Duration::from_millis(30_500), 120);
        assert_eq!(r.per_second(t0 + Duration::from_secs(31)), 3.0);
        // The first second's tokens leave the window 60 s later; the second's stay.
        assert_eq!(r.per_second(t0 + Duration::from_secs(60)), 2.0);
        assert_eq!(r.per_second(t0 + Duration::from_secs(91)), 0.0);
        // A slot reused a minute later starts from zero.
        r.add(t0 + Duration::from_secs(120), 6);
        assert_eq!(r.per_second(t0 + Duration::from_secs(120)), 0.1);
    }

    #[test]
    fn the_current_rate_counts_from_the_first_token() {
        let t0 = Instant::now();
        let mut c = Current::started(7);
        assert_eq!(c.per_second(), None);
        c.text(t0, 1);
        assert_eq!(c.per_second(), None);
        c.text(t0 + Duration::from_millis(250), 2);
        c.text(t0 + Duration::from_millis(500), 2);
        assert_eq!((c.tokens, c.per_second()), (5, Some(8.0)));
    }
}
