//! The lock file beside the socket: one instance per socket path.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::LifecycleError;

/// How often to retry when the file we locked was unlinked under us.
const ATTEMPTS: usize = 5;

/// An exclusive `flock` on `<socket>.lock`, which holds our pid. Dropping it removes the file
/// (if it is still the one we locked) and releases the lock.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    // Declared last so it is closed (and unlocked) after `drop` has unlinked the path.
    _lock: Flock<File>,
}

impl LockFile {
    /// Locks `<socket_path>.lock` without blocking. When another process holds it, returns
    /// [`LifecycleError::AlreadyRunning`] and changes nothing of theirs.
    pub fn acquire(socket_path: &Path) -> Result<LockFile, LifecycleError> {
        let mut name = OsString::from(socket_path.as_os_str());
        name.push(".lock");
        let path = PathBuf::from(name);
        for _ in 0..ATTEMPTS {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o644)
                // Never write through a symlink someone planted at the lock path.
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(LifecycleError::io("open lock file", &path))?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    return Err(LifecycleError::AlreadyRunning {
                        pid: read_pid(&mut file),
                    })
                }
                Err((_, errno)) => return Err(LifecycleError::io("lock", &path)(errno.into())),
            };
            let ours = lock
                .metadata()
                .map_err(LifecycleError::io("inspect lock file", &path))?;
            // The previous holder may have unlinked the file between our open and our lock:
            // then we hold a lock no one else can see. Start again with the file now there.
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LifecycleError::io("inspect lock file", &path)(e)),
            }
            lock.set_len(0)
                .map_err(LifecycleError::io("write lock file", &path))?;
            lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
                .map_err(LifecycleError::io("write lock file", &path))?;
            return Ok(LockFile {
                dev: ours.dev(),
                ino: ours.ino(),
                path,
                _lock: lock,
            });
        }
        Err(LifecycleError::LockUnstable { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the holder wrote, if the file holds one.
fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)
}

impl Drop for LockFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
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
    use crate::lifecycle::testdir::TempDir;

    #[test]
    fn second_lock_reports_the_holder_and_leaves_its_file_alone() {
        let dir = TempDir::new("lock-twice");
        let sock = dir.join("d.sock");
        let first = LockFile::acquire(&sock).expect("first lock");
        assert_eq!(first.path(), dir.join("d.sock.lock"));
        let content = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(content, format!("{}\n", std::process::id()));

        let err = LockFile::acquire(&sock).expect_err("second lock must fail");
        match err {
            LifecycleError::AlreadyRunning { pid } => {
                assert_eq!(pid, Some(std::process::id() as i32))
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
        let first = LockFile::acquire(&sock).unwrap();
        std::fs::write(first.path(), "garbage").unwrap();
        let err = LockFile::acquire(&sock).unwrap_err();
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
        drop(LockFile::acquire(&sock).unwrap());
        assert!(!dir.join("d.sock.lock").exists());
        let again = LockFile::acquire(&sock).expect("lock is free again");
        drop(again);
    }

    #[test]
    fn stale_content_is_replaced_by_our_pid() {
        let dir = TempDir::new("lock-stale");
        let sock = dir.join("d.sock");
        std::fs::write(dir.join("d.sock.lock"), "99999999999999999999\nold junk\n").unwrap();
        let lock = LockFile::acquire(&sock).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn drop_leaves_a_lock_file_that_replaced_ours() {
        let dir = TempDir::new("lock-replaced");
        let sock = dir.join("d.sock");
        let lock = LockFile::acquire(&sock).unwrap();
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
        let err = LockFile::acquire(&dir.join("d.sock")).unwrap_err();
        assert!(matches!(err, LifecycleError::Io { .. }), "{err:?}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
}
