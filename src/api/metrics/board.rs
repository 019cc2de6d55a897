//! The board's figures in `/metrics`: one gauge family per kind of reading, each left out
//! when nothing of its kind could be read.

use std::fmt::Write;

use super::header;
use crate::board::Board;

pub fn write(out: &mut String, board: &Board) {
    family(
        out,
        "rkllmd_board_npu_load_ratio",
        "NPU busy share per core, from the RKNPU driver's load file (root only in debugfs).",
        board
            .npu_load
            .iter()
            .map(|(core, load)| (format!("core=\"{core}\""), *load)),
    );
    family(
        out,
        "rkllmd_board_npu_devfreq_load_ratio",
        "NPU busy share in the last devfreq window, from its devfreq device.",
        board
            .npu_devfreq
            .iter()
            .filter_map(|d| Some((format!("device=\"{}\"", escape(&d.device)), d.load?))),
    );
    #[allow(clippy::cast_precision_loss)] // clock rates far below 2^52
    family(
        out,
        "rkllmd_board_npu_frequency_hertz",
        "NPU clock, from its devfreq device.",
        board
            .npu_devfreq
            .iter()
            .filter_map(|d| Some((format!("device=\"{}\"", escape(&d.device)), d.hertz? as f64))),
    );
    #[allow(clippy::cast_precision_loss)]
    family(
        out,
        "rkllmd_board_cpu_frequency_hertz",
        "CPU clock per cpufreq policy (a cluster; named by its first CPU).",
        board
            .cpu_hertz
            .iter()
            .map(|(policy, hz)| (format!("policy=\"{policy}\""), *hz as f64)),
    );
    family(
        out,
        "rkllmd_board_temperature_celsius",
        "Temperature per thermal zone.",
        board.zones.iter().map(|z| {
            (
                format!("zone=\"{}\",type=\"{}\"", z.zone, escape(&z.kind)),
                z.celsius,
            )
        }),
    );
    #[allow(clippy::cast_precision_loss)] // memory sizes far below 2^52
    for (name, help, value) in [
        (
            "rkllmd_board_memory_available_bytes",
            "Memory available without swapping (MemAvailable).",
            board.mem_available,
        ),
        (
            "rkllmd_board_memory_total_bytes",
            "Memory the kernel manages (MemTotal).",
            board.mem_total,
        ),
    ] {
        family(out, name, help, value.map(|v| (String::new(), v as f64)));
    }
}

/// A gauge family with its samples (`labels` without braces; empty for none); nothing at all
/// when there are no samples.
fn family(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, f64)>,
) {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return;
    }
    header(out, name, "gauge", help);
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value as the exposition format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{Devfreq, Zone};

    #[test]
    fn each_reading_is_a_labelled_gauge() {
        let board = Board {
            npu_load: vec![(0, 0.12), (1, 0.0)],
            npu_devfreq: vec![Devfreq {
                device: "27700000.npu".into(),
                hertz: Some(950_000_000),
                load: None,
            }],
            cpu_hertz: vec![(0, 1_800_000_000)],
            zones: vec![Zone {
                zone: 3,
                kind: "odd\"zone".into(),
                celsius: -1.5,
            }],
            mem_available: Some(1024),
            mem_total: None,
        };
        let mut out = String::new();
        write(&mut out, &board);
        assert_eq!(
            out,
            "# HELP rkllmd_board_npu_load_ratio NPU busy share per core, from the RKNPU driver's load file (root only in debugfs).\n\
             # TYPE rkllmd_board_npu_load_ratio gauge\n\
             rkllmd_board_npu_load_ratio{core=\"0\"} 0.12\n\
             rkllmd_board_npu_load_ratio{core=\"1\"} 0\n\
             # HELP rkllmd_board_npu_frequency_hertz NPU clock, from its devfreq device.\n\
             # TYPE rkllmd_board_npu_frequency_hertz gauge\n\
             rkllmd_board_npu_frequency_hertz{device=\"27700000.npu\"} 950000000\n\
             # HELP rkllmd_board_cpu_frequency_hertz CPU clock per cpufreq policy (a cluster; named by its first CPU).\n\
             # TYPE rkllmd_board_cpu_frequency_hertz gauge\n\
             rkllmd_board_cpu_frequency_hertz{policy=\"0\"} 1800000000\n\
             # HELP rkllmd_board_temperature_celsius Temperature per thermal zone.\n\
             # TYPE rkllmd_board_temperature_celsius gauge\n\
             rkllmd_board_temperature_celsius{zone=\"3\",type=\"odd\\\"zone\"} -1.5\n\
             # HELP rkllmd_board_memory_available_bytes Memory available without swapping (MemAvailable).\n\
             # TYPE rkllmd_board_memory_available_bytes gauge\n\
             rkllmd_board_memory_available_bytes 1024\n"
        );
    }

    #[test]
    fn nothing_read_is_nothing_written() {
        let mut out = String::new();
        write(&mut out, &Board::default());
        assert_eq!(out, "");
    }
}
