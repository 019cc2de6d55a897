//! The shim and the engine against the simulator: normal run, WAITING, abort from another
//! thread, runtime ERROR, hang (wedged), `max_new_tokens`, context overflow, init failure.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read_trace, write_model, TempDir};
use mio::{Events, Poll, Token, Waker};
use rkllmd::engine::{
    Conversation, Engine, EngineConfig, EngineError, Event, FinishReason, Job, Priority, State,
    MAX_PUSH_BACKS,
};
use rkllmd::runtime::{self, Flow, InitConfig, Output, RunEnd, RunRequest, Runtime, Sampling};

const WAKE: Token = Token(7);

/// The simulator reads `RKLLM_SIM_TRACE` in `rkllm_init`; tests run in parallel threads, so each one
/// holds this lock from setting the variable until its init has happened.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn init_lock() -> std::sync::MutexGuard<'static, ()> {
    INIT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// For tests that call `Runtime::init` themselves: the lock, with the trace pointed at `dir`
/// (never at another test's file).
fn init_lock_tracing_to(dir: &std::path::Path) -> std::sync::MutexGuard<'static, ()> {
    let guard = init_lock();
    std::env::set_var("RKLLM_SIM_TRACE", dir.join("trace.jsonl"));
    guard
}

fn init_config(model: std::path::PathBuf) -> InitConfig {
    InitConfig {
        library: runtime::DEFAULT_LIBRARY.into(),
        model_path: model,
        max_context_len: 4096,
        max_new_tokens: 4096,
        sampling: Sampling::default(),
        base_domain_id: 0,
        cpu_mask: None,
        image_tags: None,
    }
}

/// An engine driven by a real mio poll loop, as the daemon drives it.
struct Harness {
    poll: Poll,
    events: Events,
    engine: Engine,
    _dir: TempDir,
    trace: std::path::PathBuf,
    init_guard: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Harness {
    fn new(tag: &str, model_lines: &[&str], tweak: impl FnOnce(&mut EngineConfig)) -> Harness {
        let dir = TempDir::new(tag);
        let model = write_model(dir.path(), "m", model_lines);
        let trace = dir.path().join("trace.jsonl");
        let guard = init_lock();
        // The simulator reads the trace path at rkllm_init, on the engine thread started below.
        std::env::set_var("RKLLM_SIM_TRACE", &trace);
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
        let mut cfg = EngineConfig {
            init: init_config(model),
            queue_size: 4,
            queue_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            abort_grace: Duration::from_secs(2),
            raw_template: false,
            models: Vec::new(),
            keep_alive: rkllmd::engine::KeepAlive::Forever,
            kv_cache_reuse: true,
            snapshots: None,
            residency: rkllmd::engine::Residency::default(),
            vision: rkllmd::engine::Vision::default(),
            // Background jobs start at once unless a test says otherwise.
            background_hold: Duration::ZERO,
        };
        tweak(&mut cfg);
        let engine = Engine::start(cfg, waker).unwrap();
        Harness {
            poll,
            events: Events::with_capacity(16),
            engine,
            _dir: dir,
            trace,
            init_guard: Some(guard),
        }
    }

    /// Runs the loop until `done` says so; returns every event seen.
    fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Event) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let now = Instant::now();
            assert!(now < deadline, "timed out; events so far: {seen:?}");
            let wait = self
                .engine
                .next_deadline()
                .map_or(deadline, |d| d.min(deadline))
                - now;
            self.poll.poll(&mut self.events, Some(wait)).unwrap();
            let mut out = Vec::new();
            let now = Instant::now();
            if !self.events.is_empty() {
                self.engine.on_wake(now, &mut out);
            }
            if self.engine.next_deadline().is_some_and(|d| d <= now) {
                self.engine.on_timer(now, &mut out);
            }
            for ev in out {
                if matches!(ev, Event::Ready { .. } | Event::LoadFailed { .. }) {
                    self.init_guard = None;
                }
                let stop = done(&ev);
                seen.push(ev);
                if stop {
                    return seen;
                }
            }
        }
    }

    fn wait_ready(&mut self) {
        self.pump_until(Duration::from_secs(10), |e| {
            matches!(e, Event::Ready { .. })
        });
        assert_eq!(self.engine.state(), &State::Ready);
    }

    fn run_to_end(&mut self, id: u64) -> (String, Vec<Event>) {
        let events = self.pump_until(Duration::from_secs(20), |e| {
            matches!(e, Event::Finished { id: i, .. } | Event::Failed { id: i, .. } if *i == id)
        });
        let text = events
            .iter()
            .filter_map(|e| match e {
                Event::Text { id: i, text, .. } if *i == id => Some(text.as_str()),
                _ => None,
            })
            .collect();
        (text, events)
    }
}

/// A plain user turn, "hi", run straight on a `Runtime`.
fn hi_request(keep_history: bool) -> RunRequest<'static> {
    RunRequest {
        prompt: "hi",
        role: runtime::Role::User,
        enable_thinking: false,
        keep_history,
        max_new_tokens: None,
        sampling: None,
        save_prompt_cache: None,
        lora: None,
    }
}

