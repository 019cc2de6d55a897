//! Partial reuse of the runtime's KV cache, and what a run took from it.
//!
//! A conversation that extends what the cache holds is sent as its new part with
//! `keep_history = 1` (the answer stays in the cache for the next turn). One that diverges (an
//! edited history, a regenerated answer, a thinking model whose reasoning the template drops
//! from past turns, a new conversation with the same system prompt) is sent whole with
//! `keep_history = 0`: the runtime reuses the longest common prefix with its cache and prefills
//! only the rest. Evidence: rknn-llm's CHANGELOG (v1.2.0, "automatic prompt cache reuse"), and
//! `rkllm.h` (both ABIs) saying a position range given to `rkllm_clear_kv_cache` "is only valid
//! when `keep_history` == 0 and the generation has been paused by returning 1 in the callback",
//! so the range cannot cut a diverging span out of a `keep_history` cache between runs.
//!
//! Token counts cover the whole prompt as clients expect (OpenAI's `prompt_tokens` with its
//! `cached_tokens`, Ollama's `prompt_eval_count` with its `prompt_eval_cached_count`).

use crate::runtime::{RunEnd, RuntimeError};

/// Prompt tokens a run reused from the cache. `before`: the cache size before a run that kept
/// history (all of it is the prompt's beginning); `after`: the size after the run. Without
/// history the runtime reuses the longest common prefix with what it held and, after the run,
/// holds just the prompt (the generated tokens are dropped, as `filled_context` assumes too), so
/// the reused part is the prompt's size less what was prefilled. Unknown is 0: a count is never
/// made up.
pub(super) fn reused_tokens(
    end: &Result<RunEnd, RuntimeError>,
    before: Option<u32>,
    after: Option<&Result<u32, RuntimeError>>,
) -> u32 {
    let Ok(RunEnd::Finished(perf) | RunEnd::Stopped(Some(perf))) = end else {
        return 0;
    };
    match (before, after) {
        (Some(before), _) => before,
        (None, Some(Ok(after))) => after.saturating_sub(perf.prefill_tokens),
        (None, _) => 0,
    }
}

/// Whether `full` shares enough of a prefix with `cached` (what the cache holds) to be sent
/// whole for the runtime's prefix reuse rather than after a clear: at least its first message
/// (`first_len` bytes, the system prompt or the first turn) in full. Less is only template
/// markers or part of another system prompt: reusing it saves less than the `keep_history = 0`
/// run costs (its answer is not kept, so a next turn prefills it).
pub(super) fn worth_a_prefix_run(cached: &str, full: &str, first_len: usize) -> bool {
    first_len > 0 && common_prefix_len(cached, full) >= first_len
}

pub(super) fn common_prefix_len(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Perf;

    #[test]
    fn only_a_prefix_with_the_first_message_is_worth_a_prefix_run() {
        let system = "<s>You are helpful.</s>";
        let cached = format!("{system}<u>hi</u><a>hello");
        assert!(worth_a_prefix_run(
            &cached,
            &format!("{system}<u>other</u><a>"),
            system.len()
        ));
        let other = "<s>You are terse.</s>";
        assert!(!worth_a_prefix_run(
            &cached,
            &format!("{other}<u>hi</u><a>"),
            other.len()
        ));
        assert!(!worth_a_prefix_run("", system, system.len()));
        assert!(!worth_a_prefix_run(system, system, 0));
    }

    fn finished(prefill: u32) -> Result<RunEnd, RuntimeError> {
        Ok(RunEnd::Finished(Perf {
            prefill_tokens: prefill,
            ..Perf::default()
        }))
    }

    #[test]
    fn with_history_kept_the_whole_cache_before_the_run_is_reused() {
        assert_eq!(reused_tokens(&finished(7), Some(40), Some(&Ok(60))), 40);
    }

    #[test]
    fn without_history_the_prompt_in_the_cache_less_the_prefill_is_reused() {
        assert_eq!(reused_tokens(&finished(0), None, Some(&Ok(23))), 23);
        assert_eq!(reused_tokens(&finished(5), None, Some(&Ok(23))), 18);
        assert_eq!(reused_tokens(&finished(30), None, Some(&Ok(23))), 0);
    }

    #[test]
    fn a_run_without_statistics_reuses_nothing_known() {
        assert_eq!(reused_tokens(&Ok(RunEnd::Unfinished), Some(40), None), 0);
        assert_eq!(reused_tokens(&finished(3), None, None), 0);
    }
}
