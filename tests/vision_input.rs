//! Images in requests against the real daemon (issue #15): OpenAI `image_url` data URLs, Ollama
//! `images`, the Responses API's `input_image`, and every way an image is refused (a URL to
//! fetch, not base64, corrupt, truncated, too many bytes, a decompression bomb, too many
//! images), each a 400 in the API's own shape, after which the daemon serves the next request.
//! `fast` has no vision encoder, so a good image ends in a 400 naming the model, which
//! also proves it was parsed and passed every check.

mod common;

use common::images::{b64, data_url, png};
use common::Daemon;
use serde_json::{json, Value};

/// Limits the daemon runs with, small enough to hit with tiny images.
const MAX_IMAGE_BYTES: usize = 4096;
const MAX_IMAGES: usize = 2;

fn daemon(tag: &str) -> Daemon {
    Daemon::builder(tag)
        .args(["--max-image-bytes", "4K", "--max-images-per-request", "2"])
        .start()
}

fn small_png() -> Vec<u8> {
    png(8, 6, &[90; 8 * 6 * 3])
}

fn small_jpeg() -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&[200; 8 * 6 * 3], 8, 6, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

fn small_webp() -> Vec<u8> {
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(&[30; 8 * 6 * 3], 8, 6, image_webp::ColorType::Rgb8)
        .unwrap();
    out
}

/// A valid PNG header that claims 100000x100000 pixels, and no pixels.
fn bomb() -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, 100_000, 100_000);
    e.set_color(png::ColorType::Rgb);
    drop(e.write_header().unwrap());
    out
}

fn openai_chat(parts: Value) -> Value {
    json!({"model": "fast", "messages": [{"role": "user", "content": parts}]})
}

fn with_image(url: &str) -> Value {
    openai_chat(json!([
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": url}}
    ]))
}

/// The message of an OpenAI error, checking its shape.
fn openai_error(r: &common::client::Response) -> String {
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

/// The message of an Ollama error (`{"error": "..."}` and nothing else).
fn ollama_error(r: &common::client::Response) -> String {
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{v}");
    obj["error"].as_str().unwrap().to_owned()
}

/// The daemon still answers a text chat, and no refused request reached the runtime.
fn serves_the_next_request(d: &Daemon, runs_before: usize) {
    assert_eq!(
        d.trace_of("rkllm_run").len(),
        runs_before,
        "a refused request ran"
    );
    let r = d
        .client()
        .post_json("/v1/chat/completions", &openai_chat(json!("Hello")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["message"]["content"].is_string());
}

#[test]
fn a_good_image_in_each_format_passes_every_check_and_the_model_is_named() {
    let d = daemon("vision-good");
    for image in [small_png(), small_jpeg(), small_webp()] {
        let r = d
            .client()
            .post_json("/v1/chat/completions", &with_image(&data_url(&image)));
        let msg = openai_error(&r);
        assert_eq!(
            msg,
            "model 'fast' does not accept images: it has no vision encoder"
        );
    }
    // A bare string as image_url, as some clients send it.
    let body = openai_chat(json!([{"type": "image_url", "image_url": data_url(&small_png())}]));
    let msg = openai_error(&d.client().post_json("/v1/chat/completions", &body));
    assert!(msg.contains("does not accept images"), "{msg}");
    serves_the_next_request(&d, 0);
}

#[test]
fn an_http_url_is_refused_because_the_daemon_does_not_fetch() {
    let d = daemon("vision-http");
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "https://example.com/cat.jpg",
    ] {
        let r = d
            .client()
            .post_json("/v1/chat/completions", &with_image(url));
        let msg = openai_error(&r);
        assert!(msg.contains("does not fetch image URLs"), "{msg}");
        assert!(msg.contains("data:image/jpeg;base64"), "{msg}");
        assert_eq!(r.json()["error"]["param"], "messages");
    }
    serves_the_next_request(&d, 0);
}

#[test]
fn ollama_images_on_chat_and_generate() {
    let d = daemon("vision-ollama");
    let chat = json!({"model": "fast", "messages": [
        {"role": "user", "content": "What is this?", "images": [b64(&small_png())]}
    ]});
    let msg = ollama_error(&d.client().post_json("/api/chat", &chat));
    assert!(msg.contains("model 'fast' does not accept images"), "{msg}");
    let generate =
        json!({"model": "fast", "prompt": "What is this?", "images": [b64(&small_jpeg())]});
    let msg = ollama_error(&d.client().post_json("/api/generate", &generate));
    assert!(msg.contains("model 'fast' does not accept images"), "{msg}");
    // A broken one is named by its place.
    let chat = json!({"model": "fast", "messages": [
        {"role": "user", "content": "x", "images": [b64(&small_png()), "%%%"]}
    ]});
    let msg = ollama_error(&d.client().post_json("/api/chat", &chat));
    assert_eq!(msg, "'messages[0].images[1]' is not valid base64");
    let generate = json!({"model": "fast", "prompt": "x", "images": [b64(b"hello")]});
    let msg = ollama_error(&d.client().post_json("/api/generate", &generate));
    assert!(
        msg.starts_with("'images[0]': the image is not JPEG, PNG or WebP"),
        "{msg}"
    );
    serves_the_next_request(&d, 0);
}

#[test]
fn responses_input_image_is_read() {
    let d = daemon("vision-responses");
    let body = json!({"model": "fast", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": data_url(&small_webp())}
    ]}]});
    let msg = openai_error(&d.client().post_json("/v1/responses", &body));
    assert!(msg.contains("does not accept images"), "{msg}");
    let body = json!({"model": "fast", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/x.png"}
    ]}]});
    let r = d.client().post_json("/v1/responses", &body);
    assert!(openai_error(&r).contains("does not fetch"));
    assert_eq!(r.json()["error"]["param"], "input");
    serves_the_next_request(&d, 0);
}

