//! The models the daemon serves (`--model`, `--models-dir`): their names, files, the
//! architecture each file declares and the chat template each is rendered with, all read once
//! at start. Handlers look a request's `model` up here; the engine knows a model by its index.

use std::path::{Path, PathBuf};

use crate::chat::{self, Template};
use crate::config::{ChatTemplate, Config, ModelEntry};
use crate::runtime::ModelParams;

pub use crate::engine::ModelId;

pub struct Model {
    pub name: String,
    pub path: PathBuf,
    /// The `general.architecture` the file declares, if any.
    pub architecture: Option<String>,
    /// The chat template its conversations are rendered with; `None`: the runtime's own.
    pub template: Option<Template>,
    /// The other names it answers to (its section's `alias` keys).
    pub aliases: Vec<String>,
    /// What it is loaded with: context, token cap, sampling, IOMMU domain.
    pub params: ModelParams,
}

impl Model {
    /// Whether a request's `model` names this one: its name or an alias, with or without
    /// Ollama's `:latest` tag.
    pub fn answers_to(&self, requested: &str) -> bool {
        let bare = requested.strip_suffix(":latest").unwrap_or(requested);
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .any(|n| n == requested || n == bare)
    }
}

pub struct Catalog {
    models: Vec<Model>,
}

impl Catalog {
    /// Reads each model file's header once, and chooses each model's template.
    pub fn new(cfg: &Config) -> Catalog {
        let models = cfg.catalog.iter().map(Model::read).collect();
        Catalog { models }
    }

    /// A catalog of the given models (for tests).
    pub fn of(models: Vec<Model>) -> Catalog {
        Catalog { models }
    }

    /// The model a request names: by its name or an alias, either also as `NAME:latest`
    /// (Ollama clients add the tag); no name or the empty name is the default model.
    pub fn find(&self, requested: Option<&str>) -> Option<ModelId> {
        let requested = match requested {
            None | Some("") => return (!self.models.is_empty()).then_some(0),
            Some(r) => r,
        };
        self.models.iter().position(|m| m.answers_to(requested))
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

impl Model {
    /// The model of a catalog entry: its file's header is read for the architecture, which
    /// with its name chooses the template under `auto`.
    pub fn read(entry: &ModelEntry) -> Model {
        let architecture = chat::architecture(&entry.path);
        let template = resolve_template(&entry.chat_template, &entry.path, architecture.as_deref());
        Model {
            name: entry.name.clone(),
            path: entry.path.clone(),
            architecture,
            template,
            aliases: entry.aliases.clone(),
            params: entry.params,
        }
    }
}

/// The chat template a model is rendered with; `None` leaves templating to the runtime.
/// `arch`: the `general.architecture` the model file declares.
fn resolve_template(
    configured: &ChatTemplate,
    path: &Path,
    arch: Option<&str>,
) -> Option<Template> {
    match configured {
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
            aliases: Vec::new(),
            params: Config::default().model_params(),
        }
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

    #[test]
    fn an_alias_finds_its_model_with_or_without_the_tag() {
        let mut fast = model("fast");
        fast.aliases = vec!["quick".into(), "tiny:1b".into()];
        let c = Catalog::of(vec![model("qwen"), fast]);
        assert_eq!(c.find(Some("quick")), Some(1));
        assert_eq!(c.find(Some("quick:latest")), Some(1));
        assert_eq!(c.find(Some("tiny:1b")), Some(1));
        assert_eq!(c.find(Some("tiny")), None);
        assert_eq!(c.find(Some("qwen")), Some(0));
    }
}
