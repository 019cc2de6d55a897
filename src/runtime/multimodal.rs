//! Multimodal runs: a prompt with image placeholders plus the images' embeddings (a vision
//! encoder's output, `rknn::Encoder`), run as `RKLLM_INPUT_MULTIMODAL`.
//!
//! As upstream's demo does it (rknn-llm, `examples/multimodal_model_demo/deploy/src/main.cpp`):
//! the prompt holds `<image>` where each image goes; the runtime puts the model's image tags
//! around each image's embeddings there. The tags belong to the model family (Qwen2-VL:
//! `<|vision_start|>`, `<|vision_end|>`, `<|image_pad|>`; the others in `vision::family`, chosen
//! per model by `models::ModelVision`); ABI 1.2 takes them once, at
//! `rkllm_init`, ABI 1.3 with every run, so they live in `InitConfig` and the `Runtime` passes
//! them on.

use std::ffi::CString;

use super::error::RuntimeError;

/// Where each image goes in a multimodal prompt: the runtime replaces it with the image. The same
/// for every family: upstream's demo prompts write it so, and so does a third-party RKLLM API
/// server's model table for each family it lists.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// A vision model family's image tags, around and inside each image's positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTags {
    pub start: String,
    pub end: String,
    pub content: String,
}

/// Start, end and content, in that order (`vision::family::Family::tags`, `image-tags`).
impl<S: Into<String>> From<[S; 3]> for ImageTags {
    fn from([start, end, content]: [S; 3]) -> ImageTags {
        ImageTags {
            start: start.into(),
            end: end.into(),
            content: content.into(),
        }
    }
}

/// The tags as C strings, kept by the `Runtime` for as long as the runtime may read them.
pub(super) struct CTags {
    pub start: CString,
    pub end: CString,
    pub content: CString,
}

impl CTags {
    pub fn new(tags: &ImageTags) -> Result<CTags, RuntimeError> {
        let c = |s: &str| CString::new(s).map_err(|_| RuntimeError::NulByte { what: "image tag" });
        Ok(CTags {
            start: c(&tags.start)?,
            end: c(&tags.end)?,
            content: c(&tags.content)?,
        })
    }
}

/// The images of one multimodal run, all from the same encoder.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    /// `count` x `tokens` x `token_width` floats: each image's encoder output, in prompt order.
    pub embeddings: &'a [f32],
    pub count: usize,
    /// Embedding positions per image (`EncoderInfo::image_tokens`).
    pub tokens: usize,
    /// Floats per position (`EncoderInfo::token_width`): the LLM's embedding width.
    pub token_width: usize,
    /// The encoder's input size, which the runtime uses for the images' positions.
    pub width: u32,
    pub height: u32,
}

impl Images<'_> {
    /// Refuses images the runtime would misread: it reads `count * tokens * width` floats from
    /// the pointer with no length of its own, so a buffer of another size is read out of bounds
    /// or in part. And one `<image>` per image, or the runtime cannot place them.
    pub(super) fn check(&self, prompt: &str) -> Result<(), RuntimeError> {
        let expected = self
            .count
            .checked_mul(self.tokens)
            .and_then(|n| n.checked_mul(self.token_width));
        if self.count == 0
            || self.tokens == 0
            || self.token_width == 0
            || expected != Some(self.embeddings.len())
        {
            return Err(RuntimeError::ImageEmbeddingSize {
                images: self.count,
                tokens: self.tokens,
                token_width: self.token_width,
                floats: self.embeddings.len(),
            });
        }
        let placeholders = prompt.matches(IMAGE_PLACEHOLDER).count();
        if placeholders != self.count {
            return Err(RuntimeError::ImagePlaceholders {
                placeholders,
                images: self.count,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(embeddings: &[f32], count: usize) -> Images<'_> {
        Images {
            embeddings,
            count,
            tokens: 4,
            token_width: 3,
            width: 28,
            height: 28,
        }
    }

    #[test]
    fn a_buffer_of_another_size_than_images_x_tokens_x_width_is_refused() {
        let floats = vec![0.0; 4 * 3 * 2];
        assert_eq!(images(&floats, 2).check("<image><image>"), Ok(()));
        let short = &floats[..floats.len() - 1];
        assert_eq!(
            images(short, 2).check("<image><image>"),
            Err(RuntimeError::ImageEmbeddingSize {
                images: 2,
                tokens: 4,
                token_width: 3,
                floats: 23
            })
        );
        assert!(images(&[], 0).check("").is_err());
    }

    #[test]
    fn each_image_needs_its_placeholder() {
        let floats = vec![0.0; 4 * 3];
        assert_eq!(
            images(&floats, 1).check("What is in the picture?"),
            Err(RuntimeError::ImagePlaceholders {
                placeholders: 0,
                images: 1
            })
        );
        assert_eq!(images(&floats, 1).check("<image>What is it?"), Ok(()));
    }
}
