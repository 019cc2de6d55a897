//! Folding parsed values into a `Config`, then the checks that need the whole picture.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::chat::CustomParts;

use super::error::{ConfigError, Origin, MAX_SOCKET_PATH};
use super::file::{Section, SectionKey};
use super::options::Setting;
use super::secret::ApiKey;
use super::template::TemplateName;
use super::values::{self, Expected};
use super::{Config, Env, ModelEntry};

/// Which source a value came from. Applied in this order, so flags override the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layer {
    File = 0,
    Flags = 1,
}

/// A `Config` under construction. Settings whose meaning depends on both layers (the key
/// and key file, the allow lists) are kept per layer until `finish`.
#[derive(Clone)]
pub(super) struct Draft {
    config: Config,
    socket: Option<PathBuf>,
    model_name: Option<String>,
    /// `keep-alive` when set; unset, its default depends on how many models there are.
    keep_alive: Option<crate::engine::KeepAlive>,
    api_key: [Option<String>; 2],
    api_key_file: [Option<PathBuf>; 2],
    allow_uid: [Option<Vec<u32>>; 2],
    allow_gid: [Option<Vec<u32>>; 2],
    template_name: TemplateName,
    /// The `chat-template-*` keys, used when `template_name` is `custom`.
    template_parts: CustomParts,
    /// The config file's `[model NAME]` sections.
    sections: Vec<Section>,
}

fn int<T: TryFrom<u64>>(raw: &str, min: u64, max: u64) -> Result<T, Expected> {
    let n = values::integer(raw, min, max)?;
    T::try_from(n).map_err(|_| format!("an integer from {min} to {max}"))
}

fn byte_count(raw: &str, min: u64, max: u64) -> Result<usize, Expected> {
    let n = values::bytes(raw, min, max)?;
    usize::try_from(n).map_err(|_| format!("a byte count from {min} to {max}"))
}

const GIB: u64 = 1 << 30;
const MAX_TOKENS: u64 = 1 << 20;
/// The smallest context worth loading: a chat template's markers and a short answer need more
/// (below it every request would fail as too long).
const MIN_CONTEXT: u64 = 64;

impl Draft {
    pub fn new() -> Draft {
        Draft {
            config: Config::default(),
            socket: None,
            model_name: None,
            keep_alive: None,
            api_key: [None, None],
            api_key_file: [None, None],
            allow_uid: [None, None],
            allow_gid: [None, None],
            template_name: TemplateName::Auto,
            template_parts: CustomParts::default(),
            sections: Vec::new(),
        }
    }

