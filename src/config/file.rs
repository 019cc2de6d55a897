//! Reading the config file: `key = value` lines.
//!
//! Keys are the long flag names without `--`, with `-` or `_` between words. Blank lines and
//! lines starting with `#` are ignored; in an unquoted value, a `#` at its start or after
//! whitespace starts a comment. A value may be wrapped in double or single quotes (no escapes)
//! to keep a `#` or surrounding spaces. A key may repeat: the allow lists collect every value,
//! other keys keep the last.
//!
//! A line `[model NAME]` opens a section of settings for that model only; every key after it
//! belongs to the section, up to the next one, so the daemon's own keys come first. Only the
//! keys a model is loaded or rendered with (`options::Opt::per_model`) and `alias` are
//! accepted in a section.

use std::io;
use std::path::Path;

use super::error::ConfigError;
use super::options::{self, Setting};

pub(super) struct Entry {
    pub key: Setting,
    /// The key as written, for messages.
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// What a section key sets: one of the options, or a name the model also answers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SectionKey {
    Setting(Setting),
    Alias,
    /// `lora = NAME PATH [SCALE]`: an adapter the model runs with when a request names
    /// `MODEL:NAME`.
    Lora,
    /// `vision-encoder`, `image-family`, `image-tags`, `image-size` (`config::vision`).
    VisionEncoder,
    ImageFamily,
    ImageTags,
    ImageSize,
}

