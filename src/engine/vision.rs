//! What vision models run with: the encoders' library and limits (`Vision`, the daemon's) and
//! each vision model's encoder, image tags and expected input size (`VisionLoad`).

use std::path::PathBuf;

use crate::runtime::ImageTags;

/// What the inference thread needs to run vision encoders (for models with one,
/// `ModelLoad::vision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vision {
    /// `rknn-runtime-library`: loaded when the first encoder opens.
    pub library: PathBuf,
    /// The decode limits (the pixel count is checked again on the real image).
    pub limits: crate::vision::image::ImageLimits,
}

impl Default for Vision {
    fn default() -> Vision {
        Vision {
            library: crate::runtime::rknn::DEFAULT_LIBRARY.into(),
            limits: crate::vision::image::ImageLimits::default(),
        }
    }
}

/// A vision model's encoder and what its images run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisionLoad {
    /// The encoder's `.rknn` file.
    pub encoder: PathBuf,
    /// The tags the runtime puts around and inside each image's positions.
    pub tags: ImageTags,
    /// `image-size`: the input size the encoder must report, else its images are refused.
    pub image_size: Option<(u32, u32)>,
}
