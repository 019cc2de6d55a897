//! Which ABI a runtime library speaks, found before `rkllm_init` ever sees our `RKLLMParam`.
//!
//! The two ABIs export the same functions; what differs is the layout of `RKLLMParam` (and the
//! structs passed to `rkllm_run`). So the probe asks the library for its defaults:
//! `rkllm_createDefaultParam` writes its own struct into a buffer larger than either ABI's
//! (`shim.cpp`, a guard page behind it), twice with different canaries, and this module judges
//! which header's layout (`layout.cpp`, laid out by the compiler) explains the bytes:
//!
//! - how far it wrote: a 1.2 runtime that zeroes its struct writes 208 bytes on 64-bit, past
//!   the 184 of a 1.3 one;
//! - where the defaults land: the 1.2 layout has three image-tag pointers where 1.3 has
//!   `enabled_cpus_num` and `n_batch` (default 1 in the headers); 1.3's reserved bytes lie where
//!   1.2 keeps its extension fields. A pointer that is neither NULL nor an address, or a reserved
//!   byte that is not zero, rules a layout out.

use std::fmt;

use super::ffi::RkdLayout;

/// Bytes of the probe buffer handed back by the shim.
pub const PROBE_LEN: usize = 512;

/// The runtime ABIs rkllmd knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    V1_2,
    V1_3,
}

impl Abi {
    /// The ABI this binary was built for.
    pub fn built() -> Abi {
        if env!("RKLLMD_ABI") == "1.2" {
            Abi::V1_2
        } else {
            Abi::V1_3
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Abi::V1_2 => "1.2",
            Abi::V1_3 => "1.3",
        }
    }

    /// What to do when a runtime of this ABI meets a binary built for the other.
    pub fn remedy(self) -> &'static str {
        match self {
            Abi::V1_2 => "install runtime 1.3.x, or rebuild rkllmd with --features rkllm-1-2",
            Abi::V1_3 => "install runtime 1.2.3, or rebuild rkllmd without --features rkllm-1-2",
        }
    }
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The probe's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbiProbe {
    /// Only this ABI's layout explains the defaults.
    Is(Abi),
    /// Both layouts explain them (every distinguishing byte zero or unwritten).
    Either,
    /// Neither does; `detail` says what was seen.
    Neither { detail: String },
}

/// The bytes of two probe calls: a byte the runtime wrote is the same in both.
pub struct Written<'a> {
    a: &'a [u8],
    b: &'a [u8],
}

impl<'a> Written<'a> {
    pub fn new(a: &'a [u8], b: &'a [u8]) -> Written<'a> {
        Written { a, b }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        match (self.a.get(at), self.b.get(at)) {
            (Some(x), Some(y)) if x == y => Some(*x),
            _ => None,
        }
    }

    /// One past the last byte written.
    fn extent(&self) -> usize {
        (0..self.a.len().min(self.b.len()))
            .rev()
            .find(|&i| self.byte(i).is_some())
            .map_or(0, |i| i + 1)
    }

    /// A little-endian unsigned value of `len` bytes at `at`, unwritten bytes read as zero.
    fn value(&self, at: usize, len: usize) -> u64 {
        (0..len).rev().fold(0, |acc, i| {
            (acc << 8) | u64::from(self.byte(at + i).unwrap_or(0))
        })
    }
}

fn offset(v: i32) -> Option<usize> {
    usize::try_from(v).ok()
}

/// Why the bytes cannot be this layout's defaults, if they cannot.
fn misfit(layout: &RkdLayout, w: &Written<'_>) -> Option<String> {
    let size = offset(layout.size)?;
    let extent = w.extent();
    if extent > size {
        return Some(format!("{extent} bytes written, more than its {size}"));
    }
    for (name, at) in [
        ("skip_special_token", layout.skip_special_token),
        ("ignore_eos_token", layout.ignore_eos_token),
        ("is_async", layout.is_async),
    ] {
        if let Some(v) = offset(at).and_then(|at| w.byte(at)) {
            if v > 1 {
                return Some(format!("{name} would be {v}, not a bool"));
            }
        }
    }
    let ptr = offset(layout.pointer_size).unwrap_or(8);
    for (name, at) in [
        ("img_start", layout.img_start),
        ("img_end", layout.img_end),
        ("img_content", layout.img_content),
    ] {
        if let Some(at) = offset(at) {
            let v = w.value(at, ptr);
            // NULL, or an address beyond the first page (no mapping lives below it).
            if v != 0 && v < 4096 {
                return Some(format!("{name} would be the pointer {v:#x}"));
            }
        }
    }
    if let Some(v) = offset(layout.enabled_cpus_num).and_then(|at| w.byte(at)) {
        if v > 64 {
            return Some(format!("enabled_cpus_num would be {v}"));
        }
    }
    if let Some(v) = offset(layout.n_batch).and_then(|at| w.byte(at)) {
        if v > 1 {
            return Some(format!("n_batch would default to {v}"));
        }
    }
    let reserved = offset(layout.reserved)?;
    let len = offset(layout.reserved_len)?;
    if let Some(at) = (reserved..reserved + len).find(|&i| w.byte(i).is_some_and(|v| v != 0)) {
        return Some(format!("reserved byte {} would be nonzero", at - reserved));
    }
    None
}

