//! The command line and the config file.
//!
//! [`parse`] reads the command line, then the config file (the one named by `--config`, or
//! [`DEFAULT_CONFIG`] when it exists), applies the file's values and then the flags' (flags
//! win), and checks the result. Nothing here reads the process environment directly: callers
//! pass an [`Env`], so the outcome depends only on the arguments and the files they name.

mod args;
mod error;
mod file;
mod help;
mod models_dir;
mod options;
mod read;
mod reload;
mod secret;
mod settings;
mod template;
mod values;
mod vision;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::{ModelParams, Sampling};

pub use error::{ConfigError, Origin, MAX_SOCKET_PATH};
pub use help::help;
pub use reload::{needs_restart, Rereader};
pub use secret::ApiKey;
pub use template::ChatTemplate;
pub use vision::{EncoderSetting, VisionSettings};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/rkllmd/rkllmd.conf";

/// What `main` should do.
#[derive(Debug, Clone)]
pub enum Command {
    Run(Config),
    /// Print the help text (the payload) and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
    /// Run the doctor (`rkllmd check`).
    Check(CheckSetup),
    /// Check the runtime's behaviour on this board (`rkllmd selftest`): a valid configuration
    /// with a model.
    Selftest(Config),
    /// Watch a running daemon (`rkllmd top`).
    Top(TopSetup),
}

/// Where `rkllmd top` finds the daemon: its socket (from the configuration, as the daemon
/// reads it), or the TCP address given to `top` itself, with the configured API key.
#[derive(Debug, Clone)]
pub struct TopSetup {
    pub socket: PathBuf,
    /// `--tcp` on `top`'s own command line; a `tcp` in the config file is the daemon's
    /// listener, and `top` still prefers the socket.
    pub tcp: Option<SocketAddr>,
    pub api_key: Option<ApiKey>,
}

/// What `rkllmd check` works from. A configuration that does not validate is one of the things
/// it reports, not a reason to stop: the other checks run on what could be read.
#[derive(Debug, Clone)]
pub struct CheckSetup {
    /// `--root`: where the system files the checks read live (`/` on the board).
    pub root: PathBuf,
    /// `--config-only`: report the configuration and skip the board checks.
    pub config_only: bool,
    /// Why the configuration is invalid (the message `rkllmd` would exit with), if it is.
    pub config_error: Option<String>,
    /// The configuration when valid; otherwise every value that could be applied.
    pub config: Config,
}

/// The parts of the process environment that change defaults.
#[derive(Debug, Clone)]
pub struct Env {
    pub euid: u32,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub default_config: PathBuf,
}

impl Env {
    /// The real environment of this process.
    pub fn from_process() -> Env {
        Env {
            euid: nix::unistd::geteuid().as_raw(),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            default_config: PathBuf::from(DEFAULT_CONFIG),
        }
    }
}

/// A model served, with the settings it is loaded and rendered with: the daemon's, with its
/// `[model NAME]` section's over them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub path: PathBuf,
    /// The other names it answers to (`alias` in its section), each also as `NAME:latest`.
    pub aliases: Vec<String>,
    /// LoRA adapters its section names (`lora`), before the ones found beside its file.
    pub adapters: Vec<crate::models::Adapter>,
    pub params: ModelParams,
    pub chat_template: ChatTemplate,
    /// Its section's vision keys (`vision-encoder`, `image-family`, ...).
    pub vision: VisionSettings,
}

impl ModelEntry {
    /// A model with the daemon's settings and no alias.
    pub fn new(name: &str, path: PathBuf, cfg: &Config) -> ModelEntry {
        ModelEntry {
            name: name.to_owned(),
            path,
            aliases: Vec::new(),
            adapters: Vec::new(),
            params: cfg.model_params(),
            chat_template: cfg.chat_template.clone(),
            vision: VisionSettings::default(),
        }
    }
}

/// `npu-lock`: what is locked so that only one instance loads a model onto the NPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpuLock {
    /// The RKNPU device node, when this system has one.
    Auto,
    /// This file (created when missing).
    File(PathBuf),
    /// Nothing: the board has room for more than one model.
    None,
}

