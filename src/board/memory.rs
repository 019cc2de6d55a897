//! Memory, from `/proc/meminfo`.

/// A `/proc/meminfo` field in bytes (`MemTotal:  16203020 kB`).
pub fn field(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        if key.trim() != name {
            return None;
        }
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// Bytes the kernel estimates can be allocated without swapping: `MemAvailable`, or on kernels
/// older than 3.14 `MemFree + Buffers + Cached`.
pub fn available(meminfo: &str) -> Option<u64> {
    field(meminfo, "MemAvailable").or_else(|| {
        let free = field(meminfo, "MemFree")?;
        let (buffers, cached) = (field(meminfo, "Buffers")?, field(meminfo, "Cached")?);
        free.checked_add(buffers)?.checked_add(cached)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_in_bytes() {
        let text = "MemTotal:       16203020 kB\nMemFree:         1016052 kB\nMemAvailable:   12345678 kB\nBuffers:  10 kB\n";
        assert_eq!(available(text), Some(12_345_678 * 1024));
        assert_eq!(field(text, "MemTotal"), Some(16_203_020 * 1024));
    }

    #[test]
    fn old_kernels_fall_back_to_free_buffers_and_cached() {
        let text = "MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 2 kB\nCached: 3 kB\n";
        assert_eq!(available(text), Some(15 * 1024));
    }

    #[test]
    fn garbage_is_unknown_not_a_panic() {
        assert_eq!(available(""), None);
        assert_eq!(available("MemAvailable: lots kB\n"), None);
        assert_eq!(available("MemAvailable: 5 MB\n"), None);
        assert_eq!(available("MemAvailable: 18446744073709551615 kB\n"), None);
        assert_eq!(available("MemAvailable 5 kB\n"), None);
    }
}
