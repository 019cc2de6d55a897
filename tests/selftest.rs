//! `rkllmd selftest`: the real binary against the simulator in its behaviour settings; each line
//! must say what the setting makes the simulator do.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{write_model, TempDir};

const CHECK_FAILED: i32 = 1;
const USAGE: i32 = 2;

/// Every check's name, in the order they print.
const CHECKS: [&str; 14] = [
    "abi",
    "banner",
    "template",
    "bos",
    "tools",
    "history",
    "prefix-reuse",
    "pause",
    "thread",
    "runtime-tools",
    "context-shift",
    "abort-prefill",
    "abort-decode",
    "abort-finish",
];

/// Timings slow enough for aborts to land in prefill and in decode, answers longer than the
/// abort checks' cap of 128 tokens.
const TIMED: [&str; 4] = [
    "prefill_us_per_token = 1000",
    "decode_us_per_token = 4000",
    "answer_tokens_min = 300",
    "answer_tokens_max = 400",
];

/// The context check's line for the simulator's default: 9 prompt + 4 answer tokens a run, the
/// context of 64 full after five runs, then half of it deleted.
const CONTEXT_SHIFTED: &str = "ok    context-shift: with keep_history past max_context_len 64: the runtime deleted 32 tokens and went on (KV cache 64 tokens, a run of 9 prefilled + 4 generated, then 45); rkllmd sees the size differ and starts the cache over";

struct Report {
    code: i32,
    stdout: String,
    trace: String,
    took: Duration,
}

impl Report {
    /// The finding line of `check` (hint lines excluded).
    fn line(&self, check: &str) -> &str {
        let marker = format!(" {check}: ");
        self.stdout
            .lines()
            .find(|l| !l.starts_with(' ') && l.contains(&marker))
            .unwrap_or_else(|| panic!("no '{check}' line in:\n{}", self.stdout))
    }

    fn status(&self, check: &str) -> &str {
        self.line(check).split_whitespace().next().unwrap_or("")
    }

    fn count(&self, call: &str) -> usize {
        let field = format!("\"fn\":\"{call}\"");
        self.trace.lines().filter(|l| l.contains(&field)).count()
    }
}

