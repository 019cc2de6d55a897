//! Which runtime library `dlopen` would load, found without loading it (the 1.3 runtime can die
//! with SIGILL on a CPU without SVE), and its version read from the file's bytes.
//!
//! The real runtime logs "rkllm-runtime version: 1.2.3, ..." at init through a format string, so
//! that line's version is not in the file; the file carries it in a banner,
//! `RKLLM SDK (version: 1.2.1b1 | target: Linux | build: ...)`, and so does our simulator. A
//! literal `rkllm-runtime version: X`, as older files of ours had, is understood too.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::report::Finding;
use crate::board::Root;

const NAME: &str = "runtime";
/// Where the version follows, best first.
const MARKERS: [&[u8]; 2] = [b"RKLLM SDK (version: ", b"rkllm-runtime version: "];

/// Where dlopen looks for a bare file name, in its order (glibc): `LD_LIBRARY_PATH`, the
/// binary's runpath (only when checking this system), the `ld.so.conf` directories (what
/// `ld.so.cache` holds after `ldconfig`), then the multiarch and default directories.
/// The runpath directories are host paths; the others are read inside `root`.
pub fn search_dirs(root: &Root, ld_library_path: Option<&str>) -> Vec<(PathBuf, &'static str)> {
    let mut dirs: Vec<(PathBuf, &'static str)> = Vec::new();
    let mut add = |p: PathBuf, from: &'static str| {
        if !dirs.iter().any(|(d, _)| *d == p) {
            dirs.push((p, from));
        }
    };
    for d in ld_library_path.unwrap_or("").split([':', ';']) {
        if d.starts_with('/') {
            add(root.path(d), "LD_LIBRARY_PATH");
        }
    }
    if root.is_host() {
        if let Some(origin) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
        {
            for d in env!("RKLLMD_RUNPATH").split(':').filter(|d| !d.is_empty()) {
                let expanded = d.replace("$ORIGIN", &origin.to_string_lossy());
                add(PathBuf::from(expanded), "rkllmd's runpath");
            }
        }
    }
    for d in ld_so_conf_dirs(root) {
        add(root.path(d), "ld.so.conf");
    }
    for d in multiarch_dirs().into_iter().chain(["/lib", "/usr/lib"]) {
        add(root.path(d), "default");
    }
    dirs
}

fn multiarch_dirs() -> Vec<&'static str> {
    if cfg!(target_arch = "aarch64") {
        vec!["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
    } else if cfg!(target_arch = "x86_64") {
        vec!["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
    } else if cfg!(target_arch = "arm") {
        vec!["/lib/arm-linux-gnueabihf", "/usr/lib/arm-linux-gnueabihf"]
    } else {
        Vec::new()
    }
}

/// The directories `/etc/ld.so.conf` lists, following `include` lines (with `*` globs in the
/// file name, relative to /etc when not absolute). Nesting is bounded.
pub fn ld_so_conf_dirs(root: &Root) -> Vec<String> {
    let mut dirs = Vec::new();
    read_conf(root, "/etc/ld.so.conf", 0, &mut dirs);
    dirs
}

fn read_conf(root: &Root, file: &str, depth: u32, dirs: &mut Vec<String>) {
    if depth > 8 {
        return;
    }
    let Ok(text) = root.read(file) else { return };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pattern in pattern.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_owned()
                } else {
                    format!("/etc/{pattern}")
                };
                for f in expand_glob(root, &pattern) {
                    read_conf(root, &f, depth + 1, dirs);
                }
            }
        } else {
            for d in line
                .split([' ', '\t', ',', ':'])
                .filter(|d| d.starts_with('/'))
            {
                dirs.push(d.trim_end_matches('/').to_owned());
            }
        }
    }
}

