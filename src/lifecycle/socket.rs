//! The socket file and its directory: create, clear a stale one, bind, and remove only our own.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{geteuid, Gid};

use super::LifecycleError;

/// Creates `dir` (and missing parents, 0755) if needed: 0750 and owned by `group` when one is
/// given, else 0755. An existing directory keeps its mode and owner, but is refused when anyone
/// could replace files in it: world-writable without the sticky bit, or (when we are not root)
/// owned by another unprivileged user, as a squatted `/tmp/rkllmd-UID` would be.
pub fn prepare_dir(dir: &Path, group: Option<Gid>) -> Result<(), LifecycleError> {
    match fs::metadata(dir) {
        Ok(meta) => return check_existing_dir(dir, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LifecycleError::io("inspect directory", dir)(e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(LifecycleError::io("create directory", parent))?;
    }
    // Created owner-only, then opened up to the final mode once the group is right.
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(LifecycleError::io("inspect directory", dir))?;
            return check_existing_dir(dir, &meta);
        }
        Err(e) => return Err(LifecycleError::io("create directory", dir)(e)),
    }
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::lchown(dir, None, Some(gid.as_raw()))
                .map_err(LifecycleError::io("set the group of directory", dir))?;
            0o750
        }
        None => 0o755,
    };
    fs::set_permissions(dir, Permissions::from_mode(mode))
        .map_err(LifecycleError::io("set the mode of directory", dir))
}

fn check_existing_dir(dir: &Path, meta: &fs::Metadata) -> Result<(), LifecycleError> {
    if !meta.is_dir() {
        return Err(LifecycleError::NotADirectory {
            path: dir.to_owned(),
        });
    }
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
