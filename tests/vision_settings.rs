//! A vision model's own settings (`[model NAME]`, issue #15): `vision-encoder` names its
//! encoder or turns vision off, `image-family` / `image-tags` pick the image tags the runtime is
//! given (the RKLLM simulator's `multimodal` trace lines show them), a model's name suggests
//! its family when none is set, and `image-size` must match the encoder's input. The models
//! are copies of the shipped vision pair (`vision-demo.rkllm` and `.rknn`) under other names.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::images::{data_url, png};
use common::models::copy_model;
use common::{repo_path, Daemon, DaemonBuilder};
use serde_json::{json, Value};

/// `name.rkllm` in `dir`: the shipped vision model, quicker.
fn vision_model(dir: &Path, name: &str) -> PathBuf {
    copy_model(
        dir,
        &repo_path("vendor/rkllm-sim/models/vision-demo.rkllm"),
        name,
        &["prefill_us_per_token = 20", "decode_us_per_token = 1000"],
    )
}

/// The shipped encoder written to `path`, quicker (392x392 in).
fn encoder_at(path: &Path) {
    let shipped = std::fs::read_to_string(repo_path("vendor/rkllm-sim/models/vision-demo.rknn"))
        .expect("read the shipped encoder");
    let quick = shipped.replace("run_ms = 3280", "run_ms = 20");
    assert_ne!(quick, shipped, "the shipped encoder's run_ms line");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, quick).unwrap();
}

/// A daemon serving the models directory `models` with the config file `conf_text`.
fn builder(tag: &str, setup: impl FnOnce(&Path) -> String) -> DaemonBuilder {
    let b = Daemon::builder(tag).no_model();
    let models = b.dir().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let conf = b.dir().join("rkllmd.conf");
    std::fs::write(&conf, setup(&models)).unwrap();
    b.args(["--models-dir", models.to_str().unwrap()])
        .args(["--config", conf.to_str().unwrap()])
}

fn picture() -> Vec<u8> {
    let pixels: Vec<u8> = (0..32u32 * 24 * 3).map(|i| (i * 5) as u8).collect();
    png(32, 24, &pixels)
}

fn image_chat(d: &Daemon, model: &str) -> common::client::Response {
    d.client().post_json(
        "/v1/chat/completions",
        &json!({
            "model": model,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": data_url(&picture())}}
            ]}]
        }),
    )
}

