//! Where values come from (config file, defaults, environment) and the checks across them.

use std::error::Error;
use std::path::{Path, PathBuf};

use super::{argv, fail, run, Scratch};
use crate::config::*;

#[test]
fn config_file_then_flags() {
    let s = Scratch::new();
    let conf = s.write(
        "rkllmd.conf",
        &format!(
            "model = {}\nmax_connections = 10\nqueue-size = 3\nallow_uid = 1,2\nallow_uid = 3\nallow_gid = 50\n\
             syslog = yes\ntemperature = \"0.2\"\n",
            s.model()
        ),
    );
    let c = run(&["--config", &conf], &s.env());
    assert_eq!((c.max_connections, c.queue_size), (10, 3));
    assert_eq!(c.allow_uid, [1, 2, 3]);
    assert_eq!(c.allow_gid, [50]);
    assert!(c.syslog);
    assert_eq!(c.sampling.temperature, 0.2);
    assert_eq!(c.config_file.as_deref(), Some(Path::new(&conf)));

    let c = run(
        &[
            "--max-connections",
            "20",
            "--config",
            &conf,
            "--allow-uid",
            "9",
            "--allow-uid=10,11",
            "--syslog=0",
        ],
        &s.env(),
    );
    assert_eq!(
        (c.max_connections, c.queue_size),
        (20, 3),
        "flags win wherever they stand"
    );
    assert_eq!(
        c.allow_uid,
        [9, 10, 11],
        "flag allow lists replace the file's"
    );
    assert_eq!(c.allow_gid, [50], "untouched list keeps the file's values");
    assert!(!c.syslog);
}

#[test]
fn default_config_file_is_read_only_when_present() {
    let s = Scratch::new();
    let mut env = s.env();
    assert_eq!(run(&["--model", &s.model()], &env).config_file, None);
    let conf = s.write("default.conf", "queue_size = 5\n");
    env.default_config = PathBuf::from(&conf);
    let c = run(&["--model", &s.model()], &env);
    assert_eq!(c.queue_size, 5);
    assert_eq!(c.config_file, Some(PathBuf::from(&conf)));
}

#[test]
fn named_config_file_must_exist_and_be_readable() {
    let s = Scratch::new();
    let missing = s.path("nope.conf");
    assert_eq!(
        fail(&["--config", &missing], &s.env()),
        format!("config file '{missing}' does not exist")
    );
    let dir = s.path("");
    let err = parse(&argv(&["--config", &dir]), &s.env()).unwrap_err();
    assert!(matches!(err, ConfigError::ConfigFileRead { .. }), "{err:?}");
    assert!(err.source().is_some());
}

#[test]
fn config_file_errors_name_file_line_and_key() {
    let s = Scratch::new();
    let conf = s.write("bad.conf", "# comment\nmodel = /x\nfo = 1\n");
    assert_eq!(
        fail(&["--config", &conf], &s.env()),
        format!("{conf} line 3: unknown key 'fo'")
    );
    let conf = s.write("bad2.conf", "\n\nmax_connections = lots\n");
    assert_eq!(
        fail(&["--config", &conf], &s.env()),
        format!("{conf} line 3: invalid value 'lots' for max_connections: expected an integer from 1 to 65536")
    );
}

#[test]
fn model_is_required_to_run_and_must_be_a_readable_file() {
    let s = Scratch::new();
    assert_eq!(
        fail(&[], &s.env()),
        "no model given: pass --model FILE or set 'model' in the config file"
    );
    let missing = s.path("x.rkllm");
    assert_eq!(
        fail(&["--model", &missing], &s.env()),
        format!("model file '{missing}' does not exist")
    );
    let dir = s.path("");
    assert_eq!(
        fail(&["--model", &dir], &s.env()),
        format!("model '{dir}' is not a regular file")
    );
    let err = parse(&argv(&["--model", &missing]), &s.env()).unwrap_err();
    assert_eq!(err.exit_code(), crate::exit::USAGE);
}

/// The setup of `rkllmd check`, which a bad command line still refuses.
fn check_setup(args: &[&str], env: &Env) -> CheckSetup {
    match parse(&argv(args), env) {
        Ok(Command::Check(setup)) => setup,
        other => panic!("{args:?}: {other:?}"),
    }
}

#[test]
fn check_runs_without_a_model_but_checks_one_that_is_named() {
    let s = Scratch::new();
    let c = check_setup(&["check", "--max-connections", "3"], &s.env());
    assert_eq!(c.config_error, None);
    assert_eq!(c.root, PathBuf::from("/"));
    assert_eq!(c.config.model, PathBuf::new());
    assert_eq!(c.config.model_name, "");
    assert_eq!(c.config.max_connections, 3);

    let missing = s.path("x.rkllm");
    let c = check_setup(&["check", "--model", &missing], &s.env());
    assert_eq!(
        c.config_error.as_deref(),
        Some(format!("model file '{missing}' does not exist").as_str())
    );
    assert_eq!(
        c.config.model,
        PathBuf::from(&missing),
        "kept for the other checks"
    );

    let c = check_setup(
        &["check", "--model", &s.model(), "--root", "/srv/img"],
        &s.env(),
    );
    assert_eq!(c.config_error, None);
    assert_eq!(c.root, PathBuf::from("/srv/img"));
}