/// Runs `rkllmd selftest` in `dir` (as its working directory, with the simulator's trace there)
/// on a model with `keys`, plus `extra` arguments.
fn selftest(dir: &TempDir, keys: &[&str], extra: &[&str]) -> Report {
    let lines: Vec<&str> = TIMED.iter().chain(keys).copied().collect();
    let model = write_model(dir.path(), "model", &lines);
    let trace = dir.path().join("trace.jsonl");
    let started = Instant::now();
    let out = Command::new(common::daemon_bin())
        .arg("selftest")
        .arg("--model")
        .arg(&model)
        .args(["--config", "/dev/null"])
        .args(extra)
        .current_dir(dir.path())
        .env("RKLLM_SIM_TRACE", &trace)
        .output()
        .expect("run rkllmd selftest");
    let took = started.elapsed();
    Report {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        trace: std::fs::read_to_string(&trace).unwrap_or_default(),
        took,
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_default_simulator_meets_every_assumption_and_each_line_says_what_it_saw() {
    let dir = TempDir::new("selftest-default");
    let r = selftest(&dir, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    for check in CHECKS {
        assert_eq!(r.status(check), "ok", "{}", r.line(check));
    }
    assert!(r.line("banner").ends_with(&format!(
        "RKLLM SDK version {}",
        if env!("RKLLMD_ABI") == "1.2" {
            "1.2.3"
        } else {
            "1.3.0"
        }
    )));
    assert!(
        r.line("template").contains("honoured"),
        "{}",
        r.line("template")
    );
    assert!(r.line("bos").contains("not added"), "{}", r.line("bos"));
    // rknn-llm#397, as the simulator does by default.
    assert!(r.line("tools").contains("refused"), "{}", r.line("tools"));
    assert!(
        r.line("history").contains("exactly both runs"),
        "{}",
        r.line("history")
    );
    assert!(
        r.line("prefix-reuse").contains("is reused"),
        "{}",
        r.line("prefix-reuse")
    );
    assert!(
        r.line("pause").contains(
            "FINISH follows a pause: no; the cache keeps the prompt and the paused answer"
        ),
        "{}",
        r.line("pause")
    );
    assert!(r
        .line("thread")
        .contains("every callback ran on the thread"));
    // The simulator's tools system turn (README): 87 tokens more, gone after the removal.
    assert_eq!(
        r.line("runtime-tools"),
        "ok    runtime-tools: set_function_tools under the model's own template puts the tools in \
         the prompt and a call with none takes them out (25 tokens for 'apple river stone cloud', \
         112 with the tools, 25 after a call with none)"
    );
    assert_eq!(r.line("context-shift"), CONTEXT_SHIFTED);
    for check in ["abort-prefill", "abort-decode"] {
        assert!(
            r.line(check).contains("ms after rkllm_abort"),
            "{}",
            r.line(check)
        );
    }
    // The abort during prefill lands before any token.
    assert!(
        r.line("abort-prefill").contains("after 0 token(s)"),
        "{}",
        r.line("abort-prefill")
    );
    assert!(r
        .line("abort-finish")
        .contains("FINISH follows rkllm_abort: yes"));
    let summary = r
        .stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap();
    assert_eq!(summary, "summary: 14 ok, 0 unknown, 0 FAIL");
    assert!(r.stdout.contains(&format!(
        "rkllmd {} (ABI {})",
        env!("CARGO_PKG_VERSION"),
        env!("RKLLMD_ABI")
    )));
    assert!(r.stdout.contains("banner version"));
    assert!(r.stdout.contains("\nsoc: "));
    assert!(r.stdout.contains("; cpus: "));
    assert!(r.took < Duration::from_secs(20), "took {:?}", r.took);
}

#[test]
fn bos_added_by_the_runtime_is_reported_and_the_rest_still_holds() {
    let dir = TempDir::new("selftest-bos");
    let r = selftest(&dir, &["add_bos = 1"], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.line("bos").starts_with("ok    bos: added"),
        "{}",
        r.line("bos")
    );
    assert!(
        r.line("template").contains("honoured"),
        "{}",
        r.line("template")
    );
    // 4 words plus the BOS, twice the words plus one BOS.
    assert!(r
        .line("template")
        .contains("5 tokens for 'apple river stone cloud', 9 for it twice"));
    assert_eq!(r.status("history"), "ok", "{}", r.line("history"));

    let dir = TempDir::new("selftest-nobos");
    let r = selftest(&dir, &["add_bos = 0"], &[]);
    assert!(
        r.line("bos").starts_with("ok    bos: not added"),
        "{}",
        r.line("bos")
    );
    assert!(r
        .line("template")
        .contains("4 tokens for 'apple river stone cloud', 8 for it twice"));
}

#[test]
fn an_abort_without_finish_is_reported_and_still_meets_the_daemon_s_assumptions() {
    for (setting, seen) in [("abort_finish = 0", "no"), ("abort_finish = 1", "yes")] {
        let dir = TempDir::new("selftest-abortfinish");
        let r = selftest(&dir, &[setting], &[]);
        assert_eq!(r.code, 0, "{setting}: {}", r.stdout);
        assert!(
            r.line("abort-finish").starts_with(&format!(
                "ok    abort-finish: FINISH follows rkllm_abort: {seen}"
            )),
            "{setting}: {}",
            r.line("abort-finish")
        );
        for check in ["abort-prefill", "abort-decode"] {
            assert_eq!(r.status(check), "ok", "{setting}: {}", r.line(check));
        }
    }
}

#[test]
fn an_abort_that_lands_too_late_fails_with_exit_1() {
    // Past the grace period: the daemon would call the runtime wedged.
    let dir = TempDir::new("selftest-late");
    let r = selftest(&dir, &["abort_delay_ms = 200"], &["--abort-grace", "0.1"]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert_eq!(r.status("abort-decode"), "FAIL", "{}", r.stdout);
    assert!(r
        .line("abort-decode")
        .contains("later than abort-grace (100 ms)"));
    assert!(r
        .stdout
        .contains("      hint: rkllmd would declare the runtime wedged"));
    assert_eq!(r.status("history"), "ok");
    assert!(
        r.stdout.contains("summary: 12 ok, 0 unknown, 2 FAIL"),
        "{}",
        r.stdout
    );

    // Never in time: the run goes on to its cap.
    let dir = TempDir::new("selftest-ignored");
    let r = selftest(&dir, &["abort_delay_ms = 60000"], &[]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert!(
        r.line("abort-decode").contains("the abort was ignored"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_model_too_fast_to_abort_is_unknown_not_failed() {
    let dir = TempDir::new("selftest-fast");
    let model = write_model(dir.path(), "fast", &[]);
    let out = Command::new(common::daemon_bin())
        .args(["selftest", "--config", "/dev/null", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let prefill = stdout
        .lines()
        .find(|l| l.contains(" abort-prefill: "))
        .unwrap();
    assert!(
        prefill.starts_with("unknown abort-prefill: no abort observed: the prefill ended"),
        "{prefill}"
    );
}

#[test]
fn every_handle_is_destroyed_and_nothing_is_written() {
    let dir = TempDir::new("selftest-clean");
    let r = selftest(&dir, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.count("rkllm_init") >= 3, "{}", r.trace);
    assert_eq!(
        r.count("rkllm_init"),
        r.count("rkllm_destroy"),
        "{}",
        r.trace
    );
    // Every handle that ran under rkllmd's template set it empty first.
    assert_eq!(r.count("rkllm_set_chat_template"), 4, "{}", r.trace);
    let names: Vec<String> = files_in(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["model.rkllm", "trace.jsonl"]);
}

#[test]
fn a_runtime_of_the_other_abi_fails_first_and_nothing_else_runs() {
    let dir = TempDir::new("selftest-abi");
    let other = env!("RKLLMD_OTHER_SIM_LIB");
    let r = selftest(&dir, &[], &["--runtime-library", other]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert_eq!(r.status("abi"), "FAIL", "{}", r.stdout);
    assert!(!r.stdout.contains(" template: "), "{}", r.stdout);
    assert!(
        r.stdout.contains("summary: 0 ok, 0 unknown, 1 FAIL"),
        "{}",
        r.stdout
    );
    assert_eq!(r.count("rkllm_init"), 0, "{}", r.trace);

    let dir = TempDir::new("selftest-nolib");
    let r = selftest(
        &dir,
        &[],
        &["--runtime-library", "/nonexistent/librkllmrt.so"],
    );
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert!(
        r.line("abi")
            .starts_with("FAIL  abi: /nonexistent/librkllmrt.so"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("summary: 0 ok, 0 unknown, 1 FAIL\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("runtime: /nonexistent/librkllmrt.so (not loaded), banner version unknown"),
        "{}",
        r.stdout
    );
}

#[test]
fn selftest_needs_a_model() {
    let out = Command::new(common::daemon_bin())
        .args(["selftest", "--config", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model"));
}

#[test]
fn help_documents_selftest_and_its_exit_code() {
    let out = Command::new(common::daemon_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("rkllmd selftest --model FILE"), "{help}");
    assert!(help.contains("a failing check or selftest"), "{help}");
}

#[test]
fn a_run_that_hangs_and_ignores_abort_ends_selftest_with_a_wedged_line() {
    // The first run that makes two tokens hangs (under ABI 1.3 the history check's; under 1.2,
    // with no per-run cap, already the template check's).
    let dir = TempDir::new("selftest-hang");
    let r = selftest(&dir, &["hang_after_tokens = 2"], &["--abort-grace", "0.2"]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert_eq!(r.status("banner"), "ok", "{}", r.stdout);
    assert_eq!(r.stdout.matches("FAIL").count(), 1, "{}", r.stdout);
    assert!(
        r.line("wedged").starts_with(
            "FAIL  wedged: a run went on past 30 s and then ignored rkllm_abort for 200 ms"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("summary: stopped at a wedged run\nrkllmd "),
        "{}",
        r.stdout
    );
    assert_eq!(r.count("rkllm_abort"), 1, "{}", r.trace);
    assert!(r.took < Duration::from_secs(40), "took {:?}", r.took);
}

#[test]
fn a_runtime_that_fails_instead_of_shifting_the_context_is_reported_and_is_no_failure() {
    let dir = TempDir::new("selftest-noshift");
    let r = selftest(&dir, &["context_shift = 0"], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        r.line("context-shift"),
        "ok    context-shift: with keep_history past max_context_len 64: the run that did not fit \
         failed instead (the run failed: the runtime reported an error during generation (code -1); \
         KV cache 64 tokens, a run of about 13); rkllmd starts the cache over before it is full"
    );
    assert!(r.trace.contains(r#""reason":"context""#), "{}", r.trace);

    let dir = TempDir::new("selftest-shift");
    let r = selftest(&dir, &["context_shift = 1"], &[]);
    assert_eq!(r.line("context-shift"), CONTEXT_SHIFTED);
    // The trace agrees: one run shifted, by what the line says.
    let shifted: Vec<&str> = r
        .trace
        .lines()
        .filter(|l| l.contains(r#""fn":"run_end""#) && !l.contains(r#""shifted_tokens":0"#))
        .collect();
    assert_eq!(shifted.len(), 1, "{}", r.trace);
    assert!(
        shifted[0].contains(r#""shifted_tokens":32"#),
        "{}",
        shifted[0]
    );
}

#[test]
fn a_runtime_that_ignores_the_empty_template_fails_the_template_check_with_exit_1() {
    let dir = TempDir::new("selftest-template");
    let r = selftest(&dir, &["custom_template = 0"], &[]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    // The simulator's ChatML system turn, prefix and postfix: 21 tokens around every input.
    assert_eq!(
        r.line("template"),
        "FAIL  template: set_chat_template(\"\", \"\", \"\") not honoured: 21 tokens are added \
         to every run (25 tokens for 'apple river stone cloud', 29 for it twice; 25 under the \
         runtime's own template)"
    );
    assert_eq!(
        r.line("bos"),
        "unknown bos: cannot tell while a template wraps the input"
    );
    assert!(
        r.stdout.contains("summary: 12 ok, 1 unknown, 1 FAIL\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_runtime_that_does_not_keep_history_fails_the_history_check_with_exit_1() {
    let dir = TempDir::new("selftest-history");
    let r = selftest(&dir, &["history_kept = 0"], &[]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    // Only each run's prompt stays (4 words, then 6), not the answers nor the first run.
    assert_eq!(
        r.line("history"),
        "FAIL  history: KV cache 4 tokens after a keep_history run of 8 (prefill + generated), 6 \
         after a second of 10: the cache does not hold both runs"
    );
    // Nothing accumulates, so the context cannot be filled: not mistaken for a shift.
    assert_eq!(r.status("context-shift"), "unknown", "{}", r.stdout);
    assert!(
        r.line("context-shift")
            .contains("keep_history does not accumulate (see the history line)"),
        "{}",
        r.line("context-shift")
    );
    assert!(
        r.stdout.contains("summary: 12 ok, 1 unknown, 1 FAIL\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn callbacks_from_another_thread_fail_the_thread_check_with_exit_1() {
    let dir = TempDir::new("selftest-thread");
    let r = selftest(&dir, &["callback_thread = 1"], &[]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert_eq!(
        r.line("thread"),
        "FAIL  thread: the callback ran on another thread than rkllm_run's caller"
    );
    // Everything else holds.
    assert!(
        r.stdout.contains("summary: 13 ok, 0 unknown, 1 FAIL\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn tools_that_a_call_with_none_does_not_remove_fail_the_runtime_tools_check_with_exit_1() {
    let dir = TempDir::new("selftest-tools");
    let r = selftest(&dir, &["tools_removable = 0"], &[]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert_eq!(
        r.line("runtime-tools"),
        "FAIL  runtime-tools: a call with no tools does not remove them (25 tokens for 'apple river \
         stone cloud', 112 with the tools, 112 after a call with none)"
    );
    assert!(
        r.stdout.contains(
            "      hint: with chat-template = runtime requests would get the wrong tools"
        ),
        "{}",
        r.stdout
    );
    // The other checks still hold.
    assert!(
        r.stdout.contains("summary: 13 ok, 0 unknown, 1 FAIL\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_daemon_holding_the_npu_keeps_selftest_from_loading_a_model() {
    let dir = TempDir::new("selftest-npu");
    let npu = dir.path().join("npu.lock");
    // What a running rkllmd with `npu-lock = FILE` holds.
    let file = std::fs::File::create(&npu).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let r = selftest(&dir, &[], &["--npu-lock", npu.to_str().unwrap()]);
    assert_eq!(r.code, CHECK_FAILED, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "FAIL  npu-lock: the NPU is in use by another instance (pid {}, holding {})",
            std::process::id(),
            npu.display()
        )),
        "{}",
        r.stdout
    );
    assert_eq!(r.count("rkllm_init"), 0, "no model loaded: {}", r.trace);
    drop(held);
    let r = selftest(&dir, &[], &["--npu-lock", npu.to_str().unwrap()]);
    assert_eq!(r.code, 0, "free again: {}", r.stdout);
}
