//! The ABI probe of the runtime `check` found (see `runtime::abi`), run in a forked child: the
//! runtime's code runs there, so a runtime that dies is a finding, not the end of the check.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::report::Finding;
use crate::runtime::{probe_in_child, Abi, AbiProbe, ChildProbe};

const NAME: &str = "abi";
/// Longer than any runtime takes to load and fill in its defaults.
const DEADLINE: Duration = Duration::from_secs(20);

/// What the probe found, and whether the runtime died of an instruction this CPU lacks (the
/// `sve` check's evidence).
pub struct Probed {
    pub finding: Finding,
    pub illegal_instruction: bool,
}

pub fn check(library: Option<&Path>) -> Probed {
    let Some(library) = library else {
        return Probed {
            finding: Finding::skip(NAME, "no loadable runtime library to probe"),
            illegal_instruction: false,
        };
    };
    let probe = probe_in_child(library, DEADLINE);
    Probed {
        finding: judge(library, &probe),
        illegal_instruction: matches!(probe, ChildProbe::Signaled(Signal::SIGILL)),
    }
}

fn judge(library: &Path, probe: &ChildProbe) -> Finding {
    let built = Abi::built();
    let lib = library.display();
    match probe {
        ChildProbe::Probed(AbiProbe::Is(abi)) if *abi == built => Finding::ok(
            NAME,
            format!("{lib}: rkllm_createDefaultParam fills an ABI {abi} RKLLMParam, as built"),
        ),
        ChildProbe::Probed(AbiProbe::Is(abi)) => Finding::fail(
            NAME,
            format!(
                "{lib}: rkllm_createDefaultParam fills an ABI {abi} RKLLMParam, but rkllmd is \
                 built for ABI {built}: the daemon would refuse it (exit code 7)"
            ),
            abi.remedy(),
        ),
        ChildProbe::Probed(AbiProbe::Either) => Finding::warn(
            NAME,
            format!("{lib}: its RKLLMParam defaults fit both ABIs; rkllmd assumes {built}"),
            "check the 'rkllm-runtime version' line the runtime logs when rkllmd starts",
        ),
        ChildProbe::Probed(AbiProbe::Neither { detail }) => Finding::fail(
            NAME,
            format!("{lib}: its RKLLMParam fits neither ABI rkllmd knows (1.2, 1.3): {detail}"),
            "install runtime 1.2.3 or 1.3.x from rknn-llm",
        ),
        ChildProbe::Failed(why) => Finding::fail(
            NAME,
            format!("{lib}: the probe could not run: {why}"),
            "the daemon would fail the same way at start",
        ),
        ChildProbe::Signaled(signal) => Finding::fail(
            NAME,
            format!(
                "{lib}: the runtime died with {} ({}) in rkllm_createDefaultParam \
                 (probed in a child process)",
                signal.as_str(),
                describe(*signal)
            ),
            if *signal == Signal::SIGILL {
                "it uses an instruction this CPU lacks (runtime 1.3 needs SVE, which RK3588 \
                 lacks): use runtime 1.2.3 and rebuild rkllmd with --features rkllm-1-2"
            } else {
                "the daemon would die the same way at start: reinstall the runtime"
            },
        ),
        ChildProbe::TimedOut(after) => Finding::fail(
            NAME,
            format!(
                "{lib}: rkllm_createDefaultParam did not return within {} s",
                after.as_secs()
            ),
            "the daemon would hang the same way at start",
        ),
    }
}

fn describe(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGILL => "Illegal instruction",
        Signal::SIGSEGV => "Segmentation fault",
        Signal::SIGBUS => "Bus error",
        Signal::SIGABRT => "Aborted",
        Signal::SIGFPE => "Floating point exception",
        _ => "killed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn each_outcome_has_its_status() {
        let lib = Path::new("/usr/lib/librkllmrt.so");
        let built = Abi::built();
        let other = if built == Abi::V1_2 {
            Abi::V1_3
        } else {
            Abi::V1_2
        };
        let status = |p: ChildProbe| judge(lib, &p).status;
        assert_eq!(status(ChildProbe::Probed(AbiProbe::Is(built))), Status::Ok);
        assert_eq!(
            status(ChildProbe::Probed(AbiProbe::Is(other))),
            Status::Fail
        );
        assert_eq!(status(ChildProbe::Probed(AbiProbe::Either)), Status::Warn);
        assert_eq!(status(ChildProbe::Signaled(Signal::SIGSEGV)), Status::Fail);
        assert_eq!(
            status(ChildProbe::TimedOut(Duration::from_secs(1))),
            Status::Fail
        );
        let f = judge(lib, &ChildProbe::Signaled(Signal::SIGILL));
        assert!(
            f.to_string().contains("SIGILL (Illegal instruction)"),
            "{f}"
        );
    }
}
