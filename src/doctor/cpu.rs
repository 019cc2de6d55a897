//! The CPU: SVE for the 1.3 runtime, the SoC the device tree names, and the frequency governors
//! of the CPUs and the NPU.

use std::collections::BTreeMap;

use super::report::Finding;
use crate::board::Root;

/// What `/proc/cpuinfo` says about each processor.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// `(processor number, its Features words)`; empty when the file has no `Features` lines
    /// (not an ARM CPU).
    pub features: Vec<(u32, Vec<String>)>,
}

impl CpuInfo {
    pub fn parse(text: &str) -> CpuInfo {
        let mut features = Vec::new();
        let mut current: Option<u32> = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim() {
                "processor" => current = value.trim().parse().ok(),
                "Features" => {
                    // Some kernels print one Features line for all cores, before any processor.
                    let cpu = current.unwrap_or(u32::try_from(features.len()).unwrap_or(u32::MAX));
                    features.push((cpu, value.split_whitespace().map(str::to_owned).collect()));
                }
                _ => {}
            }
        }
        CpuInfo { features }
    }

    /// The processors whose Features lack `word`.
    pub fn lacking(&self, word: &str) -> Vec<u32> {
        self.features
            .iter()
            .filter(|(_, f)| !f.iter().any(|w| w == word))
            .map(|(cpu, _)| *cpu)
            .collect()
    }
}

/// The Rockchip SoC named in the device tree's `compatible` list (`rockchip,rk3588` gives
/// `RK3588`), if any.
pub fn soc(root: &Root) -> Option<String> {
    let bytes = std::fs::read(root.path("/proc/device-tree/compatible")).ok()?;
    parse_soc(&bytes)
}