/// Judges the probe's bytes against both layouts.
pub fn classify(w: &Written<'_>, layouts: &[(Abi, RkdLayout)]) -> AbiProbe {
    // The fields every ABI shares (context length to mirostat_eta) must have been written, or
    // the function is not what its name says.
    let shared = offset(
        layouts
            .iter()
            .map(|(_, l)| l.skip_special_token)
            .min()
            .unwrap_or(0),
    )
    .unwrap_or(0);
    if let Some(at) = (8..shared).find(|&i| w.byte(i).is_none()) {
        return AbiProbe::Neither {
            detail: format!("rkllm_createDefaultParam left byte {at} unwritten"),
        };
    }
    let misfits: Vec<(Abi, Option<String>)> = layouts
        .iter()
        .map(|(abi, layout)| (*abi, misfit(layout, w)))
        .collect();
    let fitting: Vec<Abi> = misfits
        .iter()
        .filter(|(_, why)| why.is_none())
        .map(|(abi, _)| *abi)
        .collect();
    match fitting[..] {
        [abi] => AbiProbe::Is(abi),
        [] => AbiProbe::Neither {
            detail: misfits
                .iter()
                .map(|(abi, why)| format!("as {abi}: {}", why.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; "),
        },
        _ => AbiProbe::Either,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LP64 layouts of the two vendored headers (what `layout.cpp` reports on `x86_64` and
    /// aarch64).
    const L12: RkdLayout = RkdLayout {
        size: 208,
        skip_special_token: 56,
        ignore_eos_token: -1,
        is_async: 57,
        img_start: 64,
        img_end: 72,
        img_content: 80,
        pointer_size: 8,
        base_domain_id: 88,
        enabled_cpus_num: 93,
        enabled_cpus_mask: 96,
        n_batch: 100,
        reserved: 102,
        reserved_len: 104,
    };
    const L13: RkdLayout = RkdLayout {
        size: 184,
        skip_special_token: 56,
        ignore_eos_token: 57,
        is_async: 58,
        img_start: -1,
        img_end: -1,
        img_content: -1,
        pointer_size: 8,
        base_domain_id: 60,
        enabled_cpus_num: 65,
        enabled_cpus_mask: 68,
        n_batch: 72,
        reserved: 74,
        reserved_len: 104,
    };

    fn layouts() -> Vec<(Abi, RkdLayout)> {
        vec![(Abi::V1_2, L12), (Abi::V1_3, L13)]
    }

    /// A zeroed struct of `layout` with the headers' documented defaults, as the two canary
    /// calls return it; bytes past `written` keep the canaries.
    fn probe(layout: &RkdLayout, cpus: u8, n_batch: u8, written: usize) -> (Vec<u8>, Vec<u8>) {
        let mut s = vec![0u8; usize::try_from(layout.size).unwrap()];
        s[8..12].copy_from_slice(&512i32.to_le_bytes());
        s[24..28].copy_from_slice(&0.9f32.to_le_bytes());
        s[usize::try_from(layout.skip_special_token).unwrap()] = 1;
        s[usize::try_from(layout.enabled_cpus_num).unwrap()] = cpus;
        s[usize::try_from(layout.n_batch).unwrap()] = n_batch;
        let fill = |canary: u8| {
            let mut buf = vec![canary; PROBE_LEN];
            buf[..written].copy_from_slice(&s[..written]);
            buf
        };
        (fill(0xa5), fill(0x5a))
    }

    fn judge(a: &[u8], b: &[u8]) -> AbiProbe {
        classify(&Written::new(a, b), &layouts())
    }

    #[test]
    fn each_simulator_default_is_recognised() {
        let (a, b) = probe(&L12, 4, 1, 208);
        assert_eq!(judge(&a, &b), AbiProbe::Is(Abi::V1_2));
        let (a, b) = probe(&L13, 4, 1, 184);
        assert_eq!(judge(&a, &b), AbiProbe::Is(Abi::V1_3));
    }

    #[test]
    fn n_batch_alone_tells_them_apart() {
        // Field by field, no padding or reserved bytes written, no CPU default.
        let (a, b) = probe(&L12, 0, 1, 102);
        assert_eq!(judge(&a, &b), AbiProbe::Is(Abi::V1_2));
        let (a, b) = probe(&L13, 0, 1, 74);
        assert_eq!(judge(&a, &b), AbiProbe::Is(Abi::V1_3));
    }

    #[test]
    fn the_size_alone_tells_them_apart() {
        // A zeroed 1.2 struct with zero extension defaults: only its size gives it away.
        let (a, b) = probe(&L12, 0, 0, 208);
        assert_eq!(judge(&a, &b), AbiProbe::Is(Abi::V1_2));
    }

    #[test]
    fn all_zero_short_defaults_are_ambiguous() {
        let (a, b) = probe(&L13, 0, 0, 184);
        assert_eq!(judge(&a, &b), AbiProbe::Either);
    }

    #[test]
    fn a_larger_struct_or_garbage_fits_neither() {
        let (mut a, mut b) = probe(&L12, 4, 1, 208);
        a[300] = 7;
        b[300] = 7;
        let AbiProbe::Neither { detail } = judge(&a, &b) else {
            panic!("a 301-byte struct is neither ABI");
        };
        assert!(detail.contains("301 bytes written"), "{detail}");
        let (a, b) = (vec![0xa5; PROBE_LEN], vec![0x5a; PROBE_LEN]);
        assert!(matches!(judge(&a, &b), AbiProbe::Neither { .. }));
    }

    #[test]
    fn bytes_are_written_when_both_calls_agree() {
        let w = Written::new(&[1, 2, 0xa5, 9], &[1, 3, 0x5a, 9]);
        assert_eq!(w.byte(0), Some(1));
        assert_eq!(w.byte(1), None);
        assert_eq!(w.byte(2), None);
        assert_eq!(w.extent(), 4);
        assert_eq!(w.value(0, 2), 1);
    }
}