fn finish_of(events: &[Event]) -> rkllmd::engine::Finish {
    events
        .iter()
        .find_map(|e| match e {
            Event::Finished { finish, .. } => Some(*finish),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Finished event in {events:?}"))
}

#[test]
fn normal_run_streams_text_and_reports_perf() {
    let mut h = Harness::new(
        "normal",
        &["answer_tokens_min = 30", "answer_tokens_max = 30"],
        |_| {},
    );
    h.wait_ready();
    h.engine
        .submit(
            Job::new(1, "Tell me about Rockchip boards."),
            Instant::now(),
        )
        .unwrap();
    let (text, events) = h.run_to_end(1);
    assert!(
        matches!(events.first(), Some(Event::Started { id: 1 })),
        "{events:?}"
    );
    let finish = finish_of(&events);
    assert_eq!(finish.reason, FinishReason::Stop);
    let perf = finish.perf.expect("FINISH carries perf");
    assert_eq!(perf.generate_tokens, 30);
    assert_eq!(finish.generated_tokens, 30);
    assert!(perf.prefill_tokens > 5, "{perf:?}");
    assert!(!text.is_empty());
    // Same prompt, same settings: same text.
    h.engine
        .submit(
            Job::new(2, "Tell me about Rockchip boards."),
            Instant::now(),
        )
        .unwrap();
    let (again, _) = h.run_to_end(2);
    assert_eq!(text, again);
}

#[test]
fn multibyte_characters_split_across_tokens_arrive_whole() {
    let mut h = Harness::new(
        "utf8",
        &[
            "answer_tokens_min = 60",
            "answer_tokens_max = 60",
            "vocabulary = 你好 世界 🚀 🙂 模型",
        ],
        |_| {},
    );
    h.wait_ready();
    h.engine
        .submit(Job::new(1, "Say hello in Chinese"), Instant::now())
        .unwrap();
    let (text, events) = h.run_to_end(1);
    assert!(text.contains('你') || text.contains('🚀'), "{text}");
    assert!(
        !text.contains('\u{fffd}'),
        "a split character was emitted broken: {text}"
    );
    let finish = finish_of(&events);
    // WAITING tokens count as generated but carry no text: more tokens than text events.
    let text_events = events
        .iter()
        .filter(|e| matches!(e, Event::Text { .. }))
        .count() as u32;
    assert!(
        finish.generated_tokens > text_events,
        "no WAITING state seen ({} tokens, {text_events} texts)",
        finish.generated_tokens
    );
}

#[test]
fn cancel_aborts_the_running_generation_from_the_loop_thread() {
    let mut h = Harness::new(
        "abort",
        &[
            "answer_tokens_min = 500",
            "answer_tokens_max = 500",
            "decode_us_per_token = 20000",
        ],
        |_| {},
    );
    h.wait_ready();
    h.engine
        .submit(Job::new(1, "a long answer please"), Instant::now())
        .unwrap();
    h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Text { .. }));
    let asked = Instant::now();
    assert!(h.engine.cancel(1, asked));
    let (_, events) = h.run_to_end(1);
    let took = asked.elapsed();
    let finish = finish_of(&events);
    assert_eq!(finish.reason, FinishReason::Aborted);
    assert!(finish.generated_tokens < 500);
    assert!(took < Duration::from_secs(1), "abort took {took:?}");
    let trace = read_trace(&h.trace);
    assert!(
        trace.iter().any(|l| l["fn"] == "rkllm_abort"),
        "no abort in the trace"
    );
    // The engine serves the next request normally.
    h.engine
        .submit(Job::new(2, "short"), Instant::now())
        .unwrap();
    h.engine.cancel(2, Instant::now());
    let (_, events) = h.run_to_end(2);
    assert_eq!(finish_of(&events).reason, FinishReason::Aborted);
}

/// CI under qemu: a client hung up just as the worker called the runtime; the loop's abort came
/// before the runtime had started the run, found none and was lost, and the engine declared the
/// runtime wedged while the run went on. The simulator's `run_start_delay_ms` widens that moment
/// to a second, so that the cancel below lands in it even on a loaded machine.
#[test]
fn a_cancel_that_races_the_start_of_the_run_still_ends_it() {
    // Lost: the worker aborts again at the first output.
    cancel_during_the_start_of_the_run("abortrace", false, 2);
}

/// The same, on a runtime that keeps an abort made before its run started: the run ends at its
/// start, with the loop's abort alone.
#[test]
fn a_cancel_that_races_the_start_of_the_run_ends_it_when_the_runtime_keeps_it() {
    cancel_during_the_start_of_the_run("abortkept", true, 1);
}

