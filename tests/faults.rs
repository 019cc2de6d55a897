//! Proof under fire: every fault the simulator can inject, crossed with streaming or not, the
//! OpenAI or the Ollama API, and a client that stays or leaves mid-answer; then every signal
//! while idle, mid-stream and with a full queue. Each case checks what the client saw and the
//! daemon's state afterwards: /health, /metrics, the simulator's trace, and how it exits.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::{sse_data, Response};
use common::{write_model, Client, Daemon, TempDir};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const EXIT_ENGINE: i32 = 4;
const EXIT_DEADLINE: i32 = 5;
/// `--shutdown-timeout` of every daemon here: a shutdown must end within it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `error_after_tokens = 10`: the runtime fails the run mid-answer.
    ErrorAfterTokens,
    /// `hang_after_tokens = 2`: the run blocks forever and ignores abort.
    HangAfterTokens,
    /// `abort_delay_ms = 300`, with a prefill of about a second: an abort during the prefill
    /// takes effect 300 ms late. (During decoding the daemon drops the tokens that come before
    /// the abort takes effect.)
    AbortDelay,
    /// As `AbortDelay`, with `abort_finish = 0`: the aborted run ends with no FINISH at all.
    AbortDelayNoFinish,
    /// `prefill_abort_lag_ms = 5000` with a ~1.3 s prefill and `--abort-grace 0.3`: an abort
    /// in the prefill takes effect only at its end, ~0.8 s after the abort, past the grace: the
    /// runtime is not wedged for it.
    PrefillAbortLag,
    /// `fail_init = 1`: the model never loads.
    FailInit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    OpenAi,
    Ollama,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaving {
    Stays,
    LeavesMidAnswer,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    fault: Fault,
    stream: bool,
    api: Api,
    client: Leaving,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = if self.stream { "stream" } else { "full" };
        write!(
            f,
            "{:?}/{stream}/{:?}/{:?}",
            self.fault, self.api, self.client
        )
    }
}

/// What the client sees.
#[derive(Clone, Copy, Debug)]
enum Seen {
    /// A plain error response with this status, in the API's shape, whose message contains the
    /// text.
    Error(u16, &'static str),
    /// A 200 stream with some text, ended by an error event (OpenAI, then `[DONE]`) or error
    /// line (Ollama) in the API's shape, whose message contains the text.
    StreamError(&'static str),
    /// Nothing: the client left.
    Left,
}

/// The daemon afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// /health 200 "ok"; the next request is served; SIGTERM exits 0.
    Serving,
    /// /health 503 "wedged"; the next request is a 503 saying to restart; SIGTERM exits 5.
    Wedged,
    /// The process exits by itself with this code.
    Exits(i32),
}

#[derive(Clone, Copy, Debug)]
struct Expected {
    seen: Seen,
    then: Then,
    runtime_errors: u64,
    aborts: u64,
    /// `rkllm_abort` is in the trace (always right after the client left, when it did).
    abort_called: bool,
    /// The reasons the run's `run_end` trace line may give; none for a run that never ends.
    run_end: &'static [&'static str],
}

/// How a run that the daemon cut short ends in the trace: aborted, never paused (a paused run
/// would resume in the next request's run).
const CUT: &[&str] = &["abort"];