    pub fn apply(&mut self, key: Setting, raw: &str, layer: Layer) -> Result<(), Expected> {
        let c = &mut self.config;
        let l = layer as usize;
        match key {
            Setting::Model => c.model = values::path(raw)?,
            Setting::ModelName => self.model_name = Some(values::non_empty(raw, "name")?),
            Setting::ModelsDir => c.models_dir = Some(values::path(raw)?),
            Setting::MaxLoadedModels => c.max_loaded_models = int(raw, 1, 8)?,
            Setting::KeepAlive => {
                self.keep_alive = Some(
                    crate::engine::KeepAlive::parse(raw)
                        .map_err(|_| "a duration such as 30s, 5m, 1h, 0 or -1".to_owned())?,
                );
            }
            Setting::RuntimeLibrary => c.runtime_library = values::path(raw)?,
            Setting::RknnRuntimeLibrary => c.rknn_runtime_library = values::path(raw)?,
            Setting::Socket => self.socket = Some(values::path(raw)?),
            Setting::SocketMode => c.socket_mode = values::octal_mode(raw)?,
            Setting::SocketGroup => c.socket_group = Some(values::non_empty(raw, "group name")?),
            Setting::AllowUid => self.allow_uid[l]
                .get_or_insert_with(Vec::new)
                .extend(values::id_list(raw)?),
            Setting::AllowGid => self.allow_gid[l]
                .get_or_insert_with(Vec::new)
                .extend(values::id_list(raw)?),
            Setting::User => c.user = Some(values::non_empty(raw, "user name")?),
            Setting::Tcp => c.tcp = Some(values::tcp_addr(raw)?),
            Setting::ApiKey => self.api_key[l] = Some(values::non_empty(raw, "key")?),
            Setting::ApiKeyFile => self.api_key_file[l] = Some(values::path(raw)?),
            Setting::MaxConnections => c.max_connections = int(raw, 1, 65_536)?,
            Setting::MaxBodyBytes => c.max_body_bytes = byte_count(raw, 1, GIB)?,
            Setting::MaxImageBytes => c.image_limits.max_bytes = byte_count(raw, 1, GIB)?,
            Setting::MaxImagePixels => {
                c.image_limits.max_pixels = values::bytes(raw, 1, 1 << 32)?;
            }
            Setting::MaxImagesPerRequest => {
                c.image_limits.max_per_request = int(raw, 0, 64)?;
            }
            Setting::OutputCapBytes => c.output_cap_bytes = byte_count(raw, 1, GIB)?,
            Setting::HeaderTimeout => c.header_timeout = values::seconds(raw)?,
            Setting::KeepaliveTimeout => c.keepalive_timeout = values::seconds(raw)?,
            Setting::WriteTimeout => c.write_timeout = values::seconds(raw)?,
            Setting::QueueSize => c.queue_size = int(raw, 1, 4096)?,
            Setting::QueueTimeout => c.queue_timeout = values::seconds(raw)?,
            Setting::RequestTimeout => c.request_timeout = values::seconds(raw)?,
            Setting::ShutdownTimeout => c.shutdown_timeout = values::seconds(raw)?,
            Setting::DrainTimeout => c.drain_timeout = values::seconds(raw)?,
            Setting::AbortGrace => c.abort_grace = values::seconds(raw)?,
            Setting::MaxContextLen => c.max_context_len = int(raw, MIN_CONTEXT, MAX_TOKENS)?,
            Setting::MaxNewTokens => c.max_new_tokens = int(raw, 1, MAX_TOKENS)?,
            // The RKNPU driver has 16 IOMMU domains (RKNPU_MAX_IOMMU_DOMAIN_NUM in rknpu_drv.h).
            Setting::BaseDomainId => c.base_domain_id = int(raw, 0, 15)?,
            Setting::NpuLock => c.npu_lock = values::npu_lock(raw)?,
            Setting::EnabledCpus => c.enabled_cpus = Some(values::cpu_list(raw)?),
            Setting::Temperature => c.sampling.temperature = values::float(raw, 0.0, 100.0, false)?,
            Setting::TopP => c.sampling.top_p = values::float(raw, 0.0, 1.0, true)?,
            Setting::TopK => c.sampling.top_k = int(raw, 0, MAX_TOKENS)?,
            Setting::RepeatPenalty => {
                c.sampling.repeat_penalty = values::float(raw, 0.0, 10.0, true)?;
            }
            Setting::FrequencyPenalty => {
                c.sampling.frequency_penalty = values::float(raw, -2.0, 2.0, false)?;
            }
            Setting::PresencePenalty => {
                c.sampling.presence_penalty = values::float(raw, -2.0, 2.0, false)?;
            }
            Setting::NotifyFd => c.notify_fd = Some(values::notify_fd(raw)?),
            Setting::Syslog => c.syslog = values::boolean(raw)?,
            Setting::LogLevel => c.log_level = values::log_level(raw)?,
            Setting::ChatTemplate => self.template_name = TemplateName::parse(raw)?,
            Setting::KvCacheReuse => c.kv_cache_reuse = values::boolean(raw)?,
            Setting::KvSnapshotDir => c.kv_snapshot_dir = Some(values::path(raw)?),
            Setting::KvSnapshotLimit => c.kv_snapshot_limit = values::bytes(raw, 0, 64 * GIB)?,
            Setting::ToolsBudget => c.tools_budget_percent = values::percent(raw)?,
            Setting::EmbeddingPooling => c.embedding_pooling = raw.trim().parse()?,
            Setting::Background => c.background = raw.trim().parse()?,
            Setting::BackgroundHold => {
                c.background_hold =
                    std::time::Duration::from_millis(values::integer(raw, 0, 10_000)?);
            }
            Setting::ThinkDefault => c.think_default = raw.trim().parse()?,
            Setting::TemplateBos => self.template_parts.bos = Some(values::template_text(raw)?),
            Setting::TemplateSystemPrefix => {
                self.template_parts.system_prefix = Some(values::template_text(raw)?);
            }
            Setting::TemplateSystemSuffix => {
                self.template_parts.system_suffix = Some(values::template_text(raw)?);
            }
            Setting::TemplateUserPrefix => {
                self.template_parts.user_prefix = Some(values::template_text(raw)?);
            }
            Setting::TemplateUserSuffix => {
                self.template_parts.user_suffix = Some(values::template_text(raw)?);
            }
            Setting::TemplateAssistantPrefix => {
                self.template_parts.assistant_prefix = Some(values::template_text(raw)?);
            }
            Setting::TemplateAssistantSuffix => {
                self.template_parts.assistant_suffix = Some(values::template_text(raw)?);
            }
            Setting::TemplateToolPrefix => {
                self.template_parts.tool_prefix = Some(values::template_text(raw)?);
            }
            Setting::TemplateToolSuffix => {
                self.template_parts.tool_suffix = Some(values::template_text(raw)?);
            }
            Setting::TemplateGenerationPrompt => {
                self.template_parts.generation_prompt = Some(values::template_text(raw)?);
            }
            Setting::TemplateToolFormat => {
                self.template_parts.tool_format = Some(values::tool_format(raw)?);
            }
            // Handled by the scanner and never produced by the file reader.
            Setting::Config
            | Setting::Root
            | Setting::ConfigOnly
            | Setting::Help
            | Setting::Version => {}
        }
        Ok(())
    }

