//! The socket file: clear a stale one, bind, and remove only our own.

use std::fs::{self, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{umask, Mode};
use nix::unistd::Gid;

use super::LifecycleError;

/// What [`clear_stale`] found at the socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleOutcome {
    Nothing,
    /// A socket no one listened on, left by an instance that died; now removed.
    Removed,
}

enum Probe {
    Refused,
    Gone,
    Live,
}

/// Removes a dead socket at `socket_path`. Call with the lock held: a socket that accepts
/// connections, or anything that is not a socket, is refused and left alone. Symlinks are
/// never followed.
pub fn clear_stale(socket_path: &Path) -> Result<StaleOutcome, LifecycleError> {
    let before = match fs::symlink_metadata(socket_path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StaleOutcome::Nothing),
        Err(e) => return Err(LifecycleError::io("inspect", socket_path)(e)),
    };
    if !before.file_type().is_socket() {
        return Err(LifecycleError::NotASocket {
            path: socket_path.to_owned(),
        });
    }
    match probe(socket_path).map_err(LifecycleError::io("probe socket", socket_path))? {
        Probe::Live => {
            return Err(LifecycleError::SocketInUse {
                path: socket_path.to_owned(),
            })
        }
        Probe::Gone => return Ok(StaleOutcome::Removed),
        Probe::Refused => {}
    }
    match fs::symlink_metadata(socket_path) {
        Ok(now) if now.dev() == before.dev() && now.ino() == before.ino() => {}
        Ok(_) => {
            return Err(LifecycleError::SocketChanged {
                path: socket_path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StaleOutcome::Removed),
        Err(e) => return Err(LifecycleError::io("inspect", socket_path)(e)),
    }
    match fs::remove_file(socket_path) {
        Ok(()) => Ok(StaleOutcome::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StaleOutcome::Removed),
        Err(e) => Err(LifecycleError::io("remove stale socket", socket_path)(e)),
    }
}

/// Connects without blocking: a live listener with a full backlog answers EAGAIN instead of
/// hanging us.
fn probe(path: &Path) -> io::Result<Probe> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => Ok(Probe::Live),
        Err(Errno::ECONNREFUSED) => Ok(Probe::Refused),
        Err(Errno::ENOENT) => Ok(Probe::Gone),
        Err(errno) => Err(errno.into()),
    }
}

/// Serialises our umask changes: the umask is per process, so two binds racing on threads
/// would restore each other's temporary value.
static UMASK_LOCK: Mutex<()> = Mutex::new(());

/// Restores the umask it replaced when dropped.
struct UmaskGuard(Mode);

impl UmaskGuard {
    fn set(mask: Mode) -> UmaskGuard {
        UmaskGuard(umask(mask))
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        umask(self.0);
    }
}

/// Binds a Unix listener at `socket_path` with permission bits `mode` and, when given, group
/// `group`. The file is created owner-only, gets its group, and only then its final mode, so
/// it never exists with looser permissions than asked for. The listener is nonblocking.
///
/// The umask is changed for the duration of `bind(2)`; other threads creating files at that
/// moment would get it too, so bind before starting threads that create files.
pub fn bind(
    socket_path: &Path,
    mode: u32,
    group: Option<Gid>,
) -> Result<(UnixListener, SocketGuard), LifecycleError> {
    let listener = {
        let _serial = UMASK_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _umask = UmaskGuard::set(Mode::from_bits_truncate(0o777 & !(mode & 0o700)));
        UnixListener::bind(socket_path).map_err(LifecycleError::io("bind socket", socket_path))?
    };
    let meta = fs::symlink_metadata(socket_path)
        .map_err(LifecycleError::io("inspect socket", socket_path))?;
    // From here on, an error drops the guard, which removes the file we just made.
    let guard = SocketGuard {
        path: socket_path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        outcome: None,
    };
    if let Some(gid) = group {
        std::os::unix::fs::lchown(socket_path, None, Some(gid.as_raw()))
            .map_err(LifecycleError::io("set the group of socket", socket_path))?;
    }
    fs::set_permissions(socket_path, Permissions::from_mode(mode & 0o777))
        .map_err(LifecycleError::io("set the mode of socket", socket_path))?;
    listener
        .set_nonblocking(true)
        .map_err(LifecycleError::io("make nonblocking socket", socket_path))?;
    Ok((listener, guard))
}

/// Owns the socket file `bind` created: removes it on drop, but only while the path still
/// names that same file, so a socket another instance put there is never removed.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// `None` until removal was attempted, then whether the file is gone.
    outcome: Option<bool>,
}

impl SocketGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file now if it is still ours. Returns whether our file is gone (by
    /// this call or an earlier one); `false` when the path was left alone because it names
    /// another file, or unlinking failed. Later calls return the first result.
    pub fn remove_now(&mut self) -> bool {
        if let Some(removed) = self.outcome {
            return removed;
        }
        let removed = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                match fs::remove_file(&self.path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => {
                        log::warn!("cannot remove socket {}: {e}", self.path.display());
                        false
                    }
                }
            }
            Ok(_) => {
                log::warn!(
                    "socket {} was replaced by another file; leaving it",
                    self.path.display()
                );
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => {
                log::warn!("cannot inspect socket {}: {e}", self.path.display());
                false
            }
        };
        self.outcome = Some(removed);
        removed
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.remove_now();
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
