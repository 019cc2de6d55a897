//! Parsers for option values, shared by the command line and the config file.
//!
//! Each parser returns `Err(expected)`: a phrase saying what a valid value looks like. The
//! caller adds the option name and where the value came from.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// What a valid value looks like, for the error message.
pub(super) type Expected = String;

/// Longest duration accepted anywhere: a day. Longer timeouts are typing mistakes.
pub(super) const MAX_SECONDS: f64 = 86_400.0;

pub(super) fn non_empty(raw: &str, what: &str) -> Result<String, Expected> {
    if raw.is_empty() || raw.chars().any(char::is_control) {
        return Err(format!("a non-empty {what} without control characters"));
    }
    Ok(raw.to_owned())
}

pub(super) fn path(raw: &str) -> Result<PathBuf, Expected> {
    non_empty(raw, "path").map(PathBuf::from)
}

/// `auto`, `none` or a path.
pub(super) fn npu_lock(raw: &str) -> Result<super::NpuLock, Expected> {
    match raw {
        "auto" => Ok(super::NpuLock::Auto),
        "none" => Ok(super::NpuLock::None),
        _ => path(raw)
            .map(super::NpuLock::File)
            .map_err(|_| "'auto', 'none' or a file to lock".to_owned()),
    }
}

pub(super) fn integer(raw: &str, min: u64, max: u64) -> Result<u64, Expected> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("an integer from {min} to {max}")),
    }
}

/// A byte count with an optional binary suffix: `1048576`, `512K`, `4M`, `1G` (`KiB`, `MiB`,
/// `GiB` also accepted).
/// `N%`, N from 0 to 100 (the sign may be left out).
pub(super) fn percent(raw: &str) -> Result<u8, Expected> {
    let digits = raw
        .trim()
        .strip_suffix('%')
        .unwrap_or(raw.trim())
        .trim_end();
    match digits.parse::<u8>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err("a percentage from 0% to 100%".to_owned()),
    }
}

pub(super) fn bytes(raw: &str, min: u64, max: u64) -> Result<u64, Expected> {
    let expected =
        || format!("a byte count from {min} to {max}, optionally with a K, M or G suffix");
    let s = raw.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);
    let multiplier: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(expected()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(expected)
}

/// Seconds, possibly fractional (`0.5`), greater than zero and at most [`MAX_SECONDS`].
pub(super) fn seconds(raw: &str) -> Result<Duration, Expected> {
    let expected =
        || format!("a number of seconds above 0 and at most {MAX_SECONDS}, such as 10 or 0.5");
    match raw.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= MAX_SECONDS => {
            Duration::try_from_secs_f64(s).map_err(|_| expected())
        }
        _ => Err(expected()),
    }
}

/// A float in `[min, max]`, or `(min, max]` when `min_exclusive`.
pub(super) fn float(raw: &str, min: f32, max: f32, min_exclusive: bool) -> Result<f32, Expected> {
    let low_ok = |v: f32| if min_exclusive { v > min } else { v >= min };
    match raw.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && low_ok(v) && v <= max => Ok(v),
        _ if min_exclusive => Err(format!("a number above {min} and at most {max}")),
        _ => Err(format!("a number from {min} to {max}")),
    }
}

/// File permission bits in octal: `0660`, `660` or `0o660`.
pub(super) fn octal_mode(raw: &str) -> Result<u32, Expected> {
    let s = raw.trim();
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= 0o777 => Ok(m),
        _ => Err("an octal mode from 0 to 0777, such as 0660".to_owned()),
    }
}

pub(super) fn boolean(raw: &str) -> Result<bool, Expected> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("one of true, false, yes, no, 1, 0".to_owned()),
    }
}

/// One numeric user or group id, or a comma-separated list of them.
pub(super) fn id_list(raw: &str) -> Result<Vec<u32>, Expected> {
    raw.split(',')
        .map(|part| match part.trim().parse::<u32>() {
            // u32::MAX is (uid_t)-1, which means "no change" to the kernel, never a real id.
            Ok(id) if id != u32::MAX => Ok(id),
            _ => Err("a numeric id or a comma-separated list of ids, such as 1000,1001".to_owned()),
        })
        .collect()
}

/// CPUs as a Linux CPU list (`4-7`, `0,2,4-7`, as `taskset -c` takes them), returned as a bit
/// mask. The runtime's mask is 32 bits wide: CPUs 0 to 31.
pub(super) fn cpu_list(raw: &str) -> Result<u32, Expected> {
    let expected =
        || "CPU numbers from 0 to 31 as a list or ranges, such as 4-7 or 0,2,4-7".to_owned();
    let cpu = |s: &str| s.trim().parse::<u32>().ok().filter(|n| *n < 32);
    let mut mask = 0u32;
    for part in raw.split(',') {
        let (first, last) = if let Some((a, b)) = part.split_once('-') {
            (cpu(a).ok_or_else(expected)?, cpu(b).ok_or_else(expected)?)
        } else {
            let n = cpu(part).ok_or_else(expected)?;
            (n, n)
        };
        if first > last {
            return Err(expected());
        }
        for n in first..=last {
            mask |= 1 << n;
        }
    }
    Ok(mask)
}

pub(super) fn log_level(raw: &str) -> Result<log::LevelFilter, Expected> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err("one of error, warn, info, debug, trace".to_owned()),
    }
}

/// `chat-template-tool-format`: `hermes` or `llama3`, in any case.
pub(super) fn tool_format(raw: &str) -> Result<crate::chat::ToolFormat, Expected> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "hermes" => Ok(crate::chat::ToolFormat::Hermes),
        "llama3" => Ok(crate::chat::ToolFormat::Llama3Json),
        _ => Err("hermes or llama3".to_owned()),
    }
}