#[test]
fn check_reports_an_invalid_config_and_keeps_every_valid_value() {
    let s = Scratch::new();
    let conf = s.write(
        "bad.conf",
        "queue-size = 3\ntop-p = 2\nmax-connections = 9\n",
    );
    let c = check_setup(
        &[
            "check",
            "--config",
            &conf,
            "--top-k",
            "7",
            "--temperature",
            "x",
        ],
        &s.env(),
    );
    let err = c.config_error.unwrap();
    assert!(
        err.contains("line 2") && err.contains("top-p"),
        "the first error: {err}"
    );
    assert_eq!(c.config.queue_size, 3);
    assert_eq!(c.config.max_connections, 9);
    assert_eq!(c.config.sampling.top_k, 7);
    assert_eq!(c.config.sampling.top_p, Config::default().sampling.top_p);
    assert_eq!(c.config.config_file, Some(PathBuf::from(&conf)));

    let absent = s.path("absent.conf");
    let c = check_setup(
        &["check", "--config", &absent, "--queue-size", "5"],
        &s.env(),
    );
    assert_eq!(
        c.config_error.as_deref(),
        Some(format!("config file '{absent}' does not exist").as_str())
    );
    assert_eq!(c.config.queue_size, 5);

    // A bad command line is not a configuration to diagnose.
    assert_eq!(
        fail(&["check", "--no-such"], &s.env()),
        "unknown option '--no-such' (see --help)"
    );
    // Outside check, the same errors stop the daemon, and --config-only is refused.
    assert!(fail(&["--config", &conf, "--model", &s.model()], &s.env()).contains("line 2"));
    assert_eq!(
        fail(&["--config-only", "--model", &s.model()], &s.env()),
        "--config-only is only for 'rkllmd check' (see --help)"
    );
}

#[test]
fn top_watches_the_socket_unless_given_an_address() {
    let s = Scratch::new();
    let conf = s.write(
        "top.conf",
        "socket = /srv/r.sock\ntcp = 127.0.0.1:8080\napi-key = sesame\n",
    );
    let top = |args: &[&str]| match parse(&argv(args), &s.env()) {
        Ok(Command::Top(t)) => t,
        other => panic!("{other:?}"),
    };
    // The config file's tcp is the daemon's listener: top still uses the socket.
    let t = top(&["top", "--config", &conf]);
    assert_eq!(t.socket, PathBuf::from("/srv/r.sock"));
    assert_eq!(t.tcp, None);
    assert_eq!(
        t.api_key.as_ref().map(ApiKey::as_bytes),
        Some(&b"sesame"[..])
    );
    let t = top(&["top", "--config", &conf, "--tcp", "10.0.0.5:9000"]);
    assert_eq!(t.tcp, Some("10.0.0.5:9000".parse().unwrap()));
    // No model is needed to watch one.
    assert!(top(&["top"]).api_key.is_none());
    let bad = parse(&argv(&["top", "--tcp", "nowhere"]), &s.env()).unwrap_err();
    assert!(bad.to_string().contains("--tcp"), "{bad}");
}

#[test]
fn the_daemon_reads_the_board_under_root() {
    let s = Scratch::new();
    assert_eq!(
        run(&["--model", &s.model()], &s.env()).root,
        PathBuf::from("/")
    );
    let c = run(&["--root", "/srv/board", "--model", &s.model()], &s.env());
    assert_eq!(c.root, PathBuf::from("/srv/board"));
}

#[test]
fn default_socket_depends_on_user_and_xdg() {
    let s = Scratch::new();
    let model = s.model();
    let mut env = s.env();
    env.xdg_runtime_dir = Some(PathBuf::from("/run/user/1000"));
    assert_eq!(
        run(&["--model", &model], &env).socket,
        Path::new("/run/rkllmd/rkllmd.sock"),
        "root ignores XDG"
    );
    env.euid = 1000;
    assert_eq!(
        run(&["--model", &model], &env).socket,
        Path::new("/run/user/1000/rkllmd/rkllmd.sock")
    );
    env.xdg_runtime_dir = None;
    assert_eq!(
        run(&["--model", &model], &env).socket,
        Path::new("/tmp/rkllmd-1000/rkllmd.sock")
    );
    env.xdg_runtime_dir = Some(PathBuf::from("relative/dir"));
    assert_eq!(
        run(&["--model", &model], &env).socket,
        Path::new("/tmp/rkllmd-1000/rkllmd.sock")
    );
    assert_eq!(
        run(&["--model", &model, "--socket", "/x.sock"], &env).socket,
        Path::new("/x.sock")
    );
}

#[test]
fn overlong_socket_path_is_refused() {
    let s = Scratch::new();
    let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH));
    let err = fail(&["--model", &s.model(), "--socket", &long], &s.env());
    assert_eq!(
        err,
        format!("socket path '{long}' is 108 bytes long; at most 107 fit")
    );
}

