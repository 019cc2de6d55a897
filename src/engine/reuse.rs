//! What a run took from the runtime's KV cache instead of prefilling it, so that token counts
//! cover the whole prompt as clients expect (OpenAI's `prompt_tokens` with its
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
    let perf = match end {
        Ok(RunEnd::Finished(perf) | RunEnd::Stopped(Some(perf))) => perf,
        _ => return 0,
    };
    match (before, after) {
        (Some(before), _) => before,
        (None, Some(Ok(after))) => after.saturating_sub(perf.prefill_tokens),
        (None, _) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Perf;

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
