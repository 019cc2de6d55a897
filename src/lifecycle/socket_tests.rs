use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

use super::*;
use crate::lifecycle::testdir::TempDir;
use nix::unistd::geteuid;

/// A group to hand files to: one we are not in when root, our own otherwise (all we may use).
fn other_gid() -> Gid {
    if geteuid().is_root() {
        Gid::from_raw(65534)
    } else {
        nix::unistd::getegid()
    }
}

/// Leaves a socket file with no listener behind, as a killed instance would.
fn make_stale(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    drop(listener);
    assert!(UnixStream::connect(path).is_err());
}

#[test]
fn nothing_to_clear_when_missing() {
    let dir = TempDir::new("stale-none");
    assert_eq!(
        clear_stale(&dir.join("s.sock")).unwrap(),
        StaleOutcome::Nothing
    );
}

#[test]
fn stale_socket_is_removed() {
    let dir = TempDir::new("stale-removed");
    let path = dir.join("s.sock");
    make_stale(&path);
    assert_eq!(clear_stale(&path).unwrap(), StaleOutcome::Removed);
    assert!(fs::symlink_metadata(&path).is_err());
}

#[test]
fn live_socket_is_refused_and_kept() {
    let dir = TempDir::new("stale-live");
    let path = dir.join("s.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let err = clear_stale(&path).unwrap_err();
    assert!(matches!(err, LifecycleError::SocketInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "a process that does not hold the lock is serving {}; refusing to remove it",
            path.display()
        )
    );
    assert_eq!(err.exit_code(), 3);
    assert!(UnixStream::connect(&path).is_ok());
}

#[test]
fn things_that_are_not_sockets_are_refused_and_untouched() {
    let dir = TempDir::new("stale-other");
    let file = dir.join("file");
    fs::write(&file, "data").unwrap();
    let subdir = dir.join("dir");
    fs::create_dir(&subdir).unwrap();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
    // A symlink to a dead socket: following it would remove the target.
    let target = dir.join("target.sock");
    make_stale(&target);
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    for path in [&file, &subdir, &fifo, &dangling, &link] {
        let err = clear_stale(path).unwrap_err();
        assert!(
            matches!(err, LifecycleError::NotASocket { .. }),
            "{}: {err:?}",
            path.display()
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            )
        );
        assert!(fs::symlink_metadata(path).is_ok());
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "data");
    assert!(fs::symlink_metadata(&target)
        .unwrap()
        .file_type()
        .is_socket());
}

#[test]
fn bind_sets_mode_and_group_and_nonblocking() {
    let dir = TempDir::new("bind-mode");
    let path = dir.join("s.sock");
    let (listener, guard) = bind(&path, 0o660, Some(other_gid())).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), other_gid().as_raw());
    assert_eq!(guard.path(), path);
    // Nonblocking: no client waiting means WouldBlock, not a hang.
    let err = listener.accept().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(UnixStream::connect(&path).is_ok());
}

#[test]
fn bind_without_group_keeps_ours_and_restores_the_umask() {
    let dir = TempDir::new("bind-umask");
    let path = dir.join("s.sock");
    let read_umask = || {
        let _serial = UMASK_LOCK.lock().unwrap();
        let old = umask(Mode::from_bits_truncate(0o022));
        umask(old);
        old
    };
    let before = read_umask();
    let (_listener, _guard) = bind(&path, 0o600, None).unwrap();
    assert_eq!(read_umask(), before);
    let meta = fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.gid(), nix::unistd::getegid().as_raw());
}

#[test]
fn bind_over_an_existing_file_fails_naming_the_path() {
    let dir = TempDir::new("bind-exists");
    let path = dir.join("s.sock");
    fs::write(&path, "x").unwrap();
    let err = bind(&path, 0o660, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot bind socket {}", path.display())
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "x");
}

#[test]
fn guard_removes_its_own_socket_once() {
    let dir = TempDir::new("guard-own");
    let path = dir.join("s.sock");
    let (listener, mut guard) = bind(&path, 0o660, None).unwrap();
    assert!(guard.remove_now());
    assert!(fs::symlink_metadata(&path).is_err());
    assert!(guard.remove_now(), "idempotent");
    drop(listener);
    drop(guard);
}

#[test]
fn guard_leaves_a_socket_that_replaced_ours() {
    let dir = TempDir::new("guard-replaced");
    let path = dir.join("s.sock");
    let (listener, guard) = bind(&path, 0o660, None).unwrap();
    fs::remove_file(&path).unwrap();
    let theirs = UnixListener::bind(&path).unwrap();
    drop(guard);
    drop(listener);
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    assert!(UnixStream::connect(&path).is_ok());
    drop(theirs);
}

#[test]
fn guard_reports_a_replaced_socket_as_not_removed() {
    let dir = TempDir::new("guard-report");
    let path = dir.join("s.sock");
    let (_listener, mut guard) = bind(&path, 0o660, None).unwrap();
    fs::remove_file(&path).unwrap();
    fs::write(&path, "someone else's").unwrap();
    assert!(!guard.remove_now());
    assert!(!guard.remove_now());
    assert_eq!(fs::read_to_string(&path).unwrap(), "someone else's");
}

#[test]
fn full_start_and_stop_sequence() {
    let dir = TempDir::new("sequence");
    let sock_dir = dir.join("run");
    let path = sock_dir.join("rkllmd.sock");
    let socket_dir = crate::lifecycle::prepare_dir(&sock_dir, None).unwrap();
    let lock = crate::lifecycle::LockFile::acquire(&socket_dir, &path).unwrap();
    make_stale(&path);
    assert_eq!(clear_stale(&path).unwrap(), StaleOutcome::Removed);
    let (_listener, mut guard) = bind(&path, 0o660, None).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    assert!(guard.remove_now());
    drop(lock);
    assert_eq!(fs::read_dir(&sock_dir).unwrap().count(), 0);
}