    pub fn set_sections(&mut self, sections: Vec<Section>) {
        self.sections = sections;
    }

    pub fn set_config_file(&mut self, path: Option<PathBuf>) {
        self.config.config_file = path;
    }

    /// Resolves layered and computed settings and runs the checks that span several options.
    /// `need_model` is false for `check`, which may run without a model.
    pub fn finish(mut self, env: &Env, need_model: bool) -> Result<Config, ConfigError> {
        // `values::path` refuses empty paths, so empty means no model was named.
        let listed = match &self.config.models_dir {
            Some(dir) => super::models_dir::scan(dir)?,
            None => Vec::new(),
        };
        let mut has_model = !self.config.model.as_os_str().is_empty();
        if has_model {
            check_model(&self.config.model)?;
        } else if let Some((_, first)) = listed.first() {
            // Without --model, the directory's first model is the default.
            self.config.model = first.clone();
            has_model = true;
        } else if need_model {
            return Err(ConfigError::ModelRequired);
        }
        self.config.allow_uid =
            flags_over_file(std::mem::take(&mut self.allow_uid)).unwrap_or_default();
        self.config.allow_gid =
            flags_over_file(std::mem::take(&mut self.allow_gid)).unwrap_or_default();

        self.config.api_key = resolve_api_key(
            &self.api_key,
            &self.api_key_file,
            self.config.config_file.as_ref(),
        )?;
        if let Some(addr) = self.config.tcp {
            if !addr.ip().is_loopback() && self.config.api_key.is_none() {
                return Err(ConfigError::TcpNeedsApiKey { addr });
            }
        }

        check_runtime_library(&self.config.runtime_library)?;
        check_runtime_library(&self.config.rknn_runtime_library)?;

        let socket = self.socket.take().unwrap_or_else(|| default_socket(env));
        let len = socket.as_os_str().as_bytes().len();
        if len > MAX_SOCKET_PATH {
            return Err(ConfigError::SocketPathTooLong { path: socket, len });
        }
        self.config.socket = socket;

        self.config.model_name = match self.model_name.take() {
            Some(name) => name,
            None => self
                .config
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        self.config.chat_template = self
            .template_name
            .resolve(&self.template_parts)
            .map_err(ConfigError::CustomTemplate)?;
        let served = if has_model {
            let default = (self.config.model_name.clone(), self.config.model.clone());
            super::models_dir::catalog(default, listed)
        } else {
            Vec::new()
        };
        self.config.catalog = self.model_entries(served)?;
        // One model has nothing to make room for: it stays loaded, as before models
        // directories, unless keep-alive says otherwise. Several default to Ollama's 5 minutes.
        self.config.keep_alive = self.keep_alive.unwrap_or(if self.config.catalog.len() > 1 {
            crate::engine::KeepAlive::default()
        } else {
            crate::engine::KeepAlive::Forever
        });
        Ok(self.config)
    }

    /// Each model served with its settings: the daemon's, then its section's over them. A
    /// section for a model not served, or an alias that another model answers to, is refused.
    fn model_entries(
        &self,
        served: Vec<(String, PathBuf)>,
    ) -> Result<Vec<ModelEntry>, ConfigError> {
        let file = self.config.config_file.clone().unwrap_or_default();
        let at = |line: usize, problem: String| ConfigError::ModelSection {
            path: file.clone(),
            line,
            problem,
        };
        if let Some(s) = self
            .sections
            .iter()
            .find(|s| !served.iter().any(|(name, _)| *name == s.model))
        {
            let names: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
            return Err(at(
                s.line,
                format!(
                    "[model {}]: no model of that name is served (served: {})",
                    s.model,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        // Every name a request may use, with the model it belongs to.
        let mut taken: Vec<(String, String)> = served
            .iter()
            .map(|(name, _)| (bare(name).to_owned(), name.clone()))
            .collect();
        let mut entries = Vec::with_capacity(served.len());
        for (name, path) in served {
            let mut own = self.clone();
            own.sections = Vec::new();
            let mut aliases = Vec::new();
            let mut adapters: Vec<crate::models::Adapter> = Vec::new();
            let mut vision = super::VisionSettings::default();
            let section = self.sections.iter().filter(|s| s.model == name);
            for e in section.flat_map(|s| &s.entries) {
                let invalid = |expected| ConfigError::InvalidValue {
                    origin: Origin::File {
                        path: file.clone(),
                        line: e.line,
                    },
                    name: e.name.clone(),
                    value: e.value.clone(),
                    expected,
                };
                match e.key {
                    SectionKey::Setting(key) => {
                        own.apply(key, &e.value, Layer::File).map_err(invalid)?;
                    }
                    SectionKey::Lora => {
                        let adapter = values::lora_adapter(&e.value, &path).map_err(invalid)?;
                        if adapters.iter().any(|a| a.name == adapter.name) {
                            return Err(at(
                                e.line,
                                format!(
                                    "model '{name}' has two LoRA adapters named '{}'",
                                    adapter.name
                                ),
                            ));
                        }
                        adapters.push(adapter);
                    }
                    SectionKey::VisionEncoder => {
                        vision.encoder =
                            super::vision::encoder(&e.value, &path).map_err(invalid)?;
                    }
                    SectionKey::ImageFamily => {
                        vision.family =
                            Some(super::vision::image_family(&e.value).map_err(invalid)?);
                    }
                    SectionKey::ImageTags => {
                        vision.tags = Some(super::vision::image_tags(&e.value).map_err(invalid)?);
                    }
                    SectionKey::ImageSize => {
                        vision.image_size =
                            Some(super::vision::image_size(&e.value).map_err(invalid)?);
                    }
                    SectionKey::Alias => {
                        let alias = values::model_alias(&e.value).map_err(invalid)?;
                        match taken.iter().find(|(n, _)| n == bare(&alias)) {
                            Some((_, owner)) if *owner == name => {}
                            Some((_, owner)) => {
                                return Err(at(
                                    e.line,
                                    format!(
                                        "alias '{alias}' of model '{name}' is already a name of \
                                         model '{owner}'"
                                    ),
                                ));
                            }
                            None => {
                                taken.push((bare(&alias).to_owned(), name.clone()));
                                aliases.push(alias);
                            }
                        }
                    }
                }
            }
            let chat_template = own
                .template_name
                .resolve(&own.template_parts)
                .map_err(ConfigError::CustomTemplate)?;
            entries.push(ModelEntry {
                name,
                path,
                aliases,
                adapters,
                params: own.config.model_params(),
                chat_template,
                vision,
            });
        }
        Ok(entries)
    }
}

/// A name without Ollama's `:latest` tag, as requests are matched.
fn bare(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

impl Draft {
    /// For `check` after `finish` refused the draft: the same settings without the checks that
    /// can fail, so the other checks can still run on what was configured.
    pub fn finish_lenient(mut self, env: &Env) -> Config {
        self.config.allow_uid = flags_over_file(self.allow_uid).unwrap_or_default();
        self.config.allow_gid = flags_over_file(self.allow_gid).unwrap_or_default();
        self.config.socket = self.socket.unwrap_or_else(|| default_socket(env));
        self.config.model_name = self.model_name.unwrap_or_default();
        // Each part's escapes were checked as it was read, so this holds; `finish` reports it.
        if let Ok(template) = self.template_name.resolve(&self.template_parts) {
            self.config.chat_template = template;
        }
        self.config
    }
}

/// The flags' value if they gave one, else the file's.
fn flags_over_file<T>([file, flags]: [Option<T>; 2]) -> Option<T> {
    flags.or(file)
}

/// `/run/rkllmd/rkllmd.sock` for root; otherwise under `$XDG_RUNTIME_DIR` (which must be an
/// absolute path to count), else a per-user directory in `/tmp`.
pub(super) fn default_socket(env: &Env) -> PathBuf {
    if env.euid == 0 {
        return PathBuf::from("/run/rkllmd/rkllmd.sock");
    }
    match &env.xdg_runtime_dir {
        Some(dir) if dir.is_absolute() => dir.join("rkllmd").join("rkllmd.sock"),
        _ => PathBuf::from(format!("/tmp/rkllmd-{}/rkllmd.sock", env.euid)),
    }
}

fn check_model(path: &Path) -> Result<(), ConfigError> {
    // stat first: opening a FIFO or device to test readability could block or have effects.
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::ModelMissing {
                path: path.to_owned(),
            })
        }
        Err(source) => {
            return Err(ConfigError::ModelUnreadable {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.is_file() {
        return Err(ConfigError::ModelNotRegularFile {
            path: path.to_owned(),
        });
    }
    File::open(path)
        .map(drop)
        .map_err(|source| ConfigError::ModelUnreadable {
            path: path.to_owned(),
            source,
        })
}

/// A runtime library named by path must be a regular file where it exists: `dlopen` would
/// block for good on a FIFO, with the socket already bound. A missing one is left to `dlopen`,
/// whose message (exit code 4) says more; a bare name is searched for by `dlopen` itself.
fn check_runtime_library(path: &Path) -> Result<(), ConfigError> {
    if !path.as_os_str().as_bytes().contains(&b'/') {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(ConfigError::RuntimeLibraryNotRegularFile {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The flags' key or key file if either was given, else the file's. Both in the same layer is
/// an error rather than a silent pick.
fn resolve_api_key(
    keys: &[Option<String>; 2],
    key_files: &[Option<PathBuf>; 2],
    config_file: Option<&PathBuf>,
) -> Result<Option<ApiKey>, ConfigError> {
    for layer in [Layer::Flags, Layer::File] {
        let l = layer as usize;
        let conflict_in = if layer == Layer::File {
            config_file.cloned()
        } else {
            None
        };
        match (&keys[l], &key_files[l]) {
            (Some(_), Some(_)) => return Err(ConfigError::ApiKeyConflict { file: conflict_in }),
            (Some(key), None) => {
                return ApiKey::new(key.clone())
                    .map(Some)
                    .ok_or(ConfigError::ApiKeyEmpty { path: None })
            }
            (None, Some(path)) => return read_key_file(path).map(Some),
            (None, None) => {}
        }
    }
    Ok(None)
}

fn read_key_file(path: &Path) -> Result<ApiKey, ConfigError> {
    let text = super::read::read_small(path, super::read::KEY_LIMIT).map_err(|source| {
        ConfigError::ApiKeyFileRead {
            path: path.to_owned(),
            source,
        }
    })?;
    ApiKey::new(text.trim().to_owned()).ok_or_else(|| ConfigError::ApiKeyEmpty {
        path: Some(path.to_owned()),
    })
}
