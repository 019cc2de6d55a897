//! Images made here with the encoders (png, jpeg-encoder, image-webp), never fixtures.

use super::exif::{orientation, Orientation};
use super::*;

const RED: [u8; 3] = [220, 20, 30];
const BLUE: [u8; 3] = [20, 40, 230];

/// `w x h` pixels, the left half `left`, the right half `right`.
fn halves(w: u32, h: u32, left: [u8; 3], right: [u8; 3]) -> Vec<u8> {
    (0..h)
        .flat_map(|_| (0..w).flat_map(move |x| if x < w / 2 { left } else { right }))
        .collect()
}

fn png_image(w: u32, h: u32, color: png::ColorType, data: &[u8], exif: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(color);
    e.set_depth(png::BitDepth::Eight);
    let mut writer = e.write_header().unwrap();
    if let Some(exif) = exif {
        writer
            .write_chunk(png::chunk::ChunkType(*b"eXIf"), exif)
            .unwrap();
    }
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

fn jpeg_image(w: u32, h: u32, rgb: &[u8], exif: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, 95);
    if let Some(exif) = exif {
        let mut segment = b"Exif\0\0".to_vec();
        segment.extend_from_slice(exif);
        e.add_app_segment(1, &segment).unwrap();
    }
    e.encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

fn webp_image(w: u32, h: u32, rgb: &[u8], exif: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = image_webp::WebPEncoder::new(&mut out);
    if let Some(exif) = exif {
        e.set_exif_metadata(exif.to_vec());
    }
    e.encode(rgb, w, h, image_webp::ColorType::Rgb8).unwrap();
    out
}

/// A TIFF block with one IFD entry: Orientation = `value`.
fn exif_orientation(value: u16, big_endian: bool) -> Vec<u8> {
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut t = if big_endian {
        b"MM\0*".to_vec()
    } else {
        b"II*\0".to_vec()
    };
    t.extend(u32b(8));
    t.extend(u16b(1));
    t.extend(u16b(0x0112));
    t.extend(u16b(3));
    t.extend(u32b(1));
    t.extend(u16b(value));
    t.extend([0, 0]);
    t.extend(u32b(0));
    t
}

fn limits() -> ImageLimits {
    ImageLimits::default()
}

fn near(a: &[u8], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
}

fn pixel(img: &Rgb8, x: u32, y: u32) -> &[u8] {
    let i = ((y * img.width + x) * 3) as usize;
    &img.pixels[i..i + 3]
}

#[test]
fn the_header_gives_format_and_size_for_each_format() {
    let rgb = halves(6, 4, RED, BLUE);
    let cases = [
        (
            png_image(6, 4, png::ColorType::Rgb, &rgb, None),
            ImageFormat::Png,
        ),
        (jpeg_image(6, 4, &rgb, None), ImageFormat::Jpeg),
        (webp_image(6, 4, &rgb, None), ImageFormat::WebP),
    ];
    for (bytes, format) in cases {
        let len = bytes.len();
        let img = probe(bytes, &limits()).unwrap();
        assert_eq!((img.format, img.width, img.height), (format, 6, 4));
        assert_eq!(img.bytes.len(), len);
    }
}

#[test]
fn probe_refuses_what_is_not_an_image_or_too_big() {
    assert_eq!(
        probe(b"GIF89a....".to_vec(), &limits()),
        Err(ImageError::Unsupported)
    );
    assert_eq!(probe(Vec::new(), &limits()), Err(ImageError::Unsupported));
    let rgb = halves(6, 4, RED, BLUE);
    let png = png_image(6, 4, png::ColorType::Rgb, &rgb, None);
    let small = ImageLimits {
        max_bytes: png.len() - 1,
        ..limits()
    };
    assert_eq!(
        probe(png.clone(), &small),
        Err(ImageError::TooLarge {
            bytes: png.len(),
            limit: png.len() - 1
        })
    );
    let few = ImageLimits {
        max_pixels: 23,
        ..limits()
    };
    assert!(matches!(
        probe(png, &few),
        Err(ImageError::TooManyPixels { .. })
    ));
}

#[test]
fn a_bomb_is_refused_from_its_header_alone() {
    // A valid PNG header claiming 100000x100000 pixels (30 GB of RGB) and no pixel data.
    let mut bomb = Vec::new();
    {
        let mut e = png::Encoder::new(&mut bomb, 100_000, 100_000);
        e.set_color(png::ColorType::Rgb);
        let w = e.write_header().unwrap();
        drop(w);
    }
    assert!(bomb.len() < 100, "{} bytes", bomb.len());
    let err = probe(bomb.clone(), &limits()).unwrap_err();
    assert_eq!(
        err,
        ImageError::TooManyPixels {
            width: 100_000,
            height: 100_000,
            limit: 16 << 20
        }
    );
    // And decode refuses it too, should an unprobed image ever reach it.
    let forged = ImageInput {
        bytes: bomb.into(),
        format: ImageFormat::Png,
        width: 1,
        height: 1,
    };
    assert!(matches!(
        decode(&forged, &limits()),
        Err(ImageError::TooManyPixels { .. })
    ));
}

#[test]
fn truncated_and_corrupt_images_are_errors_not_panics() {
    let rgb: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
    for (bytes, format) in [
        (
            png_image(64, 48, png::ColorType::Rgb, &rgb, None),
            ImageFormat::Png,
        ),
        (jpeg_image(64, 48, &rgb, None), ImageFormat::Jpeg),
        (webp_image(64, 48, &rgb, None), ImageFormat::WebP),
    ] {
        // Cut inside the header: probe refuses.
        let err = probe(bytes[..14].to_vec(), &limits()).unwrap_err();
        assert!(
            matches!(err, ImageError::Corrupt { .. }),
            "{format:?}: {err:?}"
        );
        // Cut inside the pixel data: the header passes, the decode fails.
        let cut = bytes[..bytes.len() * 2 / 3].to_vec();
        if let Ok(img) = probe(cut, &limits()) {
            let err = decode(&img, &limits()).map(|_| "decoded");
            assert!(
                matches!(err, Err(ImageError::Corrupt { .. })),
                "{format:?}: {err:?}"
            );
        }
        // Garbage after the magic.
        let mut garbage = bytes.clone();
        for b in &mut garbage[12..] {
            *b = 0x5A;
        }
        let result = probe(garbage, &limits()).and_then(|img| decode(&img, &limits()));
        assert!(result.is_err(), "{format:?} decoded");
    }
}

#[test]
fn png_and_webp_decode_exactly_and_jpeg_closely() {
    let rgb = halves(16, 8, RED, BLUE);
    let png = probe(png_image(16, 8, png::ColorType::Rgb, &rgb, None), &limits()).unwrap();
    assert_eq!(decode(&png, &limits()).unwrap().pixels, rgb);
    let webp = probe(webp_image(16, 8, &rgb, None), &limits()).unwrap();
    assert_eq!(decode(&webp, &limits()).unwrap().pixels, rgb);
    let jpeg = probe(jpeg_image(16, 8, &rgb, None), &limits()).unwrap();
    let img = decode(&jpeg, &limits()).unwrap();
    assert_eq!((img.width, img.height), (16, 8));
    assert!(near(pixel(&img, 1, 4), RED, 12), "{:?}", pixel(&img, 1, 4));
    assert!(
        near(pixel(&img, 14, 4), BLUE, 12),
        "{:?}",
        pixel(&img, 14, 4)
    );
}

#[test]
fn gray_and_alpha_become_rgb_over_the_background() {
    let gray = probe(
        png_image(2, 1, png::ColorType::Grayscale, &[10, 200], None),
        &limits(),
    )
    .unwrap();
    assert_eq!(
        decode(&gray, &limits()).unwrap().pixels,
        [10, 10, 10, 200, 200, 200]
    );
    let rgba = [255, 0, 0, 255, 255, 0, 0, 0];
    let img = probe(
        png_image(2, 1, png::ColorType::Rgba, &rgba, None),
        &limits(),
    )
    .unwrap();
    let b = BACKGROUND;
    assert_eq!(
        decode(&img, &limits()).unwrap().pixels,
        [255, 0, 0, b, b, b]
    );
}

#[test]
fn exif_orientation_is_read_in_both_byte_orders() {
    for big in [false, true] {
        for v in 1..=8 {
            let o = orientation(&exif_orientation(v, big));
            let expected = [
                Orientation::Normal,
                Orientation::FlipH,
                Orientation::Rotate180,
                Orientation::FlipV,
                Orientation::Transpose,
                Orientation::Rotate90,
                Orientation::Transverse,
                Orientation::Rotate270,
            ][usize::from(v - 1)];
            assert_eq!(o, expected, "value {v}, big endian {big}");
        }
    }
    let mut prefixed = b"Exif\0\0".to_vec();
    prefixed.extend(exif_orientation(6, false));
    assert_eq!(orientation(&prefixed), Orientation::Rotate90);
}

#[test]
fn malformed_exif_means_as_stored() {
    let good = exif_orientation(6, true);
    // The value ends at byte 20: every shorter block loses it.
    for cut in 0..20 {
        assert_eq!(
            orientation(&good[..cut]),
            Orientation::Normal,
            "cut at {cut}"
        );
    }
    let mut far = good.clone();
    far[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(orientation(&far), Orientation::Normal);
    // More entries claimed than the block holds: the scan stops at its end.
    let mut many = good.clone();
    many[8..10].copy_from_slice(&u16::MAX.to_be_bytes());
    many[10..12].copy_from_slice(&0x0100u16.to_be_bytes());
    assert_eq!(orientation(&many), Orientation::Normal);
    // Orientation of another type than SHORT.
    let mut long = good;
    long[12..14].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(orientation(&long), Orientation::Normal);
    assert_eq!(
        orientation(&exif_orientation(9, false)),
        Orientation::Normal
    );
}

/// A 3x2 image whose pixels are numbered 0..6 (in the red channel), row by row.
fn numbered() -> Rgb8 {
    Rgb8 {
        width: 3,
        height: 2,
        pixels: (0..6).flat_map(|i| [i, 0, 0]).collect(),
    }
}

fn numbers(img: &Rgb8) -> Vec<u8> {
    img.pixels.chunks(3).map(|p| p[0]).collect()
}

#[test]
fn each_orientation_turns_the_pixels_upright() {
    // Stored:  0 1 2
    //          3 4 5
    let cases = [
        (Orientation::Normal, (3, 2), vec![0, 1, 2, 3, 4, 5]),
        (Orientation::FlipH, (3, 2), vec![2, 1, 0, 5, 4, 3]),
        (Orientation::Rotate180, (3, 2), vec![5, 4, 3, 2, 1, 0]),
        (Orientation::FlipV, (3, 2), vec![3, 4, 5, 0, 1, 2]),
        (Orientation::Transpose, (2, 3), vec![0, 3, 1, 4, 2, 5]),
        (Orientation::Rotate90, (2, 3), vec![3, 0, 4, 1, 5, 2]),
        (Orientation::Transverse, (2, 3), vec![5, 2, 4, 1, 3, 0]),
        (Orientation::Rotate270, (2, 3), vec![2, 5, 1, 4, 0, 3]),
    ];
    for (o, (w, h), expected) in cases {
        let out = o.apply(numbered());
        assert_eq!((out.width, out.height), (w, h), "{o:?}");
        assert_eq!(numbers(&out), expected, "{o:?}");
    }
}

#[test]
fn a_portrait_photo_stored_sideways_is_decoded_upright() {
    // Stored landscape 16x8, red left, blue right, orientation 6 (turn clockwise to view):
    // upright it is 8x16 with red on top.
    let rgb = halves(16, 8, RED, BLUE);
    let le = exif_orientation(6, false);
    let be = exif_orientation(6, true);
    let images = [
        jpeg_image(16, 8, &rgb, Some(&le)),
        png_image(16, 8, png::ColorType::Rgb, &rgb, Some(&be)),
        webp_image(16, 8, &rgb, Some(&le)),
    ];
    for bytes in images {
        let img = probe(bytes, &limits()).unwrap();
        let format = img.format;
        assert_eq!((img.width, img.height), (16, 8), "the header is as stored");
        let up = decode(&img, &limits()).unwrap();
        assert_eq!((up.width, up.height), (8, 16), "{format:?}");
        assert!(
            near(pixel(&up, 4, 1), RED, 12),
            "{format:?}: {:?}",
            pixel(&up, 4, 1)
        );
        assert!(
            near(pixel(&up, 4, 14), BLUE, 12),
            "{format:?}: {:?}",
            pixel(&up, 4, 14)
        );
    }
}

#[test]
fn preprocessing_letterboxes_on_grey_and_resizes_bilinearly() {
    // A 4x2 red strip into a 4x4 input: centred, one grey row above and below, no scaling.
    let strip = Rgb8 {
        width: 4,
        height: 2,
        pixels: [RED; 8].concat(),
    };
    let out = preprocess(
        &strip,
        InputSize {
            width: 4,
            height: 4,
        },
    );
    let g = [BACKGROUND; 3];
    let rows: Vec<Vec<u8>> = out.chunks(12).map(<[u8]>::to_vec).collect();
    assert_eq!(rows[0], [g; 4].concat());
    assert_eq!(rows[1], [RED; 4].concat());
    assert_eq!(rows[2], [RED; 4].concat());
    assert_eq!(rows[3], [g; 4].concat());
    // A tall strip gets grey columns left and right.
    let tall = Rgb8 {
        width: 2,
        height: 4,
        pixels: [BLUE; 8].concat(),
    };
    let out = preprocess(
        &tall,
        InputSize {
            width: 4,
            height: 4,
        },
    );
    assert_eq!(&out[..12], [g, BLUE, BLUE, g].concat());
}

#[test]
fn the_bilinear_weights_are_opencvs() {
    // cv::resize of the row [0, 255] to 4 columns, INTER_LINEAR: [0, 64, 191, 255].
    let img = Rgb8 {
        width: 2,
        height: 2,
        pixels: [[0; 3], [255; 3], [0; 3], [255; 3]].concat(),
    };
    let out = preprocess(
        &img,
        InputSize {
            width: 4,
            height: 2,
        },
    );
    let reds: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
    assert_eq!(reds, [0, 64, 191, 255, 0, 64, 191, 255]);
}

#[test]
fn prepare_gives_the_encoders_input_from_a_camera_sized_image() {
    let (w, h) = (1280, 720);
    let rgb = halves(w, h, RED, BLUE);
    let size = InputSize {
        width: 392,
        height: 392,
    };
    for bytes in [
        jpeg_image(w, h, &rgb, None),
        png_image(w, h, png::ColorType::Rgb, &rgb, None),
        webp_image(w, h, &rgb, None),
    ] {
        let img = probe(bytes, &limits()).unwrap();
        let out = prepare(&img, &limits(), size).unwrap();
        assert_eq!(out.len(), 392 * 392 * 3);
        // Letterboxed: 720/1280 of 392 rows are image, centred; the corners are grey.
        assert_eq!(&out[..3], [BACKGROUND; 3]);
        let mid_left = (196 * 392 + 10) * 3;
        assert!(
            near(&out[mid_left..mid_left + 3], RED, 12),
            "{:?}",
            &out[mid_left..mid_left + 3]
        );
        let mid_right = (196 * 392 + 380) * 3;
        assert!(near(&out[mid_right..mid_right + 3], BLUE, 12));
    }
}

#[test]
fn every_image_error_is_a_400() {
    let errors = [
        ImageError::TooLarge { bytes: 2, limit: 1 },
        ImageError::TooManyPixels {
            width: 2,
            height: 2,
            limit: 1,
        },
        ImageError::Empty,
        ImageError::Unsupported,
        ImageError::Corrupt {
            format: ImageFormat::Png,
            detail: "x".into(),
        },
        ImageError::DecoderPanicked,
    ];
    for e in errors {
        assert_eq!(e.http_status(), 400, "{e}");
    }
}

/// A baseline JPEG whose DC prediction overflows zune-jpeg's i32 dequantisation (found by the
/// fuzzer; its seed, after the fuzz target's size byte): whatever the decoder does with it (a
/// panic in a build with overflow checks, wrapped pixels without), `prepare` answers and the
/// thread goes on.
#[test]
fn a_jpeg_that_overflows_the_decoders_arithmetic_is_answered() {
    let seed = include_bytes!("../../../fuzz/seeds/image_decode/jpeg_dc_overflow");
    let limits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 4 << 20,
        max_per_request: 1,
    };
    let image = probe(seed[1..].to_vec(), &limits).expect("the header is valid");
    let size = InputSize {
        width: 8,
        height: 8,
    };
    match prepare(&image, &limits, size) {
        Ok(input) => assert_eq!(input.len(), 8 * 8 * 3),
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
    }
}
