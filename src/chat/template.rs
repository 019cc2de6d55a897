//! What a chat template is made of. Presets fill these fields in `presets.rs`, the config file
//! in `custom.rs`; `render.rs` turns a conversation into text with them.

/// The text around one turn's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wrap {
    pub prefix: String,
    pub suffix: String,
}

impl Wrap {
    pub fn new(prefix: &str, suffix: &str) -> Wrap {
        Wrap {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        }
    }
}

/// How system turns are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemRole {
    /// The family has a system role: `system.prefix + content + system.suffix`.
    Native,
    /// The family has none (Gemma): a system turn renders no text of its own; its content and
    /// then `separator` are put in front of the content of the next non-system turn. A system
    /// turn that no other turn follows is dropped, as Gemma 3's template drops it.
    FoldIntoNextTurn { separator: String },
}

/// What happens to reasoning (`<think>…</think>`) in assistant turns of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reasoning {
    /// Assistant turns are rendered as given.
    Keep,
    /// Everything up to and including the last `</think>` is removed from every assistant turn
    /// (DeepSeek-R1).
    DropAll,
    /// Qwen3: in assistant turns before the last user turn, everything up to and including the
    /// last `</think>` and the newlines after it are removed. Assistant turns after the last user
    /// turn (a tool-calling round in progress) keep their reasoning, rewritten as
    /// `<think>\n{reasoning}\n</think>\n\n{answer}`. (Qwen3's template also writes an empty
    /// think block into an assistant turn that ends the conversation; rkllmd does not, since
    /// that would make a turn's text depend on whether another one follows.)
    DropBeforeLastQuery,
}

/// The switch of a thinking model: text appended to the generation prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thinking {
    /// Whether the family thinks when the request does not say.
    pub default_on: bool,
    /// Appended to the generation prompt when thinking is on.
    pub on: String,
    /// Appended to the generation prompt when thinking is off.
    pub off: String,
}

/// How a family asks for tool calls and writes them: where the request's tool definitions go in
/// the prompt, how the model answers with a call, and how calls in the history are written back.
/// Decided once per template: by the preset (`presets.rs`), or for a custom template by
/// `chat-template-tool-format` (Hermes unless it says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Qwen 2.5's form (the Hermes form): the definitions in a `<tools>` block of the system turn,
    /// calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` anywhere in the answer.
    /// Qwen's own template writes it (`Qwen/Qwen2.5-7B-Instruct`, `tokenizer_config.json`); the
    /// families whose official template has no tool rules use it too (see their presets).
    Hermes,
    /// Llama 3.1/3.2 JSON tool calling, as the official templates write it
    /// (`meta-llama/Llama-3.1-8B-Instruct` and `Llama-3.2-3B-Instruct`, `tokenizer_config.json`;
    /// a copy in llama.cpp `models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja`): the system
    /// block says `Environment: ipython`, the definitions go into the first user message, and
    /// the model answers with a bare `{"name": ..., "parameters": {...}}` object.
    Llama3Json,
}

/// A chat template: how to render a conversation for one model family.
///
/// Rendering rules are in [`Template::render`]; the fields are public so that callers can
/// inspect a template (for example the assistant suffix, which the runtime does not return
/// with the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The preset name, or `"custom"`.
    pub name: &'static str,
    /// Text at the very start of the prompt (`<|begin_of_text|>`, `<bos>`), when the family's
    /// template writes it.
    pub bos: Option<String>,
    pub system: Wrap,
    pub user: Wrap,
    pub assistant: Wrap,
    pub tool: Wrap,
    /// Around a run of consecutive tool turns, for families that put all results of one round
    /// into a single turn (Qwen: one user turn holding several `<tool_response>` blocks).
    pub tool_run: Option<Wrap>,
    /// Tool content is written as a JSON string literal (Llama 3.1+ passes it through `tojson`).
    pub tool_content_json: bool,
    /// What opens the assistant's answer, e.g. `<|im_start|>assistant\n`.
    pub generation_prompt: String,
    /// System prompt used when the conversation does not start with a system turn, for the
    /// families whose official template adds one.
    pub default_system: Option<String>,
    pub system_role: SystemRole,
    /// Leading and trailing whitespace is stripped from each turn's content (Llama 3, Gemma).
    pub trim_content: bool,
    pub reasoning: Reasoning,
    /// `None` for families without a thinking switch.
    pub thinking: Option<Thinking>,
    pub tool_format: ToolFormat,
}

impl Template {
    /// A template with the given wraps and no special rules; presets and the config file start
    /// from it.
    pub(super) fn plain(name: &'static str, parts: [Wrap; 4], generation_prompt: &str) -> Template {
        let [system, user, assistant, tool] = parts;
        Template {
            name,
            bos: None,
            system,
            user,
            assistant,
            tool,
            tool_run: None,
            tool_content_json: false,
            generation_prompt: generation_prompt.to_owned(),
            default_system: None,
            system_role: SystemRole::Native,
            trim_content: false,
            reasoning: Reasoning::Keep,
            thinking: None,
            tool_format: ToolFormat::Hermes,
        }
    }
}
