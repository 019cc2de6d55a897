//! `[model NAME]` sections: a model's own settings over the daemon's, its aliases, and the
//! mistakes refused with their line.

use super::{fail, run, Scratch};
use crate::config::{ChatTemplate, EncoderSetting};
use crate::vision::family::Family;

/// A models directory with `a.rkllm` and `b.rkllm`, and a config file with `text`.
fn two_models(text: &str) -> (Scratch, String, String) {
    let s = Scratch::new();
    std::fs::remove_file(s.model()).unwrap();
    s.write("a.rkllm", "model");
    s.write("b.rkllm", "model");
    let conf = s.write("rkllmd.conf", text);
    let dir = s.path("");
    (s, conf, dir)
}

#[test]
fn a_section_overrides_the_daemons_settings_for_its_model_only() {
    let (s, conf, dir) = two_models(
        "max-context-len = 8192\ntemperature = 0.5\nchat-template = qwen2.5\n\
         [model b]\nmax_context_len = 2048\nmax-new-tokens = 100\ntop-k = 7\n\
         base-domain-id = 3\nchat-template = llama3\nalias = small\nalias = tiny\n",
    );
    let c = run(&["--config", &conf, "--models-dir", &dir], &s.env());
    let (a, b) = (&c.catalog[0], &c.catalog[1]);
    assert_eq!((a.name.as_str(), b.name.as_str()), ("a", "b"));
    assert_eq!(a.params.max_context_len, 8192);
    assert_eq!(a.params.sampling.top_k, 1);
    assert_eq!(a.chat_template, ChatTemplate::Preset("qwen2.5"));
    assert!(a.aliases.is_empty());
    assert_eq!(b.params.max_context_len, 2048);
    assert_eq!(b.params.max_new_tokens, 100);
    assert_eq!(b.params.sampling.top_k, 7);
    assert_eq!(
        b.params.sampling.temperature, 0.5,
        "the daemon's, not overridden"
    );
    assert_eq!(b.params.base_domain_id, 3);
    assert_eq!(b.chat_template, ChatTemplate::Preset("llama3"));
    assert_eq!(b.aliases, ["small", "tiny"]);
    // The daemon's own values are untouched.
    assert_eq!(c.max_context_len, 8192);
}

#[test]
fn a_section_wins_over_the_command_line() {
    let (s, conf, dir) = two_models("[model a]\nmax-new-tokens = 64\n");
    let c = run(
        &[
            "--config",
            &conf,
            "--models-dir",
            &dir,
            "--max-new-tokens",
            "512",
        ],
        &s.env(),
    );
    assert_eq!(c.catalog[0].params.max_new_tokens, 64);
    assert_eq!(c.catalog[1].params.max_new_tokens, 512);
}

#[test]
fn a_section_sets_the_models_vision() {
    let (s, conf, dir) = two_models(
        "[model a]\nvision-encoder = enc.rknn\nimage-family = internvl3\n\
         image-tags = \"\" '' \"<pad one>\" # the pad\nimage-size = 448x448\n\
         [model b]\nvision_encoder = none\n",
    );
    s.write("enc.rknn", "encoder");
    let c = run(&["--config", &conf, "--models-dir", &dir], &s.env());
    let (a, b) = (&c.catalog[0].vision, &c.catalog[1].vision);
    assert_eq!(a.encoder, EncoderSetting::File(s.path("enc.rknn").into()));
    assert_eq!(a.family, Some(Family::InternVl3));
    assert_eq!(
        a.tags,
        Some(["".to_owned(), "".to_owned(), "<pad one>".to_owned()])
    );
    assert_eq!(a.image_size, Some((448, 448)));
    assert_eq!(b.encoder, EncoderSetting::Off);
    assert_eq!((b.family, &b.tags, b.image_size), (None, &None, None));
}

#[test]
fn mistakes_in_sections_are_refused_with_their_line() {
    let cases = [
        (
            "[model c]\ntop-k = 2\n",
            "line 1: [model c]: no model of that name is served (served: a, b)",
        ),
        (
            "[model a]\nalias = b\n",
            "line 2: alias 'b' of model 'a' is already a name of model 'b'",
        ),
        (
            "[model a]\nalias = x\n[model b]\n\nalias = x:latest\n",
            "line 5: alias 'x:latest' of model 'b' is already a name of model 'a'",
        ),
        (
            "[model a]\ntop-k = lots\n",
            "line 2: invalid value 'lots' for top-k",
        ),
        (
            "[model a]\nlora = x x.rkllm\n",
            "line 2: invalid value 'x x.rkllm' for lora",
        ),
        ("[model a]\nloras = x\n", "line 2: unknown key 'loras'"),
        (
            "[model a]\n\nvision-encoder = enc/missing.rknn\n",
            "line 3: invalid value 'enc/missing.rknn' for vision-encoder",
        ),
        (
            "[model a]\nimage-family = llava\n",
            "line 2: invalid value 'llava' for image-family",
        ),
        (
            "[model a]\nimage-tags = <img> </img>\n",
            "line 2: invalid value '<img> </img>' for image-tags",
        ),
        (
            "[model a]\nimage-size = 392\n",
            "line 2: invalid value '392' for image-size",
        ),
        ("image-size = 392x392\n", "line 1: unknown key 'image-size'"),
        (
            "[model a]\nqueue-size = 2\n",
            "line 2: 'queue-size' cannot be set per model",
        ),
    ];
    for (text, expected) in cases {
        let (s, conf, dir) = two_models(text);
        let err = fail(&["--config", &conf, "--models-dir", &dir], &s.env());
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.starts_with(&conf), "{err}");
    }
}
