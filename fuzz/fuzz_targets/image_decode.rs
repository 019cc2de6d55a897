//! The image path on hostile bytes: `vision::image::probe` (what the event loop runs), then
//! `decode` and `preprocess` (what the inference thread will run), under limits.
//!
//! Input: byte 0 picks the encoder's input size (width 1 + 4 * (low nibble), height
//! 1 + 4 * (high nibble)); the rest is the encoded image. Checked beyond "no panic" (decode is
//! called directly, not through `prepare`, whose panic guard would hide one):
//! - an image probe accepts has 1 to `max_pixels` pixels, as does what decode returns;
//! - the decoded image is the header's size, or its transpose (an EXIF rotation), with exactly
//!   3 bytes a pixel;
//! - the encoder input is exactly width * height * 3 bytes.
//!
//! libFuzzer's -rss_limit_mb (2048 in fuzz/run.sh) catches an allocation the pixel limit
//! should have prevented.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkllmd::vision::image::{decode, preprocess, probe, ImageLimits, InputSize};

const LIMITS: ImageLimits = ImageLimits {
    max_bytes: 1 << 20,
    max_pixels: 4 << 20,
    max_per_request: 1,
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let size = InputSize {
        width: 1 + 4 * u32::from(pick & 0x0F),
        height: 1 + 4 * u32::from(pick >> 4),
    };
    let Ok(image) = probe(bytes.to_vec(), &LIMITS) else {
        return;
    };
    let pixels = u64::from(image.width) * u64::from(image.height);
    assert!(pixels >= 1 && pixels <= LIMITS.max_pixels, "{image:?}");
    let Ok(rgb) = decode(&image, &LIMITS) else {
        return;
    };
    let upright = (rgb.width, rgb.height);
    assert!(
        upright == (image.width, image.height) || upright == (image.height, image.width),
        "decoded {upright:?} from a {}x{} header",
        image.width,
        image.height
    );
    assert_eq!(rgb.pixels.len() as u64, pixels * 3);
    let input = preprocess(&rgb, size);
    assert_eq!(
        input.len() as u64,
        u64::from(size.width) * u64::from(size.height) * 3
    );
});
