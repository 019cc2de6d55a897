//! Why the command line or the config file was refused.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a value came from, so the message can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    File { path: PathBuf, line: usize },
}

#[derive(Debug)]
pub enum ConfigError {
    /// An option the table does not know; `option` is what was typed, without any `=value`.
    UnknownOption {
        option: String,
    },
    /// A value-taking option at the end of the line or followed by another option.
    MissingValue {
        option: String,
    },
    /// `--help=x` and the like.
    UnexpectedValue {
        option: String,
    },
    /// A word that is neither an option nor a known subcommand in first position.
    UnexpectedArgument {
        arg: String,
    },
    /// `name` is the flag (`--top-p`) or the key as written in the file (`top_p`).
    InvalidValue {
        origin: Origin,
        name: String,
        value: String,
        expected: String,
    },
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    /// A `[model NAME]` section that cannot be applied: a second one for the same model, a
    /// key that is not per model, a model not served, an alias another model has.
    ModelSection {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// A config-file line that is not `key = value`.
    Syntax {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
    ConfigFileMissing {
        path: PathBuf,
    },
    ConfigFileRead {
        path: PathBuf,
        source: io::Error,
    },
    ModelRequired,
    /// `models-dir` cannot be listed.
    ModelsDirUnreadable {
        path: PathBuf,
        source: io::Error,
    },
    /// `models-dir` holds no `*.rkllm` file.
    NoModelsIn {
        path: PathBuf,
    },
    ModelMissing {
        path: PathBuf,
    },
    ModelNotRegularFile {
        path: PathBuf,
    },
    ModelUnreadable {
        path: PathBuf,
        source: io::Error,
    },
    /// A FIFO, a device or a directory where the runtime library should be.
    RuntimeLibraryNotRegularFile {
        path: PathBuf,
    },
    /// Both a key and a key file in the same place; `file` is the config file, or `None` for
    /// the command line.
    ApiKeyConflict {
        file: Option<PathBuf>,
    },
    ApiKeyFileRead {
        path: PathBuf,
        source: io::Error,
    },
    /// An empty key; `path` is the key file it came from, if any.
    ApiKeyEmpty {
        path: Option<PathBuf>,
    },
    TcpNeedsApiKey {
        addr: SocketAddr,
    },
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
    },
    /// `--config-only` outside `rkllmd check`.
    /// The `chat-template-*` keys do not make a template.
    CustomTemplate(crate::chat::CustomPartsError),
    CheckOptionOutsideCheck {
        option: &'static str,
    },
    /// Re-read on SIGHUP, the command line did not start the daemon.
    NotARun,
}

/// Longest socket path `bind(2)` accepts: `sun_path` holds 108 bytes including the NUL.
pub const MAX_SOCKET_PATH: usize = 107;

impl ConfigError {
    /// The process exit code for this error: always the usage code of the scheme described
    /// in [`crate::exit`].
    pub fn exit_code(&self) -> i32 {
        crate::exit::USAGE
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigError::{
            ApiKeyConflict, ApiKeyEmpty, ApiKeyFileRead, CheckOptionOutsideCheck,
            ConfigFileMissing, ConfigFileRead, CustomTemplate, InvalidValue, MissingValue,
            ModelMissing, ModelNotRegularFile, ModelRequired, ModelSection, ModelUnreadable,
            ModelsDirUnreadable, NoModelsIn, NotARun, RuntimeLibraryNotRegularFile,
            SocketPathTooLong, Syntax, TcpNeedsApiKey, UnexpectedArgument, UnexpectedValue,
            UnknownKey, UnknownOption,
        };
        match self {
            UnknownOption { option } => write!(f, "unknown option '{option}' (see --help)"),
            MissingValue { option } => write!(f, "option '{option}' needs a value (see --help)"),
            UnexpectedValue { option } => write!(f, "option '{option}' takes no value"),
            UnexpectedArgument { arg } => write!(f, "unexpected argument '{arg}' (see --help)"),
            InvalidValue { origin, name, value, expected } => {
                if let Origin::File { path, line } = origin {
                    write!(f, "{} line {line}: ", path.display())?;
                }
                write!(f, "invalid value '{value}' for {name}: expected {expected}")
            }
            UnknownKey { path, line, key } => {
                write!(f, "{} line {line}: unknown key '{key}'", path.display())
            }
            Syntax { path, line, problem } => write!(f, "{} line {line}: {problem}", path.display()),
            ModelSection { path, line, problem } => {
                write!(f, "{} line {line}: {problem}", path.display())
            }
            ConfigFileMissing { path } => write!(f, "config file '{}' does not exist", path.display()),
            ConfigFileRead { path, .. } => write!(f, "cannot read config file '{}'", path.display()),
            ModelRequired => write!(f, "no model given: pass --model FILE or set 'model' in the config file"),
            ModelsDirUnreadable { path, .. } => write!(f, "cannot list the models directory '{}'", path.display()),
            NoModelsIn { path } => write!(f, "the models directory '{}' holds no *.rkllm file", path.display()),
            ModelMissing { path } => write!(f, "model file '{}' does not exist", path.display()),
            ModelNotRegularFile { path } => write!(f, "model '{}' is not a regular file", path.display()),
            ModelUnreadable { path, .. } => write!(f, "cannot read model file '{}'", path.display()),
            RuntimeLibraryNotRegularFile { path } => {
                write!(f, "runtime library '{}' is not a regular file", path.display())
            }
            ApiKeyConflict { file: None } => write!(f, "--api-key and --api-key-file cannot both be given"),
            ApiKeyConflict { file: Some(path) } => {
                write!(f, "{} sets both api_key and api_key_file; keep one", path.display())
            }
            ApiKeyFileRead { path, .. } => write!(f, "cannot read API key file '{}'", path.display()),
            ApiKeyEmpty { path: None } => write!(f, "the API key is empty"),
            ApiKeyEmpty { path: Some(path) } => write!(f, "API key file '{}' is empty", path.display()),
            TcpNeedsApiKey { addr } => write!(
                f,
                "--tcp {addr} is not a loopback address and needs an API key (--api-key-file or --api-key)"
            ),
            SocketPathTooLong { path, len } => write!(
                f,
                "socket path '{}' is {len} bytes long; at most {MAX_SOCKET_PATH} fit",
                path.display()
            ),
            CustomTemplate(e) => write!(f, "{e}"),
            CheckOptionOutsideCheck { option } => {
                write!(f, "{option} is only for 'rkllmd check' (see --help)")
            }
            NotARun => write!(f, "the command line does not start the daemon"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::ConfigFileRead { source, .. }
            | ConfigError::ModelUnreadable { source, .. }
            | ConfigError::ModelsDirUnreadable { source, .. }
            | ConfigError::ApiKeyFileRead { source, .. } => Some(source),
            _ => None,
        }
    }
}
