//! A template from the config file's keys.

use std::fmt;

use super::template::{Template, ToolFormat, Wrap};

/// The config file's template keys, as written (escapes not yet decoded). A missing role part
/// is empty; a missing `generation_prompt` is `assistant_prefix`; a missing `tool_format` is
/// Hermes, the form most fine-tunes without a template of their own were trained on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomParts {
    pub system_prefix: Option<String>,
    pub system_suffix: Option<String>,
    pub user_prefix: Option<String>,
    pub user_suffix: Option<String>,
    pub assistant_prefix: Option<String>,
    pub assistant_suffix: Option<String>,
    pub tool_prefix: Option<String>,
    pub tool_suffix: Option<String>,
    pub generation_prompt: Option<String>,
    pub bos: Option<String>,
    pub tool_format: Option<ToolFormat>,
}

/// A template key whose value has a bad escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomPartsError {
    pub key: &'static str,
    pub reason: String,
}

impl fmt::Display for CustomPartsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chat template key {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for CustomPartsError {}

impl Template {
    /// A template from the config file, with `\n`, `\t` and `\\` decoded in every value. It has
    /// no special rules: no default system prompt, system turns in place, content as given.
    pub fn custom(parts: &CustomParts) -> Result<Template, CustomPartsError> {
        let get = |key: &'static str, value: &Option<String>| -> Result<Option<String>, _> {
            value
                .as_deref()
                .map(decode_escapes)
                .transpose()
                .map_err(|reason| CustomPartsError { key, reason })
        };
        let wrap = |(pk, pv), (sk, sv)| -> Result<Wrap, CustomPartsError> {
            Ok(Wrap {
                prefix: get(pk, pv)?.unwrap_or_default(),
                suffix: get(sk, sv)?.unwrap_or_default(),
            })
        };
        let p = parts;
        let system = wrap(
            ("system_prefix", &p.system_prefix),
            ("system_suffix", &p.system_suffix),
        )?;
        let user = wrap(
            ("user_prefix", &p.user_prefix),
            ("user_suffix", &p.user_suffix),
        )?;
        let assistant = wrap(
            ("assistant_prefix", &p.assistant_prefix),
            ("assistant_suffix", &p.assistant_suffix),
        )?;
        let tool = wrap(
            ("tool_prefix", &p.tool_prefix),
            ("tool_suffix", &p.tool_suffix),
        )?;
        let generation_prompt = get("generation_prompt", &p.generation_prompt)?
            .unwrap_or_else(|| assistant.prefix.clone());
        Ok(Template {
            bos: get("bos", &p.bos)?,
            tool_format: p.tool_format.unwrap_or(ToolFormat::Hermes),
            ..Template::plain(
                "custom",
                [system, user, assistant, tool],
                &generation_prompt,
            )
        })
    }
}

/// Decodes `\n` (newline), `\t` (tab) and `\\` (backslash); any other backslash is an error
/// that says what was found.
pub fn decode_escapes(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{other}: only \\n, \\t and \\\\ are recognised"
                ))
            }
            None => {
                return Err("a lone backslash at the end: write \\\\ for a backslash".to_owned())
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Role, Turn};
    use super::{decode_escapes, CustomParts, Template, ToolFormat};

    #[test]
    fn escapes_decode() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a\\nb", "a\nb"),
            ("\\t<tab>", "\t<tab>"),
            ("back\\\\slash", "back\\slash"),
            ("\\\\n", "\\n"),
            ("<|im_start|>user\\n", "<|im_start|>user\n"),
            ("你好\\n", "你好\n"),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_escapes(raw).as_deref(), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn unknown_and_unfinished_escapes_are_errors_that_say_why() {
        let e = decode_escapes("a\\rb").unwrap_err();
        assert_eq!(
            e,
            "unknown escape \\r: only \\n, \\t and \\\\ are recognised"
        );
        let e = decode_escapes("ends with \\").unwrap_err();
        assert_eq!(e, "a lone backslash at the end: write \\\\ for a backslash");
        assert!(decode_escapes("\\u00e9").is_err());
    }

    fn parts() -> CustomParts {
        CustomParts {
            system_prefix: Some("### System:\\n".into()),
            system_suffix: Some("\\n\\n".into()),
            user_prefix: Some("### User:\\n".into()),
            user_suffix: Some("\\n\\n".into()),
            assistant_prefix: Some("### Assistant:\\n".into()),
            assistant_suffix: Some("</s>\\n".into()),
            bos: Some("<s>".into()),
            ..CustomParts::default()
        }
    }

    #[test]
    fn custom_parts_render_with_defaults_for_missing_keys() {
        let t = Template::custom(&parts()).unwrap();
        assert_eq!(t.name, "custom");
        assert_eq!(t.generation_prompt, "### Assistant:\n");
        assert_eq!((t.tool.prefix.as_str(), t.tool.suffix.as_str()), ("", ""));
        let turns = [
            Turn::new(Role::System, "Be brief."),
            Turn::new(Role::User, "Hi"),
            Turn::new(Role::Assistant, "Hello."),
            Turn::new(Role::Tool, "42"),
        ];
        assert_eq!(
            t.render(&turns, None).full(),
            "<s>### System:\nBe brief.\n\n### User:\nHi\n\n### Assistant:\nHello.</s>\n42\
             ### Assistant:\n"
        );
    }

    #[test]
    fn an_explicit_generation_prompt_wins_and_empty_parts_are_allowed() {
        let p = CustomParts {
            generation_prompt: Some("A:\\t".into()),
            ..CustomParts::default()
        };
        let t = Template::custom(&p).unwrap();
        assert_eq!(t.generation_prompt, "A:\t");
        assert_eq!(t.bos, None);
        let turns = [Turn::new(Role::User, "x")];
        assert_eq!(t.render(&turns, Some(false)).full(), "xA:\t");
    }

    #[test]
    fn tools_are_hermes_unless_the_config_says_llama3() {
        assert_eq!(
            Template::custom(&parts()).unwrap().tool_format,
            ToolFormat::Hermes
        );
        let p = CustomParts {
            tool_format: Some(ToolFormat::Llama3Json),
            ..parts()
        };
        assert_eq!(
            Template::custom(&p).unwrap().tool_format,
            ToolFormat::Llama3Json
        );
    }

    #[test]
    fn a_bad_escape_names_its_key() {
        let p = CustomParts {
            assistant_suffix: Some("<end>\\x".into()),
            ..parts()
        };
        let e = Template::custom(&p).unwrap_err();
        assert_eq!(e.key, "assistant_suffix");
        assert_eq!(
            e.to_string(),
            "chat template key assistant_suffix: unknown escape \\x: only \\n, \\t and \\\\ \
             are recognised"
        );
    }
}
