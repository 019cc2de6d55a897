//! RFC 3339 timestamps in UTC (`2024-06-04T14:38:31.837530123Z`), which Ollama clients expect in
//! `created_at`, `modified_at` and `expires_at`. Computed here rather than with a date crate:
//! one is written per streamed token.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// A time written as RFC 3339; times before 1970 are written as the epoch. Serializes as a
/// string without building one (one per streamed token).
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
        let (year, month, day) = civil_date(days);
        let rem = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            since.subsec_nanos()
        )
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01. Works in 400-year
/// eras (146,097 days each) counted from 0000-03-01, so that leap days fall at the end of a year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0 = March ... 11 = February
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are small and positive by construction.
    let small = |n: i64| u32::try_from(n).unwrap_or_default();
    (year, small(month), small(day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(at(1_709_251_199, 0), "2024-02-29T23:59:59.000000000Z");
        assert_eq!(
            at(1_717_511_911, 837_530_123),
            "2024-06-04T14:38:31.837530123Z"
        );
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        let mut prev = civil_date(-1);
        for d in 0..200 * 366 {
            let cur = civil_date(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                cur == next_day || cur == next_month || cur == next_year,
                "{prev:?} -> {cur:?}"
            );
            prev = cur;
        }
    }

    #[test]
    fn before_the_epoch_is_the_epoch() {
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00.000000000Z");
    }
}
