//! Why setting up or tearing down the daemon's files and privileges failed.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit;

#[derive(Debug)]
pub enum LifecycleError {
    /// Another process holds the lock; `pid` is what its lock file says, if readable.
    AlreadyRunning {
        pid: Option<i32>,
    },
    /// The lock file was replaced every time we locked it.
    LockUnstable {
        path: PathBuf,
    },
    /// Something that does not hold the lock accepts connections on the socket.
    SocketInUse {
        path: PathBuf,
    },
    NotASocket {
        path: PathBuf,
    },
    /// The path changed between being checked and being removed.
    SocketChanged {
        path: PathBuf,
    },
    NotADirectory {
        path: PathBuf,
    },
    /// The socket's directory is a symlink (owned by `owner`, when known): never followed.
    SymlinkDir {
        path: PathBuf,
        owner: Option<u32>,
    },
    /// A directory this instance did not create, which `user` could not write to after the
    /// privilege drop (so could not remove the socket and lock file at exit).
    DirNotWritable {
        path: PathBuf,
        user: String,
    },
    /// Something at the lock path that must not be written: `problem` completes "it ...".
    LockFileRefused {
        path: PathBuf,
        problem: String,
    },
    /// World-writable without the sticky bit: anyone could replace the socket.
    InsecureDir {
        path: PathBuf,
        mode: u32,
    },
    /// Owned by another unprivileged user, who could replace the socket.
    ForeignDir {
        path: PathBuf,
        owner: u32,
    },
    /// Another process holds the NPU lock `path`; `pid` from `/proc/locks`, if found.
    NpuBusy {
        path: PathBuf,
        pid: Option<i32>,
    },
    /// The NPU lock path names a directory, a FIFO or a socket.
    NpuLockNotAFile {
        path: PathBuf,
    },
    NeedsRoot,
    UnknownUser {
        name: String,
    },
    UnknownGroup {
        name: String,
    },
    /// After dropping to `user`, root could still be regained.
    PrivilegesKept {
        user: String,
    },
    /// A file system operation on `path` failed; `action` completes "cannot ...".
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A system call without a path failed; `action` completes "cannot ...".
    Sys {
        action: String,
        source: io::Error,
    },
}

impl LifecycleError {
    pub(super) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LifecycleError {
        let path = path.into();
        move |source| LifecycleError::Io {
            action,
            path,
            source,
        }
    }

    pub(super) fn sys<E: Into<io::Error>>(
        action: impl Into<String>,
    ) -> impl FnOnce(E) -> LifecycleError {
        let action = action.into();
        move |source| LifecycleError::Sys {
            action,
            source: source.into(),
        }
    }

    /// Another instance holds the lock, or something else serves the socket.
    pub fn is_already_running(&self) -> bool {
        matches!(
            self,
            LifecycleError::AlreadyRunning { .. } | LifecycleError::SocketInUse { .. }
        )
    }

