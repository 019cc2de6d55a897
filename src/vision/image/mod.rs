//! One image from a request: its encoded bytes, checked at the header, and the decode and
//! preprocessing that turn it into an encoder's input.
//!
//! The split is deliberate. [`probe`] reads only the header (format, width, height) so that the
//! event loop can refuse a hostile image with a 400 at once, before any pixel is allocated: a
//! 100-byte PNG may claim 100000x100000 pixels (a decompression bomb). [`prepare`] does the
//! expensive part (decode, EXIF orientation, letterbox, resize) and belongs on the inference
//! thread, off the event loop.

mod decode;
mod error;
mod exif;
mod header;
mod preprocess;

use std::sync::Arc;

pub use decode::{decode, Rgb8};
pub use error::ImageError;
pub use header::probe;
pub use preprocess::{preprocess, InputSize, BACKGROUND};

/// The encoded formats rkllmd decodes: what phones, browsers and cameras send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    WebP,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::WebP => "WebP",
        }
    }
}

/// How much image a request may bring (`max-image-bytes`, `max-image-pixels`,
/// `max-images-per-request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Encoded bytes of one image (after base64).
    pub max_bytes: usize,
    /// Decoded pixels of one image (width x height), checked from the header before decoding.
    pub max_pixels: u64,
    /// Images in one request, over all its messages.
    pub max_per_request: usize,
}

impl Default for ImageLimits {
    /// 8 MiB covers a full-quality phone photo; 16 Mpx a 12 Mpx camera's 4032x3024 with room,
    /// at 48 MiB of RGB while it is decoded; 4 images keep a request's encoder time bounded.
    fn default() -> ImageLimits {
        ImageLimits {
            max_bytes: 8 << 20,
            max_pixels: 16 << 20,
            max_per_request: 4,
        }
    }
}

/// An image as it travels with its message to the engine: the encoded bytes (shared, not
/// copied, while the job waits in the queue) and what the header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    pub bytes: Arc<[u8]>,
    pub format: ImageFormat,
    /// As stored in the file, before EXIF orientation (which may swap them).
    pub width: u32,
    pub height: u32,
}

/// Decode and preprocess in one call, for the inference thread: the NHWC RGB bytes an encoder
/// with input `size` takes. A panic inside a decoder crate becomes an error for this request
/// instead of taking the inference thread down.
pub fn prepare(
    image: &ImageInput,
    limits: &ImageLimits,
    size: InputSize,
) -> Result<Vec<u8>, ImageError> {
    let run = || decode(image, limits).map(|rgb| preprocess(&rgb, size));
    std::panic::catch_unwind(run).unwrap_or(Err(ImageError::DecoderPanicked))
}

#[cfg(test)]
mod tests;
