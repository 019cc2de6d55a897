//! Flags: each one, both spellings, defaults, help, and the ways a command line goes wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{argv, fail, run, Scratch};
use crate::chat::ToolFormat;
use crate::config::options::{DefaultText, Kind, Setting, OPTIONS};
use crate::config::settings::{Draft, Layer};
use crate::config::*;

#[test]
fn every_flag_is_parsed() {
    let s = Scratch::new();
    let key_file = s.write("key", "  file-key\n");
    let model = s.model();
    let c = run(
        &[
            "--model",
            &model,
            "--model-name",
            "qwen",
            "--rknn-runtime-library",
            "/opt/rknn/librknnrt.so",
            "--socket",
            "/run/x/x.sock",
            "--socket-mode",
            "0600",
            "--socket-group",
            "rkllm",
            "--allow-uid",
            "1000",
            "--allow-uid",
            "1001,1002",
            "--allow-gid",
            "100",
            "--user",
            "rkllmd",
            "--tcp",
            "0.0.0.0:8080",
            "--api-key-file",
            &key_file,
            "--max-connections",
            "10",
            "--max-body-bytes",
            "64K",
            "--output-cap-bytes",
            "1M",
            "--header-timeout",
            "0.5",
            "--keepalive-timeout",
            "30",
            "--queue-size",
            "2",
            "--queue-timeout",
            "60",
            "--request-timeout",
            "300",
            "--shutdown-timeout",
            "3",
            "--drain-timeout",
            "7",
            "--abort-grace",
            "2.5",
            "--max-context-len",
            "2048",
            "--max-new-tokens",
            "512",
            "--temperature",
            "0",
            "--top-p",
            "1",
            "--top-k",
            "40",
            "--repeat-penalty",
            "1.0",
            "--frequency-penalty",
            "-0.5",
            "--presence-penalty",
            "0.5",
            "--notify-fd",
            "3",
            "--syslog",
            "--log-level",
            "debug",
            "--chat-template",
            "Qwen3",
            "--kv-cache-reuse",
            "false",
            "--tools-budget",
            "40%",
        ],
        &s.env(),
    );
    assert_eq!(c.model, PathBuf::from(&model));
    assert_eq!(c.model_name, "qwen");
    assert_eq!(c.rknn_runtime_library, Path::new("/opt/rknn/librknnrt.so"));
    assert_eq!(c.socket, Path::new("/run/x/x.sock"));
    assert_eq!(c.socket_mode, 0o600);
    assert_eq!(c.socket_group.as_deref(), Some("rkllm"));
    assert_eq!(c.allow_uid, [1000, 1001, 1002]);
    assert_eq!(c.allow_gid, [100]);
    assert_eq!(c.user.as_deref(), Some("rkllmd"));
    assert_eq!(c.tcp, Some("0.0.0.0:8080".parse().unwrap()));
    assert!(c.api_key_matches(b"file-key"));
    assert_eq!(c.config_file, None);
    assert_eq!(
        (c.max_connections, c.max_body_bytes, c.output_cap_bytes),
        (10, 64 << 10, 1 << 20)
    );
    assert_eq!(c.header_timeout, Duration::from_millis(500));
    assert_eq!(c.keepalive_timeout, Duration::from_secs(30));
    assert_eq!(
        (c.queue_size, c.queue_timeout),
        (2, Duration::from_secs(60))
    );
    assert_eq!(c.request_timeout, Duration::from_secs(300));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(c.drain_timeout, Duration::from_secs(7));
    assert_eq!(c.abort_grace, Duration::from_millis(2500));
    assert_eq!((c.max_context_len, c.max_new_tokens), (2048, 512));
    assert_eq!(c.chat_template, ChatTemplate::Preset("qwen3"));
    assert!(!c.kv_cache_reuse);
    assert_eq!(c.tools_budget_percent, 40);
    assert_eq!(
        (c.sampling.temperature, c.sampling.top_p, c.sampling.top_k),
        (0.0, 1.0, 40)
    );
    assert_eq!(
        (
            c.sampling.repeat_penalty,
            c.sampling.frequency_penalty,
            c.sampling.presence_penalty
        ),
        (1.0, -0.5, 0.5)
    );
    assert_eq!(c.notify_fd, Some(3));
    assert!(c.syslog);
    assert_eq!(c.log_level, log::LevelFilter::Debug);
}