    /// The process exit code, per the scheme in [`exit`].
    pub fn exit_code(&self) -> i32 {
        use LifecycleError::{NeedsRoot, UnknownGroup, UnknownUser};
        match self {
            _ if self.is_already_running() => exit::ALREADY_RUNNING,
            LifecycleError::NpuBusy { .. } => exit::NPU_BUSY,
            LifecycleError::NpuLockNotAFile { .. }
            | NeedsRoot
            | UnknownUser { .. }
            | UnknownGroup { .. } => exit::USAGE,
            _ => exit::FAILURE,
        }
    }
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LifecycleError::{
            AlreadyRunning, DirNotWritable, ForeignDir, InsecureDir, Io, LockFileRefused,
            LockUnstable, NeedsRoot, NotADirectory, NotASocket, NpuBusy, NpuLockNotAFile,
            PrivilegesKept, SocketChanged, SocketInUse, SymlinkDir, Sys, UnknownGroup, UnknownUser,
        };
        match self {
            AlreadyRunning { pid: Some(pid) } => write!(f, "already running (pid {pid})"),
            AlreadyRunning { pid: None } => write!(f, "already running (pid unknown)"),
            LockUnstable { path } => {
                write!(f, "lock file '{}' keeps being replaced; giving up", path.display())
            }
            SocketInUse { path } => write!(
                f,
                "a process that does not hold the lock is serving {}; refusing to remove it",
                path.display()
            ),
            NotASocket { path } => {
                write!(f, "{} exists and is not a socket; refusing to remove it", path.display())
            }
            SocketChanged { path } => {
                write!(f, "{} changed while being checked; refusing to remove it", path.display())
            }
            NotADirectory { path } => write!(f, "{} exists and is not a directory", path.display()),
            SymlinkDir { path, owner } => {
                write!(f, "socket directory {} is a symbolic link", path.display())?;
                if let Some(owner) = owner {
                    write!(f, " (owned by uid {owner})")?;
                }
                write!(f, "; refusing to follow it: name the real directory, or remove the link")
            }
            DirNotWritable { path, user } => write!(
                f,
                "directory {} was not created by rkllmd and user '{user}' cannot write to it, so \
                 could not remove the socket at exit; refusing to change it (remove it so rkllmd \
                 creates it, or give it to '{user}')",
                path.display()
            ),
            LockFileRefused { path, problem } => write!(
                f,
                "lock file {} {problem}; refusing to write it (remove it if no rkllmd runs there)",
                path.display()
            ),
            InsecureDir { path, mode } => write!(
                f,
                "directory {} is world-writable without the sticky bit (mode {mode:04o}); refusing to use it",
                path.display()
            ),
            ForeignDir { path, owner } => write!(
                f,
                "directory {} belongs to another user (uid {owner}); refusing to use it",
                path.display()
            ),
            NpuBusy { path, pid } => {
                write!(f, "the NPU is in use by another instance (")?;
                if let Some(pid) = pid {
                    write!(f, "pid {pid}, ")?;
                }
                write!(
                    f,
                    "holding {}): one model per NPU; set npu-lock = none if the board has room \
                     for both",
                    path.display()
                )
            }
            NpuLockNotAFile { path } => write!(
                f,
                "npu-lock {} is neither a file nor a device; name a file every instance can open",
                path.display()
            ),
            NeedsRoot => write!(f, "--user needs root"),
            UnknownUser { name } => write!(f, "user '{name}' does not exist"),
            UnknownGroup { name } => write!(f, "group '{name}' does not exist"),
            PrivilegesKept { user } => {
                write!(f, "switched to user '{user}' but could still regain root; refusing to run")
            }
            Io { action, path, .. } => write!(f, "cannot {action} {}", path.display()),
            Sys { action, .. } => write!(f, "cannot {action}"),
        }
    }
}

impl std::error::Error for LifecycleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LifecycleError::Io { source, .. } | LifecycleError::Sys { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn exit_codes_follow_the_scheme() {
        let p = || PathBuf::from("/run/rkllmd/rkllmd.sock");
        assert_eq!(
            LifecycleError::AlreadyRunning { pid: Some(7) }.exit_code(),
            3
        );
        assert_eq!(LifecycleError::SocketInUse { path: p() }.exit_code(), 3);
        assert_eq!(LifecycleError::NeedsRoot.exit_code(), 2);
        assert_eq!(
            LifecycleError::UnknownUser { name: "x".into() }.exit_code(),
            2
        );
        assert_eq!(
            LifecycleError::UnknownGroup { name: "x".into() }.exit_code(),
            2
        );
        assert_eq!(LifecycleError::NotASocket { path: p() }.exit_code(), 1);
        assert!(LifecycleError::AlreadyRunning { pid: None }.is_already_running());
        assert!(LifecycleError::SocketInUse { path: p() }.is_already_running());
        assert!(!LifecycleError::NotASocket { path: p() }.is_already_running());
        let io = LifecycleError::io("bind socket", p())(io::Error::from(
            io::ErrorKind::PermissionDenied,
        ));
        assert_eq!(io.exit_code(), 1);
    }

    #[test]
    fn messages_are_sentences_that_leave_the_cause_to_source() {
        assert_eq!(
            LifecycleError::AlreadyRunning { pid: Some(42) }.to_string(),
            "already running (pid 42)"
        );
        let e = LifecycleError::io("bind socket", "/x.sock")(io::Error::from(
            io::ErrorKind::PermissionDenied,
        ));
        assert_eq!(e.to_string(), "cannot bind socket /x.sock");
        assert!(e.source().is_some());
        assert!(LifecycleError::NeedsRoot.source().is_none());
        assert_eq!(
            LifecycleError::NotASocket { path: "/x".into() }.to_string(),
            "/x exists and is not a socket; refusing to remove it"
        );
    }
}