fn cancel_during_the_start_of_the_run(tag: &str, kept: bool, aborts: usize) {
    let carries = format!("idle_abort_carries = {}", u8::from(kept));
    let mut h = Harness::new(
        tag,
        &[
            "answer_tokens_min = 500",
            "answer_tokens_max = 500",
            "decode_us_per_token = 20000",
            "run_start_delay_ms = 1000",
            &carries,
        ],
        |c| c.abort_grace = Duration::from_millis(300),
    );
    h.wait_ready();
    h.engine
        .submit(Job::new(1, "a long answer please"), Instant::now())
        .unwrap();
    let called = Instant::now() + Duration::from_secs(5);
    while !read_trace(&h.trace).iter().any(|l| l["fn"] == "rkllm_run") {
        assert!(Instant::now() < called, "rkllm_run never called");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(h.engine.cancel(1, Instant::now()));
    let (_, events) = h.run_to_end(1);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Wedged)),
        "{events:?}"
    );
    let finish = finish_of(&events);
    assert_eq!(finish.reason, FinishReason::Aborted);
    assert!(finish.generated_tokens < 10, "{finish:?}");
    assert_eq!(h.engine.state(), &State::Ready);
    let trace = read_trace(&h.trace);
    let made = trace.iter().filter(|l| l["fn"] == "rkllm_abort").count();
    assert_eq!(made, aborts, "{trace:?}");
    // The next request is answered whole: no abort is left over for it.
    let mut next = Job::new(2, "short");
    next.set_max_new_tokens(Some(3));
    h.engine.submit(next, Instant::now()).unwrap();
    let (_, events) = h.run_to_end(2);
    let finish = finish_of(&events);
    assert_eq!(finish.reason, FinishReason::Length, "{events:?}");
    assert_eq!(finish.generated_tokens, 3);
}

#[test]
fn cancel_of_a_queued_job_frees_its_slot() {
    let mut h = Harness::new(
        "queue",
        &[
            "answer_tokens_min = 200",
            "answer_tokens_max = 200",
            "decode_us_per_token = 5000",
        ],
        |c| c.queue_size = 2,
    );
    h.wait_ready();
    let now = Instant::now();
    h.engine.submit(Job::new(1, "one"), now).unwrap();
    h.engine.submit(Job::new(2, "two"), now).unwrap();
    h.engine.submit(Job::new(3, "three"), now).unwrap();
    assert_eq!(
        h.engine.submit(Job::new(4, "four"), now),
        Err(EngineError::QueueFull { capacity: 2 })
    );
    assert!(h.engine.cancel(2, now));
    h.engine.submit(Job::new(4, "four"), now).unwrap();
    assert_eq!(h.engine.queue_depth(), 2);
    h.engine.cancel(1, now);
    let (_, events) = h.run_to_end(1);
    assert_eq!(finish_of(&events).reason, FinishReason::Aborted);
    // FIFO: 3 runs before 4.
    let events = h.pump_until(Duration::from_secs(5), |e| {
        matches!(e, Event::Started { .. })
    });
    assert!(
        matches!(events.last(), Some(Event::Started { id: 3 })),
        "{events:?}"
    );
}

#[test]
fn runtime_error_fails_the_request_and_the_engine_goes_on() {
    let mut h = Harness::new("error", &["error_after_tokens = 5"], |_| {});
    h.wait_ready();
    h.engine.submit(Job::new(1, "hi"), Instant::now()).unwrap();
    let (text, events) = h.run_to_end(1);
    assert!(!text.is_empty(), "tokens before the error are delivered");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Failed {
                id: 1,
                error: EngineError::Runtime(_)
            }
        )),
        "{events:?}"
    );
    assert_eq!(h.engine.state(), &State::Ready);
    h.engine
        .submit(Job::new(2, "again"), Instant::now())
        .unwrap();
    let (_, events) = h.run_to_end(2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Failed { id: 2, .. })),
        "the fault repeats per run"
    );
}

#[test]
fn a_run_that_ignores_abort_makes_the_engine_wedged() {
    let mut h = Harness::new("hang", &["hang_after_tokens = 3"], |c| {
        c.abort_grace = Duration::from_millis(300);
    });
    h.wait_ready();
    h.engine.submit(Job::new(1, "hi"), Instant::now()).unwrap();
    h.engine
        .submit(Job::new(2, "queued behind the hang"), Instant::now())
        .unwrap();
    h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Text { .. }));
    // Let it reach the hang (3 tokens at full speed), then abort: the abort is ignored.
    std::thread::sleep(Duration::from_millis(200));
    h.engine.cancel(1, Instant::now());
    let events = h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Wedged));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Failed {
            id: 1,
            error: EngineError::Wedged
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Failed {
            id: 2,
            error: EngineError::Wedged
        }
    )));
    assert_eq!(h.engine.state(), &State::Wedged);
    assert_eq!(
        h.engine.submit(Job::new(3, "x"), Instant::now()),
        Err(EngineError::Wedged)
    );
}

#[test]
fn request_timeout_aborts_a_runaway_generation() {
    let mut h = Harness::new(
        "timeout",
        &[
            "answer_tokens_min = 1000",
            "answer_tokens_max = 1000",
            "decode_us_per_token = 10000",
        ],
        |c| c.request_timeout = Duration::from_millis(200),
    );
    h.wait_ready();
    h.engine
        .submit(Job::new(1, "go on forever"), Instant::now())
        .unwrap();
    let (text, events) = h.run_to_end(1);
    // Cut short by a deadline: an error, never a finish that looks complete.
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Failed {
                id: 1,
                error: EngineError::Timeout { .. }
            }
        )),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Finished { .. })));
    assert!(!text.is_empty() && text.split(' ').count() < 1000);
}

