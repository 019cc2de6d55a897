//! The models the daemon serves (`--model`, `--models-dir`): their names, files, the
//! architecture each file declares and the chat template each is rendered with, all read once
//! at start. Handlers look a request's `model` up here; the engine knows a model by its index.
//! A model's LoRA adapters (`adapters.rs`) are selected as `MODEL:ADAPTER`.

mod adapters;

use std::path::{Path, PathBuf};

pub use adapters::{Adapter, AdapterId};

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
    /// The LoRA adapters it runs with when a request names one (`MODEL:ADAPTER`): the files
    /// beside it (`adapters::beside`); the config may set them too.
    pub adapters: Vec<Adapter>,
}

/// What a request's `model` names: a model, and maybe one of its adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub model: ModelId,
    pub adapter: Option<AdapterId>,
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
                Model {
                    name: name.clone(),
                    path: path.clone(),
                    architecture,
                    template,
                    adapters: adapters::beside(path),
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
        self.select(requested)
            .filter(|s| s.adapter.is_none())
            .map(|s| s.model)
    }

    /// The model and adapter a request names: `MODEL`, `MODEL:latest` or `MODEL:ADAPTER`; no
    /// name or the empty name is the default model alone. A model's whole name is matched
    /// first, so a file whose name holds a colon is still found.
    pub fn select(&self, requested: Option<&str>) -> Option<Selection> {
        let requested = match requested {
            None | Some("") => {
                return (!self.models.is_empty()).then_some(Selection {
                    model: 0,
                    adapter: None,
                })
            }
            Some(r) => r,
        };
        if let Some(model) = self.models.iter().position(|m| m.name == requested) {
            return Some(Selection {
                model,
                adapter: None,
            });
        }
        let (model, tag) = self.split(requested)?;
        let adapter = adapters::by_tag(&self.models[model].adapters, Some(tag))?;
        Some(Selection { model, adapter })
    }

    /// For a name `MODEL:TAG` whose model is served but has no adapter `TAG`: the model's
    /// name and the tag, to say so in the 404.
    pub fn missing_adapter<'r>(&self, requested: &'r str) -> Option<(&str, &'r str)> {
        if self.select(Some(requested)).is_some() {
            return None;
        }
        let (model, tag) = self.split(requested)?;
        Some((self.models[model].name.as_str(), tag))
    }

    /// `MODEL:TAG` split after the longest model name it starts with.
    fn split<'r>(&self, requested: &'r str) -> Option<(ModelId, &'r str)> {
        self.models
            .iter()
            .enumerate()
            .filter_map(|(id, m)| {
                let tag = requested.strip_prefix(m.name.as_str())?.strip_prefix(':')?;
                Some((id, m.name.len(), tag))
            })
            .max_by_key(|&(_, len, _)| len)
            .map(|(id, _, tag)| (id, tag))
    }

    /// The name a selection is requested by: `MODEL` or `MODEL:ADAPTER`.
    pub fn name_of(&self, sel: Selection) -> Option<String> {
        let m = self.get(sel.model)?;
        match sel.adapter {
            None => Some(m.name.clone()),
            Some(a) => Some(format!("{}:{}", m.name, m.adapters.get(a)?.name)),
        }
    }

    /// Every model, each followed by its adapters: what listings show.
    pub fn selections(&self) -> impl Iterator<Item = Selection> + '_ {
        self.iter().flat_map(|(model, m)| {
            std::iter::once(None)
                .chain((0..m.adapters.len()).map(Some))
                .map(move |adapter| Selection { model, adapter })
        })
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
            adapters: Vec::new(),
        }
    }

    fn with_adapters(name: &str, adapters: &[&str]) -> Model {
        Model {
            adapters: adapters
                .iter()
                .map(|a| Adapter {
                    name: (*a).into(),
                    path: PathBuf::from(format!("/m/{name}.lora/{a}.rkllm")),
                    scale: 1.0,
                })
                .collect(),
            ..model(name)
        }
    }

    #[test]
    fn a_request_selects_an_adapter_as_model_colon_adapter() {
        let c = Catalog::of(vec![
            with_adapters("qwen", &["style", "knowledge"]),
            model("fast"),
            with_adapters("qwen:7b", &["x"]),
        ]);
        let sel = |model, adapter| Some(Selection { model, adapter });
        assert_eq!(c.select(Some("qwen")), sel(0, None));
        assert_eq!(c.select(Some("qwen:latest")), sel(0, None));
        assert_eq!(c.select(Some("qwen:knowledge")), sel(0, Some(1)));
        assert_eq!(
            c.select(Some("qwen:7b")),
            sel(2, None),
            "a whole name first"
        );
        assert_eq!(c.select(Some("qwen:7b:x")), sel(2, Some(0)));
        assert_eq!(c.select(Some("qwen:other")), None);
        assert_eq!(c.find(Some("qwen:style")), None, "find is of models alone");
        assert_eq!(c.missing_adapter("qwen:other"), Some(("qwen", "other")));
        assert_eq!(c.missing_adapter("qwen:style"), None);
        assert_eq!(c.missing_adapter("nothing:style"), None);
        let names: Vec<String> = c.selections().filter_map(|s| c.name_of(s)).collect();
        assert_eq!(
            names,
            [
                "qwen",
                "qwen:style",
                "qwen:knowledge",
                "fast",
                "qwen:7b",
                "qwen:7b:x"
            ]
        );
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
