//! `base-domain-id` and `enabled-cpus` reach `rkllm_init`'s `extend_param`, as the simulator's
//! trace records it; bad values are configuration errors.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, TempDir};
use nix::sys::signal::Signal;

const EXIT_USAGE: i32 = 2;

fn init_line(d: &Daemon) -> serde_json::Value {
    let inits = d.trace_of("rkllm_init");
    assert_eq!(inits.len(), 1, "{inits:?}");
    inits[0].clone()
}

#[test]
fn the_domain_and_cpus_reach_rkllm_init() {
    let mut d = Daemon::builder("extend")
        .args(["--base-domain-id", "1", "--enabled-cpus", "4-7"])
        .start();
    let init = init_line(&d);
    assert_eq!(init["base_domain_id"], 1, "{init}");
    assert_eq!(init["enabled_cpus_num"], 4, "{init}");
    assert_eq!(init["enabled_cpus_mask"], 0xf0, "{init}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));

    // From the config file, with a list of single CPUs and a range.
    let dir = TempDir::new("extendconf");
    let conf = dir.path().join("rkllmd.conf");
    std::fs::write(&conf, "base-domain-id = 3\nenabled-cpus = 0,2,6-7\n").unwrap();
    let mut d = Daemon::builder("extendconf")
        .args(["--config", conf.to_str().unwrap()])
        .start();
    let init = init_line(&d);
    assert_eq!(init["base_domain_id"], 3, "{init}");
    assert_eq!(init["enabled_cpus_num"], 4, "{init}");
    assert_eq!(init["enabled_cpus_mask"], 0b1100_0101, "{init}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn unset_they_keep_the_runtime_defaults() {
    let mut d = Daemon::start("extenddefault");
    let init = init_line(&d);
    // The simulator's rkllm_createDefaultParam: domain 0, 4 CPUs, no mask.
    assert_eq!(init["base_domain_id"], 0, "{init}");
    assert_eq!(init["enabled_cpus_num"], 4, "{init}");
    assert_eq!(init["enabled_cpus_mask"], 0, "{init}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn bad_values_are_configuration_errors() {
    for (flag, value, says) in [
        ("--base-domain-id", "16", "an integer from 0 to 15"),
        ("--base-domain-id", "-1", "an integer from 0 to 15"),
        ("--enabled-cpus", "7-4", "CPU numbers from 0 to 31"),
        ("--enabled-cpus", "32", "CPU numbers from 0 to 31"),
        ("--enabled-cpus", "", "CPU numbers from 0 to 31"),
    ] {
        let out = Command::new(common::daemon_bin())
            .args(["--model", common::fast_model().to_str().unwrap()])
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{flag}={value}: {err}");
        assert!(
            err.contains(&format!("'{value}'")) && err.contains(&flag[2..]) && err.contains(says),
            "{flag}={value}: {err}"
        );
    }
}
