//! `rkllm_set_function_tools` under the model's own template, as rkllmd uses it with
//! `chat-template = runtime`: the definitions must reach the prompt, and a call with no tools
//! must take them out again (rkllmd's way to serve a request without tools after one with them).
//! Both show in prefill counts of the same text on an empty cache: before, with the tools, after
//! their removal.

use super::session::Session;
use crate::doctor::Finding;

const NAME: &str = "runtime-tools";
const TEXT: &str = " apple river stone cloud";
/// As the daemon sends them without a system message (`engine/runtime_tools.rs`).
const SYSTEM: &str = "You are a helpful assistant.";
const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_time", "description": "The time.", "parameters": {"type": "object", "properties": {}}}}]"#;
const TAG: &str = "tool_response";

/// How far the calls got.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Refused(String),
    RemovalRefused { plain: u32, with: u32, why: String },
    Counted { plain: u32, with: u32, without: u32 },
}

/// On a handle still under the model's own template.
pub fn check(s: &mut Session) -> Finding {
    let seen = (|| {
        let plain = s.prefill_count(TEXT)?;
        if let Err(e) = s.rt.set_function_tools(SYSTEM, TOOLS, TAG) {
            return Ok(Seen::Refused(e.to_string()));
        }
        let with = s.prefill_count(TEXT)?;
        if let Err(e) = s.rt.set_function_tools(SYSTEM, "", TAG) {
            return Ok(Seen::RemovalRefused {
                plain,
                with,
                why: e.to_string(),
            });
        }
        let without = s.prefill_count(TEXT)?;
        Ok::<_, String>(Seen::Counted {
            plain,
            with,
            without,
        })
    })();
    match seen {
        Ok(seen) => judge(seen),
        Err(why) => Finding::unknown(NAME, why),
    }
}

fn judge(seen: Seen) -> Finding {
    const HINT: &str = "with chat-template = runtime requests would get the wrong tools; use a \
                        preset chat-template (rkllmd writes the tools itself) and send us this report";
    match seen {
        Seen::Refused(why) => Finding::ok(
            NAME,
            format!(
                "set_function_tools under the model's own template: refused ({why}); with \
                 chat-template = runtime requests run without their tools (a preset template \
                 writes them itself)"
            ),
        ),
        Seen::RemovalRefused { plain, with, why } => Finding::fail(
            NAME,
            format!(
                "set_function_tools under the model's own template: the tools add {} tokens, and a call with none is refused ({why})",
                i64::from(with) - i64::from(plain)
            ),
            HINT,
        ),
        Seen::Counted {
            plain,
            with,
            without,
        } => {
            let facts = format!(
                "{plain} tokens for '{}', {with} with the tools, {without} after a call with none",
                TEXT.trim_start()
            );
            if with <= plain {
                Finding::fail(
                    NAME,
                    format!("set_function_tools accepted, but the tools do not reach the prompt ({facts})"),
                    HINT,
                )
            } else if without >= with {
                Finding::fail(
                    NAME,
                    format!("a call with no tools does not remove them ({facts})"),
                    HINT,
                )
            } else {
                Finding::ok(
                    NAME,
                    format!("set_function_tools under the model's own template puts the tools in the prompt and a call with none takes them out ({facts})"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn counted(plain: u32, with: u32, without: u32) -> Finding {
        judge(Seen::Counted {
            plain,
            with,
            without,
        })
    }

    #[test]
    fn tools_that_come_and_go_are_ok() {
        assert_eq!(counted(25, 80, 25).status, Status::Ok);
        // Another system prompt after the removal than the model's own: still removed.
        assert_eq!(counted(25, 80, 20).status, Status::Ok);
    }

    #[test]
    fn tools_that_never_arrive_or_never_leave_fail() {
        let f = counted(25, 25, 25);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("do not reach the prompt"), "{}", f.detail);
        let f = counted(25, 80, 80);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("does not remove them"), "{}", f.detail);
        let f = judge(Seen::RemovalRefused {
            plain: 25,
            with: 80,
            why: "code -1".into(),
        });
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("add 55 tokens"), "{}", f.detail);
    }

    #[test]
    fn refused_tools_are_a_behaviour_not_a_failure() {
        let f = judge(Seen::Refused("code -1".into()));
        assert_eq!(f.status, Status::Ok);
        assert!(f.detail.contains("refused (code -1)"), "{}", f.detail);
    }
}