#[test]
fn max_new_tokens_caps_the_answer_under_both_abis() {
    let mut h = Harness::new(
        "cap",
        &["answer_tokens_min = 80", "answer_tokens_max = 80"],
        |_| {},
    );
    h.wait_ready();
    let mut job = Job::new(1, "count");
    job.set_max_new_tokens(Some(7));
    h.engine.submit(job, Instant::now()).unwrap();
    let (_, events) = h.run_to_end(1);
    let finish = finish_of(&events);
    assert_eq!(finish.reason, FinishReason::Length);
    assert_eq!(finish.generated_tokens, 7);
    let runs = read_trace(&h.trace)
        .into_iter()
        .filter(|l| l["fn"] == "run_end")
        .collect::<Vec<_>>();
    assert_eq!(
        runs.last().unwrap()["generate_tokens"],
        7,
        "the runtime stopped at the cap"
    );
}

fn failure_of(events: &[Event], id: u64) -> EngineError {
    events
        .iter()
        .find_map(|e| match e {
            Event::Failed { id: i, error } if *i == id => Some(error.clone()),
            _ => None,
        })
        .expect("the run failed")
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_before_it_runs() {
    let mut h = Harness::new("ctx", &[], |c| c.init.max_context_len = 64);
    h.wait_ready();
    h.engine
        .submit(Job::new(1, "word ".repeat(200)), Instant::now())
        .unwrap();
    let (_, events) = h.run_to_end(1);
    let error = failure_of(&events, 1);
    let EngineError::PromptTooLong {
        estimated_tokens,
        prompt_bytes,
        max_context,
        by_runtime: false,
        tools_tokens: 0,
        reserve,
    } = error
    else {
        panic!("{error:?}")
    };
    assert_eq!((prompt_bytes, max_context, reserve), (1000, 64, 16));
    assert!(estimated_tokens > 64, "{estimated_tokens}");
    let runs = read_trace(&h.trace)
        .into_iter()
        .filter(|l| l["fn"] == "rkllm_run")
        .count();
    assert_eq!(runs, 0, "the runtime never saw it");
    assert_eq!(h.engine.state(), &State::Ready);
}

#[test]
fn a_prompt_the_runtime_refuses_for_its_length_is_reported_as_too_long() {
    let mut h = Harness::new("ctx-rt", &[], |c| c.init.max_context_len = 64);
    h.wait_ready();
    // Punctuation is a token a byte: the estimate (4 bytes a token until a run teaches
    // otherwise) lets it through, the runtime refuses it.
    h.engine
        .submit(Job::new(1, ",".repeat(160)), Instant::now())
        .unwrap();
    let (_, events) = h.run_to_end(1);
    let error = failure_of(&events, 1);
    let EngineError::PromptTooLong {
        prompt_bytes,
        max_context,
        by_runtime: true,
        ..
    } = error
    else {
        panic!("{error:?}")
    };
    assert_eq!((prompt_bytes, max_context), (160, 64));
    assert_eq!(h.engine.state(), &State::Ready);
}

#[test]
fn init_failure_is_reported_and_fails_waiting_requests() {
    let mut h = Harness::new("fail", &["fail_init = 1", "load_ms = 100"], |_| {});
    h.engine
        .submit(Job::new(1, "queued while loading"), Instant::now())
        .unwrap();
    let events = h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Stopped));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Failed {
            id: 1,
            error: EngineError::LoadFailed { .. }
        }
    )));
    assert!(events.iter().any(|e| matches!(e, Event::LoadFailed { .. })));
    assert!(matches!(h.engine.state(), State::Stopped));
}

#[test]
fn shutdown_aborts_the_run_fails_the_queue_and_destroys_the_runtime() {
    let mut h = Harness::new(
        "shutdown",
        &[
            "answer_tokens_min = 500",
            "answer_tokens_max = 500",
            "decode_us_per_token = 10000",
        ],
        |_| {},
    );
    h.wait_ready();
    h.engine
        .submit(Job::new(1, "long"), Instant::now())
        .unwrap();
    h.engine
        .submit(Job::new(2, "queued"), Instant::now())
        .unwrap();
    h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Text { .. }));
    let mut out = Vec::new();
    h.engine.begin_shutdown(Instant::now(), &mut out);
    assert!(out.iter().any(|e| matches!(
        e,
        Event::Failed {
            id: 2,
            error: EngineError::ShuttingDown
        }
    )));
    let events = h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Stopped));
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Failed {
                id: 1,
                error: EngineError::ShuttingDown
            }
        )),
        "the cut answer is a failure: {events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Finished { .. })));
    h.engine.join();
    assert!(read_trace(&h.trace)
        .iter()
        .any(|l| l["fn"] == "rkllm_destroy"));
}

// ---- the runtime wrapper directly ----

#[test]
fn runtime_wrapper_reports_waiting_and_the_simulator() {
    let dir = TempDir::new("rt");
    let model = write_model(
        dir.path(),
        "m",
        &[
            "answer_tokens_min = 40",
            "answer_tokens_max = 40",
            "vocabulary = 世界 🙂",
        ],
    );
    let _guard = init_lock_tracing_to(dir.path());
    let mut rt = Runtime::init(&init_config(model)).unwrap();
    let (mut tokens, mut waiting) = (0, 0);
    let mut bytes = Vec::new();
    let req = hi_request(false);
    let end = rt
        .run(&req, &mut |out| {
            match out {
                Output::Token { text, .. } => {
                    tokens += 1;
                    bytes.extend_from_slice(text);
                }
                Output::Waiting => waiting += 1,
            }
            Flow::Continue
        })
        .unwrap();
    let RunEnd::Finished(perf) = end else {
        panic!("{end:?}")
    };
    assert_eq!(perf.generate_tokens, tokens + waiting);
    assert!(waiting > 0, "the simulator never split a character");
    assert!(
        String::from_utf8(bytes).is_ok(),
        "runtime text joined to valid UTF-8"
    );
    let info = runtime::info();
    assert_eq!(info.kind(), "simulator");
    assert!(info.simulator.unwrap().contains(info.abi));
    assert!(rt.kv_cache_size().unwrap() > 0);
    rt.clear_kv_cache(false).unwrap();
    assert_eq!(rt.kv_cache_size().unwrap(), 0);
}

