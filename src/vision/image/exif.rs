//! The one EXIF field rkllmd reads: Orientation (tag 0x0112 in the first IFD), which says how a
//! camera's stored pixels must be turned to stand upright. A phone photo taken in portrait is
//! usually stored landscape with orientation 6; the encoder must see it upright, as the user
//! does. Parsed by hand (a TIFF header and one directory): every offset is bounds-checked, and
//! anything malformed means "as stored".

use super::decode::Rgb8;

/// The eight EXIF orientations (EXIF 2.32, tag 0x0112), as the transform that makes the image
/// upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// 1: as stored.
    Normal,
    /// 2: mirrored left to right.
    FlipH,
    /// 3: upside down.
    Rotate180,
    /// 4: mirrored top to bottom.
    FlipV,
    /// 5: mirrored along the main diagonal.
    Transpose,
    /// 6: turn 90 degrees clockwise to view.
    Rotate90,
    /// 7: mirrored along the other diagonal.
    Transverse,
    /// 8: turn 90 degrees counter-clockwise to view.
    Rotate270,
}

const ORIENTATION_TAG: u16 = 0x0112;
const SHORT: u16 = 3;

/// The orientation in an EXIF block (a TIFF structure, optionally after JPEG's `Exif\0\0`).
pub fn orientation(exif: &[u8]) -> Orientation {
    orientation_value(exif).map_or(Orientation::Normal, |v| match v {
        2 => Orientation::FlipH,
        3 => Orientation::Rotate180,
        4 => Orientation::FlipV,
        5 => Orientation::Transpose,
        6 => Orientation::Rotate90,
        7 => Orientation::Transverse,
        8 => Orientation::Rotate270,
        _ => Orientation::Normal,
    })
}

fn orientation_value(exif: &[u8]) -> Option<u16> {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let big_endian = match tiff.get(..4)? {
        b"II*\0" => false,
        b"MM\0*" => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = u16_at(ifd)?;
    (0..usize::from(entries)).find_map(|i| {
        let entry = ifd.checked_add(2 + 12 * i)?;
        (u16_at(entry)? == ORIENTATION_TAG && u16_at(entry + 2)? == SHORT)
            .then(|| u16_at(entry + 8))
            .flatten()
    })
}

impl Orientation {
    /// The upright image.
    pub fn apply(self, img: Rgb8) -> Rgb8 {
        if self == Orientation::Normal {
            return img;
        }
        let (w, h) = (img.width as usize, img.height as usize);
        let swaps = matches!(
            self,
            Orientation::Transpose
                | Orientation::Rotate90
                | Orientation::Transverse
                | Orientation::Rotate270
        );
        let (ow, oh) = if swaps { (h, w) } else { (w, h) };
        let mut out = vec![0; img.pixels.len()];
        for oy in 0..oh {
            for ox in 0..ow {
                // The stored pixel that lands at (ox, oy) once upright.
                let (sx, sy) = match self {
                    Orientation::Normal => (ox, oy),
                    Orientation::FlipH => (w - 1 - ox, oy),
                    Orientation::Rotate180 => (w - 1 - ox, h - 1 - oy),
                    Orientation::FlipV => (ox, h - 1 - oy),
                    Orientation::Transpose => (oy, ox),
                    Orientation::Rotate90 => (oy, h - 1 - ox),
                    Orientation::Transverse => (w - 1 - oy, h - 1 - ox),
                    Orientation::Rotate270 => (w - 1 - oy, ox),
                };
                let (s, o) = ((sy * w + sx) * 3, (oy * ow + ox) * 3);
                out[o..o + 3].copy_from_slice(&img.pixels[s..s + 3]);
            }
        }
        Rgb8 {
            width: ow as u32,
            height: oh as u32,
            pixels: out,
        }
    }
}
