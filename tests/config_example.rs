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