/// A name a model also answers to: one word, as a request's `model` would name it.
pub(super) fn model_alias(raw: &str) -> Result<String, Expected> {
    let name = raw.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err("a model name without spaces".to_owned());
    }
    Ok(name.to_owned())
}

/// `lora = NAME PATH [SCALE]` in a model's section: the adapter's name (what a request selects
/// as `MODEL:NAME`; not `latest`, which is the model alone), its file (relative to the model
/// file's directory, which must hold it) and the scale it applies at (default 1.0, as upstream's
/// demo; above 0 and at most 4).
pub(super) fn lora_adapter(
    raw: &str,
    model: &std::path::Path,
) -> Result<crate::models::Adapter, Expected> {
    let expected = || "NAME PATH [SCALE] (an adapter name, its .rkllm file, a scale in (0, 4])";
    let mut words = raw.split_whitespace();
    let (Some(name), Some(file)) = (words.next(), words.next()) else {
        return Err(expected().to_owned());
    };
    let scale = match words.next() {
        None => 1.0,
        Some(s) => match s.parse::<f32>() {
            Ok(v) if v > 0.0 && v <= 4.0 => v,
            _ => return Err(expected().to_owned()),
        },
    };
    if words.next().is_some() || name.contains(':') || name == crate::models::LATEST {
        return Err(expected().to_owned());
    }
    let path = model
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(file);
    if !path.is_file() {
        return Err(format!(
            "an adapter file that exists ({} does not)",
            path.display()
        ));
    }
    Ok(crate::models::Adapter {
        name: name.to_owned(),
        path,
        scale,
    })
}

/// A custom template part: kept as written, checked now so that a bad escape fails at start.
pub(super) fn template_text(raw: &str) -> Result<String, Expected> {
    crate::chat::decode_escapes(raw).map(|_| raw.to_owned())
}

/// `ADDR:PORT` with a literal IPv4 or bracketed IPv6 address, or `localhost:PORT`. Port 0 asks
/// the kernel for a free port. Names are not resolved: the daemon does no DNS.
pub(super) fn tcp_addr(raw: &str) -> Result<SocketAddr, Expected> {
    let s = raw.trim();
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    s.parse::<SocketAddr>().map_err(|_| {
        "ADDR:PORT with a literal address, such as 127.0.0.1:8080 or [::1]:8080".to_owned()
    })
}

pub(super) fn notify_fd(raw: &str) -> Result<i32, Expected> {
    match raw.trim().parse::<i32>() {
        Ok(fd) if fd >= 0 => Ok(fd),
        _ => Err("a file descriptor number (0 or more)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(bytes("1048576", 1, 1 << 30), Ok(1 << 20));
        assert_eq!(bytes("512K", 1, 1 << 30), Ok(512 << 10));
        assert_eq!(bytes("4m", 1, 1 << 30), Ok(4 << 20));
        assert_eq!(bytes("1GiB", 1, 1 << 30), Ok(1 << 30));
        assert!(bytes("2G", 1, 1 << 30).is_err());
        assert!(bytes("1T", 1, u64::MAX).is_err());
        assert!(bytes("K", 1, 1 << 30).is_err());
        assert!(bytes("99999999999999999999G", 1, u64::MAX).is_err());
    }

    #[test]
    fn seconds_allow_fractions_but_not_zero_or_nonsense() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("120"), Ok(Duration::from_secs(120)));
        for bad in ["0", "-1", "abc", "nan", "inf", "1e9", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_from_0_to_100_with_or_without_the_sign() {
        assert_eq!(percent("25%"), Ok(25));
        assert_eq!(percent(" 100 % "), Ok(100));
        assert_eq!(percent("0"), Ok(0));
        for bad in ["101%", "-1%", "25.5%", "%", "", "abc"] {
            assert!(percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn octal_modes() {
        assert_eq!(octal_mode("0660"), Ok(0o660));
        assert_eq!(octal_mode("600"), Ok(0o600));
        assert_eq!(octal_mode("0o640"), Ok(0o640));
        for bad in ["0800", "1777", "rw-rw----", "", "0o"] {
            assert!(octal_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_ids_levels_addresses() {
        for (raw, v) in [
            ("true", true),
            ("YES", true),
            ("1", true),
            ("false", false),
            ("no", false),
            ("0", false),
        ] {
            assert_eq!(boolean(raw), Ok(v));
        }
        assert!(boolean("maybe").is_err());
        assert_eq!(id_list("1000, 1001"), Ok(vec![1000, 1001]));
        assert!(id_list("1000,,1001").is_err());
        assert!(id_list("4294967295").is_err());
        assert_eq!(log_level("DEBUG"), Ok(log::LevelFilter::Debug));
        assert!(log_level("loud").is_err());
        assert_eq!(
            tcp_addr("localhost:8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(tcp_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(tcp_addr("example.com:80").is_err());
        assert!(tcp_addr("127.0.0.1").is_err());
    }

    #[test]
    fn cpu_lists_become_masks() {
        assert_eq!(cpu_list("4-7"), Ok(0xf0));
        assert_eq!(cpu_list("0, 2,4-5"), Ok(0b11_0101));
        assert_eq!(cpu_list("31"), Ok(1 << 31));
        for bad in ["", "32", "7-4", "a", "1,,2", "-1", "0-"] {
            assert!(cpu_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn floats_respect_bounds() {
        assert_eq!(float("0", 0.0, 1.0, false), Ok(0.0));
        assert!(float("0", 0.0, 1.0, true).is_err());
        assert_eq!(float("1", 0.0, 1.0, true), Ok(1.0));
        assert!(float("1.01", 0.0, 1.0, true).is_err());
        assert!(float("NaN", 0.0, 1.0, false).is_err());
    }
}
