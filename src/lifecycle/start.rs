//! The start-up sequence of the module's doc, in one place: each step relies on the one before.

use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::unistd::geteuid;

use super::{
    bind, clear_stale, lookup_group, lookup_user, prepare_dir, Account, LifecycleError, LockFile,
    NpuGuard, SocketGuard, StaleOutcome,
};

/// What the daemon holds on the system while it runs. Drop the socket guard before the lock.
#[derive(Debug)]
pub struct Footprint {
    pub listener: UnixListener,
    pub socket: SocketGuard,
    pub lock: LockFile,
    /// Held for the life of the process, when there is something to lock.
    pub npu: Option<NpuGuard>,
    /// The `--user` to switch to once every privileged step is done.
    pub user: Option<Account>,
}

/// What the socket is to look like.
pub struct SocketSpec<'a> {
    pub path: &'a Path,
    pub mode: u32,
    pub group: Option<&'a str>,
    pub user: Option<&'a str>,
    /// The NPU lock to take, already resolved (`npu-lock = auto` to the device node).
    pub npu_lock: Option<&'a Path>,
}

/// Resolves the names, then directory, lock, NPU lock, hand-over, stale socket, bind. The NPU
/// lock comes after the socket's: a second instance on the same socket is "already running"
/// (exit code 3), and one on another socket is refused before its socket exists. A refused start
/// (another instance holds the lock, a name does not resolve) changes nothing on the system
/// but possibly a directory it created itself.
pub fn establish(spec: &SocketSpec<'_>) -> Result<Footprint, LifecycleError> {
    let user = match spec.user {
        Some(_) if !geteuid().is_root() => return Err(LifecycleError::NeedsRoot),
        Some(name) => Some(lookup_user(name)?),
        None => None,
    };
    let group = spec.group.map(lookup_group).transpose()?;
    let dir = prepare_dir(spec.path.parent().unwrap_or(Path::new("")), group)?;
    let lock = LockFile::acquire(&dir, spec.path)?;
    let npu = spec.npu_lock.map(NpuGuard::acquire).transpose()?;
    if let Some(user) = &user {
        dir.hand_to(user)?;
    }
    if let StaleOutcome::Removed = clear_stale(spec.path)? {
        log::warn!("removed a stale socket left at {}", spec.path.display());
    }
    let (listener, socket) = bind(spec.path, spec.mode, group)?;
    Ok(Footprint {
        listener,
        socket,
        lock,
        npu,
        user,
    })
}
