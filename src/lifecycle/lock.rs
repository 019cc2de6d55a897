//! The lock file beside the socket: one instance per socket path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::{fstatat, Mode};
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use super::{LifecycleError, SocketDir};

/// How often to retry when the file we locked was unlinked under us.
const ATTEMPTS: usize = 5;

/// An exclusive `flock` on `<socket>.lock`, which holds our pid. Dropping it removes the file
/// (if it is still the one we locked) and releases the lock.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    /// The socket's directory and the lock file's name in it: removal works on what was
    /// opened, not on a path someone may have changed since.
    dir: SocketDir,
    name: OsString,
    dev: u64,
    ino: u64,
    // Declared last so it is closed (and unlocked) after `drop` has unlinked the path.
    lock: Flock<File>,
}

impl LockFile {
    /// Locks `<socket_path>.lock` in `dir` without blocking. When another process holds it,
    /// returns [`LifecycleError::AlreadyRunning`] and changes nothing of theirs. Nothing is
    /// written before the lock is held and the file is known to be a plain file of ours with
    /// one link: a symlink or a hard link planted at the path is refused, never written through.
    pub fn acquire(dir: &SocketDir, socket_path: &Path) -> Result<LockFile, LifecycleError> {
        let mut path = OsString::from(socket_path.as_os_str());
        path.push(".lock");
        let path = PathBuf::from(path);
        let mut name = socket_path.file_name().unwrap_or_default().to_owned();
        name.push(".lock");
        for _ in 0..ATTEMPTS {
            let file = open(dir, &name).map_err(LifecycleError::io("open lock file", &path))?;
            let meta = file
                .metadata()
                .map_err(LifecycleError::io("inspect lock file", &path))?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    return Err(LifecycleError::AlreadyRunning {
                        pid: read_pid(&mut file),
                    })
                }
                Err((_, errno)) => return Err(LifecycleError::io("lock", &path)(errno.into())),
            };
            // The previous holder may have unlinked the file between our open and our lock:
            // then we hold a lock no one else can see. Start again with the file now there.
            match fstatat(
                Some(dir.fd()),
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(now) if now.st_dev == meta.dev() && now.st_ino == meta.ino() => {}
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(LifecycleError::io("inspect lock file", &path)(e.into())),
            }
            check_plain(&path, &meta)?;
            let held = LockFile {
                dir: dir
                    .duplicate()
                    .map_err(LifecycleError::io("open directory", dir.path()))?,
                name: name.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
                path: path.clone(),
                lock,
            };
            // On a full file system, dropping `held` removes the (empty) file: nothing is left.
            held.write_pid()
                .map_err(LifecycleError::io("write lock file", &path))?;
            return Ok(held);
        }
        Err(LifecycleError::LockUnstable { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_pid(&self) -> io::Result<()> {
        self.lock.set_len(0)?;
        self.lock
            .write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
    }
}

/// Opens (or creates, mode 0644) `name` in `dir` for writing, without following a symlink and
/// without truncating: what is there is checked before anything is written.
fn open(dir: &SocketDir, name: &OsStr) -> io::Result<File> {
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // O_NONBLOCK: a FIFO planted at the path must not hang us before the checks refuse it.
    let fd = nix::fcntl::openat(
        Some(dir.fd()),
        name,
        flags | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o644),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A lock file we may write: a regular file, ours, with no other name a hard link gives it.
fn check_plain(path: &Path, meta: &std::fs::Metadata) -> Result<(), LifecycleError> {
    let refuse = |problem: String| {
        Err(LifecycleError::LockFileRefused {
            path: path.to_owned(),
            problem,
        })
    };
    if !meta.file_type().is_file() {
        return refuse("is not a regular file".to_owned());
    }
    if meta.nlink() != 1 {
        return refuse(format!("has {} hard links", meta.nlink()));
    }
    let euid = geteuid().as_raw();
    if meta.uid() != euid {
        return refuse(format!("belongs to uid {}, not to uid {euid}", meta.uid()));
    }
    Ok(())
}

/// The pid the holder wrote, if the file holds one.
fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let at = Some(self.dir.fd());
        match fstatat(
            at,
            self.name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(m) if m.st_dev == self.dev && m.st_ino == self.ino => {
                if let Err(e) = unlinkat(at, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                    log::warn!("cannot remove lock file {}: {e}", self.path.display());
                }
            }
            // Replaced or removed by someone else: theirs to clean up.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::prepare_dir;
    use crate::lifecycle::testdir::TempDir;

    fn acquire(sock: &Path) -> Result<LockFile, LifecycleError> {
        LockFile::acquire(&prepare_dir(sock.parent().unwrap(), None)?, sock)
    }

    #[test]
    fn second_lock_reports_the_holder_and_leaves_its_file_alone() {
        let dir = TempDir::new("lock-twice");
        let sock = dir.join("d.sock");
        let first = acquire(&sock).expect("first lock");
        assert_eq!(first.path(), dir.join("d.sock.lock"));
        let content = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(content, format!("{}\n", std::process::id()));

        let err = acquire(&sock).expect_err("second lock must fail");
        match err {
            LifecycleError::AlreadyRunning { pid } => {
                assert_eq!(pid, Some(i32::try_from(std::process::id()).unwrap()));
            }
            other => panic!("unexpected error: {other}"),
        }
        assert_eq!(err.exit_code(), 3);
        assert_eq!(std::fs::read_to_string(first.path()).unwrap(), content);
    }

    #[test]
    fn unreadable_pid_is_reported_as_unknown() {
        let dir = TempDir::new("lock-nopid");
        let sock = dir.join("d.sock");
        let first = acquire(&sock).unwrap();
        std::fs::write(first.path(), "garbage").unwrap();
        let err = acquire(&sock).unwrap_err();
        assert!(
            matches!(err, LifecycleError::AlreadyRunning { pid: None }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "already running (pid unknown)");
    }

    #[test]
    fn drop_releases_the_lock_and_removes_the_file() {
        let dir = TempDir::new("lock-drop");
        let sock = dir.join("d.sock");
        drop(acquire(&sock).unwrap());
        assert!(!dir.join("d.sock.lock").exists());
        let again = acquire(&sock).expect("lock is free again");
        drop(again);
    }

    #[test]
    fn stale_content_is_replaced_by_our_pid() {
        let dir = TempDir::new("lock-stale");
        let sock = dir.join("d.sock");
        std::fs::write(dir.join("d.sock.lock"), "99999999999999999999\nold junk\n").unwrap();
        let lock = acquire(&sock).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn drop_leaves_a_lock_file_that_replaced_ours() {
        let dir = TempDir::new("lock-replaced");
        let sock = dir.join("d.sock");
        let lock = acquire(&sock).unwrap();
        let other = dir.join("other");
        std::fs::write(&other, "123\n").unwrap();
        std::fs::rename(&other, lock.path()).unwrap();
        drop(lock);
        assert_eq!(
            std::fs::read_to_string(dir.join("d.sock.lock")).unwrap(),
            "123\n"
        );
    }

    #[test]
    fn symlink_at_lock_path_is_not_followed() {
        let dir = TempDir::new("lock-symlink");
        let target = dir.join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("d.sock.lock")).unwrap();
        let err = acquire(&dir.join("d.sock")).unwrap_err();
        assert!(matches!(err, LifecycleError::Io { .. }), "{err:?}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn a_hard_link_at_the_lock_path_is_refused_and_left_intact() {
        let dir = TempDir::new("lock-hardlink");
        let precious = dir.join("precious");
        std::fs::write(&precious, "keep me\n").unwrap();
        std::fs::hard_link(&precious, dir.join("d.sock.lock")).unwrap();
        let err = acquire(&dir.join("d.sock")).unwrap_err();
        assert!(
            matches!(err, LifecycleError::LockFileRefused { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "lock file {} has 2 hard links; refusing to write it (remove it if no rkllmd runs there)",
                dir.join("d.sock.lock").display()
            )
        );
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        assert!(dir.join("d.sock.lock").exists(), "not ours to remove");
    }

    #[test]
    fn a_lock_file_of_another_user_or_kind_is_refused() {
        assert!(
            geteuid().is_root(),
            "this test needs root (CI runs as root): run it with sudo"
        );
        let dir = TempDir::new("lock-foreign");
        let path = dir.join("d.sock.lock");
        std::fs::write(&path, "1\n").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = acquire(&dir.join("d.sock")).unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs to uid 65534, not to uid 0"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o644)).unwrap();
        let err = acquire(&dir.join("d.sock")).unwrap_err();
        assert!(err.to_string().contains("is not a regular file"), "{err}");
    }
}
