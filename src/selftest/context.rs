//! `keep_history` runs past the context: the runtime's strings say it deletes a span of the KV
//! cache and goes on ("context shift"); a runtime may instead fail the run. rkllmd copes with
//! both (it starts the cache over before it is full, and after each run compares the cache's
//! size with what it expects), as long as the size it reads stays within the context: a cache
//! that claims more would hide a shift from that comparison.
//!
//! A handle with a small context, filled by a few short runs under the empty template.

use super::session::{describe_end, Session};
use super::watchdog::Watchdog;
use crate::config::Config;
use crate::doctor::Finding;
use crate::runtime::Flow;

const NAME: &str = "context-shift";
/// Small enough to fill in a few short runs, well above one run.
pub const CONTEXT: u32 = 64;
/// One run's prompt: words that are one token each in most vocabularies.
const PROMPT: &str = " apple river stone cloud green field under blue sky";
const NEW_TOKENS: u32 = 4;
/// Enough runs of the prompt (about 13 tokens each with the answer) to pass the context twice.
const MAX_RUNS: usize = 10;
/// Tokens a run may leave out of the cache without it being a shift (as in the history check).
const SLACK: u32 = 2;

pub fn check(cfg: &Config, watchdog: &Watchdog) -> Finding {
    let mut s = match Session::open_sized(cfg, watchdog, NEW_TOKENS, CONTEXT, true) {
        Ok(s) => s,
        Err(e) => return Finding::unknown(NAME, format!("no handle: {e}")),
    };
    if let Err(e) = s.rt.clear_kv_cache(false) {
        return Finding::unknown(NAME, e.to_string());
    }
    let mut runs = Vec::new();
    for _ in 0..MAX_RUNS {
        let before = match s.rt.kv_cache_size() {
            Ok(n) => n,
            Err(e) => return Finding::unknown(NAME, e.to_string()),
        };
        let o = s.run(PROMPT, true, NEW_TOKENS, &mut |_| Flow::Continue);
        let ran = match o.perf() {
            Some(perf) => match s.rt.kv_cache_size() {
                Ok(after) => Ok(Run {
                    before,
                    prefilled: perf.prefill_tokens,
                    generated: perf.generate_tokens,
                    after,
                }),
                Err(e) => return Finding::unknown(NAME, e.to_string()),
            },
            None => Err(describe_end(&o.end)),
        };
        let done = ran.is_err() || ran.as_ref().is_ok_and(|r| r.shifted() || r.after > CONTEXT);
        runs.push(ran);
        if done {
            break;
        }
    }
    judge(&runs)
}

/// One `keep_history` run that finished: the cache's size before and after, and what the run
/// reported.
#[derive(Clone, Copy, Debug)]
struct Run {
    before: u32,
    prefilled: u32,
    generated: u32,
    after: u32,
}

impl Run {
    fn expected(self) -> u32 {
        self.before + self.prefilled + self.generated
    }

    fn shifted(self) -> bool {
        self.after + SLACK < self.expected()
    }
}

