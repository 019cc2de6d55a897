//! Chat-template rendering of arbitrary conversations with every preset and with custom
//! templates from arbitrary config values.
//!
//! Input: byte 0 picks a preset or a custom template, byte 1 the thinking switch and whether
//! custom values are escaped before decoding; the rest is text (lossy UTF-8) of NUL-separated
//! fields: a model file name, then for a custom template its ten values (an empty field is an
//! absent key), then the turns, each a role letter (`s`, `u`, `a`, `t`) and its content.
//! Checked:
//! - one piece per turn;
//! - the prefix property the KV-cache reuse relies on: rendering the first `k` turns gives the
//!   same pieces and generation prompt as rendering the whole conversation, except where
//!   `Rendered` documents that a later turn changes an earlier one (the last turn of a tool
//!   run that grows; Qwen3 reasoning in assistant turns once a later user turn arrives);
//! - a custom template renders exactly `bos`, then prefix + content + suffix per turn, then
//!   the generation prompt;
//! - config values escaped the way the docs say decode back to the text; any value decodes
//!   or fails without a panic;
//! - a preset guessed from a model file name exists.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkllmd::chat::{
    decode_escapes, guess, CustomParts, Reasoning, Role, Template, Turn, PRESET_NAMES,
};

/// Each prefix is rendered again, so the work grows with the square of the turn count.
const MAX_TURNS: usize = 24;

fuzz_target!(|data: &[u8]| {
    let [choice, flags, rest @ ..] = data else {
        return;
    };
    let thinking = [None, Some(false), Some(true), None][usize::from(flags & 3)];
    let escaped = flags & 4 != 0;
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.split('\0');

    let file_name = fields.next().unwrap_or_default();
    if let Some(name) = guess(file_name) {
        assert!(PRESET_NAMES.contains(&name), "guessed {name}");
        assert!(Template::preset(name).is_some(), "no preset {name}");
    }

    let template = match PRESET_NAMES.get(usize::from(*choice) % (PRESET_NAMES.len() + 1)) {
        Some(name) => Template::preset(name).expect("every listed preset exists"),
        None => {
            let mut values: [Option<String>; 10] = Default::default();
            for value in values.iter_mut() {
                *value = fields.next().filter(|v| !v.is_empty()).map(str::to_owned);
            }
            match custom(values, escaped) {
                Some(t) => t,
                None => return,
            }
        }
    };

    let turns: Vec<Turn> = fields
        .take(MAX_TURNS)
        .map(|field| {
            let mut chars = field.chars();
            let role = match chars.next() {
                Some('s') => Role::System,
                Some('a') => Role::Assistant,
                Some('t') => Role::Tool,
                _ => Role::User,
            };
            Turn::new(role, chars.as_str())
        })
        .collect();

    let full = template.render(&turns, thinking);
    assert_eq!(full.pieces.len(), turns.len());
    for k in 1..turns.len() {
        let prefix = template.render(&turns[..k], thinking);
        assert_eq!(prefix.generation_prompt, full.generation_prompt);
        for j in 0..k {
            if changed_by_later_turns(&template, &turns, j, k) {
                continue;
            }
            assert_eq!(
                prefix.pieces[j], full.pieces[j],
                "turn {j} of a {k}-turn prefix"
            );
        }
    }

    if template.name == "custom" {
        let mut expected = template.bos.clone().unwrap_or_default();
        for turn in &turns {
            let wrap = match turn.role {
                Role::System => &template.system,
                Role::User => &template.user,
                Role::Assistant => &template.assistant,
                Role::Tool => &template.tool,
            };
            expected.push_str(&wrap.prefix);
            expected.push_str(&turn.content);
            expected.push_str(&wrap.suffix);
        }
        expected.push_str(&template.generation_prompt);
        assert_eq!(full.full(), expected);
    }
});

/// Whether `Rendered` says turn `j` may render differently once turns `k..` follow it.
fn changed_by_later_turns(template: &Template, turns: &[Turn], j: usize, k: usize) -> bool {
    let closes_tool_run = j + 1 == k
        && template.tool_run.is_some()
        && turns[j].role == Role::Tool
        && turns.get(k).is_some_and(|t| t.role == Role::Tool);
    let qwen3_reasoning = template.reasoning == Reasoning::DropBeforeLastQuery
        && turns[j].role == Role::Assistant
        && turns[k..].iter().any(|t| t.role == Role::User);
    closes_tool_run || qwen3_reasoning
}

/// A custom template from the raw values, checking the escape decoder on the way.
fn custom(mut values: [Option<String>; 10], escaped: bool) -> Option<Template> {
    for value in values.iter_mut().flatten() {
        if escaped {
            let text = std::mem::take(value);
            *value = escape(&text);
            assert_eq!(decode_escapes(value).as_deref(), Ok(text.as_str()));
        } else if decode_escapes(value).is_err() {
            // The error path is covered; the template would be refused.
            return None;
        }
    }
    let [system_prefix, system_suffix, user_prefix, user_suffix, assistant_prefix, assistant_suffix, tool_prefix, tool_suffix, generation_prompt, bos] =
        values;
    let parts = CustomParts {
        system_prefix,
        system_suffix,
        user_prefix,
        user_suffix,
        assistant_prefix,
        assistant_suffix,
        tool_prefix,
        tool_suffix,
        generation_prompt,
        bos,
        // The default (Hermes): tool definitions are not part of this target's input.
        tool_format: None,
    };
    Some(Template::custom(&parts).expect("values that decode make a template"))
}

/// The config file's escaping: backslash, newline and tab.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}
