use super::*;

/// A 3x2 RGB PNG, base64-encoded.
fn png_base64() -> String {
    let mut png = Vec::new();
    let mut e = ::png::Encoder::new(&mut png, 3, 2);
    e.set_color(::png::ColorType::Rgb);
    let mut w = e.write_header().unwrap();
    w.write_image_data(&[7; 18]).unwrap();
    w.finish().unwrap();
    encode(&png)
}

/// Test-only encoder (the crate's own encodes floats for embeddings).
fn encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn images() -> RequestImages {
    RequestImages::new(ImageLimits::default(), Flavor::OpenAi)
}

#[test]
fn a_data_url_gives_the_image_and_its_header() {
    let url = format!("data:image/png;base64,{}", png_base64());
    let img = images()
        .url(&url, "messages[0].content[1].image_url")
        .unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    // The media type is not trusted: the bytes say PNG.
    let url = format!("DATA:image/jpeg;BASE64,{}", png_base64());
    assert!(images().url(&url, "f").is_ok());
}

#[test]
fn an_http_url_is_refused_because_rkllmd_does_not_fetch() {
    for url in ["http://example.com/cat.png", "HTTPS://10.0.0.1/x.jpg"] {
        let err = images()
            .url(url, "messages[0].content[0].image_url")
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("does not fetch"), "{}", err.message);
        assert_eq!(err.param.as_deref(), Some("messages"));
    }
    let err = images().url("file:///etc/passwd", "f").unwrap_err();
    assert!(
        err.message.contains("must be a base64 data URL"),
        "{}",
        err.message
    );
    let err = images().url("data:image/png,rawbytes", "f").unwrap_err();
    assert!(
        err.message.contains("must be a base64 data URL"),
        "{}",
        err.message
    );
}

#[test]
fn bad_base64_and_bad_images_are_400s_that_say_why() {
    let err = images().base64("not base64!", "images[0]").unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (400, "'images[0]' is not valid base64")
    );
    let err = images()
        .base64(&encode(b"GIF89a nope"), "images[0]")
        .unwrap_err();
    assert!(
        err.message.contains("not JPEG, PNG or WebP"),
        "{}",
        err.message
    );
    assert_eq!(err.param.as_deref(), Some("images"));
}

#[test]
fn the_byte_limit_is_checked_before_decoding() {
    let limits = ImageLimits {
        max_bytes: 30,
        ..ImageLimits::default()
    };
    let mut images = RequestImages::new(limits, Flavor::Ollama);
    // 400 characters of base64 is 300 bytes, refused by its length alone (it is not even
    // valid base64).
    let err = images.base64(&"!".repeat(400), "images[0]").unwrap_err();
    assert!(
        err.message.contains("above the limit of 30"),
        "{}",
        err.message
    );
}

#[test]
fn images_are_counted_over_the_whole_request() {
    let limits = ImageLimits {
        max_per_request: 2,
        ..ImageLimits::default()
    };
    let mut images = RequestImages::new(limits, Flavor::OpenAi);
    let b64 = png_base64();
    assert!(images.base64(&b64, "a").is_ok());
    assert!(images.base64(&b64, "b").is_ok());
    let err = images.base64(&b64, "c").unwrap_err();
    assert!(
        err.message.contains("at most 2 per request"),
        "{}",
        err.message
    );
}

/// Message 0's turn of an OpenAI chat request.
fn openai_turn(content: serde_json::Value) -> Turn {
    let messages = [serde_json::json!({"role": "user", "content": content})];
    let turns = crate::api::conversation::openai_turns(
        &messages,
        crate::chat::ToolFormat::Hermes,
        &mut images(),
    )
    .unwrap();
    turns.into_iter().next().unwrap()
}

#[test]
fn content_parts_keep_each_images_place_among_the_text() {
    let url = format!("data:image/png;base64,{}", png_base64());
    let turn = openai_turn(serde_json::json!([
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "with"},
        {"type": "image_url", "image_url": url},
    ]));
    // The text parts joined as they are; each image at the length of the text before it.
    assert_eq!(turn.content, "Comparewith");
    let at: Vec<usize> = turn.images.iter().map(|p| p.at).collect();
    assert_eq!(at, [7, 11]);
    assert_eq!(
        (turn.images[0].image.width, turn.images[0].image.height),
        (3, 2)
    );
    let first = openai_turn(serde_json::json!([
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What is this?"},
    ]));
    assert_eq!(first.images[0].at, 0);
}

#[test]
fn ollama_images_go_before_the_text() {
    let messages = [serde_json::json!(
        {"role": "user", "content": "Compare these.", "images": [png_base64(), png_base64()]}
    )];
    let mut images = RequestImages::new(ImageLimits::default(), Flavor::Ollama);
    let turns = crate::api::conversation::ollama_turns(
        &messages,
        crate::chat::ToolFormat::Hermes,
        &mut images,
    )
    .unwrap();
    let at: Vec<usize> = turns[0].images.iter().map(|p| p.at).collect();
    assert_eq!(at, [0, 0]);
}
