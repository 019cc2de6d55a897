//! The architecture a model file declares, read from a bounded header region.
//!
//! Evidence that a `.rkllm` file carries it: the strings of Rockchip's `librkllmrt.so` 1.2.1
//! (dumped in Luna-Inference/open-rkllm, `analyze/readable.txt`) show a GGUF-style loader
//! ("loading rkllm model from %s", "failed to read key-value pairs", "GGUFv1 is no longer
//! supported") with the keys `general.architecture`, `general.name`, `tokenizer.chat_template`
//! and `rkllm.chat_template.{system,pre,post}`. GGUF writes a string value as its key (u64
//! length + bytes), the value type (u32, 8 = string), then the value (u64 length + bytes), all
//! little-endian. The simulator's text model files write the same key as a
//! `general.architecture = qwen2` line. Only the first [`HEADER_BYTES`] are read: a real model
//! is gigabytes, and GGUF puts its key-value pairs before the tensors.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// How much of a model file is searched for the key.
pub const HEADER_BYTES: u64 = 64 * 1024;

const KEY: &[u8] = b"general.architecture";
const GGUF_STRING: u32 = 8;
const MAX_VALUE: usize = 64;

/// The `general.architecture` the file at `path` declares in its first [`HEADER_BYTES`], or
/// `None` when it cannot be read or declares none.
pub fn architecture(path: &Path) -> Option<String> {
    let mut head = Vec::new();
    File::open(path)
        .ok()?
        .take(HEADER_BYTES)
        .read_to_end(&mut head)
        .ok()?;
    architecture_in(&head)
}

/// The architecture declared in `head`, in GGUF's binary encoding or the simulator's text line.
pub fn architecture_in(head: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(at) = find(&head[from..], KEY).map(|i| i + from) {
        let after = &head[at + KEY.len()..];
        if let Some(v) = gguf_string(after).or_else(|| text_value(after)) {
            return Some(v);
        }
        from = at + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn valid(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    let ok = !s.is_empty()
        && s.len() <= MAX_VALUE
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| s.to_ascii_lowercase())
}

fn gguf_string(after: &[u8]) -> Option<String> {
    let kind = u32::from_le_bytes(after.get(..4)?.try_into().ok()?);
    if kind != GGUF_STRING {
        return None;
    }
    let len = u64::from_le_bytes(after.get(4..12)?.try_into().ok()?);
    let len = usize::try_from(len).ok().filter(|&l| l <= MAX_VALUE)?;
    valid(after.get(12..12 + len)?)
}

fn text_value(after: &[u8]) -> Option<String> {
    let line = after.split(|&b| b == b'\n').next()?;
    let rest = std::str::from_utf8(line).ok()?.trim_start();
    valid(rest.strip_prefix('=')?.trim().as_bytes())
}

/// Where `auto` found its preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Architecture,
    FileName,
}

