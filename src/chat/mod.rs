//! Chat templates: rkllmd renders the whole conversation into the text the model was trained on.
//!
//! Rendering the prompt here, instead of handing the newest message to the runtime's built-in
//! template, lets rkllmd send the full context and lets the runtime reuse its KV cache across
//! turns: the runtime keeps the longest prefix of the new input that matches what it already
//! holds. That works only if the text of earlier turns never changes once rendered, which is the
//! property [`Template::render`] is built around (see [`Rendered`]).
//!
//! A [`Template`] comes from a preset ([`Template::preset`], [`PRESET_NAMES`], [`guess`] from the
//! model file name) or from the config file ([`Template::custom`]).

mod custom;
mod guess;
mod model_meta;
mod presets;
mod render;
mod template;

#[cfg(test)]
mod render_tests;

pub use custom::{decode_escapes, CustomParts, CustomPartsError};
pub use guess::guess;
pub use model_meta::{architecture, choose, Chosen};
pub use presets::PRESET_NAMES;
pub use render::Rendered;
pub use template::{Reasoning, SystemRole, Template, Thinking, ToolFormat, Wrap};

use crate::vision::image::ImageInput;

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, sent back by the client.
    Tool,
}

impl Role {
    /// The role named by an API message (`"developer"`, OpenAI's newer name for the system
    /// role, counts as system); `None` for anything else.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// One message of a conversation: its text and the images sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
    /// Text written into the turn as it is, between the role's prefix and the content: tool
    /// definitions in the family's own format. Unlike the content it is never trimmed, since the
    /// official templates write it verbatim (Llama 3.1's ends with a blank line).
    pub preamble: String,
    /// The message's images in the order the client sent them, header-checked and still
    /// encoded: a vision model's encoder turns them into embeddings placed in this turn
    /// (issue #15).
    pub images: Vec<PlacedImage>,
}

/// An image of a turn and where it goes: before byte `at` of the turn's content (between the
/// text parts it was sent between; 0 when the API gives images no place, as Ollama's
/// `images`). The offsets of a turn's images never decrease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedImage {
    pub at: usize,
    pub image: ImageInput,
}

impl Turn {
    pub fn new(role: Role, content: impl Into<String>) -> Turn {
        Turn {
            role,
            content: content.into(),
            preamble: String::new(),
            images: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn api_role_names_parse() {
        assert_eq!(Role::parse("system"), Some(Role::System));
        assert_eq!(Role::parse("developer"), Some(Role::System));
        assert_eq!(Role::parse("user"), Some(Role::User));
        assert_eq!(Role::parse("assistant"), Some(Role::Assistant));
        assert_eq!(Role::parse("tool"), Some(Role::Tool));
        assert_eq!(Role::parse("function"), None);
        assert_eq!(Role::parse("User"), None);
    }
}