/// The runs in order, the last one the one that showed what happens (or `MAX_RUNS` that did not).
fn judge(runs: &[Result<Run, String>]) -> Finding {
    let Some(first) = runs.first() else {
        return Finding::unknown(NAME, "no run");
    };
    let one_run = match first {
        Ok(r) => r.prefilled + r.generated,
        Err(why) => return Finding::unknown(NAME, format!("the first run: {why}")),
    };
    let past = format!("with keep_history past max_context_len {CONTEXT}");
    match runs.last() {
        Some(Ok(r)) if r.after > CONTEXT => Finding::fail(
            NAME,
            format!(
                "{past}: the KV cache reports {} tokens ({} before, {} prefilled, {} generated), more than the context holds",
                r.after, r.before, r.prefilled, r.generated
            ),
            "rkllmd compares the cache's size after each run with what it expects and cannot \
             see a context shift this way; set kv-cache-reuse = false and send us this report",
        ),
        Some(Ok(r)) if r.shifted() && r.expected() <= CONTEXT => Finding::unknown(
            NAME,
            format!(
                "the KV cache held {} tokens after a run that fits the context ({} before, {} prefilled, {} generated): keep_history does not accumulate (see the history line)",
                r.after, r.before, r.prefilled, r.generated
            ),
        ),
        Some(Ok(r)) if r.shifted() => Finding::ok(
            NAME,
            format!(
                "{past}: the runtime deleted {} tokens and went on (KV cache {} tokens, a run of {} prefilled + {} generated, then {}); rkllmd sees the size differ and starts the cache over",
                r.expected() - r.after,
                r.before,
                r.prefilled,
                r.generated,
                r.after
            ),
        ),
        Some(Ok(r)) => Finding::unknown(
            NAME,
            format!(
                "{} runs of {one_run} tokens left {} in a cache of {CONTEXT} without a shift or a failure",
                runs.len(),
                r.after
            ),
        ),
        Some(Err(why)) => {
            let before = runs
                .iter()
                .rev()
                .find_map(|r| r.as_ref().ok())
                .map_or(0, |r| r.after);
            if before + one_run > CONTEXT {
                Finding::ok(
                    NAME,
                    format!(
                        "{past}: the run that did not fit failed instead ({why}; KV cache {before} tokens, a run of about {one_run}); rkllmd starts the cache over before it is full"
                    ),
                )
            } else {
                Finding::unknown(
                    NAME,
                    format!("a run failed with {before} of {CONTEXT} tokens in the cache: {why}"),
                )
            }
        }
        None => Finding::unknown(NAME, "no run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn run(before: u32, prefilled: u32, generated: u32, after: u32) -> Result<Run, String> {
        Ok(Run {
            before,
            prefilled,
            generated,
            after,
        })
    }

    #[test]
    fn a_shift_is_reported_with_what_it_deleted() {
        let f = judge(&[
            run(0, 9, 4, 13),
            run(13, 9, 4, 26),
            run(26, 9, 4, 39),
            run(39, 9, 4, 52),
            run(52, 9, 4, 39),
        ]);
        assert_eq!(f.status, Status::Ok);
        assert!(
            f.detail.contains(": the runtime deleted 26 tokens and went on (KV cache 52 tokens, a run of 9 prefilled + 4 generated, then 39)"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn a_run_that_does_not_fit_and_fails_is_the_other_behaviour() {
        let f = judge(&[
            run(0, 9, 4, 13),
            run(13, 9, 4, 26),
            run(26, 9, 4, 39),
            run(39, 9, 4, 52),
            Err("the run failed: boom".into()),
        ]);
        assert_eq!(f.status, Status::Ok);
        assert!(
            f.detail.contains(
                "failed instead (the run failed: boom; KV cache 52 tokens, a run of about 13)"
            ),
            "{}",
            f.detail
        );
        // A failure while the run would still fit says nothing about the context.
        let f = judge(&[run(0, 9, 4, 13), Err("boom".into())]);
        assert_eq!(f.status, Status::Unknown);
        assert_eq!(judge(&[Err("boom".into())]).status, Status::Unknown);
    }

    #[test]
    fn a_cache_that_loses_tokens_within_the_context_is_no_shift() {
        let f = judge(&[run(0, 9, 4, 9)]);
        assert_eq!(f.status, Status::Unknown);
        assert!(f.detail.contains("does not accumulate"), "{}", f.detail);
    }

    #[test]
    fn a_cache_that_claims_more_than_the_context_fails() {
        let f = judge(&[run(0, 9, 4, 13), run(60, 9, 4, 73)]);
        assert_eq!(f.status, Status::Fail);
    }

    #[test]
    fn a_run_or_two_short_of_the_expected_size_is_no_shift() {
        assert!(!run(13, 9, 4, 25).unwrap().shifted());
        assert!(run(13, 9, 4, 20).unwrap().shifted());
        let f = judge(&[run(0, 1, 1, 2), run(2, 1, 1, 4)]);
        assert_eq!(f.status, Status::Unknown);
    }
}
