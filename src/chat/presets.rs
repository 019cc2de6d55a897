//! Built-in templates, each matching its family's official Hugging Face `chat_template` for
//! plain-text conversations. Where a family's template has no rule for a case (a tool result
//! in a family without tools, a system turn in Gemma 2), the preset's doc says what it does
//! instead.
//!
//! Tools: each preset asks for calls in its family's own format ([`ToolFormat`]) where the
//! family's official template or documentation defines one; the others use Qwen's Hermes form,
//! and their doc says why.

use super::template::{Reasoning, SystemRole, Template, Thinking, ToolFormat, Wrap};

/// The names [`Template::preset`] accepts.
pub const PRESET_NAMES: &[&str] = &[
    "chatml",
    "qwen2",
    "qwen2.5",
    "qwen3",
    "llama3",
    "gemma2",
    "gemma3",
    "phi3",
    "deepseek-r1",
    "minicpm",
    "internlm2",
];

const IM_END: &str = "<|im_end|>\n";
const NO_THINK: &str = "<think>\n\n</think>\n\n";

impl Template {
    /// The preset called `name` (case-insensitive), or `None`.
    pub fn preset(name: &str) -> Option<Template> {
        let wanted = name.trim().to_ascii_lowercase();
        let name = PRESET_NAMES.iter().copied().find(|n| *n == wanted)?;
        let t = match name {
            "chatml" => with_qwen_tools(chatml(name)),
            // Qwen2-Instruct's template has no tool rules; Hermes is the form its successors
            // were trained on.
            "qwen2" => Template {
                default_system: Some("You are a helpful assistant.".into()),
                ..chatml(name)
            },
            "qwen2.5" => Template {
                default_system: Some(
                    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into(),
                ),
                ..with_qwen_tools(chatml(name))
            },
            "qwen3" => Template {
                reasoning: Reasoning::DropBeforeLastQuery,
                thinking: Some(Thinking {
                    default_on: true,
                    on: String::new(),
                    off: NO_THINK.into(),
                }),
                ..with_qwen_tools(chatml(name))
            },
            "llama3" => llama3(name),
            "gemma2" | "gemma3" => gemma(name),
            "phi3" => phi3(name),
            "deepseek-r1" => deepseek_r1(name),
            // MiniCPM3 and MiniCPM4 are ChatML without a default system prompt; their template
            // passes the tool role through and has no rules for definitions or calls: Hermes.
            "minicpm" => chatml(name),
            // InternLM2's template has no tool rules (its plugin protocol, `<|plugin|>` and
            // `<|action_start|>`, lives in InternLM's agent code, not in the template): Hermes.
            "internlm2" => Template {
                bos: Some("<s>".into()),
                ..chatml(name)
            },
            _ => return None,
        };
        Some(t)
    }
}

/// ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n`, the role name passed through.
fn chatml(name: &'static str) -> Template {
    let wrap = |role: &str| Wrap::new(&format!("<|im_start|>{role}\n"), IM_END);
    Template::plain(
        name,
        [
            wrap("system"),
            wrap("user"),
            wrap("assistant"),
            wrap("tool"),
        ],
        "<|im_start|>assistant\n",
    )
}

/// Qwen 2.5/3 tools ([`ToolFormat::Hermes`], the default) and tool results: a user turn with
/// one `<tool_response>` block per consecutive tool turn. The generic `chatml` preset uses the
/// same form, since the ChatML models people run on RKLLM are mostly Qwen-derived.
fn with_qwen_tools(t: Template) -> Template {
    Template {
        tool: Wrap::new("\n<tool_response>\n", "\n</tool_response>"),
        tool_run: Some(Wrap::new("<|im_start|>user", IM_END)),
        ..t
    }
}

/// Llama 3 Instruct: content trimmed; tool results in an `ipython` turn, JSON-encoded as the
/// Llama 3.1/3.2 templates do. The 3.1+ templates also open every prompt with a system block
/// holding "Cutting Knowledge Date" and today's date; without tools this preset follows the 3.0
/// template and does not. With tools it writes what 3.1's template writes
/// ([`ToolFormat::Llama3Json`]; Llama 3.0 has no tool calling).
fn llama3(name: &'static str) -> Template {
    let wrap = |role: &str| {
        Wrap::new(
            &format!("<|start_header_id|>{role}<|end_header_id|>\n\n"),
            "<|eot_id|>",
        )
    };
    Template {
        bos: Some("<|begin_of_text|>".into()),
        trim_content: true,
        tool_content_json: true,
        tool_format: ToolFormat::Llama3Json,
        ..Template::plain(
            name,
            [
                wrap("system"),
                wrap("user"),
                wrap("assistant"),
                wrap("ipython"),
            ],
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        )
    }
}

