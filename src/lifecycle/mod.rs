//! The daemon's footprint on the system: the lock file, the socket file and its directory,
//! who may connect, and the privileges it runs with.
//!
//! Start-up order, each step relying on the one before:
//! 1. [`prepare_dir`] for the socket's directory;
//! 2. [`LockFile::acquire`] beside the socket: from here on no cooperating instance touches
//!    the socket path;
//! 3. [`clear_stale`] removes a socket a crashed instance left behind, and refuses anything
//!    else found at the path;
//! 4. [`bind`] creates the socket with its final mode and group;
//! 5. [`drop_privileges`] when `--user` is given, after binding (which may need root). Before
//!    that, [`chown_to_user`] on the socket's directory lets the unprivileged daemon still
//!    remove its socket and lock file on exit.
//!
//! Shutdown drops the [`SocketGuard`] (removing the socket only if it is still ours) and then
//! the [`LockFile`].

mod cred;
mod error;
mod lock;
mod privileges;
mod socket;

pub use cred::{peer_cred, PeerCred};
pub use error::LifecycleError;
pub use lock::LockFile;
pub use nix::unistd::Gid;
pub use privileges::{chown_to_user, drop_privileges, lookup_group, raise_nofile_limit};
pub use socket::{bind, clear_stale, prepare_dir, SocketGuard, StaleOutcome};

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
