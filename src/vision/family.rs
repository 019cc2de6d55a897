//! Vision model families and the image tags each takes (`image-family` in a model's section):
//! the runtime puts the start and end tags around each image's embeddings where the prompt has
//! `<image>`, and the content tag marks its positions. Upstream's demo
//! (rknn-llm, `examples/multimodal_model_demo/deploy/src/main.cpp`) defaults to Qwen2-VL's tags
//! and gives DeepSeek-OCR's in a comment; its README says the three must be set per model. The
//! other families' tags are those of a third-party RKLLM API server's model table, which also
//! keeps `<image>` as the placeholder for every family.

/// A family of vision models whose image tags rkllmd knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Qwen2Vl,
    Qwen25Vl,
    Qwen3Vl,
    InternVl3,
    MiniCpmV,
    DeepSeekOcr,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Qwen2Vl,
        Family::Qwen25Vl,
        Family::Qwen3Vl,
        Family::InternVl3,
        Family::MiniCpmV,
        Family::DeepSeekOcr,
    ];

    /// Its name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen2Vl => "qwen2-vl",
            Family::Qwen25Vl => "qwen2.5-vl",
            Family::Qwen3Vl => "qwen3-vl",
            Family::InternVl3 => "internvl3",
            Family::MiniCpmV => "minicpm-v",
            Family::DeepSeekOcr => "deepseek-ocr",
        }
    }

    /// The family of that name (case-insensitive).
    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Its image tags: start, end, content.
    pub fn tags(self) -> [&'static str; 3] {
        match self {
            Family::Qwen2Vl | Family::Qwen25Vl | Family::Qwen3Vl => {
                ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
            }
            Family::InternVl3 => ["<img>", "</img>", "<IMG_CONTEXT>"],
            Family::MiniCpmV => ["<image>", "</image>", "slice_placeholder"],
            // Full-width bars and U+2581, as upstream's demo writes it.
            Family::DeepSeekOcr => ["", "", "<\u{ff5c}\u{2581}pad\u{2581}\u{ff5c}>"],
        }
    }

    /// The family a model's name suggests when its section names none: Qwen2-VL, the demo's
    /// default, unless the name says otherwise. `name`: its file's stem.
    pub fn guess(name: &str) -> Family {
        let name = name.to_lowercase();
        if name.contains("internvl") {
            Family::InternVl3
        } else if name.contains("minicpm") {
            Family::MiniCpmV
        } else if name.contains("deepseek") && name.contains("ocr") {
            Family::DeepSeekOcr
        } else {
            Family::Qwen2Vl
        }
    }
}

/// The family names, for messages: `qwen2-vl, qwen2.5-vl, ...`.
pub fn names() -> String {
    Family::ALL.map(Family::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_parses_by_its_name() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.name()), Some(f));
        }
        assert_eq!(Family::parse(" InternVL3 "), Some(Family::InternVl3));
        assert_eq!(Family::parse("llava"), None);
        assert_eq!(Family::parse(""), None);
    }

    #[test]
    fn the_tags_are_the_familys() {
        assert_eq!(
            Family::Qwen25Vl.tags(),
            ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
        );
        assert_eq!(
            Family::InternVl3.tags(),
            ["<img>", "</img>", "<IMG_CONTEXT>"]
        );
        assert_eq!(Family::DeepSeekOcr.tags()[..2], ["", ""]);
        assert_eq!(Family::DeepSeekOcr.tags()[2], "<｜▁pad▁｜>");
    }

    #[test]
    fn a_name_suggests_its_family_else_qwen2_vl() {
        let cases = [
            ("InternVL3-1B-w8a8", Family::InternVl3),
            ("minicpm-v-2_6", Family::MiniCpmV),
            ("MiniCPM-V4", Family::MiniCpmV),
            ("deepseek-ocr-3b", Family::DeepSeekOcr),
            ("deepseek-r1-1.5b", Family::Qwen2Vl),
            ("ocr-model", Family::Qwen2Vl),
            ("qwen2.5-vl-3b", Family::Qwen2Vl),
            ("vision-demo", Family::Qwen2Vl),
        ];
        for (name, family) in cases {
            assert_eq!(Family::guess(name), family, "{name}");
        }
    }
}
