//! The models the daemon serves (`--model`, `--models-dir`): their names, files, the
//! architecture each file declares and the chat template each is rendered with, all read once
//! at start. Handlers look a request's `model` up here; the engine knows a model by its index.
//! A model's LoRA adapters (`adapters.rs`) are selected as `MODEL:ADAPTER`.

mod adapters;
mod vision;

use std::path::{Path, PathBuf};

pub use adapters::{Adapter, AdapterId, LATEST};
pub use vision::{encoder_beside, ModelVision, TagsChosen};

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
    /// The LoRA adapters it runs with when a request names one (`MODEL:ADAPTER`): the files
    /// beside it (`adapters::beside`); the config may set them too.
    pub adapters: Vec<Adapter>,
    /// The other names it answers to (its section's `alias` keys).
    pub aliases: Vec<String>,
    /// What it is loaded with: context, token cap, sampling, IOMMU domain.
    pub params: ModelParams,
    /// Its vision encoder and image tags (`vision.rs`): a vision model then.
    pub vision: Option<ModelVision>,
}

/// What a request's `model` names: a model, and maybe one of its adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub model: ModelId,
    pub adapter: Option<AdapterId>,
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
    /// By id. A reload appends models and marks removed ones, so ids never change.
    models: Vec<Model>,
    /// Whether each model is still served (a reload may remove one while it is resident).
    served: Vec<bool>,
    /// What each model was read from, so that a reload reads again only what changed.
    read_from: Vec<Source>,
}

/// A catalog entry and its file's size and time: the same again means the same model.
#[derive(PartialEq)]
struct Source {
    entry: ModelEntry,
    file: Option<(u64, std::time::SystemTime)>,
}

impl Source {
    fn of(entry: &ModelEntry) -> Source {
        let file = std::fs::metadata(&entry.path)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        Source {
            entry: entry.clone(),
            file,
        }
    }
}

/// What a reload changed in the catalog.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<ModelId>,
    pub removed: Vec<ModelId>,
    /// Served before and after, read again (settings or file changed).
    pub changed: Vec<ModelId>,
}

impl Catalog {
    /// Reads each model file's header once, and chooses each model's template.
    pub fn new(cfg: &Config) -> Catalog {
        let mut catalog = Catalog::of(Vec::new());
        catalog.reload(cfg);
        catalog
    }

    /// A catalog of the given models (for tests).
    pub fn of(models: Vec<Model>) -> Catalog {
        let read_from = models
            .iter()
            .map(|m| Source {
                entry: ModelEntry {
                    name: m.name.clone(),
                    path: m.path.clone(),
                    aliases: m.aliases.clone(),
                    adapters: Vec::new(),
                    params: m.params,
                    chat_template: ChatTemplate::Runtime,
                    vision: Default::default(),
                },
                file: None,
            })
            .collect();
        Catalog {
            served: vec![true; models.len()],
            models,
            read_from,
        }
    }

    /// Takes the models of `cfg` (SIGHUP): a model keeps its id by name, a new name gets the
    /// next id, a name no longer there stays with its id but is no longer served (listed or
    /// found). Only a model whose entry or file changed is read again.
    pub fn reload(&mut self, cfg: &Config) -> Reloaded {
        let mut out = Reloaded::default();
        let mut seen = vec![false; self.models.len()];
        for entry in &cfg.catalog {
            let source = Source::of(entry);
            match self.models.iter().position(|m| m.name == entry.name) {
                Some(id) => {
                    seen[id] = true;
                    if !self.served[id] {
                        out.added.push(id);
                    } else if self.read_from[id] != source {
                        out.changed.push(id);
                    }
                    if self.read_from[id] != source {
                        self.models[id] = Model::read(entry);
                        self.read_from[id] = source;
                    }
                    self.served[id] = true;
                }
                None => {
                    out.added.push(self.models.len());
                    self.models.push(Model::read(entry));
                    self.served.push(true);
                    self.read_from.push(source);
                }
            }
        }
        for (id, seen) in seen.into_iter().enumerate() {
            if !seen && self.served[id] {
                self.served[id] = false;
                out.removed.push(id);
            }
        }
        out
    }

    /// Whether model `id` is served (not removed by a reload).
    pub fn is_served(&self, id: ModelId) -> bool {
        self.served.get(id).copied().unwrap_or(false)
    }

