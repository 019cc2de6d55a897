//! A model's vision settings in its `[model NAME]` section: `vision-encoder`, `image-family`,
//! `image-tags` and `image-size`. Without any, a `.rknn` beside the model is its encoder and
//! its name suggests the family (`models::vision` resolves them).

use std::path::{Path, PathBuf};

use super::values::Expected;
use crate::vision::family::{self, Family};

/// What a model's section says about its vision encoder and images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VisionSettings {
    pub encoder: EncoderSetting,
    /// `image-family`.
    pub family: Option<Family>,
    /// `image-tags = START END CONTENT`: over `family`.
    pub tags: Option<[String; 3]>,
    /// `image-size = WxH`: the input size the encoder must report.
    pub image_size: Option<(u32, u32)>,
}

/// `vision-encoder`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EncoderSetting {
    /// Not set: the `.rknn` beside the model, if there is one.
    #[default]
    Beside,
    /// This file.
    File(PathBuf),
    /// `none`: no vision, even with a `.rknn` beside.
    Off,
}

/// The largest side `image-size` takes: larger than any encoder's input.
const MAX_SIDE: u32 = 8192;

/// `vision-encoder = PATH | none`: a file relative to the model file's directory (or
/// absolute), which must exist.
pub(super) fn encoder(raw: &str, model: &Path) -> Result<EncoderSetting, Expected> {
    let file = raw.trim();
    if file.is_empty() {
        return Err("an encoder's .rknn file, or none".to_owned());
    }
    if file.eq_ignore_ascii_case("none") {
        return Ok(EncoderSetting::Off);
    }
    let path = model.parent().unwrap_or(Path::new(".")).join(file);
    if !path.is_file() {
        return Err(format!(
            "an encoder file that exists ({} does not)",
            path.display()
        ));
    }
    Ok(EncoderSetting::File(path))
}

/// `image-family = NAME`.
pub(super) fn image_family(raw: &str) -> Result<Family, Expected> {
    Family::parse(raw).ok_or_else(|| format!("one of {}", family::names()))
}

/// `image-tags = START END CONTENT`: three words, each bare or in double or single quotes
/// (`""` for an empty one; no escapes). `raw` is the value as written, quotes kept.
pub(super) fn image_tags(raw: &str) -> Result<[String; 3], Expected> {
    let expected =
        || "START END CONTENT: three tags separated by spaces, \"\" for an empty one".to_owned();
    let words = words(raw).ok_or_else(expected)?;
    <[String; 3]>::try_from(words).map_err(|_| expected())
}

/// The words of `raw`: bare ones end at whitespace, quoted ones at their closing quote. `None`
/// for an unterminated quote or text right after one.
fn words(raw: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = raw.trim_start();
    while let Some(c) = rest.chars().next() {
        let (word, after) = if c == '"' || c == '\'' {
            let (word, after) = rest[1..].split_once(c)?;
            if after.chars().next().is_some_and(|a| !a.is_whitespace()) {
                return None;
            }
            (word, after)
        } else {
            rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()))
        };
        out.push(word.to_owned());
        rest = after.trim_start();
    }
    Some(out)
}

/// `image-size = WxH`, each side 1 to 8192 pixels.
pub(super) fn image_size(raw: &str) -> Result<(u32, u32), Expected> {
    let side = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=MAX_SIDE).contains(v))
    };
    raw.trim()
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((side(w)?, side(h)?)))
        .ok_or_else(|| format!("WIDTHxHEIGHT in pixels, such as 392x392 (each 1 to {MAX_SIDE})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoder_is_a_file_beside_the_model_an_absolute_path_or_none() {
        let dir = std::env::temp_dir().join(format!("rkllmd-vision-cfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("enc")).unwrap();
        std::fs::write(dir.join("enc/v.rknn"), "").unwrap();
        let model = dir.join("m.rkllm");
        assert_eq!(
            encoder("enc/v.rknn", &model),
            Ok(EncoderSetting::File(dir.join("enc/v.rknn")))
        );
        let absolute = dir.join("enc/v.rknn");
        assert_eq!(
            encoder(absolute.to_str().unwrap(), &model),
            Ok(EncoderSetting::File(absolute))
        );
        assert_eq!(encoder("None", &model), Ok(EncoderSetting::Off));
        let missing = encoder("other.rknn", &model).unwrap_err();
        assert!(missing.contains("other.rknn does not"), "{missing}");
        assert!(encoder("enc", &model).is_err(), "a directory");
        assert!(encoder(" ", &model).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_family_is_named_and_a_wrong_name_lists_them() {
        assert_eq!(image_family("internvl3"), Ok(Family::InternVl3));
        let err = image_family("llava").unwrap_err();
        assert!(err.contains("qwen2-vl, qwen2.5-vl"), "{err}");
    }

    #[test]
    fn tags_are_three_words_quoted_or_bare() {
        let own = |s: [&str; 3]| s.map(str::to_owned);
        assert_eq!(
            image_tags("<img> </img> <IMG_CONTEXT>"),
            Ok(own(["<img>", "</img>", "<IMG_CONTEXT>"]))
        );
        assert_eq!(
            image_tags("\"\" '' \"<｜▁pad▁｜>\""),
            Ok(own(["", "", "<｜▁pad▁｜>"]))
        );
        assert_eq!(image_tags("'<a b>'  x\ty"), Ok(own(["<a b>", "x", "y"])));
        for bad in ["a b", "a b c d", "\"a b c", "\"a\"b c d", ""] {
            assert!(image_tags(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_size_is_width_x_height() {
        assert_eq!(image_size("392x392"), Ok((392, 392)));
        assert_eq!(image_size(" 448X336 "), Ok((448, 336)));
        for bad in ["392", "0x392", "392x", "x392", "9000x10", "-1x2", "axb"] {
            assert!(image_size(bad).is_err(), "{bad:?}");
        }
    }
}