#[test]
fn a_custom_template_takes_its_tool_format_from_the_config() {
    let s = Scratch::new();
    let model = s.model();
    let format = |extra: &[&str]| {
        let mut args = vec!["--model", &model, "--chat-template", "custom"];
        args.extend_from_slice(extra);
        match run(&args, &s.env()).chat_template {
            ChatTemplate::Custom(t) => t.tool_format,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(format(&[]), ToolFormat::Hermes);
    assert_eq!(
        format(&["--chat-template-tool-format", " Llama3 "]),
        ToolFormat::Llama3Json
    );
}

#[test]
fn equals_form_matches_space_form() {
    let s = Scratch::new();
    let model = s.model();
    let spaced = run(
        &[
            "--model",
            &model,
            "--top-p",
            "0.5",
            "--api-key",
            "k=v",
            "--tcp",
            "[::1]:9",
            "--syslog",
        ],
        &s.env(),
    );
    let model_eq = format!("--model={model}");
    let equals = run(
        &[
            &model_eq,
            "--top-p=0.5",
            "--api-key=k=v",
            "--tcp=[::1]:9",
            "--syslog=true",
        ],
        &s.env(),
    );
    assert_eq!(format!("{spaced:?}"), format!("{equals:?}"));
    assert!(equals.api_key_matches(b"k=v"), "only the first '=' splits");
    assert!(!run(&[&model_eq, "--syslog=no"], &s.env()).syslog);
}

#[test]
fn defaults_are_the_documented_ones() {
    let s = Scratch::new();
    let c = run(&["--model", &s.model()], &s.env());
    let expected = Config {
        model: c.model.clone(),
        model_name: "qwen2.5-1.5b".to_owned(),
        catalog: vec![ModelEntry::new(
            "qwen2.5-1.5b",
            c.model.clone(),
            &Config::default(),
        )],
        socket: PathBuf::from("/run/rkllmd/rkllmd.sock"),
        ..Config::default()
    };
    assert_eq!(format!("{c:?}"), format!("{expected:?}"));
    assert_eq!(c.max_connections, 256);
    assert_eq!(c.max_body_bytes, 1_048_576);
    assert_eq!(c.output_cap_bytes, 4 << 20);
    assert_eq!(c.socket_mode, 0o660);
    assert_eq!(c.log_level, log::LevelFilter::Info);
}

#[test]
fn documented_defaults_parse_to_the_real_defaults() {
    let defaults = format!("{:?}", Config::default());
    for opt in OPTIONS {
        if let DefaultText::Value(text) = opt.default {
            let mut draft = Draft::new();
            draft.apply(opt.key, text, Layer::Flags).unwrap();
            let env = Env {
                euid: 0,
                xdg_runtime_dir: None,
                default_config: PathBuf::new(),
            };
            let got = format!("{:?}", draft.finish(&env, false).unwrap());
            assert_eq!(got, defaults, "--{} default '{text}'", opt.name);
        }
    }
}

#[test]
fn help_documents_every_option_and_default() {
    let text = help();
    let lines: Vec<&str> = text.lines().collect();
    for opt in OPTIONS {
        let flag = format!("--{}", opt.name);
        let start = lines
            .iter()
            .position(|l| l.split_whitespace().any(|word| word == flag))
            .unwrap_or_else(|| panic!("{flag} missing from help"));
        // An entry is its line plus continuation lines, which start with blank flag columns.
        let continued = lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with("      ") && !l.trim_start().starts_with('-'));
        let entry: Vec<&str> = std::iter::once(&lines[start])
            .chain(continued)
            .copied()
            .collect();
        assert!(entry.iter().all(|l| l.len() <= 100), "too wide: {entry:#?}");
        let line = entry.join(" ");
        match opt.default {
            DefaultText::Value(v) | DefaultText::Note(v) => {
                assert!(line.contains(&format!("[default: {v}]")), "{line}");
            }
            DefaultText::None => assert!(!line.contains("default"), "{line}"),
        }
        if let Kind::Value(placeholder) = opt.kind {
            assert!(
                line.contains(&format!("--{} {placeholder}", opt.name)),
                "{line}"
            );
        }
    }
    assert!(text.contains("-h, --help") && text.contains("-V, --version"));
}

#[test]
fn help_and_version() {
    let s = Scratch::new();
    for args in [
        &["--help"][..],
        &["-h"],
        &["--model", "/nonexistent", "--help"],
        &["check", "-h"],
    ] {
        match parse(&argv(args), &s.env()) {
            Ok(Command::Help(text)) => assert_eq!(text, help()),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    for args in [&["--version"][..], &["-V"]] {
        assert!(
            matches!(parse(&argv(args), &s.env()), Ok(Command::Version)),
            "{args:?}"
        );
    }
    assert_eq!(
        fail(&["--help=yes"], &s.env()),
        "option '--help' takes no value"
    );
}

#[test]
fn unknown_options_and_stray_arguments() {
    let s = Scratch::new();
    let env = s.env();
    assert_eq!(
        fail(&["--modle", "/x"], &env),
        "unknown option '--modle' (see --help)"
    );
    assert_eq!(
        fail(&["--api-kee=secret"], &env),
        "unknown option '--api-kee' (see --help)"
    );
    assert_eq!(fail(&["-x"], &env), "unknown option '-x' (see --help)");
    assert_eq!(fail(&["-hV"], &env), "unknown option '-hV' (see --help)");
    assert_eq!(
        fail(&["serve"], &env),
        "unexpected argument 'serve' (see --help)"
    );
    assert_eq!(
        fail(&["--model", &s.model(), "check"], &env),
        "unexpected argument 'check' (see --help)"
    );
    assert_eq!(
        fail(&["--", "x"], &env),
        "unexpected argument 'x' (see --help)"
    );
    let model = s.model();
    assert_eq!(
        run(&["--model", &model, "--"], &env).model,
        PathBuf::from(&model)
    );
}

#[test]
fn missing_values() {
    let s = Scratch::new();
    assert_eq!(
        fail(&["--model"], &s.env()),
        "option '--model' needs a value (see --help)"
    );
    assert_eq!(
        fail(&["--model", "--syslog"], &s.env()),
        "option '--model' needs a value (see --help)"
    );
    assert_eq!(
        fail(&["--config"], &s.env()),
        "option '--config' needs a value (see --help)"
    );
    assert_eq!(
        fail(&["--model="], &s.env()),
        "invalid value '' for --model: expected a non-empty path without control characters"
    );
}

#[test]
fn bad_values_name_the_flag_the_value_and_what_is_expected() {
    let s = Scratch::new();
    let model = s.model();
    let cases: &[(&str, &str, &str)] = &[
        ("--max-connections", "0", "an integer from 1 to 65536"),
        ("--queue-size", "0", "an integer from 1 to 4096"),
        (
            "--max-body-bytes",
            "1T",
            "a byte count from 1 to 1073741824, optionally with a K, M or G suffix",
        ),
        (
            "--socket-mode",
            "0800",
            "an octal mode from 0 to 0777, such as 0660",
        ),
        ("--socket-mode", "1777", "an octal mode"),
        ("--header-timeout", "0", "a number of seconds above 0"),
        ("--request-timeout", "-5", "a number of seconds above 0"),
        ("--abort-grace", "soon", "a number of seconds above 0"),
        ("--temperature", "-0.1", "a number from 0 to 100"),
        ("--top-p", "0", "a number above 0 and at most 1"),
        ("--top-p", "1.5", "a number above 0 and at most 1"),
        ("--top-k", "-1", "an integer from 0 to 1048576"),
        ("--repeat-penalty", "0", "a number above 0 and at most 10"),
        ("--frequency-penalty", "3", "a number from -2 to 2"),
        ("--max-context-len", "0", "an integer from 64 to 1048576"),
        ("--max-context-len", "1", "an integer from 64 to 1048576"),
        (
            "--log-level",
            "loud",
            "one of error, warn, info, debug, trace",
        ),
        (
            "--chat-template",
            "qwen9",
            "'auto', 'runtime', 'custom' or one of",
        ),
        (
            "--tcp",
            "example.com:80",
            "ADDR:PORT with a literal address",
        ),
        (
            "--allow-uid",
            "bob",
            "a numeric id or a comma-separated list of ids",
        ),
        ("--notify-fd", "-1", "a file descriptor number"),
        ("--chat-template-tool-format", "mistral", "hermes or llama3"),
        ("--syslog=maybe", "", "one of true, false, yes, no, 1, 0"),
    ];
    for (flag, value, expected) in cases {
        let err = if value.is_empty() {
            fail(&["--model", &model, flag], &s.env())
        } else {
            fail(&["--model", &model, flag, value], &s.env())
        };
        let (name, value) = flag.split_once('=').unwrap_or((flag, value));
        let prefix = format!("invalid value '{value}' for {name}: expected {expected}");
        assert!(err.starts_with(&prefix), "{err}\n  wanted: {prefix}");
    }
}

#[test]
fn npu_lock_is_auto_none_or_a_file() {
    use crate::config::NpuLock;
    let parse = |v: &str| {
        let mut draft = Draft::new();
        draft.apply(Setting::NpuLock, v, Layer::Flags).map(|()| {
            let env = Env {
                euid: 0,
                xdg_runtime_dir: None,
                default_config: PathBuf::new(),
            };
            draft.finish(&env, false).unwrap().npu_lock
        })
    };
    assert_eq!(parse("auto"), Ok(NpuLock::Auto));
    assert_eq!(parse("none"), Ok(NpuLock::None));
    assert_eq!(
        parse("/run/rkllmd-npu.lock"),
        Ok(NpuLock::File("/run/rkllmd-npu.lock".into()))
    );
    assert_eq!(
        parse(""),
        Err("'auto', 'none' or a file to lock".to_owned())
    );
}

#[test]
fn background_and_think_default_are_parsed_and_bad_values_named() {
    use crate::engine::{BackgroundPolicy, ThinkDefault};
    let s = Scratch::new();
    let model = s.model();
    let c = run(
        &[
            "--model",
            &model,
            "--background",
            "none",
            "--think-default",
            "interactive",
        ],
        &s.env(),
    );
    assert_eq!(
        (c.background, c.think_default),
        (BackgroundPolicy::None, ThinkDefault::Interactive)
    );
    let e = fail(&["--model", &model, "--think-default", "maybe"], &s.env());
    assert!(
        e.contains("think-default") && e.contains("interactive"),
        "{e}"
    );
    let e = fail(&["--model", &model, "--background", "all"], &s.env());
    assert!(
        e.contains("background") && e.contains("non-streamed"),
        "{e}"
    );
}

#[test]
fn help_states_the_push_back_bound_the_engine_applies() {
    let bound = format!("at most {} times", crate::engine::MAX_PUSH_BACKS);
    assert!(help().contains(&bound), "help does not say {bound:?}");
}

#[test]
fn one_model_stays_loaded_by_default_and_several_keep_ollamas_five_minutes() {
    use crate::engine::KeepAlive;
    use std::time::Duration;
    let s = Scratch::new();
    let one = run(&["--model", &s.model()], &s.env());
    assert_eq!(one.keep_alive, KeepAlive::Forever);
    s.write("other.rkllm", "model");
    let dir = s.path("");
    let several = run(&["--models-dir", &dir], &s.env());
    assert_eq!(several.catalog.len(), 2, "{:?}", several.catalog);
    assert_eq!(several.keep_alive, KeepAlive::For(Duration::from_secs(300)));
    // Said explicitly, it holds for one model too.
    let set = run(&["--model", &s.model(), "--keep-alive", "5m"], &s.env());
    assert_eq!(set.keep_alive, KeepAlive::For(Duration::from_secs(300)));
}

#[test]
fn an_rknn_runtime_library_that_is_not_a_file_is_refused() {
    let s = Scratch::new();
    let model = s.model();
    // A directory named by path: dlopen would fail late, a FIFO would block for good.
    let dir = s.path("");
    let err = fail(
        &["--model", &model, "--rknn-runtime-library", &dir],
        &s.env(),
    );
    assert!(err.contains("is not a regular file"), "{err}");
}
