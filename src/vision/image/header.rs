//! The cheap check the event loop runs on every image: which format, how big, read from the
//! header only. Nothing here allocates in proportion to the image's pixels.

use std::io::Cursor;
use std::sync::Arc;

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::JpegDecoder;

use super::{ImageError, ImageFormat, ImageInput, ImageLimits};

/// The format, by the file's first bytes (its magic number), not by what the client claims.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// Checks an encoded image against `limits` from its header alone and returns it ready to
/// travel to the engine. Refuses: too many bytes, an unknown format, a header the decoder
/// rejects (corrupt, or truncated before the dimensions), no pixels, too many pixels.
pub fn probe(bytes: Vec<u8>, limits: &ImageLimits) -> Result<ImageInput, ImageError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = sniff(&bytes).ok_or(ImageError::Unsupported)?;
    let (width, height) = dimensions(&bytes, format)?;
    check_pixels(width, height, limits)?;
    Ok(ImageInput {
        bytes: Arc::from(bytes),
        format,
        width,
        height,
    })
}

/// Refuses an empty image and one above the pixel limit (the decompression-bomb check).
pub(super) fn check_pixels(
    width: u32,
    height: u32,
    limits: &ImageLimits,
) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty);
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

fn dimensions(bytes: &[u8], format: ImageFormat) -> Result<(u32, u32), ImageError> {
    let corrupt = |detail: String| ImageError::Corrupt { format, detail };
    match format {
        ImageFormat::Jpeg => {
            let mut d = JpegDecoder::new(ZCursor::new(bytes));
            d.decode_headers().map_err(|e| corrupt(e.to_string()))?;
            let info = d.info().ok_or_else(|| corrupt("no frame header".into()))?;
            Ok((u32::from(info.width), u32::from(info.height)))
        }
        ImageFormat::Png => {
            let mut d = png::Decoder::new(Cursor::new(bytes));
            let info = d.read_header_info().map_err(|e| corrupt(e.to_string()))?;
            Ok((info.width, info.height))
        }
        ImageFormat::WebP => {
            let d = image_webp::WebPDecoder::new(Cursor::new(bytes))
                .map_err(|e| corrupt(e.to_string()))?;
            Ok(d.dimensions())
        }
    }
}
