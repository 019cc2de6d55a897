//! One runtime handle as the checks use it: the daemon's settings, short runs, and what each run
//! showed (its end, its token count, timings, the callback's thread).

use std::thread;
use std::time::{Duration, Instant};

use super::watchdog::Watchdog;
use crate::config::Config;
use crate::runtime::{
    Flow, InitConfig, Output, Perf, Role, RunEnd, RunRequest, Runtime, RuntimeError, Sampling,
};

/// A handle on the model; dropping it destroys the handle.
pub struct Session {
    pub rt: Runtime,
    watchdog: Watchdog,
}

/// What one run showed.
#[derive(Debug)]
pub struct Observed {
    pub end: Result<RunEnd, RuntimeError>,
    /// Token callbacks (NORMAL and WAITING) seen.
    pub tokens: u32,
    pub returned: Instant,
    /// The thread of every callback differed from the caller's at least once.
    pub foreign_thread: bool,
}

impl Observed {
    /// The FINISH statistics, if FINISH came.
    pub fn perf(&self) -> Option<Perf> {
        match &self.end {
            Ok(RunEnd::Finished(p) | RunEnd::Stopped(Some(p))) => Some(*p),
            _ => None,
        }
    }
}

impl Session {
    /// A fresh handle with the configuration's model and runtime, greedy sampling and a cap of
    /// `max_new_tokens` (ABI 1.2 has no per-run cap). `raw`: the empty chat template, as the
    /// daemon sets it when it renders conversations itself.
    pub fn open(
        cfg: &Config,
        watchdog: &Watchdog,
        max_new_tokens: u32,
        raw: bool,
    ) -> Result<Session, RuntimeError> {
        Session::open_sized(cfg, watchdog, max_new_tokens, cfg.max_context_len, raw)
    }

    /// As `open`, with a context of `max_context_len` tokens instead of the configured one.
    pub fn open_sized(
        cfg: &Config,
        watchdog: &Watchdog,
        max_new_tokens: u32,
        max_context_len: u32,
        raw: bool,
    ) -> Result<Session, RuntimeError> {
        let mut rt = Runtime::init(&InitConfig {
            library: cfg.runtime_library.clone(),
            model_path: cfg.model.clone(),
            max_context_len,
            max_new_tokens,
            sampling: Sampling {
                top_k: 1,
                ..Sampling::default()
            },
            base_domain_id: cfg.base_domain_id,
            cpu_mask: cfg.enabled_cpus,
            image_tags: None,
        })?;
        if raw {
            rt.set_chat_template("", "", "")?;
        }
        Ok(Session {
            rt,
            watchdog: watchdog.clone(),
        })
    }

    /// Runs `prompt` from this thread, under the watchdog; `on_token` is told the number of
    /// tokens so far and decides the flow.
    pub fn run(
        &mut self,
        prompt: &str,
        keep_history: bool,
        max_new_tokens: u32,
        on_token: &mut dyn FnMut(u32) -> Flow,
    ) -> Observed {
        let caller = thread::current().id();
        let mut tokens = 0u32;
        let mut foreign_thread = false;
        let mut sink = |out: Output<'_>| {
            if thread::current().id() != caller {
                foreign_thread = true;
            }
            match out {
                Output::Token { .. } | Output::Waiting => {
                    tokens += 1;
                    on_token(tokens)
                }
            }
        };
        let guard = self.watchdog.watch(self.rt.abort_handle());
        let end = self.rt.run(
            &RunRequest {
                prompt,
                role: Role::User,
                enable_thinking: false,
                keep_history,
                max_new_tokens: Some(max_new_tokens),
                sampling: None,
                save_prompt_cache: None,
                lora: None,
            },
            &mut sink,
        );
        drop(guard);
        Observed {
            end,
            tokens,
            returned: Instant::now(),
            foreign_thread,
        }
    }

    /// Tokens prefilled for `prompt` on an empty cache (`keep_history` off), as FINISH reports.
    pub fn prefill_count(&mut self, prompt: &str) -> Result<u32, String> {
        self.rt.clear_kv_cache(false).map_err(|e| e.to_string())?;
        let seen = self.run(prompt, false, 1, &mut |_| Flow::Continue);
        match seen.perf() {
            Some(p) => Ok(p.prefill_tokens),
            None => Err(describe_end(&seen.end)),
        }
    }
}

/// How a run without FINISH ended, in words.
pub fn describe_end(end: &Result<RunEnd, RuntimeError>) -> String {
    match end {
        Ok(RunEnd::Finished(_)) => "the run finished".to_owned(),
        Ok(RunEnd::Stopped(Some(_))) => "the run stopped, with FINISH".to_owned(),
        Ok(RunEnd::Stopped(None)) => "the run stopped without FINISH".to_owned(),
        Ok(RunEnd::Unfinished) => "the run returned without FINISH".to_owned(),
        Err(e) => format!("the run failed: {e}"),
    }
}

/// Milliseconds, for lines.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}
