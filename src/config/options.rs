//! What an option is (the setting it sets, how it is spelled, its default as help shows it) and
//! looking one up by name or letter. The options themselves are in `options/table.rs`.

mod table;

pub(super) use table::OPTIONS;

/// What an option sets. Config-file keys and flags map to the same `Setting`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Setting {
    Model,
    ModelName,
    ModelsDir,
    MaxLoadedModels,
    KeepAlive,
    RuntimeLibrary,
    RknnRuntimeLibrary,
    Socket,
    SocketMode,
    SocketGroup,
    AllowUid,
    AllowGid,
    User,
    Tcp,
    ApiKey,
    ApiKeyFile,
    MaxConnections,
    MaxBodyBytes,
    MaxImageBytes,
    MaxImagePixels,
    MaxImagesPerRequest,
    HeaderTimeout,
    KeepaliveTimeout,
    WriteTimeout,
    OutputCapBytes,
    QueueSize,
    QueueTimeout,
    Background,
    BackgroundHold,
    RequestTimeout,
    ShutdownTimeout,
    DrainTimeout,
    AbortGrace,
    MaxContextLen,
    MaxNewTokens,
    BaseDomainId,
    NpuLock,
    EnabledCpus,
    Temperature,
    TopP,
    TopK,
    RepeatPenalty,
    FrequencyPenalty,
    PresencePenalty,
    ThinkDefault,
    NotifyFd,
    Syslog,
    LogLevel,
    ChatTemplate,
    KvCacheReuse,
    KvSnapshotDir,
    KvSnapshotLimit,
    ToolsBudget,
    EmbeddingPooling,
    TemplateBos,
    TemplateSystemPrefix,
    TemplateSystemSuffix,
    TemplateUserPrefix,
    TemplateUserSuffix,
    TemplateAssistantPrefix,
    TemplateAssistantSuffix,
    TemplateToolPrefix,
    TemplateToolSuffix,
    TemplateGenerationPrompt,
    TemplateToolFormat,
    Config,
    Root,
    ConfigOnly,
    Help,
    Version,
}

/// How an option appears on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Takes a value: `--name VALUE` or `--name=VALUE`. The string is the placeholder for help.
    Value(&'static str),
    /// A boolean: `--name` means true; `--name=VALUE` takes an explicit boolean.
    Switch,
    /// Stops parsing and does something else (`--help`, `--version`).
    Action,
}

/// The default as the help text shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DefaultText {
    None,
    /// A value in the option's own syntax; tests check it matches `Config::defaults`.
    Value(&'static str),
    /// A description of a computed default.
    Note(&'static str),
}

pub(super) struct Opt {
    pub key: Setting,
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    pub default: DefaultText,
    pub section: &'static str,
    pub help: &'static str,
}

impl Opt {
    /// Whether the option may appear in the config file.
    pub fn in_file(&self) -> bool {
        !matches!(
            self.key,
            Setting::Config
                | Setting::Root
                | Setting::ConfigOnly
                | Setting::Help
                | Setting::Version
        )
    }
}

impl Opt {
    /// Whether a `[model NAME]` section may set the option: what a model is loaded with
    /// (context, token cap, sampling, IOMMU domain) and rendered with (the chat template).
    pub fn per_model(&self) -> bool {
        use Setting as S;
        matches!(
            self.key,
            S::MaxContextLen
                | S::MaxNewTokens
                | S::BaseDomainId
                | S::Temperature
                | S::TopP
                | S::TopK
                | S::RepeatPenalty
                | S::FrequencyPenalty
                | S::PresencePenalty
                | S::ChatTemplate
                | S::TemplateBos
                | S::TemplateSystemPrefix
                | S::TemplateSystemSuffix
                | S::TemplateUserPrefix
                | S::TemplateUserSuffix
                | S::TemplateAssistantPrefix
                | S::TemplateAssistantSuffix
                | S::TemplateToolPrefix
                | S::TemplateToolSuffix
                | S::TemplateGenerationPrompt
                | S::TemplateToolFormat
        )
    }
}

pub(super) fn by_name(name: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.name == name)
}

pub(super) fn by_short(c: char) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}
