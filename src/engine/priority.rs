//! Interactive requests first: a person waits on a stream token by token, while a request that
//! is answered in one piece (Open WebUI's title, follow-up and tag requests) can wait. The
//! engine serves interactive jobs ahead of queued background ones and takes the NPU back from
//! a background run that has not produced any output yet (see `queue.rs` and `Engine::submit`).

use std::fmt;
use std::str::FromStr;

/// How urgent a job is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// Someone watches it arrive: served first.
    #[default]
    Interactive,
    /// Answered in one piece: yields to interactive jobs, a bounded number of times.
    Background,
}

/// Which requests are background (`background` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackgroundPolicy {
    /// Requests that are not streamed, embeddings included.
    #[default]
    NonStreamed,
    /// None: every request is served in arrival order.
    None,
}

impl BackgroundPolicy {
    /// The priority of a request that is (or is not) streamed.
    pub fn classify(self, streamed: bool) -> Priority {
        match self {
            BackgroundPolicy::NonStreamed if !streamed => Priority::Background,
            BackgroundPolicy::NonStreamed | BackgroundPolicy::None => Priority::Interactive,
        }
    }
}

impl FromStr for BackgroundPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "non-streamed" => Ok(BackgroundPolicy::NonStreamed),
            "none" => Ok(BackgroundPolicy::None),
            _ => Err("one of non-streamed, none".to_owned()),
        }
    }
}

impl fmt::Display for BackgroundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackgroundPolicy::NonStreamed => "non-streamed",
            BackgroundPolicy::None => "none",
        })
    }
}

/// Whether a request that does not say thinks (`think-default` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThinkDefault {
    /// As the chat template does when not told (Qwen3 thinks; the runtime's own template, in
    /// `runtime` mode, is asked not to).
    #[default]
    Auto,
    On,
    Off,
    /// Interactive requests think, background ones (titles, tags) do not; with
    /// `BackgroundPolicy::None` every request is interactive.
    Interactive,
}

impl ThinkDefault {
    /// The thinking switch for a request that asked for `requested` (`None`: did not say).
    /// `None` out: leave it to the template.
    pub fn resolve(self, requested: Option<bool>, priority: Priority) -> Option<bool> {
        requested.or(match self {
            ThinkDefault::Auto => None,
            ThinkDefault::On => Some(true),
            ThinkDefault::Off => Some(false),
            ThinkDefault::Interactive => Some(priority == Priority::Interactive),
        })
    }
}

impl FromStr for ThinkDefault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ThinkDefault::Auto),
            "on" => Ok(ThinkDefault::On),
            "off" => Ok(ThinkDefault::Off),
            "interactive" => Ok(ThinkDefault::Interactive),
            _ => Err("one of auto, on, off, interactive".to_owned()),
        }
    }
}

impl fmt::Display for ThinkDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThinkDefault::Auto => "auto",
            ThinkDefault::On => "on",
            ThinkDefault::Off => "off",
            ThinkDefault::Interactive => "interactive",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unstreamed_requests_are_background_and_only_by_default() {
        let p = BackgroundPolicy::NonStreamed;
        assert_eq!(p.classify(true), Priority::Interactive);
        assert_eq!(p.classify(false), Priority::Background);
        assert_eq!(
            BackgroundPolicy::None.classify(false),
            Priority::Interactive
        );
        assert_eq!(BackgroundPolicy::default(), p);
    }

    #[test]
    fn a_request_that_says_wins_over_every_default() {
        for d in [
            ThinkDefault::Auto,
            ThinkDefault::On,
            ThinkDefault::Off,
            ThinkDefault::Interactive,
        ] {
            for p in [Priority::Interactive, Priority::Background] {
                assert_eq!(d.resolve(Some(true), p), Some(true));
                assert_eq!(d.resolve(Some(false), p), Some(false));
            }
        }
    }

    #[test]
    fn the_default_decides_for_a_request_that_does_not_say() {
        let (i, b) = (Priority::Interactive, Priority::Background);
        assert_eq!(ThinkDefault::Auto.resolve(None, i), None);
        assert_eq!(ThinkDefault::On.resolve(None, b), Some(true));
        assert_eq!(ThinkDefault::Off.resolve(None, i), Some(false));
        assert_eq!(ThinkDefault::Interactive.resolve(None, i), Some(true));
        assert_eq!(ThinkDefault::Interactive.resolve(None, b), Some(false));
    }

    #[test]
    fn values_parse_and_print_back() {
        for s in ["auto", "on", "off", "interactive"] {
            assert_eq!(s.parse::<ThinkDefault>().unwrap().to_string(), s);
        }
        for s in ["non-streamed", "none"] {
            assert_eq!(s.parse::<BackgroundPolicy>().unwrap().to_string(), s);
        }
        assert!("yes".parse::<ThinkDefault>().is_err());
        assert!("streamed".parse::<BackgroundPolicy>().is_err());
    }
}
