//! The models the daemon serves (`--model`, `--models-dir`): their names, files, the
//! architecture each file declares and the chat template each is rendered with, all read once
//! at start. Handlers look a request's `model` up here; the engine knows a model by its index.

use std::path::{Path, PathBuf};

use crate::chat::{self, Template};
use crate::config::{ChatTemplate, Config};

pub use crate::engine::ModelId;

pub struct Model {
    pub name: String,
    pub path: PathBuf,
    /// The `general.architecture` the file declares, if any.
    pub architecture: Option<String>,
    /// The chat template its conversations are rendered with; `None`: the runtime's own.
    pub template: Option<Template>,
    /// Its vision encoder (a `.rknn` model beside it, `encoder_beside`): a vision model then.
    pub encoder: Option<PathBuf>,
}

pub struct Catalog {
    models: Vec<Model>,
}

impl Catalog {
    /// Reads each model file's header once, and chooses each model's template.
    pub fn new(cfg: &Config) -> Catalog {
        let models = cfg
            .catalog
            .iter()
            .map(|(name, path)| {
                let architecture = chat::architecture(path);
                let template = resolve_template(cfg, path, architecture.as_deref());
                let encoder = encoder_beside(path);
                if let Some(e) = &encoder {
                    log::info!("model '{name}' has a vision encoder: {}", e.display());
                }
                Model {
                    name: name.clone(),
                    path: path.clone(),
                    architecture,
                    template,
                    encoder,
                }
            })
            .collect();
        Catalog { models }
    }

    /// A catalog of the given models, with no template (for tests).
    pub fn of(models: Vec<Model>) -> Catalog {
        Catalog { models }
    }

    /// The model a request names: by its name or `NAME:latest` (Ollama clients add the tag);
    /// no name or the empty name is the default model.
    pub fn find(&self, requested: Option<&str>) -> Option<ModelId> {
        let requested = match requested {
            None | Some("") => return (!self.models.is_empty()).then_some(0),
            Some(r) => r,
        };
        let bare = requested.strip_suffix(":latest").unwrap_or(requested);
        self.models
            .iter()
            .position(|m| m.name == requested || m.name == bare)
    }

    pub fn get(&self, id: ModelId) -> Option<&Model> {
        self.models.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ModelId, &Model)> {
        self.models.iter().enumerate()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Whether the runtime's chat template is switched off for this model (rkllmd renders).
    pub fn raw_template(&self, id: ModelId) -> bool {
        self.get(id).is_some_and(|m| m.template.is_some())
    }

    /// The files, by id: what the engine loads.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.models.iter().map(|m| m.path.clone()).collect()
    }
}

/// A vision model's encoder: the file beside the model with the same stem and the `.rknn`
/// extension (`qwen2-vl-2b.rkllm` and `qwen2-vl-2b.rknn`), as Rockchip's toolkits produce the
/// pair; found without any setting.
pub fn encoder_beside(model: &Path) -> Option<PathBuf> {
    let encoder = model.with_extension("rknn");
    (encoder != model && encoder.is_file()).then_some(encoder)
}

/// The chat template a model is rendered with; `None` leaves templating to the runtime.
/// `arch`: the `general.architecture` the model file declares.
fn resolve_template(cfg: &Config, path: &Path, arch: Option<&str>) -> Option<Template> {
    match &cfg.chat_template {
        ChatTemplate::Runtime => None,
        ChatTemplate::Custom(template) => Some(Template::clone(template)),
        ChatTemplate::Preset(name) => Template::preset(name),
        ChatTemplate::Auto => {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let chosen = chat::choose(arch, &file);
            let name = chosen.map(|(name, _)| name);
            let why = match (chosen, arch) {
                (Some((_, chat::Chosen::Architecture)), Some(a)) => {
                    format!("the model file's general.architecture '{a}'")
                }
                _ => format!("the model file name '{file}'"),
            };
            let Some(name) = name else {
                log::info!(
                    "no chat template preset matches '{file}' (architecture: {}): the runtime's \
                     built-in template is used, which sees only the newest user turn (set \
                     chat-template to choose)",
                    arch.unwrap_or("not found")
                );
                return None;
            };
            log::info!("chat template '{name}' chosen from {why} (set chat-template to choose)");
            Template::preset(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> Model {
        Model {
            name: name.into(),
            path: PathBuf::from(format!("/m/{name}.rkllm")),
            architecture: None,
            template: None,
            encoder: None,
        }
    }

    #[test]
    fn an_encoder_beside_the_model_with_its_stem_makes_it_a_vision_model() {
        let dir = std::env::temp_dir().join(format!("rkllmd-encoder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vl = dir.join("qwen2-vl-2b.rkllm");
        let text = dir.join("qwen2.5-1.5b.rkllm");
        std::fs::write(dir.join("qwen2-vl-2b.rknn"), "").unwrap();
        std::fs::create_dir_all(dir.join("qwen2.5-1.5b.rknn.d")).unwrap();
        assert_eq!(encoder_beside(&vl), Some(dir.join("qwen2-vl-2b.rknn")));
        assert_eq!(encoder_beside(&text), None);
        // A directory of that name is not an encoder file.
        std::fs::create_dir_all(dir.join("other.rknn")).unwrap();
        assert_eq!(encoder_beside(&dir.join("other.rkllm")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_request_finds_its_model_by_name_or_tag_and_the_default_without_one() {
        let c = Catalog::of(vec![model("qwen"), model("fast")]);
        assert_eq!(c.find(None), Some(0));
        assert_eq!(c.find(Some("")), Some(0));
        assert_eq!(c.find(Some("fast")), Some(1));
        assert_eq!(c.find(Some("fast:latest")), Some(1));
        assert_eq!(c.find(Some("fast:7b")), None);
        assert_eq!(c.find(Some("other")), None);
        assert_eq!(Catalog::of(Vec::new()).find(None), None);
    }
}