/// The whole matrix, in one readable table.
fn expected(case: &Case) -> Expected {
    use Fault::*;
    use Leaving::*;
    // Before the stream's head is out an error is a plain response; after, an event in it.
    let failure = |status, says| match case.stream {
        true => Seen::StreamError(says),
        false => Seen::Error(status, says),
    };
    let wedged = "the runtime stopped responding";
    match (case.fault, case.client) {
        (ErrorAfterTokens, Stays) => Expected {
            seen: failure(500, "generation failed"),
            then: Then::Serving,
            runtime_errors: 1,
            aborts: 0,
            abort_called: false,
            run_end: &["error"],
        },
        // The client is gone before the error: the loop cuts its run with rkllm_abort (the
        // daemon drops any token that comes before the abort takes effect).
        (ErrorAfterTokens, LeavesMidAnswer) => Expected {
            seen: Seen::Left,
            then: Then::Serving,
            runtime_errors: 0,
            aborts: 1,
            abort_called: true,
            run_end: CUT,
        },
        // --request-timeout 0.3 aborts the run; it ignores that past --abort-grace 0.3. An
        // abort that never completes is not counted in /metrics: /health is where it shows.
        (HangAfterTokens, Stays) => Expected {
            seen: failure(503, wedged),
            then: Then::Wedged,
            runtime_errors: 0,
            aborts: 0,
            abort_called: true,
            run_end: &[],
        },
        (HangAfterTokens, LeavesMidAnswer) => Expected {
            seen: Seen::Left,
            then: Then::Wedged,
            runtime_errors: 0,
            aborts: 0,
            abort_called: true,
            run_end: &[],
        },
        // --request-timeout 0.3 aborts the run in its prefill; it ends later, before any
        // token: an answer cut short is an error, never a complete-looking empty answer (and
        // no stream head went out yet, so a plain one).
        (AbortDelay | AbortDelayNoFinish | PrefillAbortLag, Stays) => Expected {
            seen: Seen::Error(504, "request timeout"),
            then: Then::Serving,
            runtime_errors: 0,
            aborts: 1,
            abort_called: true,
            run_end: &["abort"],
        },
        (AbortDelay | AbortDelayNoFinish | PrefillAbortLag, LeavesMidAnswer) => Expected {
            seen: Seen::Left,
            then: Then::Serving,
            runtime_errors: 0,
            aborts: 1,
            abort_called: true,
            run_end: &["abort"],
        },
        // The request waits in the queue while the model loads, then gets a plain 503 (no
        // token was ever produced, so not even a stream's head went out).
        (FailInit, Stays) => Expected {
            seen: Seen::Error(503, "the model failed to load"),
            then: Then::Exits(EXIT_ENGINE),
            runtime_errors: 0,
            aborts: 0,
            abort_called: false,
            run_end: &[],
        },
        (FailInit, LeavesMidAnswer) => Expected {
            seen: Seen::Left,
            then: Then::Exits(EXIT_ENGINE),
            runtime_errors: 0,
            aborts: 0,
            abort_called: false,
            run_end: &[],
        },
    }
}