/// Gemma 2 and 3 (identical for text): no system role (Gemma 3 puts the system text and a blank
/// line in front of the first user turn; Gemma 2 rejects system turns, and gets the same
/// treatment here), content trimmed, the assistant called `model`. There is no tool role: tool
/// results are rendered as user turns. Tools use the Hermes form: the templates have no tool
/// rules, and Google's guide (<https://ai.google.dev/gemma/docs/capabilities/function-calling>)
/// says Gemma has no tool-specific tokens and answers in whatever call format the prompt asks
/// for.
fn gemma(name: &'static str) -> Template {
    let wrap = |role: &str| Wrap::new(&format!("<start_of_turn>{role}\n"), "<end_of_turn>\n");
    Template {
        bos: Some("<bos>".into()),
        system_role: SystemRole::FoldIntoNextTurn {
            separator: "\n\n".into(),
        },
        trim_content: true,
        ..Template::plain(
            name,
            [wrap("system"), wrap("user"), wrap("model"), wrap("user")],
            "<start_of_turn>model\n",
        )
    }
}

/// Phi-3 / Phi-3.5 mini (current revisions, no BOS in the template). Their template skips
/// tool turns; here they are rendered as user turns. It has no tool rules either: tools use the
/// Hermes form. (Phi-4-mini's `<|tool|>` system block and `<|tool_call|>` answers belong to a
/// template this preset does not match: Phi-4-mini writes no newline after the role tags.)
fn phi3(name: &'static str) -> Template {
    let wrap = |role: &str| Wrap::new(&format!("<|{role}|>\n"), "<|end|>\n");
    Template::plain(
        name,
        [
            wrap("system"),
            wrap("user"),
            wrap("assistant"),
            wrap("user"),
        ],
        "<|assistant|>\n",
    )
}

/// DeepSeek-R1 distills: the system text right after BOS, no separators but the role tags, the
/// answer opened with `<think>\n`, reasoning removed from history. Their template has no off
/// switch; "off" closes the think block at once, as Qwen3 does. Tool results (the template's
/// tool-output tags, which the distills were not trained on) are rendered as user turns. The
/// template moves the last system turn to the start; here system turns stay where they are.
/// Tools use the Hermes form: the template writes calls in the history
/// (`<｜tool▁calls▁begin｜>...`) but never the definitions, so there is no prompt the distills
/// were trained to answer with calls (llama.cpp
/// `models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja`).
fn deepseek_r1(name: &'static str) -> Template {
    Template {
        bos: Some("<｜begin▁of▁sentence｜>".into()),
        reasoning: Reasoning::DropAll,
        thinking: Some(Thinking {
            default_on: true,
            on: "<think>\n".into(),
            off: NO_THINK.into(),
        }),
        ..Template::plain(
            name,
            [
                Wrap::new("", ""),
                Wrap::new("<｜User｜>", ""),
                Wrap::new("<｜Assistant｜>", "<｜end▁of▁sentence｜>"),
                Wrap::new("<｜User｜>", ""),
            ],
            "<｜Assistant｜>",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Template, PRESET_NAMES};

    #[test]
    fn every_name_has_a_preset_called_by_it() {
        for name in PRESET_NAMES {
            let t = Template::preset(name).map(|t| t.name);
            assert_eq!(t, Some(*name));
        }
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_names_are_none() {
        assert_eq!(
            Template::preset(" Qwen2.5 ").map(|t| t.name),
            Some("qwen2.5")
        );
        assert_eq!(Template::preset("LLAMA3").map(|t| t.name), Some("llama3"));
        assert!(Template::preset("llama2").is_none());
        assert!(Template::preset("").is_none());
    }

    #[test]
    fn gemma3_renders_as_gemma2() {
        let (g2, g3) = (Template::preset("gemma2"), Template::preset("gemma3"));
        let strip = |t: Option<Template>| t.map(|t| Template { name: "", ..t });
        assert_eq!(strip(g2), strip(g3));
    }
}
