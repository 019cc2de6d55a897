//! A vision model's encoder and image tags: its section's `vision-encoder` else the `.rknn`
//! beside it (`encoder_beside`), and its `image-tags`, else its `image-family`, else the family
//! its name suggests (`vision::family`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{EncoderSetting, ModelEntry};
use crate::engine::VisionLoad;
use crate::runtime::ImageTags;
use crate::vision::family::Family;

/// A model's vision: what the engine loads, and how its tags were chosen (for logs and
/// `check`).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelVision {
    pub load: VisionLoad,
    pub chosen: TagsChosen,
}

/// Where a vision model's image tags come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagsChosen {
    /// `image-tags`.
    Set,
    /// `image-family`, or the family its name suggests (`guessed`).
    Family { family: Family, guessed: bool },
}

impl fmt::Display for TagsChosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagsChosen::Set => f.write_str("set by image-tags"),
            TagsChosen::Family {
                family,
                guessed: false,
            } => write!(f, "family {}", family.name()),
            TagsChosen::Family {
                family,
                guessed: true,
            } => write!(f, "family {}, guessed from the name", family.name()),
        }
    }
}

impl ModelVision {
    /// The vision of a catalog entry: `None` when it has no encoder (or `vision-encoder =
    /// none`).
    pub fn of(entry: &ModelEntry) -> Option<ModelVision> {
        let encoder = match &entry.vision.encoder {
            EncoderSetting::Beside => encoder_beside(&entry.path)?,
            EncoderSetting::File(path) => path.clone(),
            EncoderSetting::Off => return None,
        };
        let (tags, chosen) = match (&entry.vision.tags, entry.vision.family) {
            (Some(tags), _) => (ImageTags::from(tags.clone()), TagsChosen::Set),
            (None, family) => {
                let guessed = family.is_none();
                let family = family.unwrap_or_else(|| Family::guess(&stem(&entry.path)));
                let tags = ImageTags::from(family.tags());
                (tags, TagsChosen::Family { family, guessed })
            }
        };
        Some(ModelVision {
            load: VisionLoad {
                encoder,
                tags,
                image_size: entry.vision.image_size,
            },
            chosen,
        })
    }

    /// One line for logs and `check`: the encoder, the tags and where they come from.
    pub fn describe(&self) -> String {
        let t = &self.load.tags;
        let size = self
            .load
            .image_size
            .map_or_else(String::new, |(w, h)| format!(", image-size {w}x{h}"));
        format!(
            "encoder {}; image tags {:?} {:?} {:?} ({}){size}",
            self.load.encoder.display(),
            t.start,
            t.end,
            t.content,
            self.chosen
        )
    }
}

/// A model file's name without its extension, which names its family.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A vision model's encoder: the file beside the model with the same stem and the `.rknn`
/// extension (`qwen2-vl-2b.rkllm` and `qwen2-vl-2b.rknn`), as Rockchip's toolkits produce the
/// pair; found without any setting.
pub fn encoder_beside(model: &Path) -> Option<PathBuf> {
    let encoder = model.with_extension("rknn");
    (encoder != model && encoder.is_file()).then_some(encoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, VisionSettings};

    fn entry(dir: &Path, stem: &str, vision: VisionSettings) -> ModelEntry {
        let mut e = ModelEntry::new(stem, dir.join(format!("{stem}.rkllm")), &Config::default());
        e.vision = vision;
        e
    }

    #[test]
    fn the_encoder_beside_serves_unless_the_section_names_another_or_none() {
        let dir = std::env::temp_dir().join(format!("rkllmd-model-vision-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("InternVL3-1B.rknn"), "").unwrap();
        std::fs::write(dir.join("other.rknn"), "").unwrap();
        let beside = ModelVision::of(&entry(&dir, "InternVL3-1B", VisionSettings::default()));
        let beside = beside.expect("the .rknn beside");
        assert_eq!(beside.load.encoder, dir.join("InternVL3-1B.rknn"));
        assert_eq!(beside.load.tags.start, "<img>");
        assert_eq!(
            beside.chosen,
            TagsChosen::Family {
                family: Family::InternVl3,
                guessed: true
            }
        );
        let off = VisionSettings {
            encoder: EncoderSetting::Off,
            ..VisionSettings::default()
        };
        assert_eq!(ModelVision::of(&entry(&dir, "InternVL3-1B", off)), None);
        let named = VisionSettings {
            encoder: EncoderSetting::File(dir.join("other.rknn")),
            family: Some(Family::MiniCpmV),
            ..VisionSettings::default()
        };
        let named = ModelVision::of(&entry(&dir, "text-only", named)).expect("named");
        assert_eq!(named.load.encoder, dir.join("other.rknn"));
        assert_eq!(named.load.tags.content, "slice_placeholder");
        assert_eq!(named.chosen.to_string(), "family minicpm-v");
        assert_eq!(
            ModelVision::of(&entry(&dir, "text-only", VisionSettings::default())),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn image_tags_win_over_the_family() {
        let dir = std::env::temp_dir().join(format!("rkllmd-model-tags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.rknn"), "").unwrap();
        let set = VisionSettings {
            family: Some(Family::InternVl3),
            tags: Some(["".into(), "".into(), "<pad>".into()]),
            image_size: Some((448, 448)),
            ..VisionSettings::default()
        };
        let v = ModelVision::of(&entry(&dir, "m", set)).expect("beside");
        assert_eq!(v.load.tags.content, "<pad>");
        assert_eq!(v.chosen, TagsChosen::Set);
        assert_eq!(v.load.image_size, Some((448, 448)));
        assert!(
            v.describe()
                .ends_with("(set by image-tags), image-size 448x448"),
            "{}",
            v.describe()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