/// The daemon's settings. `Default` gives the documented defaults, no model, and the socket
/// root would use.
#[derive(Debug, Clone)]
pub struct Config {
    /// An existing, readable regular file. Empty only in [`Command::Check`] when no model was
    /// named (`check` may run without one).
    pub model: PathBuf,
    /// `--model-name`, else the model file name without its extension (empty without a model).
    pub model_name: String,
    /// `models-dir`: every `*.rkllm` in it is served too (see `catalog`).
    pub models_dir: Option<PathBuf>,
    /// Every model served, the default (`model`) first, each with its settings. One entry
    /// with `--model` alone; empty only where `model` may be.
    pub catalog: Vec<ModelEntry>,
    /// `max-loaded-models`: models resident at once (1 to 8).
    pub max_loaded_models: usize,
    /// `keep-alive`: how long a model stays loaded after a request that does not say.
    pub keep_alive: crate::engine::KeepAlive,
    /// The runtime to dlopen: a file name searched for, or a path (contains '/') used as is.
    pub runtime_library: PathBuf,
    /// The RKNN runtime for vision encoders, dlopened only with a vision model; as
    /// `runtime_library`.
    pub rknn_runtime_library: PathBuf,
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// A group name or number, resolved by `lifecycle::lookup_group`.
    pub socket_group: Option<String>,
    /// Empty lists together mean everyone who can open the socket may connect.
    pub allow_uid: Vec<u32>,
    pub allow_gid: Vec<u32>,
    pub user: Option<String>,
    pub tcp: Option<SocketAddr>,
    pub api_key: Option<ApiKey>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// `--root`: where `/sys`, `/proc` and the rest of the system live for the board figures
    /// in `/metrics` (`/` on the board; a fake tree in tests).
    pub root: PathBuf,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// `max-image-bytes`, `max-image-pixels`, `max-images-per-request`.
    pub image_limits: crate::vision::image::ImageLimits,
    pub output_cap_bytes: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// How long a connection with output pending may go without any of it being written.
    pub write_timeout: Duration,
    pub queue_size: usize,
    pub queue_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// How long a drain (SIGQUIT) waits for running and queued requests before a prompt stop.
    pub drain_timeout: Duration,
    pub abort_grace: Duration,
    pub max_context_len: u32,
    pub max_new_tokens: u32,
    /// `extend_param.base_domain_id`: the NPU IOMMU domain of the model.
    pub base_domain_id: i32,
    /// What guards the NPU against a second instance.
    pub npu_lock: NpuLock,
    /// The CPUs the runtime may use, as a bit mask; `None`: the runtime's default.
    pub enabled_cpus: Option<u32>,
    /// Sampling defaults; a request may override each of them.
    pub sampling: Sampling,
    pub notify_fd: Option<RawFd>,
    pub syslog: bool,
    /// `--log-level`; `RUST_LOG`, when set, is meant to win over it.
    pub log_level: log::LevelFilter,
    pub chat_template: ChatTemplate,
    pub kv_cache_reuse: bool,
    /// `kv-snapshot-dir`; `None`: beside the socket (see `Config::snapshot_dir`).
    pub kv_snapshot_dir: Option<PathBuf>,
    /// `kv-snapshot-limit` in bytes; 0: no snapshots.
    pub kv_snapshot_limit: u64,
    /// `tools-budget`: the percentage of the context a request's tool definitions may take.
    pub tools_budget_percent: u8,
    /// `embedding-pooling`: how the embeddings endpoints pool token states.
    pub embedding_pooling: crate::engine::Pooling,
    /// `background`: which requests yield to streamed ones.
    pub background: crate::engine::BackgroundPolicy,
    /// `background-hold`: how long a background request waits on a free NPU for a stream.
    pub background_hold: Duration,
    /// `think-default`: thinking for requests that do not say.
    pub think_default: crate::engine::ThinkDefault,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            model: PathBuf::new(),
            model_name: String::new(),
            models_dir: None,
            catalog: Vec::new(),
            max_loaded_models: 1,
            keep_alive: crate::engine::KeepAlive::Forever, // one model; several: 5m (`finish`)
            runtime_library: PathBuf::from(crate::runtime::DEFAULT_LIBRARY),
            rknn_runtime_library: PathBuf::from(crate::runtime::rknn::DEFAULT_LIBRARY),
            socket: PathBuf::from("/run/rkllmd/rkllmd.sock"),
            socket_mode: 0o660,
            socket_group: None,
            allow_uid: Vec::new(),
            allow_gid: Vec::new(),
            user: None,
            tcp: None,
            api_key: None,
            config_file: None,
            root: PathBuf::from("/"),
            max_connections: 256,
            max_body_bytes: 1 << 20,
            image_limits: crate::vision::image::ImageLimits::default(),
            output_cap_bytes: 4 << 20,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            write_timeout: Duration::from_secs(30),
            queue_size: 8,
            queue_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(60),
            abort_grace: Duration::from_secs(5),
            max_context_len: 4096,
            max_new_tokens: 4096,
            base_domain_id: 0,
            npu_lock: NpuLock::Auto,
            enabled_cpus: None,
            sampling: Sampling::default(),
            notify_fd: None,
            syslog: false,
            log_level: log::LevelFilter::Info,
            chat_template: ChatTemplate::Auto,
            kv_cache_reuse: true,
            kv_snapshot_dir: None,
            kv_snapshot_limit: 256 << 20,
            tools_budget_percent: 25,
            embedding_pooling: crate::engine::Pooling::Auto,
            background: crate::engine::BackgroundPolicy::NonStreamed,
            background_hold: Duration::from_millis(250),
            think_default: crate::engine::ThinkDefault::Auto,
        }
    }
}

impl Config {
    /// The daemon's load parameters: a model's unless its section says otherwise.
    pub fn model_params(&self) -> ModelParams {
        ModelParams {
            max_context_len: self.max_context_len,
            max_new_tokens: self.max_new_tokens,
            sampling: self.sampling,
            base_domain_id: self.base_domain_id,
        }
    }

