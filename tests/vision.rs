//! The vision path's runtime layer against the simulators: the RKNN encoder (`rknn::Encoder`)
//! and `Runtime::run_multimodal` with its embeddings, under the ABI this binary is built for.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::{read_trace, write_model, TempDir};
use rkllmd::runtime::rknn::{self, CoreMask, Encoder, EncoderError};
use rkllmd::runtime::{
    self, Flow, ImageTags, Images, InitConfig, Output, RunEnd, RunRequest, Runtime, RuntimeError,
    Sampling,
};
use rkllmd::vision::family::Family;

/// Both simulators read their trace variable at init; tests run in parallel threads, so each
/// holds this lock from setting the variables until its inits are done.
static INIT_LOCK: Mutex<()> = Mutex::new(());

fn tracing_to(dir: &Path) -> MutexGuard<'static, ()> {
    let guard = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    std::env::set_var("RKLLM_SIM_TRACE", dir.join("rkllm.jsonl"));
    std::env::set_var("RKNN_SIM_TRACE", dir.join("rknn.jsonl"));
    guard
}

/// A small encoder: `w` x `h` pixels in, `tokens` x `dim` out, no delays.
fn write_encoder(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(format!("{name}.rknn"));
    let mut text = String::from("rknn-sim 1\nname = test-encoder\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

const SMALL: &[&str] = &[
    "input_width = 28",
    "input_height = 14",
    "image_tokens = 8",
    "embed_dim = 16",
];

fn open(path: &Path) -> Result<Encoder, EncoderError> {
    Encoder::open(Path::new(rknn::DEFAULT_LIBRARY), path, CoreMask::ALL_THREE)
}

/// `w` x `h` RGB pixels, each byte from `seed`.
fn picture(w: u32, h: u32, seed: u8) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn the_shipped_encoder_declares_qwen2_vl_sizes() {
    let dir = TempDir::new("vision-shipped");
    let _g = tracing_to(dir.path());
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/rkllm-sim/models/vision-demo.rknn");
    let enc = open(&path).unwrap();
    assert_eq!(enc.input_size(), (392, 392));
    let info = enc.info();
    assert_eq!(
        (
            info.channels,
            info.image_tokens,
            info.embed_dim,
            info.outputs
        ),
        (3, 196, 1536, 1)
    );
    assert_eq!(info.embedding_len(), 196 * 1536);
    let lib = rknn::load(Path::new(rknn::DEFAULT_LIBRARY)).unwrap();
    assert!(lib.simulator.is_some(), "{lib:?}");
}

#[test]
fn different_pixels_give_different_embeddings_and_the_same_pixels_the_same() {
    let dir = TempDir::new("vision-embed");
    let _g = tracing_to(dir.path());
    let enc = open(&write_encoder(dir.path(), "e", SMALL)).unwrap();
    let a = enc.encode(&picture(28, 14, 1), 28, 14).unwrap();
    let b = enc.encode(&picture(28, 14, 2), 28, 14).unwrap();
    let a2 = enc.encode(&picture(28, 14, 1), 28, 14).unwrap();
    assert_eq!(a.len(), 8 * 16);
    assert_ne!(a, b);
    assert_eq!(a, a2);
    assert!(a.iter().all(|v| (-1.0..1.0).contains(v)), "{a:?}");
    let trace = read_trace(&dir.path().join("rknn.jsonl"));
    let runs: Vec<_> = trace.iter().filter(|l| l["fn"] == "rknn_run_end").collect();
    assert_eq!(runs.len(), 3, "{trace:?}");
    assert_eq!(runs[0]["embed_dim"], 16);
    assert_eq!(runs[0]["core_mask"], 7);
}

#[test]
fn deepstack_outputs_are_laid_side_by_side_per_token() {
    let dir = TempDir::new("vision-deepstack");
    let _g = tracing_to(dir.path());
    let mut lines = SMALL.to_vec();
    lines.push("outputs = 3");
    let enc = open(&write_encoder(dir.path(), "e", &lines)).unwrap();
    assert_eq!(enc.info().token_width(), 48);
    let v = enc.encode(&picture(28, 14, 9), 28, 14).unwrap();
    assert_eq!(v.len(), 8 * 48);
    // Each token's three outputs differ (the simulator hashes the output index in).
    assert_ne!(v[0..16], v[16..32]);
}

#[test]
fn pixels_of_another_size_are_refused_before_the_runtime() {
    let dir = TempDir::new("vision-size");
    let _g = tracing_to(dir.path());
    let enc = open(&write_encoder(dir.path(), "e", SMALL)).unwrap();
    let err = enc.encode(&picture(14, 28, 1), 14, 28).unwrap_err();
    assert_eq!(
        err,
        EncoderError::InputSize {
            expected: (28, 14, 3),
            width: 14,
            height: 28,
            bytes: 14 * 28 * 3
        }
    );
    assert!(err.to_string().contains("takes 28x14 pixels"), "{err}");
    let err = enc.encode(&picture(28, 14, 1)[1..], 28, 14).unwrap_err();
    assert!(matches!(err, EncoderError::InputSize { .. }), "{err:?}");
}

#[test]
fn encoder_faults_are_errors_naming_the_call() {
    let dir = TempDir::new("vision-faults");
    let _g = tracing_to(dir.path());
    let mut lines = SMALL.to_vec();
    lines.push("fail_init = 1");
    let path = write_encoder(dir.path(), "bad", &lines);
    let err = open(&path).unwrap_err();
    assert_eq!(
        err,
        EncoderError::Open {
            model: path,
            call: "rknn_init",
            code: -6
        }
    );
    let mut lines = SMALL.to_vec();
    lines.push("fail_run = 1");
    let enc = open(&write_encoder(dir.path(), "run", &lines)).unwrap();
    let err = enc.encode(&picture(28, 14, 1), 28, 14).unwrap_err();
    assert_eq!(
        err,
        EncoderError::Encode {
            call: "rknn_run",
            code: -1
        }
    );
    let text = dir.path().join("not-a-model.rknn");
    std::fs::write(&text, "hello").unwrap();
    assert!(matches!(open(&text), Err(EncoderError::Open { .. })));
}

#[test]
fn a_core_mask_the_chip_lacks_still_opens_the_encoder() {
    let dir = TempDir::new("vision-cores");
    let _g = tracing_to(dir.path());
    let mut lines = SMALL.to_vec();
    lines.push("npu_cores = 1"); // RK3562
    let enc = open(&write_encoder(dir.path(), "e", &lines)).unwrap();
    assert_eq!(enc.encode(&picture(28, 14, 1), 28, 14).unwrap().len(), 128);
    let trace = read_trace(&dir.path().join("rknn.jsonl"));
    let end = trace.iter().find(|l| l["fn"] == "rknn_run_end").unwrap();
    assert_eq!(
        end["core_mask"], 0,
        "the refused mask left the runtime's choice"
    );
}

// ---- Multimodal runs -------------------------------------------------------------------------

fn init_config(model: PathBuf, tags: Option<ImageTags>) -> InitConfig {
    InitConfig {
        library: runtime::DEFAULT_LIBRARY.into(),
        model_path: model,
        max_context_len: 4096,
        max_new_tokens: 256,
        sampling: Sampling::default(),
        base_domain_id: 1,
        cpu_mask: None,
        image_tags: tags,
    }
}

fn init(model: PathBuf, tags: Option<ImageTags>) -> Runtime {
    Runtime::init(&init_config(model, tags)).unwrap()
}

/// A language model whose images take 8 positions of 16 floats, like the SMALL encoder's.
fn vision_llm(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut lines = vec!["hidden_size = 16", "image_tokens = 8"];
    lines.extend_from_slice(extra);
    write_model(dir, "vl", &lines)
}

fn answer(
    rt: &mut Runtime,
    prompt: &str,
    images: &Images<'_>,
) -> Result<(String, RunEnd), RuntimeError> {
    let mut text = Vec::new();
    let req = RunRequest {
        prompt,
        role: runtime::Role::User,
        enable_thinking: false,
        keep_history: false,
        max_new_tokens: None,
        sampling: None,
        save_prompt_cache: None,
        lora: None,
    };
    let end = rt.run_multimodal(&req, images, &mut |out| {
        if let Output::Token { text: t, .. } = out {
            text.extend_from_slice(t);
        }
        Flow::Continue
    })?;
    Ok((String::from_utf8(text).unwrap(), end))
}

fn images(embeddings: &[f32], count: usize) -> Images<'_> {
    Images {
        embeddings,
        count,
        tokens: 8,
        token_width: 16,
        width: 28,
        height: 14,
    }
}

#[test]
fn an_image_reaches_the_runtime_as_multimodal_input_and_changes_the_answer() {
    let dir = TempDir::new("vision-run");
    let g = tracing_to(dir.path());
    let enc = open(&write_encoder(dir.path(), "e", SMALL)).unwrap();
    let mut rt = init(
        vision_llm(dir.path(), &[]),
        Some(ImageTags::from(Family::Qwen2Vl.tags())),
    );
    drop(g);
    let cat = enc.encode(&picture(28, 14, 1), 28, 14).unwrap();
    let dog = enc.encode(&picture(28, 14, 2), 28, 14).unwrap();
    let prompt = "<image>What is in the image?";
    let (a, end) = answer(&mut rt, prompt, &images(&cat, 1)).unwrap();
    assert!(matches!(end, RunEnd::Finished(_)), "{end:?}");
    let (b, _) = answer(&mut rt, prompt, &images(&dog, 1)).unwrap();
    let (a2, _) = answer(&mut rt, prompt, &images(&cat, 1)).unwrap();
    assert!(!a.is_empty());
    assert_ne!(a, b, "another image, another answer");
    assert_eq!(a, a2, "the same image, the same answer");

    let trace = read_trace(&dir.path().join("rkllm.jsonl"));
    let run = trace.iter().find(|l| l["fn"] == "rkllm_run").unwrap();
    assert_eq!(run["input_type"], "multimodal");
    assert_eq!(run["n_tokens"], 8);
    let mm = trace.iter().find(|l| l["fn"] == "multimodal").unwrap();
    assert_eq!(mm["n_image"], 1);
    assert_eq!(mm["n_image_tokens"], 8);
    assert_eq!(mm["embed"], 8 * 16);
    assert_eq!(mm["image_start"], "<|vision_start|>");
    assert_eq!(mm["image_end"], "<|vision_end|>");
    assert_eq!(
        (mm["image_width"].clone(), mm["image_height"].clone()),
        (28.into(), 14.into())
    );
}

#[test]
fn two_images_need_two_placeholders() {
    let dir = TempDir::new("vision-two");
    let g = tracing_to(dir.path());
    let enc = open(&write_encoder(dir.path(), "e", SMALL)).unwrap();
    let mut rt = init(
        vision_llm(dir.path(), &[]),
        Some(ImageTags::from(Family::Qwen2Vl.tags())),
    );
    drop(g);
    let mut both = enc.encode(&picture(28, 14, 1), 28, 14).unwrap();
    both.extend(enc.encode(&picture(28, 14, 2), 28, 14).unwrap());
    let err = answer(&mut rt, "<image>Compare them.", &images(&both, 2)).unwrap_err();
    assert_eq!(
        err,
        RuntimeError::ImagePlaceholders {
            placeholders: 1,
            images: 2
        }
    );
    let (text, end) = answer(&mut rt, "<image><image>Compare them.", &images(&both, 2)).unwrap();
    assert!(!text.is_empty() && matches!(end, RunEnd::Finished(_)));
    let trace = read_trace(&dir.path().join("rkllm.jsonl"));
    let ends: Vec<_> = trace.iter().filter(|l| l["fn"] == "run_end").collect();
    // The system prompt and template, two images of 8 positions with their tags, the question.
    assert!(ends[0]["prefill_tokens"].as_u64().unwrap() > 16, "{ends:?}");
}

#[test]
fn embeddings_of_the_wrong_size_are_refused() {
    let dir = TempDir::new("vision-wrong");
    let g = tracing_to(dir.path());
    let mut rt = init(
        vision_llm(dir.path(), &[]),
        Some(ImageTags::from(Family::Qwen2Vl.tags())),
    );
    drop(g);
    let prompt = "<image>What is it?";
    // A buffer that is not images x tokens x width: refused before the runtime reads it.
    let short = vec![0.5f32; 8 * 16 - 1];
    let err = answer(&mut rt, prompt, &images(&short, 1)).unwrap_err();
    assert!(
        matches!(err, RuntimeError::ImageEmbeddingSize { floats: 127, .. }),
        "{err:?}"
    );
    // A consistent buffer of another token count than the model's 8: the runtime fails the run.
    let other = vec![0.5f32; 6 * 16];
    let wrong = Images {
        tokens: 6,
        ..images(&other, 1)
    };
    let err = answer(&mut rt, prompt, &wrong).unwrap_err();
    assert!(matches!(err, RuntimeError::RunFailed { .. }), "{err:?}");
    // The runtime serves the next run.
    let ok = vec![0.5f32; 8 * 16];
    assert!(answer(&mut rt, prompt, &images(&ok, 1)).is_ok());
}

#[test]
fn a_runtime_that_takes_any_token_count_runs_it() {
    let dir = TempDir::new("vision-lenient");
    let g = tracing_to(dir.path());
    let mut rt = init(
        vision_llm(dir.path(), &["image_tokens_checked = 0"]),
        Some(ImageTags::from(Family::Qwen2Vl.tags())),
    );
    drop(g);
    let other = vec![0.5f32; 6 * 16];
    let wrong = Images {
        tokens: 6,
        ..images(&other, 1)
    };
    assert!(answer(&mut rt, "<image>What is it?", &wrong).is_ok());
}

#[test]
fn a_runtime_without_image_tags_refuses_multimodal_runs() {
    let dir = TempDir::new("vision-notags");
    let g = tracing_to(dir.path());
    let mut rt = init(vision_llm(dir.path(), &[]), None);
    drop(g);
    let ok = vec![0.5f32; 8 * 16];
    let err = answer(&mut rt, "<image>What is it?", &images(&ok, 1)).unwrap_err();
    assert_eq!(err, RuntimeError::NoImageTags);
}

#[test]
fn the_shipped_vision_demo_pair_fits_together() {
    let dir = TempDir::new("vision-demo-pair");
    let g = tracing_to(dir.path());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/rkllm-sim/models");
    let llm = models.join("vision-demo.rkllm");
    // Found beside the model, as the catalog finds it.
    let enc = open(&rkllmd::models::encoder_beside(&llm).unwrap()).unwrap();
    // One token is enough to see the input arrive (ABI 1.2 caps runs at init only); the demo
    // decodes at 16.6 tokens/s.
    let mut rt = Runtime::init(&InitConfig {
        max_new_tokens: 1,
        ..init_config(llm, Some(ImageTags::from(Family::Qwen2Vl.tags())))
    })
    .unwrap();
    drop(g);
    let (w, h) = enc.input_size();
    let info = *enc.info();
    let embedding = enc.encode(&picture(w, h, 3), w, h).unwrap();
    let images = Images {
        embeddings: &embedding,
        count: 1,
        tokens: info.image_tokens as usize,
        token_width: info.token_width(),
        width: w,
        height: h,
    };
    let req = RunRequest {
        prompt: "<image>Describe the picture.",
        role: runtime::Role::User,
        enable_thinking: false,
        keep_history: false,
        max_new_tokens: Some(1),
        sampling: None,
        save_prompt_cache: None,
        lora: None,
    };
    let end = rt
        .run_multimodal(&req, &images, &mut |_| Flow::Continue)
        .unwrap();
    assert!(matches!(end, RunEnd::Finished(_)), "{end:?}");
    let trace = read_trace(&dir.path().join("rkllm.jsonl"));
    let mm = trace.iter().find(|l| l["fn"] == "multimodal").unwrap();
    assert_eq!(mm["n_image_tokens"], 196);
    assert_eq!(mm["embed"], 196 * 1536);
    let end = trace.iter().find(|l| l["fn"] == "run_end").unwrap();
    assert!(end["prefill_tokens"].as_u64().unwrap() > 196, "{end}");
}
