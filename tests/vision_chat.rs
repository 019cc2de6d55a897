//! Chats with images through the real daemon and the shipped vision pair (issue #15):
//! `vision-demo.rkllm` with its `vision-demo.rknn` beside it, served with `--model` alone. An
//! image in a request is decoded, encoded by the RKNN simulator and run as multimodal input
//! by the RKLLM simulator, whose trace shows the encoder's embedding size.

mod common;

use common::client::Response;
use common::images::{b64, data_url, png};
use common::{read_trace, repo_path, Daemon};
use serde_json::{json, Value};

fn daemon(tag: &str) -> Daemon {
    let b = Daemon::builder(tag).model(repo_path("vendor/rkllm-sim/models/vision-demo.rkllm"));
    let rknn_trace = b.dir().join("rknn.jsonl");
    b.start_with_env("RKNN_SIM_TRACE", rknn_trace.to_str().unwrap())
}

/// A 64x48 picture whose pixels depend on `seed`.
fn picture(seed: u8) -> Vec<u8> {
    let pixels: Vec<u8> = (0..64u32 * 48 * 3)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    png(64, 48, &pixels)
}

fn openai_image_chat(image: &[u8]) -> Value {
    json!({
        "model": "vision-demo",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": data_url(image)}}
        ]}]
    })
}

fn answer(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {v}"));
    assert!(!text.is_empty(), "{v}");
    text.to_owned()
}

/// The multimodal inputs the runtime was given, in order.
fn multimodal_runs(d: &Daemon) -> Vec<Value> {
    d.trace_of("multimodal")
}

fn encoder_runs(d: &Daemon) -> usize {
    read_trace(&d.dir.path().join("rknn.jsonl"))
        .iter()
        .filter(|l| l["fn"] == "rknn_run_end")
        .count()
}

#[test]
fn an_openai_chat_with_a_data_url_image_is_answered_from_the_encoders_embeddings() {
    let d = daemon("vision-chat-openai");
    let r = d
        .client()
        .post_json("/v1/chat/completions", &openai_image_chat(&picture(1)));
    answer(&r);
    let mm = multimodal_runs(&d);
    assert_eq!(mm.len(), 1, "{mm:?}");
    assert_eq!(mm[0]["n_image"], 1);
    assert_eq!(mm[0]["n_image_tokens"], 196);
    assert_eq!(mm[0]["embed"], 196 * 1536);
    assert_eq!(mm[0]["image_start"], "<|vision_start|>");
    let run = d.trace_of("rkllm_run");
    assert_eq!(run.last().unwrap()["input_type"], "multimodal", "{run:?}");
    assert_eq!(encoder_runs(&d), 1);
}

#[test]
fn an_ollama_chat_with_images_is_answered_and_text_still_works_on_the_same_model() {
    let d = daemon("vision-chat-ollama");
    let body = json!({
        "model": "vision-demo",
        "stream": false,
        "options": {"num_predict": 4},
        "messages": [{"role": "user", "content": "Compare these.",
                      "images": [b64(&picture(2)), b64(&picture(3))]}]
    });
    let r = d.client().post_json("/api/chat", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(!v["message"]["content"].as_str().unwrap().is_empty(), "{v}");
    let mm = multimodal_runs(&d);
    assert_eq!(mm.len(), 1, "{mm:?}");
    assert_eq!(mm[0]["n_image"], 2);
    assert_eq!(mm[0]["embed"], 2 * 196 * 1536);

    let text = json!({"model": "vision-demo", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "Hello"}]});
    answer(&d.client().post_json("/v1/chat/completions", &text));
    let run = d.trace_of("rkllm_run");
    assert_eq!(run.last().unwrap()["input_type"], "prompt", "{run:?}");
    assert_eq!(multimodal_runs(&d).len(), 1);
}

#[test]
fn a_truncated_image_with_a_valid_header_is_a_400_and_the_next_request_is_served() {
    let d = daemon("vision-chat-truncated");
    let good = picture(4);
    // The header and the first bytes of the pixel data: the header check passes, the decode
    // on the inference thread fails.
    let truncated = &good[..good.len() / 2];
    let r = d
        .client()
        .post_json("/v1/chat/completions", &openai_image_chat(truncated));
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("image 1 cannot be used"), "{msg}");
    assert!(multimodal_runs(&d).is_empty());

    let ollama = json!({"model": "vision-demo", "stream": false,
                        "messages": [{"role": "user", "content": "x", "images": [b64(truncated)]}]});
    let r = d.client().post_json("/api/chat", &ollama);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("image 1"), "{v}");

    answer(
        &d.client()
            .post_json("/v1/chat/completions", &openai_image_chat(&good)),
    );
    assert_eq!(multimodal_runs(&d).len(), 1);
}

#[test]
fn an_image_sent_again_skips_the_encoder() {
    let d = daemon("vision-chat-kept");
    let image = picture(5);
    answer(
        &d.client()
            .post_json("/v1/chat/completions", &openai_image_chat(&image)),
    );
    assert_eq!(encoder_runs(&d), 1);
    // The follow-up re-sends the image with the conversation.
    let follow_up = json!({
        "model": "vision-demo",
        "max_tokens": 4,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": data_url(&image)}}
            ]},
            {"role": "assistant", "content": "A pattern."},
            {"role": "user", "content": "What colour is it?"}
        ]
    });
    answer(&d.client().post_json("/v1/chat/completions", &follow_up));
    assert_eq!(encoder_runs(&d), 1, "the kept embeddings were not used");
    assert_eq!(multimodal_runs(&d).len(), 2);
    // Another image runs the encoder.
    answer(
        &d.client()
            .post_json("/v1/chat/completions", &openai_image_chat(&picture(6))),
    );
    assert_eq!(encoder_runs(&d), 2);
}

#[test]
fn images_the_prompt_cannot_place_are_a_400_in_the_apis_shape() {
    let d = daemon("vision-chat-misplaced");
    let image = b64(&picture(7));
    // On an assistant message: only user turns carry images into the prompt.
    let body = json!({"model": "vision-demo", "stream": false, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Look.", "images": [image]},
        {"role": "user", "content": "What was it?"}
    ]});
    let r = d.client().post_json("/api/chat", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"],
        "'messages[1]': images are taken on user messages only"
    );
    // The placeholder as text would stand for an image that is not there.
    let mut body = openai_image_chat(&picture(7));
    body["messages"][0]["content"][0]["text"] = json!("Is <image> a tag?");
    let r = d.client().post_json("/v1/chat/completions", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("marks where images go"),
        "{v}"
    );
    assert!(multimodal_runs(&d).is_empty());
    answer(
        &d.client()
            .post_json("/v1/chat/completions", &openai_image_chat(&picture(7))),
    );
}

#[test]
fn images_that_do_not_fit_the_context_are_refused_before_the_encoder_runs() {
    let b = Daemon::builder("vision-chat-context")
        .model(repo_path("vendor/rkllm-sim/models/vision-demo.rkllm"))
        .args(["--max-context-len", "200"]);
    let rknn_trace = b.dir().join("rknn.jsonl");
    let d = b.start_with_env("RKNN_SIM_TRACE", rknn_trace.to_str().unwrap());
    // The text fits with room to spare; its image's 196 positions do not.
    let r = d
        .client()
        .post_json("/v1/chat/completions", &openai_image_chat(&picture(8)));
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(encoder_runs(&d), 0);
    assert!(d.trace_of("rkllm_run").is_empty());
}