/// `dir/pat*tern` inside the root, sorted (as glob(3) sorts); no wildcards in the directory.
fn expand_glob(root: &Root, pattern: &str) -> Vec<String> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if !name.contains('*') {
        return vec![pattern.to_owned()];
    }
    root.list(if dir.is_empty() { "/" } else { dir })
        .into_iter()
        .filter(|f| wildcard(name, f))
        .map(|f| format!("{dir}/{f}"))
        .collect()
}

fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| wildcard(tail, &rest[i..]))
        }
    }
}

/// ELF class and machine of the binaries this rkllmd is built as: dlopen skips others.
fn expected_elf() -> Option<(u8, u16, &'static str)> {
    if cfg!(target_arch = "aarch64") {
        Some((2, 183, "aarch64"))
    } else if cfg!(target_arch = "x86_64") {
        Some((2, 62, "x86_64"))
    } else if cfg!(target_arch = "arm") {
        Some((1, 40, "arm"))
    } else {
        None
    }
}

/// Why the file cannot be the shared object dlopen would take here, if it cannot.
pub fn elf_problem(header: &[u8]) -> Option<String> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return Some("not an ELF file".to_owned());
    }
    if header[5] != 1 {
        return Some("not a little-endian ELF file".to_owned());
    }
    if u16::from_le_bytes([header[16], header[17]]) != 3 {
        return Some("not a shared object".to_owned());
    }
    let (class, machine, arch) = expected_elf()?;
    let got = u16::from_le_bytes([header[18], header[19]]);
    if header[4] != class || got != machine {
        return Some(format!(
            "built for another CPU (ELF machine {got}), not {arch}"
        ));
    }
    None
}

/// The version in the SDK banner, else after a `rkllm-runtime version: ` literal: the first
/// marker followed by a literal version (`1.2.3`, `1.2.1b1`), if the file has one.
pub fn runtime_version(bytes: &[u8]) -> Option<String> {
    MARKERS
        .iter()
        .find_map(|marker| version_after(bytes, marker))
}

fn version_after(bytes: &[u8], marker: &[u8]) -> Option<String> {
    let mut rest = bytes;
    while let Some(at) = find(rest, marker) {
        rest = &rest[at + marker.len()..];
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if word.first().is_some_and(u8::is_ascii_digit) && word.contains(&b'.') && end <= 32 {
            return Some(String::from_utf8_lossy(word).into_owned());
        }
    }
    None
}