fn text_chat(d: &Daemon, model: &str) -> common::client::Response {
    d.client().post_json(
        "/v1/chat/completions",
        &json!({"model": model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hello"}]}),
    )
}

/// The tags of the last multimodal run: start, end, content.
fn last_tags(d: &Daemon) -> [String; 3] {
    let mm = d.trace_of("multimodal");
    let last = mm.last().unwrap_or_else(|| panic!("no multimodal run"));
    ["image_start", "image_end", "image_content"].map(|k| {
        last[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {last}"))
            .to_owned()
    })
}

fn capabilities(d: &Daemon, model: &str) -> Value {
    let r = d.client().post_json("/api/show", &json!({"model": model}));
    assert_eq!(r.status, 200, "{model}: {}", r.text());
    r.json()["capabilities"].clone()
}

fn tags(t: [&str; 3]) -> [String; 3] {
    t.map(str::to_owned)
}

#[test]
fn a_named_encoder_makes_a_vision_model_with_its_familys_tags() {
    let d = builder("vset-named", |models| {
        vision_model(models, "pictures");
        encoder_at(&models.join("encoders/pictures-encoder.rknn"));
        "[model pictures]\nvision-encoder = encoders/pictures-encoder.rknn\n\
         image-family = internvl3\n"
            .to_owned()
    })
    .start();
    assert_eq!(
        capabilities(&d, "pictures"),
        json!(["completion", "tools", "vision"])
    );
    let r = image_chat(&d, "pictures");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_tags(&d), tags(["<img>", "</img>", "<IMG_CONTEXT>"]));
    assert!(
        d.stderr().contains("family internvl3)"),
        "the family is logged: {}",
        d.stderr()
    );
}

#[test]
fn a_models_name_suggests_its_family_and_image_tags_win_over_any() {
    let d = builder("vset-guess", |models| {
        vision_model(models, "internvl3-demo");
        encoder_at(&models.join("internvl3-demo.rknn"));
        vision_model(models, "plain-vl");
        encoder_at(&models.join("plain-vl.rknn"));
        vision_model(models, "own-tags");
        encoder_at(&models.join("own-tags.rknn"));
        "[model own-tags]\nimage-family = internvl3\nimage-tags = \"\" \"\" \"<｜▁pad▁｜>\"\n"
            .to_owned()
    })
    .start();
    assert_eq!(image_chat(&d, "internvl3-demo").status, 200);
    assert_eq!(last_tags(&d), tags(["<img>", "</img>", "<IMG_CONTEXT>"]));
    assert_eq!(image_chat(&d, "plain-vl").status, 200);
    assert_eq!(
        last_tags(&d),
        tags(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"])
    );
    assert_eq!(image_chat(&d, "own-tags").status, 200);
    assert_eq!(last_tags(&d), tags(["", "", "<｜▁pad▁｜>"]));
    let log = d.stderr();
    assert!(
        log.contains("family internvl3, guessed from the name"),
        "{log}"
    );
    assert!(log.contains("(set by image-tags)"), "{log}");
}

#[test]
fn vision_encoder_none_turns_the_encoder_beside_off() {
    let d = builder("vset-none", |models| {
        vision_model(models, "seeing");
        encoder_at(&models.join("seeing.rknn"));
        "[model seeing]\nvision-encoder = none\n".to_owned()
    })
    .start();
    assert_eq!(capabilities(&d, "seeing"), json!(["completion", "tools"]));
    let r = image_chat(&d, "seeing");
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("does not accept images"), "{msg}");
    assert_eq!(text_chat(&d, "seeing").status, 200);
    assert!(d.trace_of("multimodal").is_empty());
}

#[test]
fn an_image_size_other_than_the_encoders_fails_image_requests_naming_both() {
    let d = builder("vset-size", |models| {
        vision_model(models, "sized");
        encoder_at(&models.join("sized.rknn"));
        "[model sized]\nimage-size = 448x448\n".to_owned()
    })
    .start();
    let r = image_chat(&d, "sized");
    assert_eq!(r.status, 500, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("392x392") && msg.contains("448x448"), "{msg}");
    let r = text_chat(&d, "sized");
    assert_eq!(r.status, 200, "text keeps serving: {}", r.text());
    assert!(d.trace_of("multimodal").is_empty());
    let refused = d
        .stderr()
        .lines()
        .filter(|l| l.contains("the vision encoder is refused"))
        .count();
    assert_eq!(refused, 1, "logged once, at load: {}", d.stderr());
}

#[test]
fn an_image_size_that_matches_is_served() {
    let d = builder("vset-size-ok", |models| {
        vision_model(models, "sized");
        encoder_at(&models.join("sized.rknn"));
        "[model sized]\nimage-size = 392x392\n".to_owned()
    })
    .start();
    let r = image_chat(&d, "sized");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.trace_of("multimodal").len(), 1);
}

#[test]
fn mistakes_in_the_vision_keys_end_the_start_with_their_line() {
    let cases = [
        (
            "[model pictures]\n\nvision-encoder = missing.rknn\n",
            "line 3: invalid value 'missing.rknn' for vision-encoder",
        ),
        (
            "[model pictures]\nimage-family = llava\n",
            "line 2: invalid value 'llava' for image-family",
        ),
        (
            "[model pictures]\nimage-size = big\n",
            "line 2: invalid value 'big' for image-size",
        ),
        (
            "[model pictures]\nimage-tags = <img>\n",
            "line 2: invalid value '<img>' for image-tags",
        ),
    ];
    for (text, expected) in cases {
        let dir = common::TempDir::new("vset-bad");
        let models = dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        vision_model(&models, "pictures");
        let conf = dir.path().join("rkllmd.conf");
        std::fs::write(&conf, text).unwrap();
        let (code, err) = common::models::start_refused(dir.path(), &conf, &models);
        assert_eq!(code, Some(2), "{text:?}: {err}");
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn check_shows_each_vision_models_encoder_and_tags() {
    let dir = common::TempDir::new("vset-check");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    vision_model(&models, "pictures");
    encoder_at(&models.join("enc/p.rknn"));
    vision_model(&models, "minicpm-v-demo");
    encoder_at(&models.join("minicpm-v-demo.rknn"));
    let conf = dir.path().join("rkllmd.conf");
    std::fs::write(
        &conf,
        "[model pictures]\nvision-encoder = enc/p.rknn\nimage-family = qwen3-vl\n",
    )
    .unwrap();
    let out = Command::new(common::daemon_bin())
        .arg("check")
        .args(["--config", conf.to_str().unwrap()])
        .args(["--models-dir", models.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |model: &str| {
        text.lines()
            .find(|l| l.contains(&format!("model '{model}'")) && l.contains("vision"))
            .unwrap_or_else(|| panic!("no vision line for {model}: {text}"))
            .to_owned()
    };
    let pictures = line("pictures");
    assert!(
        pictures.contains(&format!("encoder {}", models.join("enc/p.rknn").display())),
        "{pictures}"
    );
    assert!(
        pictures.contains(
            "\"<|vision_start|>\" \"<|vision_end|>\" \"<|image_pad|>\" (family qwen3-vl)"
        ),
        "{pictures}"
    );
    let minicpm = line("minicpm-v-demo");
    assert!(
        minicpm.contains("\"slice_placeholder\" (family minicpm-v, guessed from the name)"),
        "{minicpm}"
    );
}

#[test]
fn a_reload_that_changes_a_vision_key_reloads_the_model_with_it() {
    let b = builder("vset-reload", |models| {
        vision_model(models, "pictures");
        encoder_at(&models.join("pictures.rknn"));
        "[model pictures]\nimage-family = internvl3\n".to_owned()
    });
    let conf = b.dir().join("rkllmd.conf");
    let d = b.start();
    assert_eq!(image_chat(&d, "pictures").status, 200);
    assert_eq!(last_tags(&d), tags(["<img>", "</img>", "<IMG_CONTEXT>"]));

    std::fs::write(&conf, "[model pictures]\nimage-family = minicpm-v\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    common::wait_until(std::time::Duration::from_secs(20), "the reload", || {
        d.stderr().contains("SIGHUP: configuration reloaded")
    });
    assert_eq!(image_chat(&d, "pictures").status, 200);
    assert_eq!(
        last_tags(&d),
        tags(["<image>", "</image>", "slice_placeholder"])
    );
    assert_eq!(d.trace_of("rkllm_init").len(), 2, "loaded again");

    std::fs::write(&conf, "[model pictures]\nvision-encoder = none\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    common::wait_until(
        std::time::Duration::from_secs(20),
        "the second reload",
        || d.stderr().matches("SIGHUP: configuration reloaded").count() >= 2,
    );
    assert_eq!(capabilities(&d, "pictures"), json!(["completion", "tools"]));
    assert_eq!(image_chat(&d, "pictures").status, 400);
}