#[test]
fn a_panicking_sink_stops_the_run_and_resumes_after_the_runtime_returns() {
    let dir = TempDir::new("panic");
    let model = write_model(
        dir.path(),
        "m",
        &["answer_tokens_min = 50", "answer_tokens_max = 50"],
    );
    let _guard = init_lock_tracing_to(dir.path());
    let mut rt = Runtime::init(&init_config(model)).unwrap();
    let req = hi_request(false);
    let mut calls = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.run(&req, &mut |_| {
            calls += 1;
            panic!("sink bug");
        })
    }));
    assert!(result.is_err(), "the panic resumes in Rust");
    assert_eq!(calls, 1, "no callback reaches the sink after it panicked");
    assert!(!rt.is_running());
}

#[test]
fn a_sink_that_stops_gets_the_run_aborted_not_paused() {
    let dir = TempDir::new("stop");
    let model = write_model(
        dir.path(),
        "m",
        &[
            "answer_tokens_min = 30",
            "answer_tokens_max = 30",
            "vocabulary = alpha beta gamma",
        ],
    );
    let _guard = init_lock_tracing_to(dir.path());
    let mut rt = Runtime::init(&init_config(model)).unwrap();
    let mut req = hi_request(true);
    let mut tokens = 0;
    let end = rt
        .run(&req, &mut |_| {
            tokens += 1;
            if tokens == 5 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .unwrap();
    assert!(matches!(end, RunEnd::Stopped(_)), "{end:?}");
    assert_eq!(tokens, 5, "no output reaches the sink after it stopped");
    // A paused run would resume here with the 25 tokens left of the stopped answer.
    req.prompt = "next";
    let mut next = 0;
    let end = rt
        .run(&req, &mut |_| {
            next += 1;
            Flow::Continue
        })
        .unwrap();
    assert!(matches!(end, RunEnd::Finished(_)), "{end:?}");
    assert_eq!(next, 30, "the next run answers anew");
    let trace = read_trace(&dir.path().join("trace.jsonl"));
    let ends: Vec<_> = trace
        .iter()
        .filter(|v| v["fn"] == "run_end")
        .map(|v| v["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ends, ["abort", "eos"]);
    assert_eq!(trace.iter().filter(|v| v["fn"] == "rkllm_abort").count(), 1);
}

/// An abort made while no run is under way (the loop aborting a job whose run has just
/// returned) never reaches the runtime: one that kept it would end the next run, someone else's.
#[test]
fn an_abort_while_no_run_is_under_way_never_reaches_the_runtime() {
    let dir = TempDir::new("idleabort");
    let model = write_model(
        dir.path(),
        "m",
        &[
            "answer_tokens_min = 8",
            "answer_tokens_max = 8",
            "idle_abort_carries = 1",
        ],
    );
    let _guard = init_lock_tracing_to(dir.path());
    let mut rt = Runtime::init(&init_config(model)).unwrap();
    rt.abort_handle().abort().unwrap();
    let req = hi_request(false);
    let mut tokens = 0;
    let end = rt
        .run(&req, &mut |_| {
            tokens += 1;
            Flow::Continue
        })
        .unwrap();
    assert!(matches!(end, RunEnd::Finished(_)), "{end:?}");
    assert_eq!(tokens, 8);
    let trace = read_trace(&dir.path().join("trace.jsonl"));
    assert!(!trace.iter().any(|v| v["fn"] == "rkllm_abort"), "{trace:?}");
}

/// CI: a test read the trace while the simulator was writing a background re-seat's line, and
/// failed on half a line. The tests' reader takes whole lines only.
#[test]
fn the_trace_reader_leaves_out_a_line_still_being_written() {
    let dir = TempDir::new("halfline");
    let path = dir.path().join("trace.jsonl");
    let written: &[u8] = b"{\"fn\":\"rkllm_init\"}\n{\"fn\":\"rkllm_run\",\"prompt\":\"h\xc3";
    std::fs::write(&path, written).unwrap();
    let trace = read_trace(&path);
    assert_eq!(trace.len(), 1, "{trace:?}");
    assert_eq!(trace[0]["fn"], "rkllm_init");
}

#[test]
fn init_fails_for_missing_and_foreign_model_files() {
    let dir = TempDir::new("init");
    let _guard = init_lock_tracing_to(dir.path());
    let missing = dir.path().join("missing.rkllm");
    assert!(Runtime::init(&init_config(missing)).is_err());
    let foreign = dir.path().join("real.rkllm");
    std::fs::write(&foreign, b"RKLLM\x00\x01binary").unwrap();
    let err = Runtime::init(&init_config(foreign))
        .err()
        .expect("foreign file refused");
    assert!(err.to_string().contains("could not load model"), "{err}");
}

// ---- conversations rendered by rkllmd, with KV-cache reuse ----

fn turn(role: &str, text: &str) -> String {
    format!("<|im_start|>{role}\n{text}<|im_end|>\n")
}

const GEN: &str = "<|im_start|>assistant\n";

fn conversation_job(id: u64, pieces: Vec<String>) -> Job {
    Job::conversation(
        id,
        Conversation {
            pieces,
            kept: 1,
            generation_prompt: GEN.into(),
            tools_bytes: 0,
        },
    )
}

#[test]
fn a_conversation_that_extends_the_cache_prefills_only_the_new_turn() {
    let mut h = Harness::new(
        "kvreuse",
        &["answer_tokens_min = 20", "answer_tokens_max = 20"],
        |c| c.raw_template = true,
    );
    h.wait_ready();
    let sys = turn("system", &"Answer tersely and precisely. ".repeat(10));
    let u1 = turn(
        "user",
        "Name three rivers of Europe and say which is longest.",
    );
    h.engine
        .submit(
            conversation_job(1, vec![sys.clone(), u1.clone()]),
            Instant::now(),
        )
        .unwrap();
    let (a1, _) = h.run_to_end(1);
    let u2 = turn("user", "And in Asia?");
    let history = vec![sys.clone(), u1.clone(), turn("assistant", &a1), u2.clone()];
    h.engine
        .submit(conversation_job(2, history.clone()), Instant::now())
        .unwrap();
    let (a2, _) = h.run_to_end(2);

    let trace = read_trace(&h.trace);
    let template = trace
        .iter()
        .find(|l| l["fn"] == "rkllm_set_chat_template")
        .expect("template switched off");
    assert_eq!(
        (
            template["system_prompt"].as_str(),
            template["prompt_prefix"].as_str()
        ),
        (Some(""), Some("")),
        "{template}"
    );
    let runs: Vec<_> = trace.iter().filter(|l| l["fn"] == "rkllm_run").collect();
    let ends: Vec<_> = trace.iter().filter(|l| l["fn"] == "run_end").collect();
    assert_eq!(runs[0]["prompt"], format!("{sys}{u1}{GEN}"));
    assert_eq!(runs[0]["keep_history"], 1);
    // Turn 2 sends only what follows the cached prompt and answer.
    assert_eq!(runs[1]["prompt"], format!("<|im_end|>\n{u2}{GEN}"));
    assert_eq!(runs[1]["keep_history"], 1);
    let (p1, p2) = (
        ends[0]["prefill_tokens"].as_u64().unwrap(),
        ends[1]["prefill_tokens"].as_u64().unwrap(),
    );
    assert!(p2 * 3 < p1, "turn 2 prefilled {p2} tokens, turn 1 {p1}");
    assert!(
        !trace.iter().any(|l| l["fn"] == "rkllm_clear_kv_cache"),
        "nothing to clear"
    );

    // Another conversation with the same system prompt: sent whole without history kept, and
    // the runtime reuses the system prompt from its cache instead of a clear.
    let other = vec![sys.clone(), turn("user", "Something else entirely.")];
    h.engine
        .submit(conversation_job(3, other.clone()), Instant::now())
        .unwrap();
    h.run_to_end(3);
    // The first conversation again: it no longer extends the cache, so it goes the same way.
    let mut again = history.clone();
    again.push(turn("assistant", &a2));
    again.push(turn("user", "Thanks."));
    h.engine
        .submit(conversation_job(4, again.clone()), Instant::now())
        .unwrap();
    h.run_to_end(4);
    let trace = read_trace(&h.trace);
    let runs: Vec<_> = trace.iter().filter(|l| l["fn"] == "rkllm_run").collect();
    let ends: Vec<_> = trace.iter().filter(|l| l["fn"] == "run_end").collect();
    assert!(!trace.iter().any(|l| l["fn"] == "rkllm_clear_kv_cache"));
    assert_eq!(runs[2]["prompt"], format!("{}{GEN}", other.concat()));
    assert_eq!(runs[3]["prompt"], format!("{}{GEN}", again.concat()));
    for (run, end) in runs[2..].iter().zip(&ends[2..]) {
        assert_eq!(run["keep_history"], 0, "{run}");
        // Without history the cache holds the prompt: more than was prefilled.
        assert!(
            end["prefill_tokens"].as_u64().unwrap() < end["cache_tokens"].as_u64().unwrap(),
            "{end}"
        );
    }
}

#[test]
fn an_aborted_answer_never_poisons_the_next_turn() {
    let mut h = Harness::new(
        "kvabort",
        &[
            "answer_tokens_min = 300",
            "answer_tokens_max = 300",
            "decode_us_per_token = 5000",
        ],
        |c| c.raw_template = true,
    );
    h.wait_ready();
    let sys = turn("system", "S");
    let u1 = turn("user", "long answer please");
    h.engine
        .submit(
            conversation_job(1, vec![sys.clone(), u1.clone()]),
            Instant::now(),
        )
        .unwrap();
    h.pump_until(Duration::from_secs(5), |e| matches!(e, Event::Text { .. }));
    h.engine.cancel(1, Instant::now());
    let (partial, _) = h.run_to_end(1);
    // Even a client that sends the partial answer back gets a fresh, fully prefilled run.
    let next = vec![
        sys.clone(),
        u1.clone(),
        turn("assistant", &partial),
        turn("user", "go on"),
    ];
    h.engine
        .submit(conversation_job(2, next.clone()), Instant::now())
        .unwrap();
    h.run_to_end(2);
    let trace = read_trace(&h.trace);
    assert_eq!(
        trace
            .iter()
            .filter(|l| l["fn"] == "rkllm_clear_kv_cache")
            .count(),
        1
    );
    let last = trace
        .iter()
        .rfind(|l| l["fn"] == "rkllm_run")
        .unwrap()
        .clone();
    assert_eq!(last["prompt"], format!("{}{GEN}", next.concat()));
}

// Interactive first: background jobs yield to interactive ones (src/engine/queue.rs).

fn background(mut job: Job) -> Job {
    job.set_priority(Priority::Background);
    job
}

/// The ids of the jobs that finished, in order.
fn finish_order(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Finished { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn text_of(events: &[Event], id: u64) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text { id: i, text, .. } if *i == id => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Pumps until every job in `ids` has finished; returns all events.
fn run_all(h: &mut Harness, ids: &[u64]) -> Vec<Event> {
    let mut left: Vec<u64> = ids.to_vec();
    h.pump_until(Duration::from_secs(60), |e| {
        if let Event::Finished { id, .. } | Event::Failed { id, .. } = e {
            left.retain(|i| i != id);
        }
        left.is_empty()
    })
}

/// A model whose prefill is slow enough for a job to be caught before its first token.
const SLOW_PREFILL: &[&str] = &[
    "prefill_us_per_token = 20000",
    "answer_tokens_min = 12",
    "answer_tokens_max = 12",
];

#[test]
fn an_interactive_job_preempts_a_background_run_that_has_no_output_yet() {
    let mut h = Harness::new("preempt", SLOW_PREFILL, |_| {});
    h.wait_ready();
    let title = "Write a short title for this conversation about rivers and mountains.";
    let now = Instant::now();
    h.engine
        .submit(background(Job::new(1, title)), now)
        .unwrap();
    h.engine.submit(Job::new(2, "Hello there"), now).unwrap();
    let events = run_all(&mut h, &[1, 2]);
    assert_eq!(finish_order(&events), [2, 1], "{events:?}");
    let preempted: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Preempted { .. }))
        .collect();
    assert!(
        matches!(preempted[..], [Event::Preempted { id: 1 }]),
        "{events:?}"
    );
    // The background job's text is its whole answer, once: what it answers when run alone.
    let answer = text_of(&events, 1);
    h.engine
        .submit(background(Job::new(3, title)), Instant::now())
        .unwrap();
    let (alone, _) = h.run_to_end(3);
    assert!(!alone.is_empty());
    assert_eq!(answer, alone);
}

#[test]
fn a_background_run_that_has_produced_output_is_not_preempted() {
    let mut h = Harness::new(
        "no-preempt",
        &[
            "decode_us_per_token = 20000",
            "answer_tokens_min = 40",
            "answer_tokens_max = 40",
        ],
        |_| {},
    );
    h.wait_ready();
    h.engine
        .submit(background(Job::new(1, "a title please")), Instant::now())
        .unwrap();
    let mut events = h.pump_until(Duration::from_secs(10), |e| {
        matches!(e, Event::Text { id: 1, .. })
    });
    h.engine
        .submit(Job::new(2, "Hello"), Instant::now())
        .unwrap();
    events.extend(run_all(&mut h, &[1, 2]));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Preempted { .. })),
        "{events:?}"
    );
    assert_eq!(finish_order(&events), [1, 2]);
    let finish = events
        .iter()
        .find_map(|e| match e {
            Event::Finished { id: 1, finish } => Some(*finish),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (finish.reason, finish.generated_tokens),
        (FinishReason::Stop, 40)
    );
}

#[test]
fn an_interactive_job_goes_ahead_of_queued_background_jobs() {
    let mut h = Harness::new(
        "order",
        &[
            "decode_us_per_token = 5000",
            "answer_tokens_min = 20",
            "answer_tokens_max = 20",
        ],
        |_| {},
    );
    h.wait_ready();
    let now = Instant::now();
    // Job 1 is interactive and running; the others queue behind it.
    h.engine.submit(Job::new(1, "first"), now).unwrap();
    h.engine
        .submit(background(Job::new(2, "title")), now)
        .unwrap();
    h.engine
        .submit(background(Job::new(3, "tags")), now)
        .unwrap();
    h.engine
        .submit(Job::new(4, "the user's question"), now)
        .unwrap();
    let events = run_all(&mut h, &[1, 2, 3, 4]);
    assert_eq!(finish_order(&events), [1, 4, 2, 3]);
    assert!(!events.iter().any(|e| matches!(e, Event::Preempted { .. })));
}

#[test]
fn a_background_job_is_pushed_back_at_most_max_push_backs_times() {
    let mut h = Harness::new("bound", SLOW_PREFILL, |_| {});
    h.wait_ready();
    let now = Instant::now();
    h.engine
        .submit(background(Job::new(1, "a title")), now)
        .unwrap();
    // One interactive job more than the bound, all arriving while job 1 has no output.
    let bound = u64::from(MAX_PUSH_BACKS);
    for id in 2..=bound + 2 {
        h.engine
            .submit(Job::new(id, format!("question {id}")), now)
            .unwrap();
    }
    let ids: Vec<u64> = (1..=bound + 2).collect();
    let events = run_all(&mut h, &ids);
    // The first MAX_PUSH_BACKS interactive jobs went ahead (the first by preempting it); then
    // it kept its place.
    let mut expected: Vec<u64> = (2..2 + bound).collect();
    expected.extend([1, bound + 2]);
    assert_eq!(finish_order(&events), expected);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Preempted { .. }))
            .count(),
        1
    );
}

