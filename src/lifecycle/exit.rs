//! Process exit codes, one scheme for the whole daemon:
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | clean exit, including `--help`, `--version` and a passing `check` |
//! | 1 | failure at run time or in the environment: I/O, bind, permissions, the model or runtime |
//! | 2 | bad usage or configuration: the command line, the config file, `--user` without root, an unknown user or group |
//! | 3 | another instance is running: it holds the lock, or something serves the socket |
//!
//! Init scripts can tell "fix the configuration" (2) and "already up" (3) from a real failure
//! (1); supervisors restarting on 1 should not loop on 2.

pub const SUCCESS: i32 = 0;
pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const ALREADY_RUNNING: i32 = 3;
