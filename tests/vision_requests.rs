//! Where a request's images go and which requests may carry them (issue #15), through the real
//! daemon and the shipped vision pair (`vision-demo.rkllm` with its `.rknn`): images keep their
//! place among a message's text parts, the Responses API's `input_image` runs end to end, and
//! under the runtime's own chat template a request with images is refused before it queues.
//! curl, the client people try first, sends images to both APIs.

mod common;

use common::client::{sse_data, Response};
use common::images::{b64, data_url, png};
use common::{repo_path, Daemon};
use std::process::Command;

use serde_json::{json, Value};

const MODEL: &str = "vendor/rkllm-sim/models/vision-demo.rkllm";

fn daemon(tag: &str) -> Daemon {
    Daemon::builder(tag).model(repo_path(MODEL)).start()
}

/// A 32x32 picture whose pixels depend on `seed`.
fn picture(seed: u8) -> Vec<u8> {
    let pixels: Vec<u8> = (0..32u32 * 32 * 3)
        .map(|i| (i as u8).wrapping_mul(5).wrapping_add(seed))
        .collect();
    png(32, 32, &pixels)
}

/// The prompt of the runtime's last run, which must have been a multimodal one with `images`
/// images of the encoder's embedding size (196 tokens of 1536 floats each).
fn last_multimodal_prompt(d: &Daemon, images: usize) -> String {
    let mm = d.trace_of("multimodal");
    let last = mm.last().unwrap_or_else(|| panic!("no multimodal run"));
    assert_eq!(last["n_image"], images, "{last}");
    assert_eq!(last["placeholders"], images, "{last}");
    assert_eq!(last["embed"], images * 196 * 1536, "{last}");
    let run = d.trace_of("rkllm_run");
    let run = run.last().unwrap();
    assert_eq!(run["input_type"], "multimodal", "{run}");
    run["prompt"].as_str().unwrap().to_owned()
}

fn chat_answer(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(!text.is_empty(), "{v}");
    text.to_owned()
}

#[test]
fn images_keep_their_place_among_a_messages_text_parts() {
    let d = daemon("vision-req-order");
    let body = json!({
        "model": "vision-demo",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": data_url(&picture(1))}},
            {"type": "text", "text": "with"},
            {"type": "image_url", "image_url": {"url": data_url(&picture(2))}}
        ]}]
    });
    chat_answer(&d.client().post_json("/v1/chat/completions", &body));
    let prompt = last_multimodal_prompt(&d, 2);
    assert!(prompt.contains("Compare<image>with<image>"), "{prompt:?}");

    // The Responses API's content parts keep theirs too.
    let body = json!({
        "model": "vision-demo",
        "max_output_tokens": 4,
        "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": data_url(&picture(3))},
            {"type": "input_text", "text": "is older than"},
            {"type": "input_image", "image_url": data_url(&picture(4))},
            {"type": "input_text", "text": "?"}
        ]}]
    });
    let r = d.client().post_json("/v1/responses", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = last_multimodal_prompt(&d, 2);
    assert!(
        prompt.contains("<image>is older than<image>?"),
        "{prompt:?}"
    );

    // Ollama's images have no place among the text: they go first.
    let body = json!({
        "model": "vision-demo",
        "stream": false,
        "options": {"num_predict": 4},
        "messages": [{"role": "user", "content": "What is in the image?",
                      "images": [b64(&picture(5))]}]
    });
    let r = d.client().post_json("/api/chat", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = last_multimodal_prompt(&d, 1);
    assert!(
        prompt.contains("<image>What is in the image?"),
        "{prompt:?}"
    );
}

fn responses_image_request(stream: bool) -> Value {
    json!({
        "model": "vision-demo",
        "max_output_tokens": 8,
        "stream": stream,
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is in this image?"},
            {"type": "input_image", "image_url": data_url(&picture(6))}
        ]}]
    })
}

