//! The socket's directory, opened once without following a symlink and judged by what was
//! opened: the lock file is then created and removed relative to that handle.
//!
//! Why a symlink is never followed here: a non-root daemon without `XDG_RUNTIME_DIR` uses
//! `/tmp/rkllmd-UID`, a name any local user can take first. A symlink planted there to a
//! sticky, world-writable directory passes every check on its target, and its owner can later
//! point it elsewhere and receive the clients' prompts on a socket of their own.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{geteuid, Gid};

use super::privileges::Account;
use super::LifecycleError;

/// An open handle on the socket's directory, checked as opened.
#[derive(Debug)]
pub struct SocketDir {
    path: PathBuf,
    handle: File,
    /// Whether this instance created the directory (and so may give it away).
    created: bool,
}

/// Creates `dir` (and missing parents, 0755) if needed: 0750 and owned by `group` when one is
/// given, else 0755. An existing directory keeps its mode and owner, but is refused when it is
/// a symlink, or anyone could replace files in it: world-writable without the sticky bit, or
/// (when we are not root) owned by another unprivileged user, as a squatted `/tmp/rkllmd-UID`
/// would be. A relative socket path without a directory uses the working directory.
pub fn prepare_dir(dir: &Path, group: Option<Gid>) -> Result<SocketDir, LifecycleError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut created = false;
    match dir.symlink_metadata() {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(LifecycleError::io("create directory", parent))?;
            }
            // Created owner-only, then opened up to the final mode once the group is right.
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => created = true,
                // Someone made it meanwhile: judged below like any existing one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LifecycleError::io("create directory", dir)(e)),
            }
        }
        Err(e) => return Err(LifecycleError::io("inspect directory", dir)(e)),
    }
    let handle = open_dir(dir)?;
    let meta = handle
        .metadata()
        .map_err(LifecycleError::io("inspect directory", dir))?;
    check_opened(dir, &meta)?;
    let socket_dir = SocketDir {
        path: dir.to_owned(),
        handle,
        created,
    };
    if created {
        let mode = match group {
            Some(gid) => {
                std::os::unix::fs::fchown(&socket_dir.handle, None, Some(gid.as_raw()))
                    .map_err(LifecycleError::io("set the group of directory", dir))?;
                0o750
            }
            None => 0o755,
        };
        socket_dir
            .handle
            .set_permissions(Permissions::from_mode(mode))
            .map_err(LifecycleError::io("set the mode of directory", dir))?;
    }
    Ok(socket_dir)
}

/// Opens `dir` itself: `O_NOFOLLOW` refuses a symlink in its last component, `O_DIRECTORY`
/// anything but a directory.
fn open_dir(dir: &Path) -> Result<File, LifecycleError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(handle) => Ok(handle),
        // With both flags a symlink gives ENOTDIR or ELOOP: tell it apart by lstat.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            match dir.symlink_metadata() {
                Ok(meta) if meta.file_type().is_symlink() => Err(LifecycleError::SymlinkDir {
                    path: dir.to_owned(),
                    owner: Some(meta.uid()),
                }),
                _ => Err(LifecycleError::NotADirectory {
                    path: dir.to_owned(),
                }),
            }
        }
        Err(e) => Err(LifecycleError::io("open directory", dir)(e)),
    }
}

fn check_opened(dir: &Path, meta: &std::fs::Metadata) -> Result<(), LifecycleError> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(LifecycleError::InsecureDir {
            path: dir.to_owned(),
            mode,
        });
    }
    let euid = geteuid().as_raw();
    if euid != 0 && meta.uid() != euid && meta.uid() != 0 {
        return Err(LifecycleError::ForeignDir {
            path: dir.to_owned(),
            owner: meta.uid(),
        });
    }
    Ok(())
}

impl SocketDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this instance created the directory.
    pub fn created(&self) -> bool {
        self.created
    }

    pub(super) fn fd(&self) -> RawFd {
        self.handle.as_raw_fd()
    }

    /// A second handle on the same directory, for an owner that outlives this one.
    pub(super) fn duplicate(&self) -> io::Result<SocketDir> {
        Ok(SocketDir {
            path: self.path.clone(),
            handle: self.handle.try_clone()?,
            created: self.created,
        })
    }

    /// Lets `user` (whom [`drop_privileges`](super::drop_privileges) will switch to) remove the
    /// socket and lock file at exit. Call with the lock held. A directory this instance created
    /// is given to the user; one it found is never changed, and is refused when the user could
    /// not write to it. Needs root for the change; nothing to do when the user owns it already.
    pub fn hand_to(&self, user: &Account) -> Result<(), LifecycleError> {
        let meta = self
            .handle
            .metadata()
            .map_err(LifecycleError::io("inspect directory", &self.path))?;
        if meta.uid() == user.uid.as_raw() {
            return Ok(());
        }
        if !self.created {
            if user.may_write(&meta) {
                return Ok(());
            }
            return Err(LifecycleError::DirNotWritable {
                path: self.path.clone(),
                user: user.name.clone(),
            });
        }
        std::os::unix::fs::fchown(&self.handle, Some(user.uid.as_raw()), None)
            .map_err(LifecycleError::io("give away directory", &self.path))
    }
}

#[cfg(test)]
#[path = "dir_tests.rs"]
mod tests;
