//! The NPU: Rockchip's RKNPU driver exposes a DRM render node (its platform driver is named
//! `RKNPU`) or, built with its DMA-heap option, `/dev/rknpu`; its version is in debugfs
//! (`/sys/kernel/debug/rknpu/version`, "RKNPU driver: v0.9.8", root only), with its procfs
//! option in `/proc/rknpu/version`, and as a module's version in `/sys/module/rknpu/version`
//! ("0.9.8", readable by anyone).

use std::fmt::Write as _;
use std::path::PathBuf;

use nix::unistd::{access, AccessFlags};

use super::report::Finding;
use crate::board::Root;

const NAME: &str = "npu";

/// The oldest driver the runtime accepts without its "rknpu driver version is too low, please
/// upgrade to 0.9.7" warning. The runtime itself only warns (older drivers have failed its w8a8
/// matmuls in the field), so the check warns too.
const MIN_DRIVER: (u32, u32, u32) = (0, 9, 7);

const VERSION_FILES: [&str; 3] = [
    "/sys/kernel/debug/rknpu/version",
    "/proc/rknpu/version",
    "/sys/module/rknpu/version",
];

/// `RKNPU driver: v0.9.8` (debugfs, procfs) or `0.9.8` (the module's version) gives (0, 9, 8).
pub fn parse_driver_version(text: &str) -> Option<(u32, u32, u32)> {
    let text = text.trim();
    let v = match text.split_once(": v") {
        Some((_, v)) => v,
        None => text.strip_prefix('v').unwrap_or(text),
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// The platform driver bound to a device, from its `uevent` (`DRIVER=RKNPU`) or, failing
/// that, the name its `driver` link points to.
fn driver_of(root: &Root, device_dir: &str) -> Option<String> {
    if let Ok(uevent) = root.read(format!("{device_dir}/uevent")) {
        if let Some(d) = uevent.lines().find_map(|l| l.strip_prefix("DRIVER=")) {
            return Some(d.trim().to_owned());
        }
    }
    let link = std::fs::read_link(root.path(format!("{device_dir}/driver"))).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Device nodes whose device is bound to a driver matching `want` (case-insensitive), among
/// the entries of a sysfs class directory starting with `prefix`.
fn nodes_of(root: &Root, class: &str, prefix: &str, dev_dir: &str, want: &str) -> Vec<String> {
    root.list(class)
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .filter(|name| {
            driver_of(root, &format!("{class}/{name}/device"))
                .is_some_and(|d| d.eq_ignore_ascii_case(want))
        })
        .map(|name| format!("{dev_dir}/{name}"))
        .collect()
}

/// The RKNPU's device nodes (paths on the target system): DRM render nodes bound to the RKNPU
/// driver, then `/dev/rknpu`. The daemon locks the first (`npu-lock = auto`).
pub fn device_nodes(root: &Root) -> Vec<String> {
    let mut nodes = nodes_of(root, "/sys/class/drm", "renderD", "/dev/dri", "rknpu");
    if root.path("/dev/rknpu").exists() {
        nodes.push("/dev/rknpu".to_owned());
    }
    nodes
}

pub fn check(root: &Root) -> Finding {
    let nodes = device_nodes(root);
    let Some(node) = nodes.first().cloned() else {
        let rocket = nodes_of(root, "/sys/class/accel", "accel", "/dev/accel", "rocket");
        if let Some(r) = rocket.first() {
            return Finding::fail(
                NAME,
                format!("only the mainline 'rocket' NPU driver is present ({r})"),
                "librkllmrt works with Rockchip's RKNPU driver only: boot a Rockchip vendor kernel \
                 (5.10 or 6.1) with CONFIG_ROCKCHIP_RKNPU",
            );
        }
        return Finding::fail(
            NAME,
            "no RKNPU device: no DRM render node driven by RKNPU and no /dev/rknpu",
            "boot a kernel with Rockchip's RKNPU driver (CONFIG_ROCKCHIP_RKNPU); \
             'dmesg | grep -i rknpu' tells whether it probed",
        );
    };
    let path: PathBuf = root.path(&node);
    if !path.exists() {
        return Finding::fail(
            NAME,
            format!("the RKNPU driver is bound but {node} does not exist"),
            "mount devtmpfs on /dev (or create the node with mdev/udev)",
        );
    }
    let driver = VERSION_FILES.iter().find_map(|file| {
        let text = root.read(file).ok()?;
        Some((*file, text.trim().to_owned(), parse_driver_version(&text)))
    });
    let mut detail = node.clone();
    match &driver {
        Some((_, _, Some((a, b, c)))) => {
            let _ = write!(detail, ", RKNPU driver v{a}.{b}.{c}");
        }
        Some((file, text, None)) => {
            let _ = write!(detail, ", driver version '{text}' ({file})");
        }
        None => detail.push_str(
            ", driver version not readable (as root: /sys/kernel/debug/rknpu/version; or \
             /sys/module/rknpu/version when rknpu is a module)",
        ),
    }
    if let Some((_, _, Some(v))) = driver {
        if v < MIN_DRIVER {
            return Finding::warn(
                NAME,
                format!("{detail}: older than 0.9.7, which the runtime asks for"),
                "librkllmrt warns below RKNPU driver 0.9.7 and w8a8 models have failed on older \
                 ones (rknn-llm ships 0.9.8): update the kernel or its rknpu driver",
            );
        }
    }
    if access(&path, AccessFlags::R_OK | AccessFlags::W_OK).is_err() {
        return Finding::warn(
            NAME,
            format!(
                "{detail}; not read-write for uid {}",
                nix::unistd::geteuid()
            ),
            format!(
                "the daemon's user needs read-write access to {node}: add it to the node's group \
                 (often 'render' or 'video') or install a udev rule"
            ),
        );
    }
    Finding::ok(NAME, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_versions() {
        assert_eq!(
            parse_driver_version("RKNPU driver: v0.9.8\n"),
            Some((0, 9, 8))
        );
        assert_eq!(
            parse_driver_version("RKNPU driver: v0.8.2"),
            Some((0, 8, 2))
        );
        assert_eq!(parse_driver_version("RKNPU driver: v0.9"), None);
        assert_eq!(parse_driver_version("RKNPU driver: v0.9.8.1"), None);
        assert_eq!(parse_driver_version("RKNPU driver: vx.y.z"), None);
        assert_eq!(parse_driver_version(""), None);
        // /sys/module/rknpu/version holds the bare version.
        assert_eq!(parse_driver_version("0.9.8\n"), Some((0, 9, 8)));
        assert_eq!(parse_driver_version("v0.9.6"), Some((0, 9, 6)));
        assert_eq!(parse_driver_version("0.9"), None);
        assert!((0, 9, 6) < MIN_DRIVER && (0, 9, 8) >= MIN_DRIVER && (1, 0, 0) > MIN_DRIVER);
    }
}