#[test]
fn a_responses_input_image_is_answered_streamed_and_not() {
    let d = daemon("vision-req-responses");
    let r = d
        .client()
        .post_json("/v1/responses", &responses_image_request(false));
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    // Cut at the cap: the simulator's answers run longer than 8 tokens.
    assert_eq!(b["status"], "incomplete", "{b}");
    assert_eq!(
        b["incomplete_details"]["reason"], "max_output_tokens",
        "{b}"
    );
    let text = b["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty(), "{b}");
    let prompt = last_multimodal_prompt(&d, 1);
    assert!(
        prompt.contains("What is in this image?<image>"),
        "{prompt:?}"
    );
    let runs = d.trace_of("multimodal").len();

    let r = d
        .client()
        .post_json("/v1/responses", &responses_image_request(true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let evs: Vec<Value> = sse_data(&r.body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.incomplete", "{last}");
    let streamed: String = evs
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(
        streamed, text,
        "the same image and question, the same answer"
    );
    assert_eq!(d.trace_of("multimodal").len(), runs + 1);
    last_multimodal_prompt(&d, 1);
}

#[test]
fn under_the_runtimes_template_images_are_a_400_before_queueing_and_text_works() {
    let d = Daemon::builder("vision-req-runtime")
        .model(repo_path(MODEL))
        .args(["--chat-template", "runtime"])
        .start();
    let image = picture(7);
    let says_why = |msg: &str| {
        assert!(
            msg.contains("takes images only with a chat template rkllmd renders"),
            "{msg}"
        );
    };

    let chat = json!({"model": "vision-demo", "max_tokens": 4, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": data_url(&image)}}
        ]}
    ]});
    let r = d.client().post_json("/v1/chat/completions", &chat);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    says_why(v["error"]["message"].as_str().unwrap());

    let r = d
        .client()
        .post_json("/v1/responses", &responses_image_request(false));
    assert_eq!(r.status, 400, "{}", r.text());
    says_why(r.json()["error"]["message"].as_str().unwrap());

    let ollama_chat = json!({"model": "vision-demo", "stream": false, "messages": [
        {"role": "user", "content": "What is this?", "images": [b64(&image)]}
    ]});
    let r = d.client().post_json("/api/chat", &ollama_chat);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "Ollama's shape: {v}");
    says_why(v["error"].as_str().unwrap());

    let generate = json!({"model": "vision-demo", "stream": false,
                          "prompt": "What is this?", "images": [b64(&image)]});
    let r = d.client().post_json("/api/generate", &generate);
    assert_eq!(r.status, 400, "{}", r.text());
    says_why(r.json()["error"].as_str().unwrap());

    // None of them reached the runtime; text is served as before.
    assert!(d.trace_of("rkllm_run").is_empty());
    let text = json!({"model": "vision-demo", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "Hello"}]});
    chat_answer(&d.client().post_json("/v1/chat/completions", &text));
    let run = d.trace_of("rkllm_run");
    assert_eq!(run.len(), 1, "{run:?}");
    assert_eq!(run[0]["input_type"], "prompt");
    assert_eq!(run[0]["prompt"], "Hello");
}

/// Posts `body` with the curl binary over the daemon's socket, the body from a file as a user
/// would send a large one (`--data-binary @file`), and returns the answer's JSON. curl comes
/// with scripts/test-all's Debian packages; without it the test fails, naming it.
fn curl_post(d: &Daemon, path: &str, body: &Value) -> Value {
    let file = d.dir.path().join("curl-body.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--unix-socket"])
        .arg(&d.socket)
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap_or_else(|e| panic!("this test runs curl (apt-get install curl): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl {path}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("curl {path}: {e}: {stdout}"))
}

#[test]
fn curl_sends_images_to_both_apis() {
    let d = daemon("vision-req-curl");
    let body = json!({
        "model": "vision-demo",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": data_url(&picture(7))}}
        ]}]
    });
    let v = curl_post(&d, "/v1/chat/completions", &body);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(!text.is_empty(), "{v}");
    let prompt = last_multimodal_prompt(&d, 1);
    assert!(
        prompt.contains("What is in this image?<image>"),
        "{prompt:?}"
    );

    let body = json!({
        "model": "vision-demo",
        "stream": false,
        "options": {"num_predict": 8},
        "prompt": "Describe it.",
        "images": [b64(&picture(8))]
    });
    let v = curl_post(&d, "/api/generate", &body);
    assert_eq!(v["done"], true, "{v}");
    assert!(!v["response"].as_str().unwrap_or("").is_empty(), "{v}");
    let prompt = last_multimodal_prompt(&d, 1);
    assert!(prompt.contains("<image>Describe it."), "{prompt:?}");

    // The same model still answers text.
    let body = json!({"model": "vision-demo", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "Hi"}]});
    let v = curl_post(&d, "/v1/chat/completions", &body);
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert_eq!(
        d.trace_of("rkllm_run").last().unwrap()["input_type"],
        "prompt"
    );
}