#[test]
fn a_preempted_run_leaves_the_next_turn_a_correct_cache() {
    let mut h = Harness::new(
        "preempt-kv",
        &[
            "prefill_us_per_token = 20000",
            "answer_tokens_min = 20",
            "answer_tokens_max = 20",
        ],
        |c| c.raw_template = true,
    );
    h.wait_ready();
    let sys = turn("system", "Answer tersely.");
    let u1 = turn("user", "Name a river.");
    h.engine
        .submit(
            conversation_job(1, vec![sys.clone(), u1.clone()]),
            Instant::now(),
        )
        .unwrap();
    let (a1, _) = h.run_to_end(1);
    let title = vec![
        turn("system", &"Write a title for the chat below. ".repeat(8)),
        turn("user", &format!("{u1}{a1}")),
    ];
    let turn2 = vec![
        sys.clone(),
        u1,
        turn("assistant", &a1),
        turn("user", "Another?"),
    ];
    h.engine
        .submit(
            background(conversation_job(2, title.clone())),
            Instant::now(),
        )
        .unwrap();
    // Caught in the runtime's prefill (a preemption before that leaves the cache untouched).
    let title_prompt = format!("{}{GEN}", title.concat());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read_trace(&h.trace)
        .iter()
        .any(|l| l["fn"] == "rkllm_run" && l["prompt"] == title_prompt.as_str())
    {
        assert!(Instant::now() < deadline, "the title run never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    h.engine
        .submit(conversation_job(3, turn2.clone()), Instant::now())
        .unwrap();
    let events = run_all(&mut h, &[2, 3]);
    assert_eq!(finish_order(&events), [3, 2]);
    // The aborted prefill left the runtime's cache unknown: cleared, and turn 2 sent whole.
    let trace = read_trace(&h.trace);
    let after_abort: Vec<&str> = trace
        .iter()
        .skip_while(|l| l["fn"] != "rkllm_abort")
        .filter_map(|l| match l["fn"].as_str()? {
            f @ ("rkllm_clear_kv_cache" | "rkllm_run") => Some(f),
            _ => None,
        })
        .take(2)
        .collect();
    assert_eq!(after_abort, ["rkllm_clear_kv_cache", "rkllm_run"]);
    let turn2_run = trace
        .iter()
        .filter(|l| l["fn"] == "rkllm_run")
        .nth(2)
        .unwrap();
    assert_eq!(turn2_run["prompt"], format!("{}{GEN}", turn2.concat()));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Preempted { id: 2 })));
    // Turn 2 and the title got the answers they get from a cache that holds nothing else (the
    // simulator answers from the whole sequence in its cache).
    for (id, pieces, got) in [
        (4, turn2, text_of(&events, 3)),
        (5, title, text_of(&events, 2)),
    ] {
        let mut fresh = Harness::new(
            "preempt-kv-fresh",
            &[
                "prefill_us_per_token = 0",
                "answer_tokens_min = 20",
                "answer_tokens_max = 20",
            ],
            |c| c.raw_template = true,
        );
        fresh.wait_ready();
        fresh
            .engine
            .submit(conversation_job(id, pieces), Instant::now())
            .unwrap();
        let (want, _) = fresh.run_to_end(id);
        assert_eq!(got, want, "job {id}");
    }
}

