//! The daemon's share of an image request (issue #15): the event loop's header check and the
//! inference thread's decode + preprocess of a camera-sized frame to Qwen2-VL's 392x392
//! encoder input (rknn-llm's demo size), median of several runs. The images are made here: a
//! 1280x720 gradient with noise, so neither encoder sees flat colour. Then the stripped
//! aarch64 binary's size with vision built in, from `board/cross-test.sh`'s last build.

use std::time::{Duration, Instant};

use rkllmd::vision::image::{decode, prepare, preprocess, probe, ImageLimits, InputSize};

const RUNS: usize = 15;
const SIZE: InputSize = InputSize {
    width: 392,
    height: 392,
};

fn frame(w: u32, h: u32) -> Vec<u8> {
    let mut state = 0x9E37_79B9_u32;
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state & 15) as u8;
            out.extend([
                (x * 255 / w) as u8 ^ noise,
                (y * 255 / h) as u8 ^ noise,
                ((x + y) * 127 / (w + h)) as u8 ^ noise,
            ]);
        }
    }
    out
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn rows(row: fn(&str, String, &str)) {
    let (w, h) = (1280, 720);
    let rgb = frame(w, h);
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 90)
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("jpeg");
    let mut png = Vec::new();
    {
        let mut e = png::Encoder::new(&mut png, w, h);
        e.set_color(png::ColorType::Rgb);
        let mut writer = e.write_header().expect("png header");
        writer.write_image_data(&rgb).expect("png data");
        writer.finish().expect("png end");
    }
    let limits = ImageLimits::default();
    for (name, bytes) in [("JPEG", jpeg), ("PNG", png)] {
        let kib = bytes.len() / 1024;
        let probe_time = median(|| {
            probe(bytes.clone(), &limits).expect("probe");
        });
        let image = probe(bytes, &limits).expect("probe");
        let decoded = decode(&image, &limits).expect("decode");
        let decode_time = median(|| {
            decode(&image, &limits).expect("decode");
        });
        let resize_time = median(|| {
            preprocess(&decoded, SIZE);
        });
        let total = median(|| {
            prepare(&image, &limits, SIZE).expect("prepare");
        });
        row(
            &format!("image header check, 1280x720 {name} ({kib} KiB)"),
            ms(probe_time),
            "- (event loop)",
        );
        row(
            &format!("  decode + preprocess to 392x392, {name}"),
            ms(total),
            "- (inference thread)",
        );
        row(
            &format!("    decode / letterbox+resize, {name}"),
            format!("{} / {}", ms(decode_time), ms(resize_time)),
            "-",
        );
    }
}

/// The stripped aarch64 binary `board/cross-test.sh` left (`$RKLLMD_CROSS_TARGET_DIR`, default
/// `target/cross`, `rkllmd.stripped`): cross-building here would take minutes, so the row says
/// how to get the figure when there is none, and how old the one it read is.
pub fn binary_size_row(row: fn(&str, String, &str)) {
    let dir = std::env::var_os("RKLLMD_CROSS_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cross"),
        std::path::PathBuf::from,
    );
    let stripped = dir.join("rkllmd.stripped");
    let value = match std::fs::metadata(&stripped) {
        Ok(m) => {
            let age = m
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map_or_else(String::new, |a| {
                    format!(", built {} min ago", a.as_secs() / 60)
                });
            format!(
                "{} bytes ({:.2} MiB{age})",
                m.len(),
                m.len() as f64 / 1_048_576.0
            )
        }
        Err(_) => "none built: run board/cross-test.sh".to_owned(),
    };
    row("stripped aarch64 binary, vision in", value, "< 2 MiB");
}