/// The preset `--chat-template auto` uses for a file declaring `architecture` and named
/// `file_name`. An architecture only one preset's family uses wins; a shared one (`qwen2`:
/// Qwen2, Qwen2.5 and DeepSeek-R1's Qwen distills) yields to a family the file name names, and
/// decides only when the name names none.
pub fn choose(architecture: Option<&str>, file_name: &str) -> Option<(&'static str, Chosen)> {
    let by_name = super::guess(file_name).map(|p| (p, Chosen::FileName));
    let Some(arch) = architecture else {
        return by_name;
    };
    let unambiguous = match arch {
        "qwen3" => Some("qwen3"),
        "gemma2" | "gemma3" => Some("gemma2"),
        "phi3" => Some("phi3"),
        "minicpm3" => Some("minicpm"),
        "internlm2" => Some("internlm2"),
        _ => None,
    };
    let shared = match arch {
        "qwen2" => Some("qwen2.5"),
        // The vision-language Qwens (llama.cpp's names), whose chat template is Qwen2's, as
        // their file names give it (`guess`).
        "qwen2vl" | "qwen25vl" => Some("qwen2"),
        _ => None,
    };
    unambiguous
        .map(|p| (p, Chosen::Architecture))
        .or(by_name)
        .or(shared.map(|p| (p, Chosen::Architecture)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf_kv(key: &[u8], kind: u32, value: &[u8]) -> Vec<u8> {
        let mut out = (key.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(key);
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn a_family_only_the_file_name_tells_apart_wins_over_a_shared_architecture() {
        use Chosen::*;
        type Case<'a> = (Option<&'a str>, &'a str, Option<(&'a str, Chosen)>);
        let cases: &[Case] = &[
            (Some("qwen2"), "demo.rkllm", Some(("qwen2.5", Architecture))),
            (
                Some("qwen2"),
                "DeepSeek-R1-Distill-Qwen-1.5B.rkllm",
                Some(("deepseek-r1", FileName)),
            ),
            (Some("qwen2"), "Qwen2-0.5B.rkllm", Some(("qwen2", FileName))),
            (
                Some("qwen2vl"),
                "vision-demo.rkllm",
                Some(("qwen2", Architecture)),
            ),
            (
                Some("qwen25vl"),
                "model.rkllm",
                Some(("qwen2", Architecture)),
            ),
            (
                Some("qwen3"),
                "Qwen2.5-renamed.rkllm",
                Some(("qwen3", Architecture)),
            ),
            (
                Some("gemma3"),
                "model.rkllm",
                Some(("gemma2", Architecture)),
            ),
            (Some("llama"), "model.rkllm", None),
            (
                Some("llama"),
                "Llama-3.2-1B.rkllm",
                Some(("llama3", FileName)),
            ),
            (None, "Qwen3-4B.rkllm", Some(("qwen3", FileName))),
            (None, "model.rkllm", None),
        ];
        for (arch, file, want) in cases {
            assert_eq!(choose(*arch, file), *want, "{arch:?} {file}");
        }
    }

    #[test]
    fn reads_the_gguf_encoding() {
        let mut head = b"RKLLM\0\x03\0".to_vec();
        head.extend(gguf_kv(b"general.name", 8, b"Qwen3-1.7B"));
        head.extend(gguf_kv(KEY, 8, b"qwen3"));
        head.extend([0xff; 64]);
        assert_eq!(architecture_in(&head).as_deref(), Some("qwen3"));
    }

    #[test]
    fn reads_the_simulators_text_line() {
        let text = b"rkllm-sim 1\nname = demo\ngeneral.architecture = qwen2\nload_ms = 3\n";
        assert_eq!(architecture_in(text).as_deref(), Some("qwen2"));
    }

    #[test]
    fn ignores_values_that_are_not_a_name() {
        assert_eq!(architecture_in(&gguf_kv(KEY, 4, b"qwen3")), None);
        assert_eq!(architecture_in(&gguf_kv(KEY, 8, &[b'a'; 65])), None);
        assert_eq!(
            architecture_in(b"general.architecture = <|im_start|>"),
            None
        );
        assert_eq!(architecture_in(b"general.architecture"), None);
        assert_eq!(architecture_in(b""), None);
    }

    #[test]
    fn reads_only_the_header_region() {
        let dir = std::env::temp_dir().join(format!("rkllmd-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let near = dir.join("near.rkllm");
        let far = dir.join("far.rkllm");
        let line = b"general.architecture = qwen3\n";
        let mut data = vec![b' '; usize::try_from(HEADER_BYTES).unwrap() - line.len()];
        data.extend_from_slice(line);
        std::fs::write(&near, &data).unwrap();
        // Shifted so that the key starts at the limit.
        data.splice(0..0, std::iter::repeat_n(b' ', line.len()));
        std::fs::write(&far, &data).unwrap();
        assert_eq!(architecture(&near).as_deref(), Some("qwen3"));
        assert_eq!(architecture(&far), None);
        assert_eq!(architecture(&dir.join("missing.rkllm")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
