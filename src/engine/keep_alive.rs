//! Ollama's `keep_alive`: how long the model stays loaded after a request, counted from the
//! end of its answer.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unloaded once idle this long after the last answer (zero: right after it).
    For(Duration),
    /// Never unloaded for being idle (a negative value).
    Forever,
}

impl Default for KeepAlive {
    /// Ollama's default.
    fn default() -> KeepAlive {
        KeepAlive::For(Duration::from_secs(5 * 60))
    }
}

impl KeepAlive {
    /// A duration as Ollama takes it: `"5m"`, `"30s"`, `"1h"`, `"1h30m"`, `"250ms"`, a bare
    /// number of seconds (`"300"`, `"0"`, `"-1"`); a negative value keeps the model loaded.
    pub fn parse(raw: &str) -> Result<KeepAlive, String> {
        let s = raw.trim();
        let expected = || format!("'{raw}' is not a duration (e.g. 5m, 30s, 1h, 0, -1)");
        if let Ok(n) = s.parse::<f64>() {
            return KeepAlive::seconds(n).ok_or_else(expected);
        }
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if body.is_empty() {
            return Err(expected());
        }
        let mut total = 0.0_f64;
        let mut rest = body;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(expected)?;
            let value: f64 = rest[..digits].parse().map_err(|_| expected())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                _ => return Err(expected()),
            };
            total += value * scale;
            rest = &rest[unit_len..];
        }
        if negative {
            return Ok(KeepAlive::Forever);
        }
        KeepAlive::seconds(total).ok_or_else(expected)
    }

    /// A number of seconds; negative: forever; `None` for NaN or a value too large.
    pub fn seconds(n: f64) -> Option<KeepAlive> {
        if n < 0.0 {
            return Some(KeepAlive::Forever);
        }
        Duration::try_from_secs_f64(n).ok().map(KeepAlive::For)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_ollama_takes_them() {
        let secs = |s| Ok(KeepAlive::For(Duration::from_secs(s)));
        assert_eq!(KeepAlive::parse("5m"), secs(300));
        assert_eq!(KeepAlive::parse("30s"), secs(30));
        assert_eq!(KeepAlive::parse("1h"), secs(3600));
        assert_eq!(KeepAlive::parse("1h30m"), secs(5400));
        assert_eq!(KeepAlive::parse("300"), secs(300));
        assert_eq!(KeepAlive::parse("0"), secs(0));
        assert_eq!(
            KeepAlive::parse("250ms"),
            Ok(KeepAlive::For(Duration::from_millis(250)))
        );
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("-5m"), Ok(KeepAlive::Forever));
        for bad in ["", "5 minutes", "m", "5x", "-", "1e999"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(KeepAlive::seconds(-0.5), Some(KeepAlive::Forever));
        assert_eq!(KeepAlive::seconds(f64::NAN), None);
    }
}
