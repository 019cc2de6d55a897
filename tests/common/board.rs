//! Fake system trees of real boards for `--root`: the files `/metrics` reads, with the names
//! and formats the boards' kernels use, and figures the tests then expect to see.

use std::fs;
use std::path::Path;

/// Writes `text` at `rel` under `root`, creating directories.
pub fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn zones(root: &Path, zones: &[(&str, i64)]) {
    for (n, (kind, milli)) in zones.iter().enumerate() {
        let dir = format!("sys/class/thermal/thermal_zone{n}");
        put(root, &format!("{dir}/type"), &format!("{kind}\n"));
        put(root, &format!("{dir}/temp"), &format!("{milli}\n"));
    }
    // Cooling devices share the directory and are not zones.
    put(
        root,
        "sys/class/thermal/cooling_device0/type",
        "thermal-cpufreq-0\n",
    );
}

fn policies(root: &Path, khz: &[(u32, u64)]) {
    for (policy, khz) in khz {
        let dir = format!("sys/devices/system/cpu/cpufreq/policy{policy}");
        put(
            root,
            &format!("{dir}/scaling_cur_freq"),
            &format!("{khz}\n"),
        );
        put(root, &format!("{dir}/scaling_governor"), "schedutil\n");
    }
}

/// An RK3588 (Rock 5B, Orange Pi 5): a 3-core NPU whose load is in debugfs (root only),
/// cpufreq policies 0 (A55), 4 and 6 (A76 pairs), seven thermal zones; the GPU's and the
/// memory controller's devfreq devices are not the NPU's.
pub fn rk3588(root: &Path) {
    put(
        root,
        "sys/kernel/debug/rknpu/load",
        "NPU load:  Core0: 35%, Core1:  7%, Core2:  0%,\n",
    );
    put(
        root,
        "sys/kernel/debug/rknpu/version",
        "RKNPU driver: v0.9.8\n",
    );
    put(
        root,
        "sys/class/devfreq/fdab0000.npu/cur_freq",
        "1000000000\n",
    );
    put(
        root,
        "sys/class/devfreq/fdab0000.npu/load",
        "35@1000000000Hz\n",
    );
    put(
        root,
        "sys/class/devfreq/fdab0000.npu/governor",
        "rknpu_ondemand\n",
    );
    put(
        root,
        "sys/class/devfreq/fb000000.gpu/cur_freq",
        "300000000\n",
    );
    put(root, "sys/class/devfreq/dmc/cur_freq", "2112000000\n");
    policies(root, &[(0, 1_800_000), (4, 2_256_000), (6, 2_304_000)]);
    zones(
        root,
        &[
            ("soc-thermal", 41_600),
            ("bigcore0-thermal", 42_500),
            ("bigcore1-thermal", 42_400),
            ("littlecore-thermal", 41_700),
            ("center-thermal", 40_800),
            ("gpu-thermal", 40_700),
            ("npu-thermal", 44_300),
        ],
    );
    put(
        root,
        "proc/meminfo",
        "MemTotal:       16203020 kB\nMemFree:         1016052 kB\nMemAvailable:   12345678 kB\n",
    );
}

/// An RK3576: a 2-core NPU whose driver has its procfs option (`/proc/rknpu/load`), no devfreq
/// load figure, cpufreq policies 0 (A53) and 4 (A72), and the six thermal zones of mainline's
/// rk3576.dtsi.
pub fn rk3576(root: &Path) {
    put(
        root,
        "proc/rknpu/load",
        "NPU load:  Core0: 50%, Core1: 12%,\n",
    );
    put(
        root,
        "sys/class/devfreq/27700000.npu/cur_freq",
        "950000000\n",
    );
    policies(root, &[(0, 2_016_000), (4, 2_208_000)]);
    zones(
        root,
        &[
            ("package-thermal", 38_000),
            ("bigcore-thermal", 39_250),
            ("littlecore-thermal", 38_500),
            ("gpu-thermal", 37_900),
            ("npu-thermal", 40_100),
            ("ddr-thermal", 36_000),
        ],
    );
    put(
        root,
        "proc/meminfo",
        "MemTotal:        8039268 kB\nMemFree:          812340 kB\nMemAvailable:    6000000 kB\n",
    );
}

/// `/metrics` text as `name{labels}` (as written) to value; `# ` lines left out.
pub fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}
