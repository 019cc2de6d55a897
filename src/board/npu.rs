//! The NPU's load and frequency.
//!
//! Rockchip's RKNPU driver prints its load per core into `load` in its debugfs directory
//! (`/sys/kernel/debug/rknpu/load`, root only) or, built with its procfs option, into
//! `/proc/rknpu/load`: `NPU load:  Core0: 12%, Core1:  0%, Core2:  0%,` on a multi-core NPU
//! (RK3588: 3, RK3576: 2), `NPU load: 12%` on a single core. Its devfreq device
//! (`/sys/class/devfreq/fdab0000.npu` on RK3588) gives the clock in Hz in `cur_freq` and, on
//! Rockchip's kernels, a busy figure in `load` (`37@1000000000Hz`).

use super::Root;

/// Where the driver's load file may be, first readable wins.
const LOAD_FILES: [&str; 2] = ["/sys/kernel/debug/rknpu/load", "/proc/rknpu/load"];

/// One devfreq device of the NPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Devfreq {
    /// The directory's name under `/sys/class/devfreq` (`fdab0000.npu`).
    pub device: String,
    pub hertz: Option<u64>,
    /// Busy share of the last devfreq window, 0 to 1.
    pub load: Option<f64>,
}

/// The load per core, 0 to 1, from the driver's load file; core numbers as the driver prints
/// them (a single-core NPU is core 0). `None` when the text has no percentage.
pub fn parse_load(text: &str) -> Option<Vec<(u32, f64)>> {
    let rest = text.trim().strip_prefix("NPU load:")?;
    if !rest.contains("Core") {
        let pct = percent(rest.trim().strip_suffix(',').unwrap_or(rest.trim()))?;
        return Some(vec![(0, pct)]);
    }
    let mut cores = Vec::new();
    for part in rest.split("Core").skip(1) {
        let (n, value) = part.split_once(':')?;
        let value = value.trim().trim_end_matches(',').trim();
        cores.push((n.trim().parse().ok()?, percent(value)?));
    }
    (!cores.is_empty()).then_some(cores)
}

/// `12%` as 0.12. The driver prints with `%2.d`, so the digits may be padded.
fn percent(text: &str) -> Option<f64> {
    let n: u32 = text.strip_suffix('%')?.trim().parse().ok()?;
    (n <= 100).then(|| f64::from(n) / 100.0)
}

/// The devfreq `load` attribute, `37@1000000000Hz`, as 0.37.
pub fn parse_devfreq_load(text: &str) -> Option<f64> {
    let (pct, _) = text.trim().split_once('@')?;
    let n: u32 = pct.trim().parse().ok()?;
    (n <= 100).then(|| f64::from(n) / 100.0)
}

pub fn load(root: &Root) -> Vec<(u32, f64)> {
    LOAD_FILES
        .iter()
        .find_map(|file| parse_load(&root.read(file).ok()?))
        .unwrap_or_default()
}

/// The NPU's devfreq devices, found as `rkllmd check` finds them (a name containing `npu`).
pub fn devfreq(root: &Root) -> Vec<Devfreq> {
    root.list("/sys/class/devfreq")
        .into_iter()
        .filter(|name| name.contains("npu"))
        .map(|name| {
            let dir = format!("/sys/class/devfreq/{name}");
            let read = |file: &str| root.read(format!("{dir}/{file}")).ok();
            Devfreq {
                hertz: read("cur_freq").and_then(|t| t.trim().parse().ok()),
                load: read("load").as_deref().and_then(parse_devfreq_load),
                device: name,
            }
        })
        .filter(|d| d.hertz.is_some() || d.load.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_of_a_three_core_npu() {
        // As RK3588's driver prints it: "NPU load: ", then " Core%d: " and "%2.d%%," per core.
        let text = "NPU load:  Core0: 12%, Core1:  0%, Core2: 100%,\n";
        assert_eq!(parse_load(text), Some(vec![(0, 0.12), (1, 0.0), (2, 1.0)]));
    }

    #[test]
    fn load_of_a_single_core_npu() {
        assert_eq!(parse_load("NPU load:  7%\n"), Some(vec![(0, 0.07)]));
        assert_eq!(parse_load("NPU load: 100%\n"), Some(vec![(0, 1.0)]));
    }

    #[test]
    fn unreadable_load_text_is_none() {
        for bad in [
            "",
            "NPU load:",
            "NPU load: busy",
            "NPU load:  Core0: 12%, Core1: x%,",
            "NPU load: 140%",
            "GPU load: 12%",
            "NPU load:  Corez: 1%,",
        ] {
            assert_eq!(parse_load(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn devfreq_load() {
        assert_eq!(parse_devfreq_load("37@1000000000Hz\n"), Some(0.37));
        assert_eq!(parse_devfreq_load("0@0Hz"), Some(0.0));
        assert_eq!(parse_devfreq_load("37"), None);
        assert_eq!(parse_devfreq_load("x@1Hz"), None);
    }
}