#[test]
fn a_preempted_job_waits_a_whole_queue_timeout_again() {
    // Job 2 waits in the queue for most of its timeout, is preempted as soon as it runs and
    // then waits behind job 3 past the time its first wait began + the timeout: it still runs.
    let mut h = Harness::new(
        "preempt-timeout",
        &[
            "prefill_us_per_token = 10000",
            "decode_us_per_token = 12000",
            "answer_tokens_min = 100",
            "answer_tokens_max = 100",
        ],
        |c| c.queue_timeout = Duration::from_secs(2),
    );
    h.wait_ready();
    let queued = Instant::now();
    h.engine.submit(Job::new(1, "first"), queued).unwrap();
    let long = "Write a title for this chat. ".repeat(30);
    h.engine
        .submit(background(Job::new(2, long.as_str())), queued)
        .unwrap();
    let mut events = h.pump_until(Duration::from_secs(20), |e| {
        matches!(e, Event::Started { id: 2 })
    });
    h.engine
        .submit(Job::new(3, "user"), Instant::now())
        .unwrap();
    events.extend(run_all(&mut h, &[2, 3]));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Preempted { id: 2 })),
        "{events:?}"
    );
    assert_eq!(finish_order(&events), [1, 3, 2], "{events:?}");
    assert!(
        queued.elapsed() > Duration::from_secs(2),
        "job 2 ended within its first queue timeout: the test proves nothing"
    );
}
