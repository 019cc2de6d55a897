//! The empty chat template, BOS and function tools: what reaches the model when rkllmd renders
//! conversations itself.
//!
//! One measurement answers the first two: on an empty cache, a text and the same text twice are
//! prefilled; every token the runtime adds per run (template, BOS) shows as
//! `2 * once - twice`. Zero: the input goes in raw. One: a BOS. More: a template still wraps it.

use super::session::Session;
use super::watchdog::Watchdog;
use crate::config::Config;
use crate::doctor::Finding;

/// Words that tokenize alike wherever they stand (a leading space on each).
const TEXT: &str = " apple river stone cloud";

pub fn check(cfg: &Config, watchdog: &Watchdog) -> Vec<Finding> {
    let mut s = match Session::open(cfg, watchdog, 4, false) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("no handle: {e}");
            return vec![
                Finding::unknown("template", why.clone()),
                Finding::unknown("bos", why.clone()),
                Finding::unknown("tools", why),
            ];
        }
    };
    let (template, bos) = measure(&mut s);
    vec![template, bos, tools(&mut s)]
}

fn measure(s: &mut Session) -> (Finding, Finding) {
    let counts = (|| {
        let templated = s.prefill_count(TEXT)?;
        s.rt.set_chat_template("", "", "")
            .map_err(|e| e.to_string())?;
        let once = s.prefill_count(TEXT)?;
        let twice = s.prefill_count(&TEXT.repeat(2))?;
        Ok::<_, String>((templated, once, twice))
    })();
    match counts {
        Ok((templated, once, twice)) => judge(templated, once, twice),
        Err(why) => (
            Finding::unknown("template", why.clone()),
            Finding::unknown("bos", why),
        ),
    }
}

/// Token counts prefilled on an empty cache: `templated` for the text under the runtime's own
/// template, `once` and `twice` for it and for it twice under the empty template.
fn judge(templated: u32, once: u32, twice: u32) -> (Finding, Finding) {
    let added = i64::from(once) * 2 - i64::from(twice);
    let counts = format!(
        "{once} tokens for '{}', {twice} for it twice; {templated} under the runtime's own template",
        TEXT.trim_start()
    );
    match added {
        0 | 1 if once < templated || added == 0 => {
            let template = Finding::ok(
                "template",
                format!("set_chat_template(\"\", \"\", \"\") honoured: the input is prefilled unwrapped ({counts})"),
            );
            let bos = if added == 0 {
                Finding::ok("bos", "not added: a fresh cache holds only the input; rkllmd copes either way")
            } else {
                Finding::ok(
                    "bos",
                    "added: the runtime puts 1 token (a BOS) before the input of a fresh cache; rkllmd copes either way",
                )
            };
            (template, bos)
        }
        n if n >= 1 => (
            Finding::fail(
                "template",
                format!("set_chat_template(\"\", \"\", \"\") not honoured: {n} tokens are added to every run ({counts})"),
                "rkllmd renders conversations itself and needs its input prefilled as given; send us this report",
            ),
            Finding::unknown("bos", "cannot tell while a template wraps the input"),
        ),
        _ => {
            let why = format!("the counts do not add up ({counts})");
            (
                Finding::unknown("template", why.clone()),
                Finding::unknown("bos", why),
            )
        }
    }
}

/// `rkllm_set_function_tools` under the empty template: rknn-llm#397 says it fails; rkllmd
/// writes tool definitions into its own template, so either answer is fine.
fn tools(s: &mut Session) -> Finding {
    const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_time", "description": "The time.", "parameters": {"type": "object", "properties": {}}}}]"#;
    match s
        .rt
        .set_function_tools("You are a helpful assistant.", TOOLS, "tool_response")
    {
        Ok(()) => Finding::ok(
            "tools",
            "set_function_tools under the empty template: accepted (0); rkllmd writes tools into its own template either way",
        ),
        Err(e) => Finding::ok(
            "tools",
            format!("set_function_tools under the empty template: refused ({e}); rkllmd writes tools into its own template either way"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn statuses(templated: u32, once: u32, twice: u32) -> (Status, Status, String) {
        let (t, b) = judge(templated, once, twice);
        (t.status, b.status, b.detail)
    }

    #[test]
    fn raw_input_with_and_without_bos() {
        let (t, b, d) = statuses(20, 4, 8);
        assert_eq!((t, b), (Status::Ok, Status::Ok));
        assert!(d.starts_with("not added"));
        let (t, b, d) = statuses(20, 5, 9);
        assert_eq!((t, b), (Status::Ok, Status::Ok));
        assert!(d.starts_with("added"));
    }

    #[test]
    fn a_template_that_still_wraps_fails() {
        assert_eq!(statuses(20, 20, 24).0, Status::Fail);
        // One extra token that the runtime's template also gives: the template was kept.
        assert_eq!(statuses(5, 5, 9).0, Status::Fail);
        assert_eq!(statuses(20, 4, 9).0, Status::Unknown);
    }
}
