//! Full decode to 8-bit RGB, EXIF orientation applied: the expensive half of the image path,
//! run by the inference thread. Each decoder is told the pixel budget as well, so that an image
//! whose header passed `probe` but whose data claims more still cannot exhaust memory.

use std::io::Cursor;

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::exif::{orientation, Orientation};
use super::header::check_pixels;
use super::preprocess::BACKGROUND;
use super::{ImageError, ImageFormat, ImageInput, ImageLimits};

/// A decoded image: `width * height` RGB pixels, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// What a decoder gave: 1 to 4 channels of 8 bits (gray, gray+alpha, RGB, RGBA).
struct Raw {
    width: u32,
    height: u32,
    channels: usize,
    data: Vec<u8>,
    exif: Option<Vec<u8>>,
}

/// Decodes `image` to upright RGB. Alpha is composited over [`BACKGROUND`], the grey the
/// preprocessing pads with, so a transparent area looks like the padding instead of whatever
/// colour the encoder left under it.
pub fn decode(image: &ImageInput, limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    let format = image.format;
    let corrupt = |detail: String| ImageError::Corrupt { format, detail };
    let raw = match format {
        ImageFormat::Jpeg => jpeg(&image.bytes, limits),
        ImageFormat::Png => png(&image.bytes, limits),
        ImageFormat::WebP => webp(&image.bytes, limits),
    }?;
    let pixels = usize::try_from(u64::from(raw.width) * u64::from(raw.height))
        .map_err(|_| corrupt("too many pixels for this machine".into()))?;
    if raw.data.len() < pixels * raw.channels {
        return Err(corrupt(
            "the decoder returned fewer pixels than the header says".into(),
        ));
    }
    let rgb = Rgb8 {
        width: raw.width,
        height: raw.height,
        pixels: to_rgb(&raw.data[..pixels * raw.channels], raw.channels),
    };
    let turn = raw.exif.as_deref().map_or(Orientation::Normal, orientation);
    Ok(turn.apply(rgb))
}

fn jpeg(bytes: &[u8], limits: &ImageLimits) -> Result<Raw, ImageError> {
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| ImageError::Corrupt {
        format: ImageFormat::Jpeg,
        detail: e.to_string(),
    };
    // Strict: by default the decoder fills what a truncated or broken scan lacks with grey and
    // succeeds, and the model would then describe the grey. A clear 400 is better.
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut d = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers().map_err(corrupt)?;
    let (width, height) = d
        .info()
        .map(|i| (u32::from(i.width), u32::from(i.height)))
        .unwrap_or_default();
    check_pixels(width, height, limits)?;
    let channels = d
        .output_colorspace()
        .map_or(3, |c| c.num_components())
        .clamp(1, 4);
    let exif = d.exif().cloned();
    let data = d.decode().map_err(corrupt)?;
    Ok(Raw {
        width,
        height,
        channels,
        data,
        exif,
    })
}

fn png(bytes: &[u8], limits: &ImageLimits) -> Result<Raw, ImageError> {
    let corrupt = |e: png::DecodingError| ImageError::Corrupt {
        format: ImageFormat::Png,
        detail: e.to_string(),
    };
    // The decoder's own allocation cap: the frame at 4 bytes a pixel, plus room for chunks.
    let budget = usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX);
    let mut d = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: budget.saturating_add(1 << 20),
        },
    );
    d.set_transformations(png::Transformations::normalize_to_color8());
    let (width, height) = {
        let info = d.read_header_info().map_err(corrupt)?;
        (info.width, info.height)
    };
    check_pixels(width, height, limits)?;
    let mut reader = d.read_info().map_err(corrupt)?;
    let size = reader
        .output_buffer_size()
        .ok_or(ImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        })?;
    let mut data = vec![0; size];
    let frame = reader.next_frame(&mut data).map_err(corrupt)?;
    let channels = frame.color_type.samples();
    let exif = reader.info().exif_metadata.as_ref().map(|e| e.to_vec());
    Ok(Raw {
        width: frame.width,
        height: frame.height,
        channels,
        data,
        exif,
    })
}

fn webp(bytes: &[u8], limits: &ImageLimits) -> Result<Raw, ImageError> {
    let corrupt = |e: image_webp::DecodingError| ImageError::Corrupt {
        format: ImageFormat::WebP,
        detail: e.to_string(),
    };
    let mut d = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
    let (width, height) = d.dimensions();
    check_pixels(width, height, limits)?;
    let budget = usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX);
    d.set_memory_limit(budget.saturating_add(1 << 20));
    // EXIF is optional metadata: a broken EXIF chunk leaves the image as stored.
    let exif = d.exif_metadata().ok().flatten();
    let size = d.output_buffer_size().ok_or(ImageError::TooManyPixels {
        width,
        height,
        limit: limits.max_pixels,
    })?;
    let channels = if d.has_alpha() { 4 } else { 3 };
    let mut data = vec![0; size];
    d.read_image(&mut data).map_err(corrupt)?;
    Ok(Raw {
        width,
        height,
        channels,
        data,
        exif,
    })
}

/// Gray, gray+alpha, RGB or RGBA to RGB, alpha blended over [`BACKGROUND`].
fn to_rgb(data: &[u8], channels: usize) -> Vec<u8> {
    let over = |c: u8, a: u8| {
        let (c, a) = (u32::from(c), u32::from(a));
        // Rounded: (c*a + bg*(255-a)) / 255.
        ((c * a + u32::from(BACKGROUND) * (255 - a) + 127) / 255) as u8
    };
    match channels {
        3 => data.to_vec(),
        1 => data.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => data
            .chunks_exact(2)
            .flat_map(|p| {
                let g = over(p[0], p[1]);
                [g, g, g]
            })
            .collect(),
        _ => data
            .chunks_exact(4)
            .flat_map(|p| [over(p[0], p[3]), over(p[1], p[3]), over(p[2], p[3])])
            .collect(),
    }
}
