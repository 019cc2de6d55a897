//! Why an image was refused. Every case is the client's: the API answers 400.

use std::fmt;

use super::ImageFormat;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Encoded bytes above `max-image-bytes`.
    TooLarge { bytes: usize, limit: usize },
    /// The header's width x height above `max-image-pixels`.
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// A zero width or height.
    Empty,
    /// Not JPEG, PNG or WebP (by the first bytes).
    Unsupported,
    /// The decoder refused it: corrupt, truncated, or a variant it does not handle.
    Corrupt { format: ImageFormat, detail: String },
    /// The decoder crate panicked (a bug there, caught so the request fails alone).
    DecoderPanicked,
}

impl ImageError {
    /// Every image error is the client's: 400.
    pub fn http_status(&self) -> u16 {
        400
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooLarge { bytes, limit } => write!(
                f,
                "the image is {bytes} bytes, above the limit of {limit} (max-image-bytes)"
            ),
            ImageError::TooManyPixels {
                width,
                height,
                limit,
            } => write!(
                f,
                "the image is {width}x{height} pixels, above the limit of {limit} pixels \
                 (max-image-pixels)"
            ),
            ImageError::Empty => f.write_str("the image has no pixels"),
            ImageError::Unsupported => {
                f.write_str("the image is not JPEG, PNG or WebP (the formats rkllmd decodes)")
            }
            ImageError::Corrupt { format, detail } => write!(
                f,
                "the {} image is corrupt, truncated or unsupported: {detail}",
                format.name()
            ),
            ImageError::DecoderPanicked => f.write_str("the image could not be decoded"),
        }
    }
}

impl std::error::Error for ImageError {}
