//! What the board is doing, read from the kernel's files under a [`Root`] when `/metrics` is
//! scraped: NPU load and clock, CPU clocks, temperatures, free memory. Nothing here polls: a
//! file that is missing or unreadable (debugfs is root only) leaves its figure out.

mod cpu;
mod memory;
mod npu;
mod root;
mod thermal;

pub use memory::available as mem_available;
pub use npu::Devfreq;
pub use root::Root;
pub use thermal::Zone;

/// One reading of the board.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Board {
    /// `(core, busy share 0..=1)` from the RKNPU driver's load file.
    pub npu_load: Vec<(u32, f64)>,
    pub npu_devfreq: Vec<Devfreq>,
    /// `(cpufreq policy, Hz)`.
    pub cpu_hertz: Vec<(u32, u64)>,
    pub zones: Vec<Zone>,
    pub mem_available: Option<u64>,
    pub mem_total: Option<u64>,
}

impl Board {
    pub fn read(root: &Root) -> Board {
        let meminfo = root.read("/proc/meminfo").ok();
        Board {
            npu_load: npu::load(root),
            npu_devfreq: npu::devfreq(root),
            cpu_hertz: cpu::clocks(root),
            zones: thermal::zones(root),
            mem_available: meminfo.as_deref().and_then(memory::available),
            mem_total: meminfo
                .as_deref()
                .and_then(|m| memory::field(m, "MemTotal")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_root_reads_as_nothing() {
        let dir = std::env::temp_dir().join(format!("rkllmd-board-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Board::read(&Root::new(&dir)), Board::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