#[test]
fn tcp_beyond_loopback_needs_an_api_key() {
    let s = Scratch::new();
    let m = s.model();
    let env = s.env();
    assert_eq!(
        run(&["--model", &m, "--tcp", "127.0.0.1:8080"], &env).tcp,
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert!(run(&["--model", &m, "--tcp", "[::1]:8080"], &env)
        .tcp
        .is_some());
    assert_eq!(
        run(&["--model", &m, "--tcp", "localhost:0"], &env).tcp,
        Some("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(
        fail(&["--model", &m, "--tcp", "0.0.0.0:8080"], &env),
        "--tcp 0.0.0.0:8080 is not a loopback address and needs an API key (--api-key-file or --api-key)"
    );
    assert!(fail(&["--model", &m, "--tcp", "192.168.1.2:80"], &env).contains("needs an API key"));
    let c = run(
        &["--model", &m, "--tcp", "0.0.0.0:8080", "--api-key", "k"],
        &env,
    );
    assert!(c.api_key_matches(b"k"));
}

#[test]
fn api_key_sources() {
    let s = Scratch::new();
    let m = s.model();
    let env = s.env();
    let empty = s.write("empty.key", " \n");
    assert_eq!(
        fail(&["--model", &m, "--api-key-file", &empty], &env),
        format!("API key file '{empty}' is empty")
    );
    let missing = s.path("missing.key");
    let err = parse(&argv(&["--model", &m, "--api-key-file", &missing]), &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read API key file '{missing}'")
    );
    assert!(err.source().is_some());
    let key_file = s.write("good.key", "from-file\n");
    assert_eq!(
        fail(
            &["--model", &m, "--api-key", "a", "--api-key-file", &key_file],
            &env
        ),
        "--api-key and --api-key-file cannot both be given"
    );

    let conf = s.write("k.conf", "api_key = from-conf\n");
    let c = run(&["--model", &m, "--config", &conf], &env);
    assert!(c.api_key_matches(b"from-conf"));
    let c = run(
        &[
            "--model",
            &m,
            "--config",
            &conf,
            "--api-key-file",
            &key_file,
        ],
        &env,
    );
    assert!(
        c.api_key_matches(b"from-file") && !c.api_key_matches(b"from-conf"),
        "flags win over the file"
    );
    let both = s.write(
        "both.conf",
        &format!("api_key = a\napi_key_file = {key_file}\n"),
    );
    assert_eq!(
        fail(&["--model", &m, "--config", &both], &env),
        format!("{both} sets both api_key and api_key_file; keep one")
    );
}

#[test]
fn api_key_comparison_and_redaction() {
    let s = Scratch::new();
    let c = run(
        &["--model", &s.model(), "--api-key", "sk-local-123"],
        &s.env(),
    );
    assert!(c.api_key_matches(b"sk-local-123"));
    assert!(!c.api_key_matches(b"sk-local-124"));
    assert!(!c.api_key_matches(b"sk-local-12"));
    assert!(!c.api_key_matches(b"sk-local-1234"));
    assert!(!c.api_key_matches(b""));
    assert!(
        !format!("{c:?}").contains("sk-local-123"),
        "Debug must not print the key"
    );
    let no_key = run(&["--model", &s.model()], &s.env());
    assert!(
        !no_key.api_key_matches(b""),
        "no key configured matches nothing"
    );
}

#[test]
fn model_name_defaults_to_the_file_stem() {
    let s = Scratch::new();
    assert_eq!(
        run(&["--model", &s.model()], &s.env()).model_name,
        "qwen2.5-1.5b"
    );
    let plain = s.write("llama", "m");
    assert_eq!(run(&["--model", &plain], &s.env()).model_name, "llama");
}

#[test]
fn process_environment_is_read_once_into_env() {
    let env = Env::from_process();
    assert_eq!(env.euid, nix::unistd::geteuid().as_raw());
    assert_eq!(env.default_config, Path::new(DEFAULT_CONFIG));
    assert!(env
        .xdg_runtime_dir
        .as_ref()
        .is_none_or(|d| !d.as_os_str().is_empty()));
}

#[test]
fn selftest_needs_a_valid_configuration_with_a_model_and_no_check_options() {
    let s = Scratch::new();
    let args = ["selftest", "--model", &s.model(), "--abort-grace", "0.5"];
    match parse(&argv(&args), &s.env()) {
        Ok(Command::Selftest(c)) => {
            assert_eq!(c.model, PathBuf::from(s.model()));
            assert_eq!(c.abort_grace, std::time::Duration::from_millis(500));
        }
        other => panic!("{other:?}"),
    }
    let fail = |args: &[&str]| parse(&argv(args), &s.env()).unwrap_err().to_string();
    assert_eq!(
        fail(&["selftest"]),
        "no model given: pass --model FILE or set 'model' in the config file"
    );
    assert_eq!(
        fail(&["selftest", "--model", &s.model(), "--config-only"]),
        "--config-only is only for 'rkllmd check' (see --help)"
    );
    // A subcommand only in first position.
    assert!(fail(&["--model", &s.model(), "selftest"]).contains("selftest"));
}
