//! The closing lines of the report: rkllmd, the runtime, the board and the model, as a bug
//! report needs them.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::doctor;
use crate::runtime;

pub fn lines(cfg: &Config, banner: Option<&str>) -> String {
    let info = runtime::info();
    let runtime = match (&info.library, &info.simulator) {
        (Some(path), Some(sim)) => format!("{} ({sim})", path.display()),
        (Some(path), None) => path.display().to_string(),
        (None, _) => format!("{} (not loaded)", cfg.runtime_library.display()),
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |r| r.trim().to_owned());
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| cores(&text))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "rkllmd {} (ABI {})\n\
         runtime: {runtime}, banner version {}\n\
         soc: {}; cpus: {cpus}; {} kernel {kernel}\n\
         model: {}",
        env!("CARGO_PKG_VERSION"),
        info.abi,
        banner.unwrap_or("unknown"),
        doctor::board_soc().unwrap_or_else(|| "unknown".to_owned()),
        std::env::consts::ARCH,
        cfg.model.display(),
    )
}

/// The Arm cores in `/proc/cpuinfo` by `CPU part`, counted: `4x Cortex-A55, 4x Cortex-A76` on
/// an RK3588. `None` without parts (not an Arm CPU).
fn cores(cpuinfo: &str) -> Option<String> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != "CPU part" {
            continue;
        }
        let part = value.trim();
        let name = match part {
            "0xd03" => "Cortex-A53".to_owned(),
            "0xd04" => "Cortex-A35".to_owned(),
            "0xd05" => "Cortex-A55".to_owned(),
            "0xd08" => "Cortex-A72".to_owned(),
            "0xd09" => "Cortex-A73".to_owned(),
            "0xd0b" => "Cortex-A76".to_owned(),
            other => format!("part {other}"),
        };
        *counts.entry(name).or_default() += 1;
    }
    (!counts.is_empty()).then(|| {
        counts
            .iter()
            .map(|(name, n)| format!("{n}x {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_counted_by_part() {
        let rk3588: String = (0..8)
            .map(|i| {
                let part = if i < 4 { "0xd05" } else { "0xd0b" };
                format!("processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n")
            })
            .collect();
        assert_eq!(
            cores(&rk3588).as_deref(),
            Some("4x Cortex-A55, 4x Cortex-A76")
        );
        assert_eq!(
            cores("CPU part\t: 0xabc\n").as_deref(),
            Some("1x part 0xabc")
        );
        assert_eq!(cores("model name\t: Intel\n"), None);
    }
}
