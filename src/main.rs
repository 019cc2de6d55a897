use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rkllmd::config::{self, Command};
use rkllmd::error::DaemonError;
use rkllmd::exit;
use rkllmd::{doctor, logging, runtime, selftest, server, top};

fn main() {
    let code = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(code) => code,
        // The panic message was already printed by the hook; guards removed the socket while
        // unwinding.
        Err(_) => exit::PANIC,
    };
    std::process::exit(code);
}

fn run() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = config::Env::from_process();
    let command = match config::parse(&args, &env) {
        Ok(c) => c,
        Err(e) => {
            let e = DaemonError::from(e);
            eprintln!("rkllmd: {e}");
            return e.exit_code();
        }
    };
    match command {
        Command::Help(text) => print_out(&text),
        Command::Version => {
            let mut text = format!("rkllmd {}\n", env!("CARGO_PKG_VERSION"));
            // Only the default name: --version reads no config file. Loading runs no runtime code
            // beyond the library's constructors.
            let loaded = runtime::load(std::path::Path::new(runtime::DEFAULT_LIBRARY));
            let info = runtime::info();
            let detail = match (&loaded, &info.simulator) {
                (Ok(lib), Some(v)) => format!("simulator {v} loaded from {}", lib.path.display()),
                (Ok(lib), None) => format!("librkllmrt loaded from {}", lib.path.display()),
                (Err(e), _) => format!("no runtime loaded: {e}"),
            };
            let _ = writeln!(text, "runtime ABI {} ({detail})", info.abi);
            print_out(&text)
        }
        Command::Check(setup) => match doctor::run(&setup, &mut std::io::stdout().lock()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("rkllmd: cannot write the report: {e}");
                exit::FAILURE
            }
        },
        // Not locked: selftest's watchdog may write the last lines from another thread.
        Command::Selftest(cfg) => match selftest::run(&cfg, &mut std::io::stdout()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("rkllmd: cannot write the report: {e}");
                exit::FAILURE
            }
        },
        Command::Top(setup) => {
            let e = top::run(&setup, &mut std::io::stdout().lock());
            // The terminal went away: nothing left to show, and nobody to tell.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                exit::OK
            } else {
                eprintln!("rkllmd: cannot draw: {e}");
                exit::FAILURE
            }
        }
        Command::Run(cfg) => {
            if let Err(e) = logging::init(cfg.log_level, cfg.syslog) {
                eprintln!("rkllmd: {}", DaemonError::Logging(e));
                return exit::FAILURE;
            }
            match server::serve(cfg, config::Rereader::new(args, env)) {
                Ok(ending) => ending.exit_code(),
                Err(e) => {
                    log::error!("{e}");
                    e.exit_code()
                }
            }
        }
    }
}

/// Writes `text` to stdout. A reader that left early (`rkllmd --help | head -1`) had what it
/// wanted: that is no failure, and never a panic (`print!` panics on EPIPE).
fn print_out(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("rkllmd: cannot write to stdout: {e}");
            exit::FAILURE
        }
    }
}
