//! Free memory against the model: the runtime keeps the whole model in memory, plus the KV
//! cache and its buffers.

use std::path::Path;

use super::report::Finding;
use crate::board::{mem_available as available, Root};

const NAME: &str = "memory";

/// `1.7 GiB`, `640 MiB`.
#[allow(clippy::cast_precision_loss)] // shown to one decimal: f64's 52 bits are plenty
pub fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else if bytes >= 1 << 20 {
        format!("{mib:.0} MiB")
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

pub fn check(root: &Root, model: &Path) -> Finding {
    if model.as_os_str().is_empty() {
        return Finding::skip(NAME, "no model configured to compare with");
    }
    let size = match std::fs::metadata(model) {
        Ok(meta) => meta.len(),
        Err(e) => return Finding::skip(NAME, format!("cannot size '{}': {e}", model.display())),
    };
    let Some(avail) = root
        .read("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(available)
    else {
        return Finding::warn(
            NAME,
            "cannot read MemAvailable from /proc/meminfo",
            format!("the model needs at least {} free", human(size)),
        );
    };
    let detail = format!(
        "{} available, model file {} ({})",
        human(avail),
        human(size),
        model.display()
    );
    if avail < size {
        Finding::fail(
            NAME,
            detail,
            "the runtime holds the whole model in memory: stop other model servers, or use a \
             smaller model (fewer parameters or w4a16) or a board with more RAM",
        )
    } else if avail < size + size / 4 {
        Finding::warn(
            NAME,
            detail,
            "little room left for the KV cache and the runtime's buffers; a long context may fail",
        )
    } else {
        Finding::ok(NAME, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(640 << 20), "640 MiB");
        assert_eq!(human(1_825_361_100), "1.7 GiB");
        assert_eq!(human(300), "1 KiB");
    }
}