    /// The model a request names: by its name or an alias, either also as `NAME:latest`
    /// (Ollama clients add the tag); no name or the empty name is the default model.
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
                return self.is_served(0).then_some(Selection {
                    model: 0,
                    adapter: None,
                })
            }
            Some(r) => r,
        };
        if let Some((model, _)) = self.iter().find(|(_, m)| m.answers_to(requested)) {
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
        self.iter()
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

    /// Model `id`, served or not (a removed model may still be resident).
    pub fn get(&self, id: ModelId) -> Option<&Model> {
        self.models.get(id)
    }

    /// The models served, by id.
    pub fn iter(&self) -> impl Iterator<Item = (ModelId, &Model)> {
        self.all().filter(|(id, _)| self.is_served(*id))
    }

    /// Every model ever served since start, by id: what the engine knows.
    pub fn all(&self) -> impl Iterator<Item = (ModelId, &Model)> {
        self.models.iter().enumerate()
    }

    /// How many models are served.
    pub fn len(&self) -> usize {
        self.served.iter().filter(|s| **s).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the runtime's chat template is switched off for this model (rkllmd renders).
    pub fn raw_template(&self, id: ModelId) -> bool {
        self.get(id).is_some_and(|m| m.template.is_some())
    }

    /// The files, by id: what the engine loads.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.models.iter().map(|m| m.path.clone()).collect()
    }

    /// What the engine loads each model from and with, by id (removed ones too: the ids
    /// must stay).
    pub fn loads(&self) -> Vec<crate::engine::ModelLoad> {
        self.all()
            .map(|(id, m)| crate::engine::ModelLoad {
                path: m.path.clone(),
                name: m.name.clone(),
                raw_template: self.raw_template(id),
                adapters: m.adapters.clone(),
                params: Some(m.params),
                vision: m.vision.as_ref().map(|v| v.load.clone()),
            })
            .collect()
    }
}

impl Model {
    /// The model of a catalog entry: its file's header is read for the architecture, which
    /// with its name chooses the template under `auto`.
    pub fn read(entry: &ModelEntry) -> Model {
        let architecture = chat::architecture(&entry.path);
        let template = resolve_template(&entry.chat_template, &entry.path, architecture.as_deref());
        let vision = ModelVision::of(entry);
        if let Some(v) = &vision {
            log::info!("model '{}' is a vision model: {}", entry.name, v.describe());
        }
        Model {
            name: entry.name.clone(),
            path: entry.path.clone(),
            architecture,
            template,
            vision,
            adapters: adapters::configured_then_beside(&entry.adapters, &entry.path),
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
            adapters: Vec::new(),
            aliases: Vec::new(),
            params: Config::default().model_params(),
            vision: None,
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

    #[test]
    fn a_reload_keeps_ids_by_name_appends_new_models_and_hides_removed_ones() {
        let dir = std::env::temp_dir().join(format!("rkllmd-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg_of = |names: &[&str], ctx: u32| {
            let mut cfg = Config::default();
            cfg.max_context_len = ctx;
            cfg.catalog = names
                .iter()
                .map(|n| {
                    let path = dir.join(format!("{n}.rkllm"));
                    // Written once: a file written again is a changed model.
                    if !path.exists() {
                        std::fs::write(&path, b"x").unwrap();
                    }
                    ModelEntry::new(n, path, &cfg)
                })
                .collect();
            cfg
        };
        let mut c = Catalog::new(&cfg_of(&["a", "b", "c"], 1024));
        let r = c.reload(&cfg_of(&["a", "c", "d"], 1024));
        assert_eq!(
            r,
            Reloaded {
                added: vec![3],
                removed: vec![1],
                changed: vec![]
            }
        );
        let listed: Vec<(ModelId, &str)> = c.iter().map(|(id, m)| (id, m.name.as_str())).collect();
        assert_eq!(listed, [(0, "a"), (2, "c"), (3, "d")]);
        assert_eq!(c.find(Some("b")), None);
        assert_eq!(c.find(Some("d")), Some(3));
        assert_eq!(
            c.get(1).map(|m| m.name.as_str()),
            Some("b"),
            "still known by id"
        );
        assert_eq!(c.loads().len(), 4);

        let r = c.reload(&cfg_of(&["a", "b", "c", "d"], 2048));
        assert_eq!(
            r,
            Reloaded {
                added: vec![1],
                removed: vec![],
                changed: vec![0, 2, 3]
            }
        );
        assert_eq!(c.get(0).map(|m| m.params.max_context_len), Some(2048));
        assert_eq!(c.find(Some("b")), Some(1), "the same id again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