    fn with_root(mut self, root: PathBuf) -> Config {
        self.root = root;
        self
    }

    /// Where KV-cache snapshots go: `kv-snapshot-dir`, else the socket's path with
    /// `.snapshots` added (the socket's directory is the daemon's own, on a tmpfs under `/run`
    /// or `$XDG_RUNTIME_DIR` by default, and one daemon serves one socket).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.kv_snapshot_dir.clone().unwrap_or_else(|| {
            let mut p = self.socket.clone().into_os_string();
            p.push(".snapshots");
            PathBuf::from(p)
        })
    }

    /// Whether `presented` is the configured API key, compared in constant time. `false` when
    /// no key is configured: callers decide separately whether a key is required.
    pub fn api_key_matches(&self, presented: &[u8]) -> bool {
        self.api_key
            .as_ref()
            .is_some_and(|key| key.matches(presented))
    }
}

/// Parses `args`, the arguments after the program name (`std::env::args().skip(1)`), and the
/// config file.
///
/// For `check`, only a bad command line is an error; an invalid configuration is reported in
/// the [`CheckSetup`].
pub fn parse(args: &[String], env: &Env) -> Result<Command, ConfigError> {
    let line = match args::scan(args)? {
        args::Scan::Help => return Ok(Command::Help(help())),
        args::Scan::Version => return Ok(Command::Version),
        args::Scan::Parsed(line) => line,
    };

    let root = line.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !line.check && line.config_only {
        return Err(ConfigError::CheckOptionOutsideCheck {
            option: "--config-only",
        });
    }
    if line.top {
        let (draft, error) = layers(&line, env);
        if let Some(e) = error {
            return Err(e);
        }
        let tcp_flag = line.flags.iter().any(|f| f.key == options::Setting::Tcp);
        let cfg = draft.finish(env, false)?;
        return Ok(Command::Top(TopSetup {
            tcp: cfg.tcp.filter(|_| tcp_flag),
            socket: cfg.socket,
            api_key: cfg.api_key,
        }));
    }
    if line.selftest {
        return match layers(&line, env) {
            (draft, None) => draft
                .finish(env, true)
                .map(|c| Command::Selftest(c.with_root(root))),
            (_, Some(e)) => Err(e),
        };
    }
    if !line.check {
        return match layers(&line, env) {
            (draft, None) => draft
                .finish(env, true)
                .map(|c| Command::Run(c.with_root(root))),
            (_, Some(e)) => Err(e),
        };
    }
    let (config, config_error) = match layers(&line, env) {
        (draft, None) => match draft.clone().finish(env, false) {
            Ok(config) => (config, None),
            Err(e) => (draft.finish_lenient(env), Some(e)),
        },
        (draft, Some(e)) => (draft.finish_lenient(env), Some(e)),
    };
    Ok(Command::Check(CheckSetup {
        root,
        config_only: line.config_only,
        config_error: config_error.map(|e| crate::causes::WithCauses(&e).to_string()),
        config,
    }))
}

/// The config file's values, then the flags', and the first error if any. The draft holds every
/// value that was valid either way, so `check` can go on.
fn layers(line: &args::CommandLine, env: &Env) -> (settings::Draft, Option<ConfigError>) {
    let mut draft = settings::Draft::new();
    let mut first_error = None;
    let loaded = match &line.config {
        Some(path) => match file::load(path) {
            Ok(Some(parsed)) => Some((path.clone(), parsed)),
            Ok(None) => {
                first_error = Some(ConfigError::ConfigFileMissing { path: path.clone() });
                None
            }
            Err(e) => {
                first_error = Some(e);
                None
            }
        },
        None => match file::load(&env.default_config) {
            Ok(Some(parsed)) => Some((env.default_config.clone(), parsed)),
            Ok(None) => None,
            Err(e) => {
                first_error = Some(e);
                None
            }
        },
    };
    let config_file = loaded.as_ref().map(|(path, _)| path.clone());
    if let Some((path, parsed)) = &loaded {
        for entry in &parsed.entries {
            if let Err(expected) = draft.apply(entry.key, &entry.value, settings::Layer::File) {
                first_error.get_or_insert(ConfigError::InvalidValue {
                    origin: Origin::File {
                        path: path.clone(),
                        line: entry.line,
                    },
                    name: entry.name.clone(),
                    value: entry.value.clone(),
                    expected,
                });
            }
        }
    }
    for flag in &line.flags {
        if let Err(expected) = draft.apply(flag.key, &flag.value, settings::Layer::Flags) {
            first_error.get_or_insert(ConfigError::InvalidValue {
                origin: Origin::CommandLine,
                name: flag.name.clone(),
                value: flag.value.clone(),
                expected,
            });
        }
    }
    if let Some((_, parsed)) = loaded {
        draft.set_sections(parsed.sections);
    }
    draft.set_config_file(config_file);
    (draft, first_error)
}
