//! The preset for a model file, from its name as people convert them
//! (`Qwen2.5-1.5B-Instruct_W8A8_RK3588.rkllm`).

/// Name fragments, checked in order on the lowercased file name with `_` and spaces read as
/// `-`; the first that matches wins. Distills come first (`DeepSeek-R1-Distill-Qwen` is not
/// Qwen), vision variants before their text family (Qwen2-VL and Qwen2.5-VL default to Qwen2's
/// system prompt), longer versions before shorter ones.
const TABLE: &[(&[&str], &str)] = &[
    (&["deepseek-r1", "r1-distill"], "deepseek-r1"),
    (&["qwen2-vl", "qwen2.5-vl", "qwen2-5-vl"], "qwen2"),
    (&["qwen3", "qwen-3"], "qwen3"),
    (&["qwen2.5", "qwen2-5", "qwen-2.5"], "qwen2.5"),
    (&["qwen2", "qwen-2", "qwen1.5", "qwen1-5"], "qwen2"),
    (&["llama-3", "llama3"], "llama3"),
    // Gemma 1 renders text the same way as Gemma 2 and 3.
    (
        &[
            "gemma-2",
            "gemma2",
            "gemma-3",
            "gemma3",
            "gemma-7b",
            "gemma-1.1",
        ],
        "gemma2",
    ),
    (&["phi-3", "phi3"], "phi3"),
    // MiniCPM 1 and 2 use another format (`<用户>…<AI>`) and MiniCPM-V its own: not these.
    (
        &["minicpm3", "minicpm-3", "minicpm4", "minicpm-4"],
        "minicpm",
    ),
    (&["internlm2", "internlm-2"], "internlm2"),
];

/// The preset for a model file name (a path is fine), or `None` when no family is recognised.
pub fn guess(model_file_name: &str) -> Option<&'static str> {
    let file = model_file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(model_file_name);
    let name: String = file
        .chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    TABLE
        .iter()
        .find(|(fragments, _)| fragments.iter().any(|f| name.contains(f)))
        .map(|(_, preset)| *preset)
}

#[cfg(test)]
mod tests {
    use super::super::PRESET_NAMES;
    use super::{guess, TABLE};

    #[test]
    fn file_names_map_to_their_family() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Qwen2.5-1.5B-Instruct_W8A8_RK3588.rkllm", Some("qwen2.5")),
            ("qwen2_5-3b-instruct-w8a8.rkllm", Some("qwen2.5")),
            ("Qwen2.5-Coder-1.5B-Instruct.rkllm", Some("qwen2.5")),
            ("Qwen3-4B_W8A8_RK3588.rkllm", Some("qwen3")),
            ("Qwen3-1.7B-w8a8-opt0-hybrid.rkllm", Some("qwen3")),
            ("Qwen2-0.5B-Instruct.rkllm", Some("qwen2")),
            ("Qwen1.5-1.8B-Chat.rkllm", Some("qwen2")),
            ("Qwen2.5-VL-3B-Instruct_w8a8.rkllm", Some("qwen2")),
            (
                "DeepSeek-R1-Distill-Qwen-1.5B_W8A8_RK3588.rkllm",
                Some("deepseek-r1"),
            ),
            ("deepseek_r1_distill_qwen_7b.rkllm", Some("deepseek-r1")),
            ("DeepSeek-R1-Distill-Llama-8B.rkllm", Some("deepseek-r1")),
            ("Llama-3.2-1B-Instruct_W8A8.rkllm", Some("llama3")),
            ("Meta-Llama-3-8B-Instruct.rkllm", Some("llama3")),
            ("llama3.1-8b.rkllm", Some("llama3")),
            ("gemma-2-2b-it.rkllm", Some("gemma2")),
            ("gemma-3-1b-it_w8a8.rkllm", Some("gemma2")),
            ("Gemma3-4B.rkllm", Some("gemma2")),
            ("Phi-3-mini-4k-instruct.rkllm", Some("phi3")),
            ("phi-3.5-mini-instruct.rkllm", Some("phi3")),
            ("MiniCPM4-0.5B.rkllm", Some("minicpm")),
            ("MiniCPM3-4B_W8A8.rkllm", Some("minicpm")),
            ("internlm2-chat-1_8b.rkllm", Some("internlm2")),
            ("internlm2_5-1_8b-chat.rkllm", Some("internlm2")),
            ("/var/lib/rkllmd/models/Qwen2.5-3B.rkllm", Some("qwen2.5")),
            ("C:\\models\\QWEN3-0.6B.RKLLM", Some("qwen3")),
            ("TinyLlama-1.1B-Chat-v1.0.rkllm", None),
            ("Llama-2-7b-chat.rkllm", None),
            ("MiniCPM-2B-sft-bf16.rkllm", None),
            ("MiniCPM-V-2_6.rkllm", None),
            ("Phi-4-mini-instruct.rkllm", None),
            ("Qwen-1_8B-Chat.rkllm", None),
            ("chatglm3-6b.rkllm", None),
            ("model.rkllm", None),
            ("", None),
        ];
        for (file, want) in cases {
            assert_eq!(guess(file), *want, "{file}");
        }
    }

    #[test]
    fn every_guess_is_a_preset() {
        for (_, preset) in TABLE {
            assert!(PRESET_NAMES.contains(preset), "{preset}");
        }
    }
}
