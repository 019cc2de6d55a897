//! The socket's directory, judged by the rules the daemon applies at start
//! (`lifecycle::prepare_dir`): created 0750 with the socket group (0755 without one); an
//! existing one keeps its owner and mode but is refused when it is a symlink, world-writable
//! without the sticky bit, or owned by another unprivileged user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{access, geteuid, AccessFlags};

use super::report::Finding;
use crate::board::Root;
use crate::config::Config;

const NAME: &str = "socket";

/// The id of `name` (or a plain number) in an `/etc/passwd` or `/etc/group` style file.
pub fn id_in(table: &str, name: &str) -> Option<u32> {
    table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let entry = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            (entry == name).then_some(id)
        })
        .or_else(|| name.parse().ok())
}

pub fn check(root: &Root, cfg: &Config) -> Finding {
    let socket = &cfg.socket;
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Finding::ok(
            NAME,
            format!("{} in the working directory", socket.display()),
        );
    };
    let group = match &cfg.socket_group {
        Some(name) => match id_in(&root.read("/etc/group").unwrap_or_default(), name) {
            Some(gid) => Some((name.as_str(), gid)),
            None => {
                return Finding::fail(
                    NAME,
                    format!("socket-group '{name}' does not exist (/etc/group)"),
                    format!("create it (addgroup {name}) and add the clients' users to it"),
                )
            }
        },
        None => None,
    };
    if let Some(user) = &cfg.user {
        if id_in(&root.read("/etc/passwd").unwrap_or_default(), user).is_none() {
            return Finding::fail(
                NAME,
                format!("user '{user}' does not exist (/etc/passwd)"),
                format!("create it (adduser -S {user}) or drop the user option"),
            );
        }
    }
    let euid = geteuid().as_raw();
    // lstat, as the daemon opens it: a symlink there is refused, never followed.
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => existing(dir, &meta, group, euid),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .unwrap_or(Path::new("/"));
            if euid == 0 || access(parent, AccessFlags::W_OK | AccessFlags::X_OK).is_ok() {
                let mode = if group.is_some() { "0750" } else { "0755" };
                Finding::ok(
                    NAME,
                    format!("{} will be created (mode {mode}) at start", dir.display()),
                )
            } else {
                Finding::fail(
                    NAME,
                    format!(
                        "{} does not exist and uid {euid} cannot create it in {}",
                        dir.display(),
                        parent.display()
                    ),
                    "start rkllmd as root (with user to drop privileges), create the directory \
                     for its user, or choose another socket path",
                )
            }
        }
        Err(e) => Finding::fail(
            NAME,
            format!("cannot inspect {}: {e}", dir.display()),
            "choose a socket path the daemon can reach",
        ),
    }
}

fn existing(
    dir: &Path,
    meta: &std::fs::Metadata,
    group: Option<(&str, u32)>,
    euid: u32,
) -> Finding {
    let mode = meta.mode() & 0o7777;
    let shown = format!(
        "{} (mode {mode:04o}, owner {}, group {})",
        dir.display(),
        meta.uid(),
        meta.gid()
    );
    if meta.file_type().is_symlink() {
        return Finding::fail(
            NAME,
            format!(
                "{} is a symbolic link (owned by uid {}): rkllmd refuses to follow it",
                dir.display(),
                meta.uid()
            ),
            "name the directory it points to, or remove the link (another user may have planted it)",
        );
    }
    if !meta.is_dir() {
        return Finding::fail(
            NAME,
            format!("{} is not a directory", dir.display()),
            "choose another socket path",
        );
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Finding::fail(
            NAME,
            format!("{shown} is world-writable without the sticky bit: rkllmd refuses it"),
            format!(
                "chmod o-w {} (anyone could replace the socket)",
                dir.display()
            ),
        );
    }
    if euid != 0 && meta.uid() != euid && meta.uid() != 0 {
        return Finding::fail(
            NAME,
            format!("{shown} belongs to another user: rkllmd refuses it"),
            "remove it or choose another socket path",
        );
    }
    if euid != 0 && access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        return Finding::fail(
            NAME,
            format!("{shown} is not writable by uid {euid}"),
            "start rkllmd as root (with user to drop privileges) or fix the directory's owner",
        );
    }
    if let Some((name, gid)) = group {
        if meta.gid() != gid || mode & 0o010 == 0 {
            return Finding::warn(
                NAME,
                format!("{shown}: members of '{name}' cannot reach the socket through it"),
                format!(
                    "an existing directory keeps its owner and mode: chgrp {name} {0} && chmod g+x {0}, \
                     or remove it so rkllmd creates it",
                    dir.display()
                ),
            );
        }
    }
    Finding::ok(NAME, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_passwd_and_group_files() {
        let group = "# comment\nroot:x:0:\nrkllm:x:990:alice,bob\nbroken\n";
        assert_eq!(id_in(group, "rkllm"), Some(990));
        assert_eq!(id_in(group, "root"), Some(0));
        assert_eq!(id_in(group, "nobody"), None);
        assert_eq!(
            id_in(group, "1234"),
            Some(1234),
            "numbers stand for themselves"
        );
        let passwd = "rkllmd:x:991:990:rkllmd:/var/empty:/sbin/nologin\n";
        assert_eq!(id_in(passwd, "rkllmd"), Some(991));
        assert_eq!(id_in("", "x"), None);
    }
}