/// The `DT_NEEDED` names of a little-endian ELF shared object (what `ldd` lists), or `None` when
/// the file's dynamic section cannot be read. Every offset is bounds-checked: the file may be
/// anything.
pub fn needed(elf: &[u8]) -> Option<Vec<String>> {
    let is64 = match elf.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let word = |off: usize, size: usize| -> Option<u64> {
        let bytes = elf.get(off..off.checked_add(size)?)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    let addr = if is64 { 8 } else { 4 };
    let at = |v: u64| usize::try_from(v).ok();
    let (phoff, phentsize, phnum) = if is64 {
        (word(0x20, 8)?, word(0x36, 2)?, word(0x38, 2)?)
    } else {
        (word(0x1c, 4)?, word(0x2a, 2)?, word(0x2c, 2)?)
    };
    // (file offset, virtual address, size in the file) of the loadable segments.
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let ph = at(phoff.checked_add(i.checked_mul(phentsize)?)?)?;
        let kind = word(ph, 4)?;
        let (offset, vaddr, filesz) = if is64 {
            (word(ph + 8, 8)?, word(ph + 16, 8)?, word(ph + 32, 8)?)
        } else {
            (word(ph + 4, 4)?, word(ph + 8, 4)?, word(ph + 16, 4)?)
        };
        match kind {
            1 => loads.push((offset, vaddr, filesz)),
            2 => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let (dyn_off, dyn_size) = dynamic?;
    let (mut names, mut strtab) = (Vec::new(), None);
    let entry = 2 * addr;
    for i in 0..dyn_size / entry as u64 {
        let e = at(dyn_off.checked_add(i * entry as u64)?)?;
        let (tag, val) = (word(e, addr)?, word(e + addr, addr)?);
        match tag {
            0 => break,
            1 => names.push(val),
            5 => strtab = Some(val),
            _ => {}
        }
    }
    let strtab = strtab?;
    let (seg_off, seg_vaddr, _) = loads
        .iter()
        .find(|(_, vaddr, size)| strtab >= *vaddr && strtab - vaddr < *size)?;
    let table = at(seg_off.checked_add(strtab - seg_vaddr)?)?;
    names
        .into_iter()
        .map(|n| {
            let start = table.checked_add(at(n)?)?;
            let rest = elf.get(start..)?;
            let end = rest.iter().position(|b| *b == 0)?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `(major, minor)` of `1.2.3` or `1.2.1b1`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_digits: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor_digits.parse().ok()?))
}

/// What the runtime check learnt, for the SVE check.
pub struct Found {
    pub finding: Finding,
    /// The runtime's minor version when known.
    pub minor: Option<u32>,
    /// The library, once it is found and loadable (for the ABI probe).
    pub path: Option<PathBuf>,
}

fn read_header(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(64);
    std::fs::File::open(path)?
        .take(64)
        .read_to_end(&mut header)?;
    Ok(header)
}

pub fn check(root: &Root, configured: &Path, ld_library_path: Option<&str>) -> Found {
    let built = env!("RKLLMD_ABI");
    let unloadable = |finding| Found {
        finding,
        minor: None,
        path: None,
    };
    let (path, from) = match locate(root, configured, ld_library_path, built) {
        Ok(found) => found,
        Err(finding) => return unloadable(finding),
    };
    let bytes = match loadable(root, &path, from, ld_library_path) {
        Ok(bytes) => bytes,
        Err(finding) => return unloadable(finding),
    };
    let unversioned = |finding| Found {
        finding,
        minor: None,
        path: Some(path.clone()),
    };
    let shown = format!("{} (from {from})", path.display());
    let Some(version) = runtime_version(&bytes) else {
        return unversioned(Finding::warn(
            NAME,
            format!("{shown}: version unknown (no 'RKLLM SDK (version: ...)' banner in the file)"),
            format!(
                "rkllmd is built for ABI {built}: check the 'rkllm-runtime version' line the \
                 runtime logs when rkllmd starts"
            ),
        ));
    };
    let Some((major, minor)) = major_minor(&version) else {
        return unversioned(Finding::warn(
            NAME,
            format!("{shown}: version '{version}' not understood"),
            format!("rkllmd is built for ABI {built}"),
        ));
    };
    Found {
        finding: judge_version(&format!("{shown}, version {version}"), major, minor, built),
        minor: Some(minor),
        path: Some(path.clone()),
    }
}

/// The library the daemon would load: `runtime-library` when it is a path, else the first
/// candidate for this CPU in the loader's search order.
fn locate(
    root: &Root,
    configured: &Path,
    ld_library_path: Option<&str>,
    built: &str,
) -> Result<(PathBuf, &'static str), Finding> {
    if configured.as_os_str().to_string_lossy().contains('/') {
        return Ok((configured.to_owned(), "runtime-library"));
    }
    let mut skipped = Vec::new();
    let chosen = search_dirs(root, ld_library_path)
        .into_iter()
        .find_map(|(dir, from)| {
            let candidate = dir.join(configured);
            let header = read_header(&candidate).ok()?;
            match elf_problem(&header) {
                None => Some((candidate, from)),
                Some(why) => {
                    skipped.push(format!("{} ({why})", candidate.display()));
                    None
                }
            }
        });
    chosen.ok_or_else(|| {
        let mut detail = format!("{} not found", configured.display());
        if !skipped.is_empty() {
            let _ = write!(detail, "; skipped {}", skipped.join(", "));
        }
        Finding::fail(
            NAME,
            detail,
            format!(
                "install librkllmrt.so {built}.x from rknn-llm (rkllm-runtime/Linux/librkllm_api/) \
                 into /usr/lib, or set runtime-library to its path"
            ),
        )
    })
}

/// The library's bytes once it is readable, built for this CPU and has every library it needs.
fn loadable(
    root: &Root,
    path: &Path,
    from: &str,
    ld_library_path: Option<&str>,
) -> Result<Vec<u8>, Finding> {
    let bytes = std::fs::read(path).map_err(|e| {
        Finding::fail(
            NAME,
            format!("cannot read {}: {e}", path.display()),
            "the daemon's user must be able to read the runtime library",
        )
    })?;
    if let Some(why) = elf_problem(&bytes) {
        return Err(Finding::fail(
            NAME,
            format!("{}: {why}", path.display()),
            "runtime-library must name librkllmrt.so for this CPU",
        ));
    }
    // What dlopen would fail on next: a dependency (libomp.so, in the field) nowhere to be found.
    let dirs = search_dirs(root, ld_library_path);
    let missing: Vec<String> = needed(&bytes)
        .unwrap_or_default()
        .into_iter()
        .filter(|lib| !dirs.iter().any(|(d, _)| d.join(lib).exists()))
        .collect();
    if !missing.is_empty() {
        return Err(Finding::fail(
            NAME,
            format!(
                "{} (from {from}) needs {}, not found in the library path",
                path.display(),
                missing.join(", ")
            ),
            "install the missing libraries (ldd on the board lists them) or add their \
             directory to /etc/ld.so.conf.d/ and run ldconfig",
        ));
    }
    Ok(bytes)
}

/// The runtime's version against the ABI this binary was built for.
fn judge_version(detail: &str, major: u32, minor: u32, built: &str) -> Finding {
    let abi = format!("{major}.{minor}");
    if abi == built {
        Finding::ok(NAME, format!("{detail}, ABI {abi} as built"))
    } else if major == 1 && (minor == 2 || minor == 3) {
        let rebuild = if minor == 2 {
            "rebuild rkllmd with --features rkllm-1-2, or install runtime 1.3.x"
        } else {
            "rebuild rkllmd without --features rkllm-1-2, or install runtime 1.2.3"
        };
        Finding::fail(
            NAME,
            format!("{detail}: ABI {abi}, but rkllmd is built for ABI {built}"),
            rebuild,
        )
    } else if (major, minor) < (1, 2) {
        Finding::fail(
            NAME,
            format!("{detail}: older than any ABI rkllmd supports (1.2, 1.3)"),
            format!("install runtime {built}.x (and models converted by the same toolkit version)"),
        )
    } else {
        Finding::warn(
            NAME,
            format!("{detail}: newer than the ABIs rkllmd knows (1.2, 1.3); built for {built}"),
            "watch the first requests; rebuild rkllmd when it supports this runtime",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_sdk_banner() {
        let banner = b"\x7fELF\0I rkllm: rkllm-runtime version: %s, rknpu driver version: %s\0\
            RKLLM SDK (version: 1.2.1b1 | target: Linux | build: 27637c95 2025-05-02 17:46:07)\0";
        assert_eq!(runtime_version(banner).as_deref(), Some("1.2.1b1"));
        assert_eq!(
            runtime_version(b"RKLLM SDK (version: 1.3.0 | target: Linux | build: rkllm-sim)")
                .as_deref(),
            Some("1.3.0")
        );
        // The banner wins over a literal log line elsewhere in the file.
        assert_eq!(
            runtime_version(b"rkllm-runtime version: 1.2.3\0RKLLM SDK (version: 1.3.1 |")
                .as_deref(),
            Some("1.3.1")
        );
        // A banner without a version falls back to the literal.
        assert_eq!(
            runtime_version(b"RKLLM SDK (version: %s |\0rkllm-runtime version: 1.2.3\0").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(runtime_version(b"RKLLM SDK (version: "), None);
    }

    #[test]
    fn versions_after_the_marker() {
        let mut lib =
            b"\x7fELF junk\0I rkllm: rkllm-runtime version: %s, rknpu driver version: %s\0"
                .to_vec();
        assert_eq!(runtime_version(&lib), None, "a format string is no version");
        lib.extend_from_slice(b"rkllm-runtime version: 1.2.3, rknpu driver\0");
        assert_eq!(runtime_version(&lib).as_deref(), Some("1.2.3"));
        assert_eq!(
            runtime_version(b"xx rkllm-runtime version: 1.2.1b1\0").as_deref(),
            Some("1.2.1b1")
        );
        assert_eq!(
            runtime_version(b"rkllm-runtime version: 1.3.0 (rkllm-sim 0.1)").as_deref(),
            Some("1.3.0")
        );
        assert_eq!(runtime_version(b"rkllm-runtime version: "), None);
        assert_eq!(runtime_version(b"rkllm-runtime version: 7"), None);
        assert_eq!(runtime_version(b""), None);
    }

    #[test]
    fn major_and_minor() {
        assert_eq!(major_minor("1.2.3"), Some((1, 2)));
        assert_eq!(major_minor("1.2.1b1"), Some((1, 2)));
        assert_eq!(major_minor("1.3.0"), Some((1, 3)));
        assert_eq!(major_minor("1"), None);
        assert_eq!(major_minor("a.b"), None);
    }

    #[test]
    fn elf_headers() {
        assert_eq!(elf_problem(b"hello").as_deref(), Some("not an ELF file"));
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // A test executable is ET_DYN (PIE) for this very CPU.
        assert_eq!(elf_problem(&own[..64]), None);
        let mut other = own[..64].to_vec();
        other[18] = 0xff;
        assert!(elf_problem(&other)
            .unwrap()
            .starts_with("built for another CPU"));
        let mut exec = own[..64].to_vec();
        exec[16] = 2;
        assert_eq!(elf_problem(&exec).as_deref(), Some("not a shared object"));
    }

    #[test]
    fn needed_libraries_of_a_real_elf() {
        // This test binary is a dynamic ELF of this CPU; it needs libc at least.
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let libs = needed(&own).expect("a readable dynamic section");
        assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
        // Truncated or scrambled files give None or a list, never a panic.
        for cut in [0, 4, 20, 64, 200, own.len() / 2] {
            let _ = needed(&own[..cut]);
        }
        let mut scrambled = own.clone();
        for b in scrambled.iter_mut().skip(0x20).take(0x40) {
            *b = 0xff;
        }
        let _ = needed(&scrambled);
        assert_eq!(needed(b""), None);
    }

    #[test]
    fn globs() {
        assert!(wildcard("*.conf", "aarch64-linux-gnu.conf"));
        assert!(wildcard("lib*.conf", "libc.conf"));
        assert!(!wildcard("*.conf", "x.conf.bak"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("a*b*c", "acb"));
    }

    #[test]
    fn ld_so_conf_with_includes_and_comments() {
        let dir = std::env::temp_dir().join(format!("rkllmd-ldconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/ld.so.conf.d")).unwrap();
        std::fs::write(
            dir.join("etc/ld.so.conf"),
            "# comment\n/opt/first/\ninclude ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/ld.so.conf.d/b.conf"),
            "/usr/local/lib # local\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/ld.so.conf.d/a.conf"),
            "/opt/rkllm\ninclude /etc/ld.so.conf\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/ld.so.conf.d/c.txt"), "/not/this\n").unwrap();
        let dirs = ld_so_conf_dirs(&Root::new(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        // The self-include is followed a bounded number of times, never forever.
        assert_eq!(&dirs[..3], ["/opt/first", "/opt/rkllm", "/opt/first"]);
        assert!(dirs.contains(&"/usr/local/lib".to_owned()));
        assert!(!dirs.contains(&"/not/this".to_owned()));
    }
}
