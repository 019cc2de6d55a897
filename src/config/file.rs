//! Reading the config file: `key = value` lines.
//!
//! Keys are the long flag names without `--`, with `-` or `_` between words. Blank lines and
//! lines starting with `#` are ignored; in an unquoted value, a `#` at its start or after
//! whitespace starts a comment. A value may be wrapped in double or single quotes (no escapes)
//! to keep a `#` or surrounding spaces. A key may repeat: the allow lists collect every value,
//! other keys keep the last.

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

/// Reads and splits the file. `Ok(None)` when it does not exist.
pub(super) fn load(path: &Path) -> Result<Option<Vec<Entry>>, ConfigError> {
    match super::read::read_small(path, super::read::CONFIG_LIMIT) {
        Ok(text) => parse_text(path, &text).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::ConfigFileRead {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn parse_text(path: &Path, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::new();
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
        let (name, value) = trimmed
            .split_once('=')
            .ok_or_else(|| syntax("expected 'key = value'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(syntax("missing key before '='"));
        }
        let opt = options::by_name(&name.replace('_', "-"))
            .filter(|o| o.in_file())
            .ok_or_else(|| ConfigError::UnknownKey {
                path: path.to_owned(),
                line,
                key: name.to_owned(),
            })?;
        let value = unquote(value.trim()).map_err(syntax)?;
        entries.push(Entry {
            key: opt.key,
            name: name.to_owned(),
            value,
            line,
        });
    }
    Ok(entries)
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
    let mut prev_is_space = true;
    for (i, c) in value.char_indices() {
        if c == '#' && prev_is_space {
            return Ok(value[..i].trim_end().to_owned());
        }
        prev_is_space = c.is_whitespace();
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(Setting, String, usize)>, String> {
        parse_text(Path::new("/etc/x.conf"), text)
            .map(|entries| {
                entries
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
}
