//! The example config in board/ must stay valid: `rkllmd check` accepts it.

mod common;

use std::process::Command;

#[test]
fn the_example_config_is_valid() {
    let dir = common::TempDir::new("example");
    let out = Command::new(common::daemon_bin())
        .arg("check")
        .arg("--config")
        .arg(common::repo_path("board/etc/rkllmd.conf"))
        // The example names a board path; point it at a model that exists here.
        .args(["--model", common::fast_model().to_str().unwrap()])
        .args(["--socket", dir.path().join("s.sock").to_str().unwrap()])
        .output()
        .unwrap();
    // The other checks look at this machine (no NPU here): only the config line matters.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("ok    config: "), "{report}");
    assert!(out.status.code().is_some(), "{report}");
}

#[test]
fn a_bad_config_value_is_one_line_naming_file_and_line() {
    let dir = common::TempDir::new("badconf");
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "queue-size = 8\nmax-connections = lots\n").unwrap();
    let out = Command::new(common::daemon_bin())
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--model",
            common::fast_model().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("line 2") && err.contains("max-connections"),
        "{err}"
    );
}

#[test]
fn the_example_model_section_uncommented_is_valid() {
    let example = std::fs::read_to_string(common::repo_path("board/etc/rkllmd.conf")).unwrap();
    let start = example
        .find("# [model qwen3-1.7b]")
        .expect("the example has a model section");
    let section: String = example[start..]
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    assert!(section.contains("alias = chat"), "{section}");
    let dir = common::TempDir::new("example-section");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(common::fast_model(), models.join("qwen3-1.7b.rkllm")).unwrap();
    let conf = dir.path().join("rkllmd.conf");
    std::fs::write(&conf, &section).unwrap();
    let out = Command::new(common::daemon_bin())
        .args(["check", "--config-only", "--config", conf.to_str().unwrap()])
        .args(["--models-dir", models.to_str().unwrap()])
        .args(["--socket", dir.path().join("s.sock").to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("ok    config: "), "{report}");
}
