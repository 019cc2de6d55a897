//! The NPU lock: one model on the NPU at a time, across every instance on the board.
//!
//! The per-socket lock keeps two instances off one socket; two instances on two sockets would
//! both load a model onto the one NPU, where the second fails late or starves the first. An
//! exclusive `flock` on a file every instance can open guards the NPU itself: by default its
//! device node (no file to create, nothing left behind, the same for every user that may use
//! the NPU), or a file the configuration names. The file is only ever opened for reading and
//! never written or removed, so naming any file is harmless, and a root instance and one that
//! dropped privileges share it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::LifecycleError;

/// Held for the life of the process; the kernel releases the lock with the descriptor.
#[derive(Debug)]
pub struct NpuGuard {
    path: PathBuf,
    _lock: Flock<File>,
}

impl NpuGuard {
    /// Locks `path` without blocking: [`LifecycleError::NpuBusy`] when another process holds
    /// it. A missing file is created (mode 0644, never through a symlink).
    pub fn acquire(path: &Path) -> Result<NpuGuard, LifecycleError> {
        let file = open(path).map_err(LifecycleError::io("open NPU lock", path))?;
        let meta = file
            .metadata()
            .map_err(LifecycleError::io("inspect NPU lock", path))?;
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_char_device()) {
            return Err(LifecycleError::NpuLockNotAFile {
                path: path.to_owned(),
            });
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(NpuGuard {
                path: path.to_owned(),
                _lock: lock,
            }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LifecycleError::NpuBusy {
                path: path.to_owned(),
                pid: std::fs::read_to_string("/proc/locks")
                    .ok()
                    .and_then(|locks| holder(&locks, meta.dev(), meta.ino())),
            }),
            Err((_, errno)) => Err(LifecycleError::io("lock", path)(errno.into())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens for reading (enough for `flock`), following symlinks (`/dev/dri/by-path/...`):
/// nothing is written through it. `O_NONBLOCK`: a FIFO must not hang the start before it is
/// refused. A missing file is created with `O_EXCL`, which never follows a symlink.
fn open(path: &Path) -> io::Result<File> {
    let read = || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
    };
    match read() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        // Another instance created it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(),
        other => other,
    }
}

/// The pid holding a `flock` on the file `dev`/`ino`, from `/proc/locks` lines such as
/// `1: FLOCK  ADVISORY  WRITE 4242 00:1a:1234 0 EOF` (device as hex major:minor).
fn holder(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    let id = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, file) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        (*kind == "FLOCK" && *file == id)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::testdir::TempDir;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = TempDir::new("npu");
        let path = dir.join("npu.lock");
        let first = NpuGuard::acquire(&path).expect("created and locked");
        assert_eq!(first.path(), path);
        // flock locks belong to the open file: a second open in this process conflicts too.
        let err = NpuGuard::acquire(&path).unwrap_err();
        assert!(
            matches!(err, LifecycleError::NpuBusy { pid: Some(pid), .. } if pid == i32::try_from(std::process::id()).unwrap()),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 8);
        drop(first);
        NpuGuard::acquire(&path).expect("free again");
        assert!(
            path.exists(),
            "never removed: other instances may hold it next"
        );
    }

    #[test]
    fn a_directory_or_fifo_is_not_a_lock() {
        let dir = TempDir::new("npu-kind");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for path in [dir.join(""), fifo] {
            assert!(matches!(
                NpuGuard::acquire(&path),
                Err(LifecycleError::NpuLockNotAFile { .. })
            ));
        }
    }

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let dev = libc::makedev(0, 0x1a);
        let locks = "1: POSIX  ADVISORY  WRITE 7 00:1a:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:1a:1234 0 EOF\n";
        assert_eq!(holder(locks, dev, 1234), Some(4242));
        assert_eq!(
            holder(locks, dev, 99),
            None,
            "a POSIX lock is not ours to name"
        );
        assert_eq!(holder(locks, dev, 5), None);
    }
}
