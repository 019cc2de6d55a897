//! The option table: every flag and config-file key, its help text and its default.
//!
//! The help text is generated from this table, so a documented option cannot go missing; a unit
//! test checks that each documented default parses to the value `Config::defaults` uses.

use super::{DefaultText, Kind, Opt, Setting};

const MODEL: &str = "Model";
const ACCESS: &str = "Sockets and access";
const LIMITS: &str = "Limits and timeouts";
const SAMPLING: &str = "Generation defaults (a request may override them)";
const PROCESS: &str = "Process";
const TEMPLATE: &str = "Custom chat template (chat-template = custom; \\n and \\t are decoded)";

macro_rules! opt {
    ($key:ident, $name:literal, $kind:expr, $default:expr, $section:expr, $help:literal) => {
        Opt {
            key: Setting::$key,
            name: $name,
            short: None,
            kind: $kind,
            default: $default,
            section: $section,
            help: $help,
        }
    };
}

use DefaultText::{None as NoDefault, Note, Value as Dv};
use Kind::{Action, Switch, Value as V};

pub(in crate::config) const OPTIONS: &[Opt] = &[
    opt!(
        Model,
        "model",
        V("FILE"),
        NoDefault,
        MODEL,
        "The .rkllm model file to serve (required to run unless a\nmodels directory is given)"
    ),
    opt!(
        ModelName,
        "model-name",
        V("NAME"),
        Note("the model file name without extension"),
        MODEL,
        "Model name reported to clients"
    ),
    opt!(
        ModelsDir,
        "models-dir",
        V("DIR"),
        NoDefault,
        MODEL,
        "Serve every *.rkllm in DIR, each named after its file name\nwithout extension (also NAME:latest); requests choose one\nby their model field, loaded when its turn comes (see\n\"Several models\" in the README). A request naming no\nmodel gets --model's, or else the first by name, which is\nloaded at start"
    ),
    opt!(
        MaxLoadedModels,
        "max-loaded-models",
        V("N"),
        Dv("1"),
        MODEL,
        "Models resident at once (1 to 8), each its own runtime\nhandle in NPU memory domain base-domain-id + its slot; a\nload beyond N, or beyond the board's MemAvailable, unloads\nthe least recently used idle model first"
    ),
    opt!(
        KeepAlive,
        "keep-alive",
        V("DURATION"),
        Note("5m with several models; one model stays loaded"),
        MODEL,
        "How long a model stays loaded after a request that sets no\nkeep_alive (Ollama's field): 30s, 5m, 1h, seconds; 0 unloads\nit after the answer, a negative value never; the next\nrequest loads it again"
    ),
    opt!(
        RuntimeLibrary,
        "runtime-library",
        V("FILE"),
        Dv("librkllmrt.so"),
        MODEL,
        "The RKLLM runtime to load: a file name is searched for as\ndlopen does (LD_LIBRARY_PATH, ld.so.cache, /lib, /usr/lib);\na name with '/' is used as is"
    ),
    opt!(
        RknnRuntimeLibrary,
        "rknn-runtime-library",
        V("FILE"),
        Dv("librknnrt.so"),
        MODEL,
        "The RKNN runtime that runs vision encoders, loaded only when a\nvision model (a .rknn file beside the .rkllm) is: searched for\nand used as runtime-library is"
    ),
    opt!(
        ChatTemplate,
        "chat-template",
        V("NAME"),
        Dv("auto"),
        MODEL,
        "How conversations are rendered: a preset (chatml, qwen2,\nqwen2.5, qwen3, llama3, gemma2, gemma3, phi3, deepseek-r1,\nminicpm, internlm2); 'auto' (guess from the model file name,\nelse 'runtime'); 'custom' (the chat-template-* keys below); or\n'runtime' (the runtime applies the model's built-in template and\nsees only the newest user turn)"
    ),
    opt!(
        TemplateBos,
        "chat-template-bos",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text at the very start of the prompt (e.g. <|begin_of_text|>)"
    ),
    opt!(
        TemplateSystemPrefix,
        "chat-template-system-prefix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text before a system turn"
    ),
    opt!(
        TemplateSystemSuffix,
        "chat-template-system-suffix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text after a system turn"
    ),
    opt!(
        TemplateUserPrefix,
        "chat-template-user-prefix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text before a user turn"
    ),
    opt!(
        TemplateUserSuffix,
        "chat-template-user-suffix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text after a user turn"
    ),
    opt!(
        TemplateAssistantPrefix,
        "chat-template-assistant-prefix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text before an assistant turn"
    ),
    opt!(
        TemplateAssistantSuffix,
        "chat-template-assistant-suffix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text after an assistant turn"
    ),
    opt!(
        TemplateToolPrefix,
        "chat-template-tool-prefix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text before a tool result"
    ),
    opt!(
        TemplateToolSuffix,
        "chat-template-tool-suffix",
        V("TEXT"),
        NoDefault,
        TEMPLATE,
        "Text after a tool result"
    ),
    opt!(
        TemplateGenerationPrompt,
        "chat-template-generation-prompt",
        V("TEXT"),
        Note("the assistant prefix"),
        TEMPLATE,
        "Text that opens the answer"
    ),
    opt!(
        TemplateToolFormat,
        "chat-template-tool-format",
        V("FORMAT"),
        Note("hermes"),
        TEMPLATE,
        "How tools are written and calls read:\nhermes (Qwen's <tools> block, <tool_call>\nanswers) or llama3 (Llama 3.1's JSON calls)"
    ),
    opt!(
        KvCacheReuse,
        "kv-cache-reuse",
        V("BOOL"),
        Dv("true"),
        MODEL,
        "Keep the conversation in the runtime's KV cache between turns\nand prefill only what is new (needs a chat template other than\n'runtime'); false re-prefills every turn, for comparison"
    ),
    opt!(
        KvSnapshotDir,
        "kv-snapshot-dir",
        V("DIR"),
        Note("the socket's path + .snapshots"),
        MODEL,
        "Where a conversation's KV cache is kept while other\nrequests (a chat UI's title and tag requests, another\nclient) use the cache, to be restored when it continues:\nkeep it on a tmpfs (the default, beside the socket, is).\nMade (mode 0700) and emptied at start, removed at shutdown"
    ),
    opt!(
        KvSnapshotLimit,
        "kv-snapshot-limit",
        V("BYTES"),
        Dv("256M"),
        MODEL,
        "Room the snapshots may take; the least recently used go\nfirst. One is saved only when its measured cost is below\nthe prefill it spares; 0 turns snapshots off"
    ),
    opt!(
        ToolsBudget,
        "tools-budget",
        V("PERCENT"),
        Dv("25%"),
        MODEL,
        "Share of the context a request's tool definitions may take\n(0% to 100%). Tools beyond it are left out: first kept are\nthose the conversation called, then those the newest user\nmessage names, then the others in request order while they\nfit; the response's X-Rkllmd-Warning names the ones left out"
    ),
    opt!(
        EmbeddingPooling,
        "embedding-pooling",
        V("POOLING"),
        Dv("auto"),
        MODEL,
        "How the embeddings endpoints make one vector of a text's token\nstates: mean, last (the last token's, as Qwen3 embedding\nmodels are trained), or auto (last for a model whose name\nsays qwen3 and embed, mean otherwise)"
    ),
    opt!(
        MaxContextLen,
        "max-context-len",
        V("N"),
        Dv("4096"),
        MODEL,
        "Context length the model is loaded with, in tokens (at least 64)"
    ),
    opt!(
        MaxNewTokens,
        "max-new-tokens",
        V("N"),
        Dv("4096"),
        MODEL,
        "Most tokens one request may generate"
    ),
    opt!(
        BaseDomainId,
        "base-domain-id",
        V("N"),
        Dv("0"),
        MODEL,
        "NPU IOMMU domain of the model (extend_param.base_domain_id,\n0 to 15): give each rkllmd on a board its own, and use 1 beside\nan RKNN model (the vision encoder of Rockchip's multimodal demo)\non RK3588/RK3576"
    ),
    opt!(
        NpuLock,
        "npu-lock",
        V("auto|none|FILE"),
        Dv("auto"),
        MODEL,
        "What keeps a second rkllmd (on another socket) from loading a\nmodel onto the same NPU: 'auto' locks the RKNPU device node\n(none on a host without one); FILE locks that file instead\n(created if missing; every instance must name the same one);\n'none' when the board has room for more than one model (give\neach its own base-domain-id). Refused: exit code 8"
    ),
    opt!(
        EnabledCpus,
        "enabled-cpus",
        V("LIST"),
        Note("the runtime's choice"),
        MODEL,
        "CPUs the runtime's threads may use, as a list such as 4-7 (the\nRK3588's Cortex-A76 cores); sets extend_param.enabled_cpus_mask\nand enabled_cpus_num"
    ),
    opt!(
        Socket,
        "socket",
        V("PATH"),
        Note("/run/rkllmd/rkllmd.sock as root"),
        ACCESS,
        "Unix socket to serve on; without root:\n\
         $XDG_RUNTIME_DIR/rkllmd/rkllmd.sock or /tmp/rkllmd-UID/rkllmd.sock"
    ),
    opt!(
        SocketMode,
        "socket-mode",
        V("OCTAL"),
        Dv("0660"),
        ACCESS,
        "Permission bits of the socket file"
    ),
    opt!(
        SocketGroup,
        "socket-group",
        V("NAME"),
        Note("the daemon's group"),
        ACCESS,
        "Group owning the socket and its directory; its members may connect"
    ),
    opt!(
        AllowUid,
        "allow-uid",
        V("N[,N...]"),
        Note("everyone who can open the socket"),
        ACCESS,
        "Only these user ids may connect (repeatable; root always may)"
    ),
    opt!(
        AllowGid,
        "allow-gid",
        V("N[,N...]"),
        Note("everyone who can open the socket"),
        ACCESS,
        "Only these primary group ids may connect (repeatable)"
    ),
    opt!(
        Tcp,
        "tcp",
        V("ADDR:PORT"),
        Note("off"),
        ACCESS,
        "Also listen on TCP; a non-loopback address needs an API key"
    ),
    opt!(
        ApiKey,
        "api-key",
        V("KEY"),
        Note("none"),
        ACCESS,
        "Bearer token clients must send (ps shows it: use --api-key-file)"
    ),
    opt!(
        ApiKeyFile,
        "api-key-file",
        V("FILE"),
        Note("none"),
        ACCESS,
        "File whose content (trimmed) is the API key"
    ),
    opt!(
        MaxConnections,
        "max-connections",
        V("N"),
        Dv("256"),
        LIMITS,
        "Open client connections (TCP peers get 3/4 at most); more get 503"
    ),
    opt!(
        MaxBodyBytes,
        "max-body-bytes",
        V("N"),
        Dv("1M"),
        LIMITS,
        "Largest request body (K, M, G suffixes allowed)"
    ),
    opt!(
        MaxImageBytes,
        "max-image-bytes",
        V("N"),
        Dv("8M"),
        LIMITS,
        "Largest encoded image a request may carry (K, M suffixes\nallowed); images come base64 in the body, so max-body-bytes\nmust leave room for them (4/3 of their size)"
    ),
    opt!(
        MaxImagePixels,
        "max-image-pixels",
        V("N"),
        Dv("16M"),
        LIMITS,
        "Most pixels (width x height, K and M = x1024 and x1048576\nallowed) an image's header may claim: larger ones are\nrefused before any decoding (decompression bombs)"
    ),
    opt!(
        MaxImagesPerRequest,
        "max-images-per-request",
        V("N"),
        Dv("4"),
        LIMITS,
        "Images one request may carry, over all its messages (0: none)"
    ),
    opt!(
        OutputCapBytes,
        "output-cap-bytes",
        V("N"),
        Dv("4M"),
        LIMITS,
        "Unsent output per connection at which its generation pauses"
    ),
    opt!(
        HeaderTimeout,
        "header-timeout",
        V("SECS"),
        Dv("10"),
        LIMITS,
        "Time a client has to send the request headers"
    ),
    opt!(
        KeepaliveTimeout,
        "keepalive-timeout",
        V("SECS"),
        Dv("75"),
        LIMITS,
        "Idle time before a kept-alive connection is closed"
    ),
    opt!(
        WriteTimeout,
        "write-timeout",
        V("SECS"),
        Dv("30"),
        LIMITS,
        "Time output may wait unread before the client is cut off"
    ),
    opt!(
        QueueSize,
        "queue-size",
        V("N"),
        Dv("8"),
        LIMITS,
        "Requests waiting for the model; more are answered 503"
    ),
    opt!(
        QueueTimeout,
        "queue-timeout",
        V("SECS"),
        Dv("120"),
        LIMITS,
        "Longest wait in the queue"
    ),
    opt!(
        Background,
        "background",
        V("CLASS"),
        Dv("non-streamed"),
        LIMITS,
        "Requests that wait for streamed ones: 'non-streamed' (titles,\ntags, embeddings: they are queued behind streams, and one that\nhas produced nothing yet is aborted and run again when a stream\narrives, at most 3 times) or 'none' (arrival order)"
    ),
    opt!(
        BackgroundHold,
        "background-hold",
        V("MS"),
        Dv("250"),
        LIMITS,
        "How long a background request waits on a free NPU for a\nstream to come first (a chat UI sends its title request just\nbefore the chat); 0: it starts at once"
    ),
    opt!(
        RequestTimeout,
        "request-timeout",
        V("SECS"),
        Dv("600"),
        LIMITS,
        "Longest generation before it is aborted"
    ),
    opt!(
        AbortGrace,
        "abort-grace",
        V("SECS"),
        Dv("5"),
        LIMITS,
        "Time a run may ignore an abort before the engine counts as wedged"
    ),
    opt!(
        ShutdownTimeout,
        "shutdown-timeout",
        V("SECS"),
        Dv("10"),
        LIMITS,
        "Time running requests get to finish on shutdown"
    ),
    opt!(
        DrainTimeout,
        "drain-timeout",
        V("SECS"),
        Dv("60"),
        LIMITS,
        "Time a drain (SIGQUIT) gives requests before stopping as on SIGTERM"
    ),
    opt!(
        Temperature,
        "temperature",
        V("F"),
        Dv("0.8"),
        SAMPLING,
        "Sampling temperature (0 to 100)"
    ),
    opt!(
        TopP,
        "top-p",
        V("F"),
        Dv("0.9"),
        SAMPLING,
        "Nucleus sampling probability (above 0, at most 1)"
    ),
    opt!(
        TopK,
        "top-k",
        V("N"),
        Dv("1"),
        SAMPLING,
        "Sample from the N likeliest tokens (0 = no limit)"
    ),
    opt!(
        RepeatPenalty,
        "repeat-penalty",
        V("F"),
        Dv("1.1"),
        SAMPLING,
        "Penalty for repeated tokens (above 0, at most 10; 1 = off)"
    ),
    opt!(
        FrequencyPenalty,
        "frequency-penalty",
        V("F"),
        Dv("0.0"),
        SAMPLING,
        "Frequency penalty (-2 to 2)"
    ),
    opt!(
        PresencePenalty,
        "presence-penalty",
        V("F"),
        Dv("0.0"),
        SAMPLING,
        "Presence penalty (-2 to 2)"
    ),
    opt!(
        ThinkDefault,
        "think-default",
        V("WHEN"),
        Dv("auto"),
        SAMPLING,
        "Whether a request that does not say thinks (Qwen3-style models):\n'auto' (as the chat template does: Qwen3 thinks; with the\nruntime's template, no), 'on', 'off', or 'interactive' (interactive\nrequests think, background ones such as titles do not, as\nthe background option classes them)"
    ),
    opt!(
        Config,
        "config",
        V("FILE"),
        Note("/etc/rkllmd/rkllmd.conf if it exists"),
        PROCESS,
        "Config file of 'key = value' lines; flags override it"
    ),
    opt!(
        User,
        "user",
        V("NAME"),
        Note("stay as started"),
        PROCESS,
        "Drop root privileges to this user after binding the socket"
    ),
    opt!(
        NotifyFd,
        "notify-fd",
        V("N"),
        Note("none"),
        PROCESS,
        "Write a newline to this inherited fd when ready (s6, OpenRC)"
    ),
    opt!(
        Syslog,
        "syslog",
        Switch,
        Dv("false"),
        PROCESS,
        "Log to syslog instead of stderr"
    ),
    opt!(
        LogLevel,
        "log-level",
        V("LEVEL"),
        Dv("info"),
        PROCESS,
        "One of error, warn, info, debug, trace (RUST_LOG wins)"
    ),
    opt!(
        Root,
        "root",
        V("DIR"),
        Dv("/"),
        PROCESS,
        "read /dev, /proc, /sys, /etc/ld.so.conf and the library\ndirectories under DIR: for 'check' (an image, a test tree)\nand the board figures in /metrics (a test tree)"
    ),
    opt!(
        ConfigOnly,
        "config-only",
        Switch,
        Dv("false"),
        PROCESS,
        "check only: validate the configuration and nothing else (for\ninit scripts, which must not judge the board)"
    ),
    Opt {
        short: Some('h'),
        ..opt!(
            Help,
            "help",
            Action,
            NoDefault,
            PROCESS,
            "Print this help and exit"
        )
    },
    Opt {
        short: Some('V'),
        ..opt!(
            Version,
            "version",
            Action,
            NoDefault,
            PROCESS,
            "Print the version and exit"
        )
    },
];
