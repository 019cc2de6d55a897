//! What the runtime was last given through `rkllm_set_function_tools` (`runtime` template mode),
//! and when to call it again.
//!
//! The call replaces the runtime's system prompt with the one given plus the tool definitions,
//! and empties the KV cache (the maintainer's answer in rknn-llm#377). Rockchip's own server
//! (`examples/rkllm_server_demo/rkllm_server/flask_server.py` in airockchip/rknn-llm) passes the
//! request's system message with the request's tools; so does rkllmd. The same maintainer's
//! advice is not to make the call without tools, so a system prompt alone never causes one: the
//! runtime keeps the model's own. Tools removed (a request without them after one with them) is
//! the call with empty tools, which is the runtime API's only way to drop them.

/// The system prompt given with the tools when the request has no system message. Not the empty
/// string: the call replaces the model's system prompt with it (rknn-llm#377), and an empty one
/// would leave the model with the tool list and no instruction. This is the system prompt of
/// the Qwen2 chat template that rkllm's examples use (the commented `rkllm_set_chat_template`
/// call in `examples/multimodal_model_demo/deploy/src/main.cpp`, `gradio_server.py`), and what
/// the simulator uses for a NULL one.
pub(super) const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// The tool-response tag given to the runtime, Qwen's, as Rockchip's server sends it.
pub(super) const TOOL_RESPONSE_TAG: &str = "tool_response";

/// The system prompt and tools the runtime holds (both empty: the model's own, no tools).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RuntimeTools {
    system: String,
    tools: String,
}

/// A call to make before a run.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SetTools {
    pub system: String,
    pub tools: String,
}

impl RuntimeTools {
    /// The call that gives the runtime what a request with `tools` (None or "": none) and
    /// `system` wants, or `None` when it holds that already.
    pub fn change(&self, tools: Option<&str>, system: Option<&str>) -> Option<SetTools> {
        let tools = tools.unwrap_or("");
        if tools.is_empty() && self.tools.is_empty() {
            return None;
        }
        let system = system.unwrap_or(DEFAULT_SYSTEM_PROMPT);
        if tools == self.tools && system == self.system {
            return None;
        }
        Some(SetTools {
            system: system.to_owned(),
            tools: tools.to_owned(),
        })
    }

    /// Bytes of tool definitions the runtime holds.
    pub fn tools_bytes(&self) -> usize {
        self.tools.len()
    }

    /// Bytes the runtime puts before every prompt, that we know of: the tools and the system
    /// prompt given with them (which replaced the model's); nothing while it holds no tools.
    pub fn context_bytes(&self) -> usize {
        if self.tools.is_empty() {
            0
        } else {
            self.tools.len() + self.system.len()
        }
    }

    /// The runtime accepted `set`.
    pub fn accepted(&mut self, set: SetTools) {
        self.system = set.system;
        self.tools = set.tools;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(system: &str, tools: &str) -> Option<SetTools> {
        Some(SetTools {
            system: system.into(),
            tools: tools.into(),
        })
    }

    fn after(system: &str, tools: &str) -> RuntimeTools {
        let mut t = RuntimeTools::default();
        t.accepted(set(system, tools).unwrap());
        t
    }

    #[test]
    fn no_tools_no_call_whatever_the_system_prompt() {
        let t = RuntimeTools::default();
        assert_eq!(t.change(None, None), None);
        assert_eq!(t.change(None, Some("Be brief.")), None);
        assert_eq!(t.change(Some(""), Some("Be brief.")), None);
    }

    #[test]
    fn tools_go_with_the_request_s_system_prompt_or_the_default() {
        let t = RuntimeTools::default();
        assert_eq!(
            t.change(Some("[1]"), Some("Be brief.")),
            set("Be brief.", "[1]")
        );
        assert_eq!(
            t.change(Some("[1]"), None),
            set("You are a helpful assistant.", "[1]")
        );
    }

    #[test]
    fn the_same_tools_and_system_prompt_are_not_sent_again_and_a_change_of_either_is() {
        let t = after("Be brief.", "[1]");
        assert_eq!(t.change(Some("[1]"), Some("Be brief.")), None);
        assert_eq!(
            t.change(Some("[1]"), Some("Be long.")),
            set("Be long.", "[1]")
        );
        assert_eq!(
            t.change(Some("[2]"), Some("Be brief.")),
            set("Be brief.", "[2]")
        );
        assert_eq!(
            t.change(Some("[1]"), None),
            set("You are a helpful assistant.", "[1]")
        );
    }

    #[test]
    fn what_the_runtime_holds_counts_towards_the_context_only_with_tools() {
        let t = after("Be brief.", "[1]");
        assert_eq!((t.tools_bytes(), t.context_bytes()), (3, 12));
        let removed = after("Be brief.", "");
        assert_eq!((removed.tools_bytes(), removed.context_bytes()), (0, 0));
    }

    #[test]
    fn tools_are_removed_by_a_call_with_none_once_and_not_again() {
        let t = after("Be brief.", "[1]");
        assert_eq!(t.change(None, Some("Be brief.")), set("Be brief.", ""));
        assert_eq!(
            t.change(None, None),
            set("You are a helpful assistant.", "")
        );
        let removed = after("Be brief.", "");
        assert_eq!(removed.change(None, Some("Be long.")), None);
        assert_eq!(removed.change(None, None), None);
    }
}
