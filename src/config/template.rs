//! `chat-template`: which template renders conversations, chosen once when the configuration is
//! read.

use crate::chat::{CustomParts, CustomPartsError, Template, PRESET_NAMES};

use super::values::Expected;

/// How conversations are rendered, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// A preset from the architecture the model file declares or from its name, chosen when
    /// the server starts (`chat::choose`), else [`Self::Runtime`].
    Auto,
    /// The runtime applies the model's built-in template (it sees only the newest user turn).
    Runtime,
    /// A preset, by its name in [`PRESET_NAMES`].
    Preset(&'static str),
    /// The `chat-template-*` keys, decoded.
    Custom(Box<Template>),
}

/// The `chat-template` value as read, before the `chat-template-*` keys are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TemplateName {
    Auto,
    Runtime,
    Custom,
    Preset(&'static str),
}

impl TemplateName {
    /// `auto`, `runtime`, `custom` or a preset's name, in any case.
    pub(super) fn parse(raw: &str) -> Result<TemplateName, Expected> {
        let name = raw.trim().to_ascii_lowercase();
        match name.as_str() {
            "auto" => Ok(TemplateName::Auto),
            "runtime" => Ok(TemplateName::Runtime),
            "custom" => Ok(TemplateName::Custom),
            _ => PRESET_NAMES
                .iter()
                .find(|preset| **preset == name)
                .map(|preset| TemplateName::Preset(preset))
                .ok_or_else(|| {
                    format!(
                        "'auto', 'runtime', 'custom' or one of {}",
                        PRESET_NAMES.join(", ")
                    )
                }),
        }
    }

    /// The template, with `parts` (the `chat-template-*` keys) when the name is `custom`.
    pub(super) fn resolve(self, parts: &CustomParts) -> Result<ChatTemplate, CustomPartsError> {
        Ok(match self {
            TemplateName::Auto => ChatTemplate::Auto,
            TemplateName::Runtime => ChatTemplate::Runtime,
            TemplateName::Preset(name) => ChatTemplate::Preset(name),
            TemplateName::Custom => ChatTemplate::Custom(Box::new(Template::custom(parts)?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_presets_by_their_table_name() {
        assert_eq!(TemplateName::parse(" Auto "), Ok(TemplateName::Auto));
        assert_eq!(TemplateName::parse("RUNTIME"), Ok(TemplateName::Runtime));
        assert_eq!(TemplateName::parse("custom"), Ok(TemplateName::Custom));
        assert_eq!(
            TemplateName::parse("Qwen3"),
            Ok(TemplateName::Preset("qwen3"))
        );
        let err = TemplateName::parse("qwen9").unwrap_err();
        assert!(
            err.starts_with("'auto', 'runtime', 'custom' or one of chatml"),
            "{err}"
        );
    }

    #[test]
    fn custom_is_built_from_the_parts_and_a_bad_part_is_an_error() {
        let parts = CustomParts {
            user_prefix: Some("U:".to_owned()),
            ..CustomParts::default()
        };
        assert_eq!(
            TemplateName::Custom.resolve(&parts),
            Ok(ChatTemplate::Custom(Box::new(
                Template::custom(&parts).unwrap()
            )))
        );
        let bad = CustomParts {
            bos: Some("\\x".to_owned()),
            ..CustomParts::default()
        };
        let err = TemplateName::Custom.resolve(&bad).unwrap_err();
        assert_eq!(err.key, "bos");
        assert_eq!(
            TemplateName::Preset("qwen3").resolve(&bad),
            Ok(ChatTemplate::Preset("qwen3"))
        );
    }
}