#[derive(Clone, Debug)]
pub(super) struct SectionEntry {
    pub key: SectionKey,
    /// The key as written, for messages.
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A `[model NAME]` section.
#[derive(Clone, Debug)]
pub(super) struct Section {
    pub model: String,
    /// Where its header is.
    pub line: usize,
    pub entries: Vec<SectionEntry>,
}

/// The file's keys: the daemon's, then each model's section.
#[derive(Default)]
pub(super) struct Parsed {
    pub entries: Vec<Entry>,
    pub sections: Vec<Section>,
}

/// Reads and splits the file. `Ok(None)` when it does not exist.
pub(super) fn load(path: &Path) -> Result<Option<Parsed>, ConfigError> {
    match super::read::read_small(path, super::read::CONFIG_LIMIT) {
        Ok(text) => parse_text(path, &text).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::ConfigFileRead {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn parse_text(path: &Path, text: &str) -> Result<Parsed, ConfigError> {
    let mut parsed = Parsed::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let syntax = |problem| ConfigError::Syntax {
            path: path.to_owned(),
            line,
            problem,
        };
        if trimmed.starts_with('[') {
            let model = section_header(trimmed).map_err(syntax)?;
            if let Some(first) = parsed.sections.iter().find(|s| s.model == model) {
                return Err(ConfigError::ModelSection {
                    path: path.to_owned(),
                    line,
                    problem: format!(
                        "a second [model {model}] section (the first is on line {})",
                        first.line
                    ),
                });
            }
            parsed.sections.push(Section {
                model,
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let (name, value) = trimmed
            .split_once('=')
            .ok_or_else(|| syntax("expected 'key = value'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(syntax("missing key before '='"));
        }
        let spelled = name.replace('_', "-");
        // Its three tags may each be quoted: kept as written, for `config::vision`.
        let value = if spelled == "image-tags" && !parsed.sections.is_empty() {
            strip_comment(value.trim(), true).to_owned()
        } else {
            unquote(value.trim()).map_err(syntax)?
        };
        let unknown = || ConfigError::UnknownKey {
            path: path.to_owned(),
            line,
            key: name.to_owned(),
        };
        if let Some(section) = parsed.sections.last_mut() {
            let key = match spelled.as_str() {
                "alias" => SectionKey::Alias,
                "lora" => SectionKey::Lora,
                "vision-encoder" => SectionKey::VisionEncoder,
                "image-family" => SectionKey::ImageFamily,
                "image-tags" => SectionKey::ImageTags,
                "image-size" => SectionKey::ImageSize,
                _ => match options::by_name(&spelled).filter(|o| o.in_file()) {
                    Some(opt) if opt.per_model() => SectionKey::Setting(opt.key),
                    Some(_) => {
                        return Err(ConfigError::ModelSection {
                            path: path.to_owned(),
                            line,
                            problem: format!(
                                "'{name}' cannot be set per model (in [model {}]; the daemon's \
                                 own keys go before the first section)",
                                section.model
                            ),
                        })
                    }
                    None => return Err(unknown()),
                },
            };
            section.entries.push(SectionEntry {
                key,
                name: name.to_owned(),
                value,
                line,
            });
            continue;
        }
        let opt = options::by_name(&spelled)
            .filter(|o| o.in_file())
            .ok_or_else(unknown)?;
        parsed.entries.push(Entry {
            key: opt.key,
            name: name.to_owned(),
            value,
            line,
        });
    }
    Ok(parsed)
}

/// The model a `[model NAME]` line names.
fn section_header(line: &str) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected '[model NAME]'";
    let inner = line
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .ok_or(EXPECTED)?;
    let mut words = inner.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("model"), Some(name), None) => Ok(name.to_owned()),
        _ => Err(EXPECTED),
    }
}

fn unquote(value: &str) -> Result<String, &'static str> {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote) {
            let (content, after) = inner.split_once(quote).ok_or("unterminated quote")?;
            let after = after.trim_start();
            if !after.is_empty() && !after.starts_with('#') {
                return Err("unexpected text after the closing quote");
            }
            return Ok(content.to_owned());
        }
    }
    Ok(strip_comment(value, false).to_owned())
}

/// `value` up to a `#` at its start or after whitespace; with `quoted_words`, not within a
/// quoted word (`image-tags`).
fn strip_comment(value: &str, quoted_words: bool) -> &str {
    let mut prev_is_space = true;
    let mut quote = None;
    for (i, c) in value.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && prev_is_space => return value[..i].trim_end(),
            None if quoted_words && prev_is_space && (c == '"' || c == '\'') => quote = Some(c),
            None => {}
        }
        prev_is_space = c.is_whitespace();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(Setting, String, usize)>, String> {
        parse_text(Path::new("/etc/x.conf"), text)
            .map(|parsed| {
                parsed
                    .entries
                    .into_iter()
                    .map(|e| (e.key, e.value, e.line))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn comments_blanks_quotes_and_both_key_spellings() {
        let text = "# rkllmd\n\nmodel = /m/qwen.rkllm\n  max_connections=10\nmax-body-bytes = 2M  # two megs\n\
                    api_key = \"with # hash \"\nsocket_group = 'rkllm' # quoted\nsyslog = yes\n";
        let got = parse(text).unwrap();
        assert_eq!(
            got,
            vec![
                (Setting::Model, "/m/qwen.rkllm".to_owned(), 3),
                (Setting::MaxConnections, "10".to_owned(), 4),
                (Setting::MaxBodyBytes, "2M".to_owned(), 5),
                (Setting::ApiKey, "with # hash ".to_owned(), 6),
                (Setting::SocketGroup, "rkllm".to_owned(), 7),
                (Setting::Syslog, "yes".to_owned(), 8),
            ]
        );
    }

    #[test]
    fn value_may_contain_a_hash_not_after_space() {
        assert_eq!(parse("model = /m/a#b.rkllm").unwrap()[0].1, "/m/a#b.rkllm");
        assert_eq!(parse("model = # nothing").unwrap()[0].1, "");
    }

    #[test]
    fn unknown_keys_and_flag_only_options_are_refused_with_line() {
        assert_eq!(
            parse("model = x\n\n fo = 1").unwrap_err(),
            "/etc/x.conf line 3: unknown key 'fo'"
        );
        assert_eq!(
            parse("config = /other").unwrap_err(),
            "/etc/x.conf line 1: unknown key 'config'"
        );
        assert_eq!(
            parse("help = yes").unwrap_err(),
            "/etc/x.conf line 1: unknown key 'help'"
        );
        assert_eq!(
            parse("--model = x").unwrap_err(),
            "/etc/x.conf line 1: unknown key '--model'"
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_line() {
        assert_eq!(
            parse("model /x").unwrap_err(),
            "/etc/x.conf line 1: expected 'key = value'"
        );
        assert_eq!(
            parse("= 3").unwrap_err(),
            "/etc/x.conf line 1: missing key before '='"
        );
        assert_eq!(
            parse("model = \"/x").unwrap_err(),
            "/etc/x.conf line 1: unterminated quote"
        );
        assert_eq!(
            parse("model = \"/x\" y").unwrap_err(),
            "/etc/x.conf line 1: unexpected text after the closing quote"
        );
    }

    #[test]
    fn a_model_section_holds_the_keys_after_it() {
        let text = "queue-size = 4\n[model qwen]\nmax_context_len = 2048\nalias = chat\n\
                    alias = q # comment\n\n[ model  fast ]\ntop-k = 3\n";
        let parsed = parse_text(Path::new("/etc/x.conf"), text).unwrap();
        assert_eq!(parsed.entries.len(), 1);
        type Flat = (String, usize, Vec<(SectionKey, String, usize)>);
        let sections: Vec<Flat> = parsed
            .sections
            .into_iter()
            .map(|s| {
                let entries = s.entries.into_iter().map(|e| (e.key, e.value, e.line));
                (s.model, s.line, entries.collect())
            })
            .collect();
        assert_eq!(
            sections,
            vec![
                (
                    "qwen".to_owned(),
                    2,
                    vec![
                        (
                            SectionKey::Setting(Setting::MaxContextLen),
                            "2048".into(),
                            3
                        ),
                        (SectionKey::Alias, "chat".into(), 4),
                        (SectionKey::Alias, "q".into(), 5),
                    ]
                ),
                (
                    "fast".to_owned(),
                    7,
                    vec![(SectionKey::Setting(Setting::TopK), "3".into(), 8)]
                ),
            ]
        );
    }

    #[test]
    fn a_bad_section_is_refused_with_its_line() {
        let err = |text| {
            parse_text(Path::new("/etc/x.conf"), text)
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err("[model]\n"),
            "/etc/x.conf line 1: expected '[model NAME]'"
        );
        assert_eq!(
            err("[model a b]\n"),
            "/etc/x.conf line 1: expected '[model NAME]'"
        );
        assert_eq!(
            err("[lora a]\n"),
            "/etc/x.conf line 1: expected '[model NAME]'"
        );
        assert_eq!(
            err("[model a]\nsocket = /x\n"),
            "/etc/x.conf line 2: 'socket' cannot be set per model (in [model a]; the daemon's \
             own keys go before the first section)"
        );
        assert_eq!(
            err("[model a]\nfrobnicate = 1\n"),
            "/etc/x.conf line 2: unknown key 'frobnicate'"
        );
        assert_eq!(
            err("[model a]\n[model b]\n[model a]\n"),
            "/etc/x.conf line 3: a second [model a] section (the first is on line 1)"
        );
    }
}
