//! Scanning the command line into (option, value) pairs; values are parsed later, after the
//! config file, so that flags override it.

use std::path::PathBuf;

use super::error::{ConfigError, Origin};
use super::options::{self, Kind, Setting};
use super::values;

/// One value-carrying flag as typed.
pub(super) struct Flag {
    pub key: Setting,
    /// The flag as typed, without any `=value`: `--top-p`.
    pub name: String,
    pub value: String,
}

pub(super) struct CommandLine {
    pub check: bool,
    /// `selftest`: the runtime's behaviour checked on this board.
    pub selftest: bool,
    /// `top`: watch a running daemon.
    pub top: bool,
    pub config: Option<PathBuf>,
    /// `--root`, meaningful for `check` only.
    pub root: Option<PathBuf>,
    /// `--config-only`, meaningful for `check` only.
    pub config_only: bool,
    pub flags: Vec<Flag>,
}

pub(super) enum Scan {
    Help,
    Version,
    Parsed(CommandLine),
}

/// `args` are the arguments after the program name. `check`, `selftest` and `top` are
/// subcommands only in first position. `--help` and `--version` stop the scan where they stand.
pub(super) fn scan(args: &[String]) -> Result<Scan, ConfigError> {
    let mut rest = args.iter().peekable();
    let check = rest.peek().is_some_and(|a| a.as_str() == "check");
    let selftest = rest.peek().is_some_and(|a| a.as_str() == "selftest");
    let top = rest.peek().is_some_and(|a| a.as_str() == "top");
    if check || selftest || top {
        rest.next();
    }
    let mut line = CommandLine {
        check,
        selftest,
        top,
        config: None,
        root: None,
        config_only: false,
        flags: Vec::new(),
    };
    while let Some(arg) = rest.next() {
        let (opt, typed, inline) = if arg == "--" {
            // End of options; nothing positional is accepted after it either.
            return match rest.next() {
                Some(extra) => Err(ConfigError::UnexpectedArgument { arg: extra.clone() }),
                None => Ok(Scan::Parsed(line)),
            };
        } else if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let typed = format!("--{name}");
            match options::by_name(name) {
                Some(opt) => (opt, typed, inline),
                None => return Err(ConfigError::UnknownOption { option: typed }),
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let mut chars = arg.chars().skip(1);
            let opt = match (chars.next(), chars.next()) {
                (Some(c), None) => options::by_short(c),
                _ => None,
            };
            match opt {
                Some(opt) => (opt, arg.clone(), None),
                None => {
                    return Err(ConfigError::UnknownOption {
                        option: arg.clone(),
                    })
                }
            }
        } else {
            return Err(ConfigError::UnexpectedArgument { arg: arg.clone() });
        };

        let value = match opt.kind {
            Kind::Action if inline.is_some() => {
                return Err(ConfigError::UnexpectedValue { option: typed })
            }
            Kind::Action if opt.key == Setting::Help => return Ok(Scan::Help),
            Kind::Action => return Ok(Scan::Version),
            Kind::Switch => inline.unwrap_or("true").to_owned(),
            Kind::Value(_) => match inline {
                Some(v) => v.to_owned(),
                // A following option is a forgotten value, not the value.
                None => match rest.next() {
                    Some(v) if !v.starts_with("--") => v.clone(),
                    _ => return Err(ConfigError::MissingValue { option: typed }),
                },
            },
        };
        if opt.key == Setting::ConfigOnly {
            line.config_only =
                values::boolean(&value).map_err(|expected| ConfigError::InvalidValue {
                    origin: Origin::CommandLine,
                    name: typed,
                    value,
                    expected,
                })?;
        } else if matches!(opt.key, Setting::Config | Setting::Root) {
            let path = values::path(&value).map_err(|expected| ConfigError::InvalidValue {
                origin: Origin::CommandLine,
                name: typed,
                value,
                expected,
            })?;
            if opt.key == Setting::Root {
                line.root = Some(path);
            } else {
                line.config = Some(path);
            }
        } else {
            line.flags.push(Flag {
                key: opt.key,
                name: typed,
                value,
            });
        }
    }
    Ok(Scan::Parsed(line))
}
