//! The memory budget of a load: the runtime maps a model's weights into system memory (the
//! NPU has none of its own), so a model needs about its file's size, plus what the runtime
//! allocates beside it (the KV cache, buffers). Before a load, the board's `MemAvailable` is
//! compared with that; what unloading a resident model would free is estimated by its file's
//! size, as the kernel may not show the freed pages at once.

use std::path::Path;

use crate::board::{self, Root};

/// What a model needs beyond its file: a fifth of its size for the KV cache and buffers
/// (Rockchip's benchmark: Qwen2.5-1.5B w8a8, a 1.6 GB file, takes 1.69 GB at 4k context) and
/// a fixed 256 MiB for the runtime itself and the rest of the system to breathe.
pub const MARGIN_FIXED: u64 = 256 << 20;

/// The memory a model whose file takes `file_size` bytes is expected to need.
pub fn needed(file_size: u64) -> u64 {
    file_size
        .saturating_add(file_size / 5)
        .saturating_add(MARGIN_FIXED)
}

/// The model file's size (0 when it cannot be read: the load will say why).
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `MemAvailable` under `root`, in bytes; None when it cannot be read (then there is no
/// budget, only the runtime's own refusal).
pub fn available(root: &Root) -> Option<u64> {
    match root.read("/proc/meminfo") {
        Ok(text) => {
            let bytes = board::mem_available(&text);
            if bytes.is_none() {
                log::debug!("no MemAvailable in /proc/meminfo: loads have no memory budget");
            }
            bytes
        }
        Err(e) => {
            log::debug!("cannot read /proc/meminfo ({e}): loads have no memory budget");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_needs_its_size_a_fifth_more_and_256_mib() {
        assert_eq!(needed(0), 256 << 20);
        assert_eq!(needed(1000 << 20), (1200 << 20) + (256 << 20));
        assert_eq!(needed(u64::MAX), u64::MAX);
    }

    #[test]
    fn meminfo_is_read_under_the_root_and_its_absence_is_no_budget() {
        let dir = std::env::temp_dir().join(format!("rkllmd-budget-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        let root = Root::new(&dir);
        assert_eq!(available(&root), None);
        std::fs::write(dir.join("proc/meminfo"), "MemAvailable:  2048 kB\n").unwrap();
        assert_eq!(available(&root), Some(2048 * 1024));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
