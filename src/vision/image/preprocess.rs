//! From an upright RGB image to the vision encoder's input, as Rockchip's multimodal demo
//! prepares it (rknn-llm, `examples/multimodal_model_demo/deploy/src/main.cpp`): the image is
//! expanded to a square, centred on a grey background (`expand2square`, after MiniCPM-V's
//! modelling code), then resized to the encoder's input size with bilinear interpolation
//! (`cv::resize(..., cv::INTER_LINEAR)`), and handed to `rknn_inputs_set` as `UINT8` in `NHWC`
//! order, RGB (the demo converts OpenCV's BGR to RGB first; our decoders give RGB).
//!
//! The square is never built: the resize samples a virtual square in which everything outside
//! the image is background, which saves a copy of up to max(w, h)^2 pixels.

use super::decode::Rgb8;

/// The demo's background, `cv::Scalar(127.5, 127.5, 127.5)`, as OpenCV stores it in an 8-bit
/// image (rounded half to even).
pub const BACKGROUND: u8 = 128;

/// The encoder's input width and height in pixels (392x392 for upstream's Qwen2-VL encoder),
/// which the engine reads from the encoder model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

/// One output coordinate's two source coordinates and the weight of the second, as OpenCV's
/// INTER_LINEAR computes them: pixel centres aligned (`(d + 0.5) * scale - 0.5`), clamped at
/// the edges.
#[derive(Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    frac: f32,
}

fn taps(out_len: u32, src_len: usize) -> Vec<Tap> {
    let scale = src_len as f32 / out_len as f32;
    (0..out_len)
        .map(|d| {
            let pos = (d as f32 + 0.5) * scale - 0.5;
            if pos <= 0.0 {
                return Tap {
                    lo: 0,
                    hi: 0,
                    frac: 0.0,
                };
            }
            let lo = pos.floor() as usize;
            if lo + 1 >= src_len {
                let last = src_len - 1;
                return Tap {
                    lo: last,
                    hi: last,
                    frac: 0.0,
                };
            }
            Tap {
                lo,
                hi: lo + 1,
                frac: pos - lo as f32,
            }
        })
        .collect()
}

/// The encoder's input for `img`: `size.width * size.height * 3` bytes, NHWC RGB.
pub fn preprocess(img: &Rgb8, size: InputSize) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    let side = w.max(h);
    if side == 0 {
        let len = size.width as usize * size.height as usize * 3;
        return vec![BACKGROUND; len];
    }
    let (x0, y0) = ((side - w) / 2, (side - h) / 2);
    // A pixel of the virtual square: the image where it lies, background around it.
    let at = |x: usize, y: usize, c: usize| -> f32 {
        if x < x0 || y < y0 || x >= x0 + w || y >= y0 + h {
            f32::from(BACKGROUND)
        } else {
            f32::from(img.pixels[((y - y0) * w + (x - x0)) * 3 + c])
        }
    };
    let xs = taps(size.width, side);
    let ys = taps(size.height, side);
    let mut out = Vec::with_capacity(xs.len() * ys.len() * 3);
    for ty in &ys {
        for tx in &xs {
            for c in 0..3 {
                let top = at(tx.lo, ty.lo, c) * (1.0 - tx.frac) + at(tx.hi, ty.lo, c) * tx.frac;
                let bottom = at(tx.lo, ty.hi, c) * (1.0 - tx.frac) + at(tx.hi, ty.hi, c) * tx.frac;
                let v = top * (1.0 - ty.frac) + bottom * ty.frac;
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}