fn parse_soc(compatible: &[u8]) -> Option<String> {
    compatible
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.strip_prefix("rockchip,"))
        // SoC entries are bare part numbers (rk3588, rk3588s); boards add suffixes (rk3576-evb).
        .find(|model| {
            (model.starts_with("rk") || model.starts_with("rv"))
                && model.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .map(str::to_uppercase)
}

/// `0-3,6`: processor numbers as ranges.
pub fn ranges(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            format!("{start}")
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The 1.3 runtime's SVE code against this CPU. `runtime_minor` is the runtime's minor version,
/// or with `from_build` the build's (the runtime's version is unknown). `probe_died_illegal`:
/// the `abi` check's child died with SIGILL inside the runtime.
///
/// A CPU without SVE is a warning, not a failure, because the field reports disagree: 1.3.0
/// dies with "Illegal instruction" on some RK3588 boards (rknn-llm#518) while others load it
/// and run it (rknn-llm#509 logs a successful init on RK3588 with 1.3.0). Only a runtime that
/// actually died with SIGILL in the probe makes it a failure.
pub fn sve(
    root: &Root,
    runtime_minor: u32,
    from_build: bool,
    soc: Option<&str>,
    probe_died_illegal: bool,
) -> Finding {
    const NAME: &str = "sve";
    if runtime_minor < 3 {
        return Finding::skip(NAME, format!("runtime 1.{runtime_minor} does not need SVE"));
    }
    let text = match root.read("/proc/cpuinfo") {
        Ok(text) => text,
        Err(e) => {
            return Finding::warn(
                NAME,
                format!("cannot read /proc/cpuinfo: {e}"),
                "runtime 1.3 needs a CPU with SVE; check 'Features' in /proc/cpuinfo by hand",
            )
        }
    };
    let info = CpuInfo::parse(&text);
    if info.features.is_empty() {
        return Finding::skip(NAME, "/proc/cpuinfo lists no ARM features (not an ARM CPU)");
    }
    let lacking = info.lacking("sve");
    if lacking.is_empty() {
        return Finding::ok(NAME, format!("all {} CPUs have SVE", info.features.len()));
    }
    let soc = soc.map(|s| format!(" ({s})")).unwrap_or_default();
    let cpus = match lacking.len() {
        1 => format!("CPU {}{soc} has", ranges(&lacking)),
        _ => format!("CPUs {}{soc} have", ranges(&lacking)),
    };
    let runtime = if from_build {
        format!("runtime 1.{runtime_minor} (the ABI rkllmd is built for)")
    } else {
        format!("runtime 1.{runtime_minor}")
    };
    let hint = "use runtime 1.2.3 (it falls back to NEON) with an rkllmd built with \
                --features rkllm-1-2; RK3588 and RK3576 have no SVE";
    if probe_died_illegal {
        return Finding::fail(
            NAME,
            format!(
                "{runtime} uses SVE instructions but {cpus} none: it died with 'Illegal \
                 instruction' in the abi probe"
            ),
            hint,
        );
    }
    Finding::warn(
        NAME,
        format!(
            "{runtime} may use SVE instructions but {cpus} none: on some RK3588 boards 1.3.0 dies \
             with 'Illegal instruction' (rknn-llm#518), on others it runs (rknn-llm#509); the abi \
             probe here did not die"
        ),
        hint,
    )
}

/// Frequency governors: `performance` (or `userspace`, pinned as Rockchip's
/// `scripts/fix_freq_<soc>.sh` does) keep token rates steady; the on-demand ones cost speed.
pub fn cpu_governor(root: &Root) -> Finding {
    const NAME: &str = "cpufreq";
    let mut by_governor: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for name in root.list("/sys/devices/system/cpu") {
        let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let file = format!("/sys/devices/system/cpu/{name}/cpufreq/scaling_governor");
        if let Ok(governor) = root.read(&file) {
            by_governor
                .entry(governor.trim().to_owned())
                .or_default()
                .push(cpu);
        }
    }
    if by_governor.is_empty() {
        return Finding::skip(NAME, "no CPU frequency scaling exposed");
    }
    let detail = by_governor
        .iter()
        .map(|(g, cpus)| format!("{g} on CPUs {}", ranges(cpus)))
        .collect::<Vec<_>>()
        .join(", ");
    if by_governor.keys().all(|g| steady(g)) {
        Finding::ok(NAME, detail)
    } else {
        Finding::warn(
            NAME,
            detail,
            "for steady token rates: echo performance | tee \
             /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (at every boot)",
        )
    }
}

/// The NPU's devfreq governor (`/sys/class/devfreq/<addr>.npu/governor`).
pub fn npu_governor(root: &Root) -> Finding {
    const NAME: &str = "npufreq";
    let mut found = Vec::new();
    for name in root.list("/sys/class/devfreq") {
        if !name.contains("npu") {
            continue;
        }
        if let Ok(g) = root.read(format!("/sys/class/devfreq/{name}/governor")) {
            found.push((name, g.trim().to_owned()));
        }
    }
    if found.is_empty() {
        return Finding::skip(NAME, "no NPU devfreq exposed");
    }
    let detail = found
        .iter()
        .map(|(dev, g)| format!("{g} on {dev}"))
        .collect::<Vec<_>>()
        .join(", ");
    if found.iter().all(|(_, g)| steady(g)) {
        Finding::ok(NAME, detail)
    } else {
        let dev = &found[0].0;
        Finding::warn(
            NAME,
            detail,
            format!(
                "for steady token rates: echo performance > /sys/class/devfreq/{dev}/governor \
                 (at every boot)"
            ),
        )
    }
}

fn steady(governor: &str) -> bool {
    matches!(governor, "performance" | "userspace")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RK3588: &str = "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd05\n\n\
processor\t: 4\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n";

    #[test]
    fn cpuinfo_features_per_processor() {
        let info = CpuInfo::parse(RK3588);
        assert_eq!(info.features.len(), 2);
        assert_eq!(info.features[1].0, 4);
        assert!(info.features[0].1.contains(&"asimddp".to_owned()));
        assert_eq!(info.lacking("sve"), vec![0, 4]);
        assert!(info.lacking("asimd").is_empty());
    }

    #[test]
    fn cpuinfo_with_sve_and_without_arm_features() {
        let sve =
            "processor : 0\nFeatures : fp asimd sve sve2\nprocessor : 1\nFeatures : fp asimd sve\n";
        assert!(CpuInfo::parse(sve).lacking("sve").is_empty());
        // "sve2" alone does not count as "sve": the word must match.
        assert_eq!(
            CpuInfo::parse("Features : fp sve2\n").lacking("sve"),
            vec![0]
        );
        let x86 = "processor\t: 0\nflags\t\t: fpu vme sse sse2 avx\n";
        assert_eq!(CpuInfo::parse(x86), CpuInfo::default());
        assert_eq!(CpuInfo::parse(""), CpuInfo::default());
        assert_eq!(
            CpuInfo::parse("garbage\n\0\u{fffd}:::\n"),
            CpuInfo::default()
        );
    }

    #[test]
    fn soc_from_the_compatible_list() {
        assert_eq!(
            parse_soc(b"radxa,rock-5b\0rockchip,rk3588\0").as_deref(),
            Some("RK3588")
        );
        assert_eq!(
            parse_soc(b"rockchip,rk3576-evb\0rockchip,rk3576\0").as_deref(),
            Some("RK3576")
        );
        assert_eq!(parse_soc(b"raspberrypi,5-model-b\0brcm,bcm2712\0"), None);
        assert_eq!(parse_soc(b""), None);
    }

    #[test]
    fn cpu_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(ranges(&[7, 4, 5, 6]), "4-7");
        assert_eq!(ranges(&[2]), "2");
        assert_eq!(ranges(&[]), "");
    }
}
