//! The daemon's footprint on the system: the lock file, the socket file and its directory,
//! who may connect, and the privileges it runs with.
//!
//! Start-up order, each step relying on the one before:
//! 0. [`lookup_user`] and [`lookup_group`]: names are resolved before anything changes;
//! 1. [`prepare_dir`] opens the socket's directory (creating it if needed) without following
//!    a symlink, and checks what it opened;
//! 2. [`LockFile::acquire`] beside the socket: from here on no cooperating instance touches
//!    the socket path;
//! 3. [`SocketDir::hand_to`] when `--user` is given, so the unprivileged daemon can still
//!    remove its socket and lock file on exit: only a directory this instance created changes
//!    owner, and only now that the lock is held;
//! 4. [`clear_stale`] removes a socket a crashed instance left behind, and refuses anything
//!    else found at the path;
//! 5. [`bind`] creates the socket with its final mode and group;
//! 6. [`drop_privileges`] when `--user` is given, after binding (which may need root).
//!
//! Shutdown drops the [`SocketGuard`] (removing the socket only if it is still ours) and then
//! the [`LockFile`].

mod cred;
mod dir;
mod error;
mod lock;
mod npu;
mod privileges;
mod socket;
mod start;

pub use cred::{peer_cred, PeerCred};
pub use dir::{prepare_dir, SocketDir};
pub use error::LifecycleError;
pub use lock::LockFile;
pub use nix::unistd::Gid;
pub use npu::NpuGuard;
pub use privileges::{drop_privileges, lookup_group, lookup_user, raise_nofile_limit, Account};
pub use socket::{bind, clear_stale, SocketGuard, StaleOutcome};
pub use start::{establish, Footprint, SocketSpec};

/// Unique scratch directories under /tmp for tests that need a real filesystem.
#[cfg(test)]
pub(crate) mod testdir {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = PathBuf::from(format!("/tmp/rkllmd-test-{}-{n}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create test dir");
            TempDir(path)
        }

        pub(crate) fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