impl Fault {
    fn model_lines(self) -> &'static [&'static str] {
        match self {
            Fault::ErrorAfterTokens => &[
                "answer_tokens_min = 300",
                "answer_tokens_max = 300",
                "decode_us_per_token = 30000",
                "error_after_tokens = 10",
            ],
            Fault::HangAfterTokens => &[
                "answer_tokens_min = 300",
                "answer_tokens_max = 300",
                "decode_us_per_token = 20000",
                "hang_after_tokens = 2",
            ],
            Fault::AbortDelay => &[
                "answer_tokens_min = 300",
                "answer_tokens_max = 300",
                "prefill_us_per_token = 10000",
                "decode_us_per_token = 20000",
                "abort_delay_ms = 300",
            ],
            Fault::AbortDelayNoFinish => &[
                "answer_tokens_min = 300",
                "answer_tokens_max = 300",
                "prefill_us_per_token = 10000",
                "decode_us_per_token = 20000",
                "abort_delay_ms = 300",
                "abort_finish = 0",
            ],
            Fault::PrefillAbortLag => &[
                "answer_tokens_min = 300",
                "answer_tokens_max = 300",
                "prefill_us_per_token = 10000",
                "decode_us_per_token = 20000",
                "prefill_abort_lag_ms = 5000",
            ],
            Fault::FailInit => &["fail_init = 1"],
        }
    }

    /// The run is aborted during its prefill, which ends late.
    fn aborts_in_prefill(self) -> bool {
        matches!(
            self,
            Fault::AbortDelay | Fault::AbortDelayNoFinish | Fault::PrefillAbortLag
        )
    }

    fn args(self, client: Leaving) -> Vec<&'static str> {
        let mut args = vec!["--shutdown-timeout", "1"];
        match self {
            Fault::HangAfterTokens | Fault::PrefillAbortLag => {
                args.extend(["--abort-grace", "0.3"]);
            }
            _ => args.extend(["--abort-grace", "1"]),
        }
        // A client that stays needs something else to abort its run: the request timeout.
        if client == Leaving::Stays && self == Fault::HangAfterTokens {
            args.extend(["--request-timeout", "0.3"]);
        }
        if client == Leaving::Stays && self.aborts_in_prefill() {
            // The cap makes the runtime end the next (small) request itself: under ABI 1.2 a
            // per-request cap is an rkllm_abort, which this fault delays past the timeout.
            args.extend(["--request-timeout", "0.5", "--max-new-tokens", "3"]);
        }
        args
    }
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::OpenAi => "/v1/chat/completions",
            Api::Ollama => "/api/chat",
        }
    }

    fn body(self, stream: bool) -> Value {
        json!({"stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
    }

    /// A small request that must succeed on a serving daemon.
    fn small(self) -> Value {
        json!({"stream": false, "max_tokens": 3, "options": {"num_predict": 3},
               "messages": [{"role": "user", "content": "hi"}]})
    }

    /// The error message of a body in this API's error shape, or why it is not one.
    fn error_message(self, body: &Value) -> Result<String, String> {
        let message = match self {
            Api::OpenAi => body["error"]["type"]
                .as_str()
                .and(body["error"]["message"].as_str()),
            Api::Ollama => body["error"]
                .as_str()
                .filter(|_| body.as_object().is_some_and(|o| o.len() == 1)),
        };
        message
            .map(str::to_owned)
            .ok_or_else(|| format!("not a {self:?} error: {body}"))
    }

    /// The stream's objects in order (OpenAI: without the final `[DONE]`, which must be there).
    fn stream_objects(self, body: &[u8]) -> Vec<Value> {
        match self {
            Api::OpenAi => {
                let data = sse_data(body);
                assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
                data[..data.len() - 1]
                    .iter()
                    .map(|d| serde_json::from_str(d).expect("JSON event"))
                    .collect()
            }
            Api::Ollama => String::from_utf8_lossy(body)
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON line"))
                .collect(),
        }
    }

    fn text_of(self, object: &Value) -> Option<&str> {
        match self {
            Api::OpenAi => object["choices"][0]["delta"]["content"].as_str(),
            Api::Ollama => object["message"]["content"].as_str(),
        }
    }

    fn finish_reason(self, object: &Value) -> &Value {
        match self {
            Api::OpenAi => &object["choices"][0]["finish_reason"],
            Api::Ollama => &object["done_reason"],
        }
    }
}

fn cases(fault: Fault) -> Vec<Case> {
    let mut all = Vec::new();
    for stream in [true, false] {
        for api in [Api::OpenAi, Api::Ollama] {
            for client in [Leaving::Stays, Leaving::LeavesMidAnswer] {
                all.push(Case {
                    fault,
                    stream,
                    api,
                    client,
                });
            }
        }
    }
    all
}

/// Runs the cases of `fault` at once, each with its own daemon, and reports all failures.
/// `RKLLMD_TEST_MATRIX_JOBS` caps how many run together (all 8 by default): under qemu-user on
/// 2 cores, 8 emulated daemons at once are too slow for the cases' bounds.
fn run_matrix(fault: Fault) {
    let cases = cases(fault);
    let jobs = std::env::var("RKLLMD_TEST_MATRIX_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(cases.len());
    let failures: Vec<String> = cases.chunks(jobs).flat_map(run_together).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Runs `cases` at once and returns each failure's description.
fn run_together(cases: &[Case]) -> Vec<String> {
    std::thread::scope(|s| {
        let running: Vec<_> = cases
            .iter()
            .map(|case| {
                let run = move || match case.fault {
                    Fault::FailInit => run_fail_init(case),
                    _ => run_case(case),
                };
                (case, s.spawn(run))
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(case, handle)| {
                handle
                    .join()
                    .err()
                    .map(|e| format!("{case}: {}", panic_text(&e)))
            })
            .collect()
    })
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// CLOCK_MONOTONIC in microseconds, the simulator's trace clock.
fn monotonic_us() -> i64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() * 1_000_000 + ts.tv_nsec() / 1000
}

fn metric(d: &Daemon, name: &str) -> u64 {
    let text = d.client().get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// `rkllmd_requests_total` of one endpoint, by status.
fn responses(d: &Daemon, endpoint: &str) -> BTreeMap<u16, u64> {
    let prefix = format!("rkllmd_requests_total{{endpoint=\"{endpoint}\",status=\"");
    let text = d.client().get("/metrics").text();
    text.lines()
        .filter_map(|l| {
            let (status, n) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((status.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

fn queue_depth(d: &Daemon) -> u64 {
    d.client().get("/health").json()["queue_depth"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Polls `/health` until `cond(status, body)` holds; after 10 s panics with the last answer.
fn wait_for_health(d: &Daemon, what: &str, cond: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = d.client().get("/health");
        let body = h.json();
        if cond(h.status, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; /health said {} {body}",
            h.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tag(case: &Case) -> String {
    format!(
        "f{}{}{}{}",
        case.fault as u8,
        u8::from(case.stream),
        case.api as u8,
        case.client as u8
    )
}

fn run_case(case: &Case) {
    let exp = expected(case);
    let dir = TempDir::new(&tag(case));
    let model = write_model(dir.path(), "fault", case.fault.model_lines());
    let mut d = Daemon::builder(&tag(case))
        .model(model)
        .args(case.fault.args(case.client))
        .start();
    let mut c = d.client();
    let mut body = case.api.body(case.stream);
    if case.fault.aborts_in_prefill() {
        // About 130 tokens, 1.3 s of prefill: the request timeout (0.5 s) falls in it, and a
        // small request after it still fits the timeout.
        body["messages"][0]["content"] = "tell me about the river and the mountain "
            .repeat(16)
            .into();
    }
    c.send_post(case.api.path(), &body);
    let mut left_at = None;
    match case.client {
        Leaving::Stays => check_seen(case, exp.seen, &c.read_response()),
        Leaving::LeavesMidAnswer => {
            // A stream is left after its first event; otherwise once the run has started (in
            // the prefill for AbortDelay, when no stream head has gone out yet).
            if case.stream && !case.fault.aborts_in_prefill() {
                let (status, _) = c.read_head().expect("a stream head");
                assert_eq!(status, 200, "{case}");
                c.read_chunk().expect("a first chunk");
            } else {
                common::wait_until(Duration::from_secs(5), "the run started", || {
                    !d.trace_of("rkllm_run").is_empty()
                });
            }
            if case.fault == Fault::HangAfterTokens {
                // Leave once the run is stuck (after its 2nd token, 20 ms per token).
                std::thread::sleep(Duration::from_millis(200));
            }
            left_at = Some(monotonic_us());
            drop(c);
        }
    }

    match exp.then {
        Then::Serving => wait_for_health(&d, "idle and ok", |status, h| {
            status == 200 && h["running"] == false
        }),
        Then::Wedged => wait_for_health(&d, "wedged", |status, h| {
            status == 503 && h["status"] == "wedged"
        }),
        Then::Exits(_) => unreachable!("only fail_init exits"),
    }
    assert_eq!(
        metric(&d, "rkllmd_runtime_errors_total"),
        exp.runtime_errors,
        "{case}: runtime errors"
    );
    assert_eq!(
        metric(&d, "rkllmd_aborts_total"),
        exp.aborts,
        "{case}: aborts"
    );
    // The request is counted once, whatever became of it: with the status it got, or 499 when
    // its client left before any was sent.
    let counted = responses(&d, case.api.path());
    assert_eq!(counted.values().sum::<u64>(), 1, "{case}: {counted:?}");
    let status = *counted.keys().next().unwrap();
    match exp.seen {
        Seen::Error(want, _) => assert_eq!(status, want, "{case}"),
        Seen::StreamError(_) => assert_eq!(status, 200, "{case}"),
        Seen::Left if case.stream && !case.fault.aborts_in_prefill() => {
            assert_eq!(status, 200, "{case}: a stream head was read")
        }
        Seen::Left => assert!([499, 500].contains(&status), "{case}: {status}"),
    }
    let aborts = d.trace_of("rkllm_abort");
    assert_eq!(!aborts.is_empty(), exp.abort_called, "{case}: {aborts:?}");
    if let (Some(left), Some(first)) = (left_at, aborts.first()) {
        // Right after the hangup: nothing else would abort this run (a client that leaves gets
        // no request timeout). Bounded loosely, since the machine is shared: 55 ms was seen.
        let after = first["t_us"].as_i64().unwrap() - left;
        assert!(
            (0..250_000).contains(&after),
            "{case}: rkllm_abort {after} us after the client left"
        );
    }
    let run_end = d.trace_of("run_end");
    let reasons: Vec<&str> = run_end
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons.len() == usize::from(!exp.run_end.is_empty())
            && reasons.iter().all(|r| exp.run_end.contains(r)),
        "{case}: run_end {reasons:?}, expected one of {:?}",
        exp.run_end
    );
    if case.fault.aborts_in_prefill() {
        let late = run_end[0]["t_us"].as_i64().unwrap() - aborts[0]["t_us"].as_i64().unwrap();
        assert!(
            late >= 300_000 || case.client == Leaving::LeavesMidAnswer,
            "{case}: the run ended {late} us after the abort"
        );
        assert_eq!(
            run_end[0]["generate_tokens"], 0,
            "{case}: aborted in the prefill"
        );
    }

    let next = d.client().post_json(case.api.path(), &case.api.small());
    let asked = Instant::now();
    match exp.then {
        Then::Serving => {
            assert_eq!(next.status, 200, "{case}: next request {}", next.text());
            // A cut run leaves the KV cache unknown: it is cleared before the next run.
            let calls: Vec<String> = d
                .trace()
                .iter()
                .filter_map(|l| l["fn"].as_str().map(str::to_owned))
                .filter(|f| ["rkllm_run", "run_end", "rkllm_clear_kv_cache"].contains(&f.as_str()))
                .collect();
            let second_run = calls.iter().rposition(|f| f == "rkllm_run").unwrap();
            assert!(
                calls[..second_run].ends_with(&["run_end".into(), "rkllm_clear_kv_cache".into()]),
                "{case}: {calls:?}"
            );
            d.signal(Signal::SIGTERM);
            assert_eq!(
                d.wait_exit(Duration::from_secs(5)).code(),
                Some(0),
                "{case}"
            );
        }
        _ => {
            assert_eq!(next.status, 503, "{case}: next request {}", next.text());
            let message = case.api.error_message(&next.json()).unwrap();
            assert!(message.contains("restart"), "{case}: {message}");
            d.signal(Signal::SIGTERM);
            let status = d.wait_exit(Duration::from_secs(5));
            assert_eq!(status.code(), Some(EXIT_DEADLINE), "{case}: {}", d.stderr());
            assert!(d.stderr().contains("left wedged"), "{case}: {}", d.stderr());
        }
    }
    assert!(
        asked.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_millis(500),
        "{case}: shutdown took {:?}",
        asked.elapsed()
    );
    assert!(!d.socket.exists(), "{case}: socket left behind");
}

fn check_seen(case: &Case, seen: Seen, r: &Response) {
    let api = case.api;
    match seen {
        Seen::Error(status, says) => {
            assert_eq!(r.status, status, "{case}: {}", r.text());
            let message = api.error_message(&r.json()).unwrap();
            assert!(message.contains(says), "{case}: {message}");
        }
        Seen::StreamError(says) => {
            assert_eq!(r.status, 200, "{case}: {}", r.text());
            let objects = api.stream_objects(&r.body);
            let text: String = objects.iter().filter_map(|o| api.text_of(o)).collect();
            assert!(!text.is_empty(), "{case}: no text before the error");
            assert!(
                objects.iter().all(|o| api.finish_reason(o).is_null()),
                "{case}: a cut stream must not look complete: {objects:?}"
            );
            let last = objects.last().unwrap();
            let message = api.error_message(last).unwrap();
            assert!(message.contains(says), "{case}: {message}");
        }
        Seen::Left => unreachable!("a client that stays sees something"),
    }
}

/// `fail_init` fails at once, so the request could never be in the queue when it does. The
/// simulator opens its trace file for every line, before the call it traces: a FIFO there with
/// no reader holds the inference thread before `rkllm_init` until the test opens it.
fn run_fail_init(case: &Case) {
    let exp = expected(case);
    let dir = TempDir::new(&tag(case));
    let model = write_model(dir.path(), "fault", case.fault.model_lines());
    let fifo = dir.path().join("trace.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut d = Daemon::builder(&tag(case))
        .model(model)
        .args(case.fault.args(case.client))
        .no_wait()
        .start_with_env("RKLLM_SIM_TRACE", fifo.to_str().unwrap());
    // The file appears at bind(), a moment before listen().
    common::wait_until(Duration::from_secs(5), "the socket", || {
        std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
    });
    let loading = d.client().get("/health");
    assert_eq!(loading.status, 503, "{case}");
    assert_eq!(loading.json()["status"], "loading", "{case}");
    let mut c = d.client();
    c.send_post(case.api.path(), &case.api.body(case.stream));
    common::wait_until(Duration::from_secs(5), "the request queued", || {
        queue_depth(&d) == 1
    });
    let client = match case.client {
        Leaving::Stays => Some(c),
        Leaving::LeavesMidAnswer => {
            drop(c);
            common::wait_until(Duration::from_secs(5), "the queue slot freed", || {
                queue_depth(&d) == 0
            });
            None
        }
    };
    // Opening the read end lets the simulator go on: rkllm_init fails.
    let mut trace = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    if let Some(mut c) = client {
        check_seen(case, exp.seen, &c.read_response());
    }
    let Then::Exits(code) = exp.then else {
        unreachable!()
    };
    let status = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(code), "{case}: {}", d.stderr());
    assert!(!d.socket.exists(), "{case}: socket left behind");
    let mut lines = String::new();
    let _ = trace.read_to_string(&mut lines);
    assert!(lines.contains("\"fn\":\"rkllm_init\""), "{case}: {lines}");
    assert!(!lines.contains("rkllm_run"), "{case}: {lines}");
}

#[test]
fn error_after_tokens_matrix() {
    run_matrix(Fault::ErrorAfterTokens);
}

#[test]
fn hang_after_tokens_matrix() {
    run_matrix(Fault::HangAfterTokens);
}

#[test]
fn abort_delay_matrix() {
    run_matrix(Fault::AbortDelay);
}

#[test]
fn abort_delay_without_finish_matrix() {
    run_matrix(Fault::AbortDelayNoFinish);
}

#[test]
fn prefill_abort_lag_matrix() {
    run_matrix(Fault::PrefillAbortLag);
}

#[test]
fn fail_init_matrix() {
    run_matrix(Fault::FailInit);
}

// ---- signals ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Situation {
    Idle,
    /// One stream mid-answer.
    Stream,
    /// One stream mid-answer, two requests waiting (`--queue-size 2`), a third refused.
    FullQueue,
}

/// The answer every stream here gets: 100 tokens, 10 ms each.
const SLOW: &[&str] = &[
    "answer_tokens_min = 100",
    "answer_tokens_max = 100",
    "decode_us_per_token = 10000",
];

fn chat(stream: bool) -> Value {
    Api::OpenAi.body(stream)
}

/// The rest of a chunked stream whose head and first chunks were read.
fn rest_of_stream(c: &mut Client) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        body.extend_from_slice(&chunk);
    }
    body
}

/// Reads raw bytes until the daemon closes (a reset counts as closed).
fn read_to_close(c: &mut Client) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match c.conn.read(&mut chunk) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The clients of a situation, each mid-way: the stream has its head and a first event, the
/// queued requests are waiting.
struct Clients {
    stream: Option<Client>,
    queued: Vec<Client>,
}

fn set_up(d: &Daemon, situation: Situation) -> Clients {
    let mut clients = Clients {
        stream: None,
        queued: Vec::new(),
    };
    if situation == Situation::Idle {
        return clients;
    }
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat(true));
    assert_eq!(c.read_head().unwrap().0, 200);
    c.read_chunk().expect("a first event");
    clients.stream = Some(c);
    if situation == Situation::FullQueue {
        for _ in 0..2 {
            let mut c = d.client();
            c.send_post("/v1/chat/completions", &chat(false));
            clients.queued.push(c);
        }
        common::wait_until(Duration::from_secs(5), "two queued", || queue_depth(d) == 2);
        let refused = d.client().post_json("/v1/chat/completions", &chat(false));
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert!(refused.header("retry-after").is_some());
    }
    clients
}

fn run_signal(sig: Signal, situation: Situation) {
    let what = format!("{sig} while {situation:?}");
    let dir = TempDir::new("sig");
    let model = write_model(dir.path(), "slow", SLOW);
    let mut d = Daemon::builder("sig")
        .model(model)
        .args(["--queue-size", "2", "--shutdown-timeout", "1"])
        .start();
    let lock = d.socket.with_extension("sock.lock");
    let mut clients = set_up(&d, situation);
    let sent = Instant::now();
    d.signal(sig);
    match sig {
        Signal::SIGHUP => {
            std::thread::sleep(Duration::from_millis(100));
            assert!(d.child.try_wait().unwrap().is_none(), "{what}: exited");
            // Nothing changes: every answer completes normally, in order.
            if let Some(mut c) = clients.stream.take() {
                let rest = rest_of_stream(&mut c);
                let last = Api::OpenAi.stream_objects(&rest).pop().unwrap();
                assert_eq!(last["choices"][0]["finish_reason"], "stop", "{what}");
            }
            for mut c in clients.queued.drain(..) {
                assert_eq!(c.read_response().status, 200, "{what}");
            }
            assert_eq!(d.client().get("/health").status, 200, "{what}");
            assert!(d.trace_of("rkllm_abort").is_empty(), "{what}");
            assert!(d.stderr().contains("SIGHUP"), "{what}: {}", d.stderr());
            d.signal(Signal::SIGTERM);
            assert_eq!(
                d.wait_exit(Duration::from_secs(5)).code(),
                Some(0),
                "{what}"
            );
            assert!(!d.socket.exists(), "{what}: socket left behind");
        }
        Signal::SIGKILL => {
            let status = d.wait_exit(Duration::from_secs(5));
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}");
            if let Some(mut c) = clients.stream.take() {
                let rest = read_to_close(&mut c);
                assert!(!rest.ends_with(b"0\r\n\r\n"), "{what}: the stream was cut");
            }
            for mut c in clients.queued.drain(..) {
                assert!(read_to_close(&mut c).is_empty(), "{what}: no answer");
            }
            assert!(d.socket.exists(), "{what}: SIGKILL leaves the socket");
            restart_over_stale_socket(&d.socket, &what);
        }
        _ => {
            // Graceful: the stream is cut short and says so, with an error event then [DONE]
            // (never a finish reason that looks complete); the queue gets 503s.
            if let Some(mut c) = clients.stream.take() {
                let rest = rest_of_stream(&mut c);
                let objects = Api::OpenAi.stream_objects(&rest);
                let last = objects.last().unwrap();
                assert_eq!(
                    last["error"]["type"], "server_shutting_down",
                    "{what}: {last}"
                );
                assert!(
                    objects
                        .iter()
                        .all(|o| o["choices"][0]["finish_reason"].is_null()),
                    "{what}: {objects:?}"
                );
                assert!(c.is_closed(), "{what}: closed after the stream");
            }
            for mut c in clients.queued.drain(..) {
                let r = c.read_response();
                assert_eq!(r.status, 503, "{what}: {}", r.text());
                assert_eq!(r.json()["error"]["type"], "server_shutting_down", "{what}");
            }
            let status = d.wait_exit(Duration::from_secs(5));
            assert_eq!(status.code(), Some(0), "{what}: {}", d.stderr());
            assert!(
                sent.elapsed() < SHUTDOWN_TIMEOUT,
                "{what}: exit took {:?}",
                sent.elapsed()
            );
            assert!(!d.socket.exists(), "{what}: socket left behind");
            assert!(!lock.exists(), "{what}: lock file left behind");
            let aborted = usize::from(situation != Situation::Idle);
            assert_eq!(d.trace_of("rkllm_abort").len(), aborted, "{what}");
            assert_eq!(d.trace_of("rkllm_destroy").len(), 1, "{what}");
        }
    }
}

/// The next start on the same path removes the stale socket and serves.
fn restart_over_stale_socket(socket: &Path, what: &str) {
    let next = Daemon::builder("sigrestart").start_at(socket);
    assert!(
        next.stderr().contains("removed a stale socket"),
        "{what}: {}",
        next.stderr()
    );
    assert_eq!(next.client().get("/health").status, 200, "{what}");
    let r = next
        .client()
        .post_json("/v1/chat/completions", &Api::OpenAi.small());
    assert_eq!(r.status, 200, "{what}: {}", r.text());
}

/// The prompt stops. SIGQUIT drains instead (running and queued requests finish): tests/routers.rs.
fn run_signals(situation: Situation) {
    let signals = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGKILL,
    ];
    let failures: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = signals
            .iter()
            .map(|&sig| (sig, s.spawn(move || run_signal(sig, situation))))
            .collect();
        running
            .into_iter()
            .filter_map(|(sig, h)| h.join().err().map(|e| format!("{sig}: {}", panic_text(&e))))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn signals_while_idle() {
    run_signals(Situation::Idle);
}

#[test]
fn signals_during_a_stream() {
    run_signals(Situation::Stream);
}

#[test]
fn signals_with_a_full_queue() {
    run_signals(Situation::FullQueue);
}

#[test]
fn a_client_still_reading_its_answer_does_not_hold_the_shutdown() {
    let dir = TempDir::new("slowread");
    let model = write_model(
        dir.path(),
        "big",
        &["answer_tokens_min = 150000", "answer_tokens_max = 150000"],
    );
    let mut d = Daemon::builder("slowread")
        .model(model)
        .args([
            "--max-new-tokens",
            "1000000",
            "--max-context-len",
            "1000000",
        ])
        .args(["--shutdown-timeout", "3"])
        .start();
    let mut c = d.client();
    c.send_post("/v1/chat/completions", &chat(false));
    // The whole answer (~600 KB, more than the socket holds) is generated and waits to be read:
    // the runtime's run ended and the daemon has taken its end in (the inference thread's last
    // message can trail the runtime's trace line, by a lot under qemu).
    common::wait_until(Duration::from_secs(10), "the run ended", || {
        !d.trace_of("run_end").is_empty()
    });
    common::wait_until(
        Duration::from_secs(10),
        "the daemon saw the run end",
        || d.client().get("/health").json()["running"] == false,
    );
    let sent = Instant::now();
    d.signal(Signal::SIGTERM);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 500_000, "{} bytes", r.body.len());
    assert!(c.is_closed(), "closed once the answer is out");
    drop(c);
    assert_eq!(
        d.wait_exit(Duration::from_secs(5)).code(),
        Some(0),
        "{}",
        d.stderr()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "the shutdown waited {:?} for a client that had its answer",
        sent.elapsed()
    );
    assert!(!d.socket.exists());
}

/// An answer cut short mid-stream, by the request timeout or by a shutdown, under each API, with
/// the runtime sending FINISH after an abort or not (`abort_finish`): the stream ends with an
/// error in the API's shape (OpenAI: an error object, then `[DONE]`; Ollama: an `{"error"}`
/// line) and never with a finish reason; an answer not streamed gets an error status.
#[test]
fn answers_cut_mid_stream_end_with_an_error() {
    let mut failures = Vec::new();
    for abort_finish in ["abort_finish = 0", "abort_finish = 1"] {
        for api in [Api::OpenAi, Api::Ollama] {
            for stream in [true, false] {
                for cut in ["timeout", "SIGTERM"] {
                    let what = format!("{api:?} stream={stream} {cut} {abort_finish}");
                    let run = std::panic::catch_unwind(|| {
                        run_cut(api, stream, cut == "SIGTERM", abort_finish);
                    });
                    if let Err(e) = run {
                        failures.push(format!("{what}: {}", panic_text(&e)));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_cut(api: Api, stream: bool, sigterm: bool, abort_finish: &str) {
    let case = Case {
        fault: Fault::ErrorAfterTokens, // only named in messages
        stream,
        api,
        client: Leaving::Stays,
    };
    let dir = TempDir::new("cut");
    let mut lines = SLOW.to_vec();
    lines.push(abort_finish);
    let model = write_model(dir.path(), "slow", &lines);
    let mut b = Daemon::builder("cut")
        .model(model)
        .args(["--shutdown-timeout", "1"]);
    if !sigterm {
        b = b.args(["--request-timeout", "0.4"]);
    }
    let mut d = b.start();
    let mut c = d.client();
    c.send_post(api.path(), &api.body(stream));
    if sigterm {
        common::wait_until(Duration::from_secs(5), "the run started", || {
            !d.trace_of("rkllm_run").is_empty()
        });
        // Some 30 tokens out of 100 (10 ms each).
        std::thread::sleep(Duration::from_millis(300));
        d.signal(Signal::SIGTERM);
    }
    let r = c.read_response();
    let (status, says) = match sigterm {
        true => (503, "shutting down"),
        false => (504, "request timeout"),
    };
    match stream {
        true => check_seen(&case, Seen::StreamError(says), &r),
        false => check_seen(&case, Seen::Error(status, says), &r),
    }
    if sigterm {
        assert!(c.is_closed(), "closed after the cut answer");
    }
    drop(c);
    if !sigterm {
        d.signal(Signal::SIGTERM);
    }
    let status = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
}
