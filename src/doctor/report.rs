//! What a check found, and how findings are printed.
//!
//! One finding per line: a status word padded to six columns (`unknown`, longer, is followed by
//! one space), the check's name, a colon and what was found; a problem adds an indented `hint:`
//! line. `grep '^FAIL'` lists what blocks serving, `grep -v '^ok'` everything worth a look.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// `selftest`: the check could not observe the behaviour (e.g. the run ended before the
    /// abort landed); nothing is known to be wrong.
    Unknown,
    /// The check does not apply here (e.g. no SVE question on a runtime that does not use it).
    Skip,
    /// Abnormal but rkllmd can serve.
    Warn,
    /// rkllmd cannot serve until this is fixed.
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unknown => "unknown",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    /// Short and stable: `npu`, `runtime`, `sve`, ... (documented in the README).
    pub check: &'static str,
    pub detail: String,
    pub hint: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Ok,
            check,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn unknown(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Unknown,
            check,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn skip(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Skip,
            check,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn warn(
        check: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding {
            status: Status::Warn,
            check,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn fail(
        check: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding {
            status: Status::Fail,
            check,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

impl Finding {
    /// The same finding, its detail prefixed with what it is about (`model 'qwen'`).
    pub fn about(mut self, subject: &str) -> Finding {
        self.detail = format!("{subject}: {}", self.detail);
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `unknown` is longer than the column: one space still separates it.
        let word = self.status.word();
        let gap = if word.len() < 6 { "" } else { " " };
        write!(f, "{word:<6}{gap}{}: {}", self.check, self.detail)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n      hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closing line: counts, so a script can tell at a glance.
pub fn summary(findings: &[Finding]) -> String {
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    let (failed, warned) = (count(Status::Fail), count(Status::Warn));
    if failed > 0 {
        format!("{failed} check(s) failed, {warned} warning(s): rkllmd cannot serve as configured")
    } else {
        format!("no check failed, {warned} warning(s)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_aligned_and_hints_indented() {
        assert_eq!(
            Finding::ok("npu", "/dev/dri/renderD129").to_string(),
            "ok    npu: /dev/dri/renderD129"
        );
        assert_eq!(
            Finding::fail("runtime", "none found", "install it").to_string(),
            "FAIL  runtime: none found\n      hint: install it"
        );
        assert_eq!(
            Finding::unknown("abort", "no abort landed").to_string(),
            "unknown abort: no abort landed"
        );
        assert_eq!(
            Finding::warn("cpufreq", "ondemand", "x").to_string(),
            "warn  cpufreq: ondemand\n      hint: x"
        );
    }

    #[test]
    fn the_summary_counts_failures_and_warnings() {
        let f = [
            Finding::ok("a", ""),
            Finding::warn("b", "", ""),
            Finding::fail("c", "", ""),
        ];
        assert!(summary(&f).starts_with("1 check(s) failed, 1 warning(s)"));
        assert_eq!(summary(&f[..2]), "no check failed, 1 warning(s)");
    }
}