#[test]
fn bad_images_are_400s_that_say_why_and_the_daemon_goes_on() {
    let d = daemon("vision-bad");
    let good = small_png();
    let mut corrupt = good.clone();
    for b in &mut corrupt[8..] {
        *b = 0xA5;
    }
    // Noise (xorshift) does not compress: 12 KiB of pixels make a PNG above 4 KiB.
    let mut state = 0x2545_F491_u32;
    let big: Vec<u8> = (0..64 * 64 * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let oversized = png(64, 64, &big);
    assert!(
        oversized.len() > MAX_IMAGE_BYTES,
        "{} bytes",
        oversized.len()
    );
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("corrupt", corrupt, "corrupt, truncated or unsupported"),
        (
            "truncated",
            good[..20].to_vec(),
            "corrupt, truncated or unsupported",
        ),
        (
            "oversized",
            oversized,
            "above the limit of 4096 (max-image-bytes)",
        ),
        ("bomb", bomb(), "100000x100000 pixels, above the limit"),
    ];
    for (name, bytes, expected) in cases {
        let r = d
            .client()
            .post_json("/v1/chat/completions", &with_image(&data_url(&bytes)));
        let msg = openai_error(&r);
        assert!(msg.contains(expected), "{name}: {msg}");
        assert!(
            msg.starts_with("'messages[0].content[1].image_url': "),
            "{name}: {msg}"
        );
        // The same through Ollama, in its shape.
        let chat = json!({"model": "fast", "messages": [
            {"role": "user", "content": "x", "images": [b64(&bytes)]}
        ]});
        let msg = ollama_error(&d.client().post_json("/api/chat", &chat));
        assert!(msg.contains(expected), "{name}: {msg}");
    }
    serves_the_next_request(&d, 0);
}

#[test]
fn too_many_images_in_one_request_is_a_400() {
    let d = daemon("vision-many");
    let url = data_url(&small_png());
    let part = json!({"type": "image_url", "image_url": {"url": url}});
    // Counted over the whole request: two messages of two images each.
    let body = json!({"model": "fast", "messages": [
        {"role": "user", "content": [part, part]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [part, {"type": "text", "text": "and this?"}]}
    ]});
    let msg = openai_error(&d.client().post_json("/v1/chat/completions", &body));
    assert_eq!(
        msg,
        format!("too many images: at most {MAX_IMAGES} per request (max-images-per-request)")
    );
    let images: Vec<String> = (0..=MAX_IMAGES).map(|_| b64(&small_png())).collect();
    let generate = json!({"model": "fast", "prompt": "x", "images": images});
    let msg = ollama_error(&d.client().post_json("/api/generate", &generate));
    assert!(msg.contains("too many images"), "{msg}");
    serves_the_next_request(&d, 0);
}
