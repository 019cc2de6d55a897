use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::geteuid;

use super::*;
use crate::lifecycle::testdir::TempDir;
use crate::lifecycle::{lookup_user, LockFile};

/// A group to hand files to: one we are not in when root, our own otherwise (all we may use).
fn other_gid() -> Gid {
    if geteuid().is_root() {
        Gid::from_raw(65534)
    } else {
        nix::unistd::getegid()
    }
}

/// Changing owners needs root: CI runs as root, and anywhere else these tests fail rather than
/// pass without having checked anything.
fn require_root() {
    assert!(
        geteuid().is_root(),
        "this test needs root (CI runs as root): run it with sudo"
    );
}

#[test]
fn prepare_dir_with_group_is_0750_and_group_owned() {
    let dir = TempDir::new("dir-group");
    let target = dir.join("a/b/rkllmd");
    prepare_dir(&target, Some(other_gid())).unwrap();
    let meta = fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.gid(), other_gid().as_raw());
    let parent = fs::metadata(dir.join("a/b")).unwrap();
    assert_eq!(parent.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn prepare_dir_without_group_is_0755() {
    let dir = TempDir::new("dir-plain");
    let target = dir.join("rkllmd");
    prepare_dir(&target, None).unwrap();
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

#[test]
fn prepare_dir_leaves_an_existing_dir_alone() {
    let dir = TempDir::new("dir-existing");
    let target = dir.join("rkllmd");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, Permissions::from_mode(0o700)).unwrap();
    let gid_before = fs::metadata(&target).unwrap().gid();
    prepare_dir(&target, Some(Gid::from_raw(4242))).unwrap();
    let meta = fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.gid(), gid_before);
}

#[test]
fn prepare_dir_refuses_world_writable_without_sticky_bit() {
    let dir = TempDir::new("dir-insecure");
    let target = dir.join("open");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, Permissions::from_mode(0o777)).unwrap();
    let err = prepare_dir(&target, None).unwrap_err();
    assert!(
        matches!(err, LifecycleError::InsecureDir { mode: 0o777, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("world-writable without the sticky bit (mode 0777)"),
        "{err}"
    );

    fs::set_permissions(&target, Permissions::from_mode(0o1777)).unwrap();
    prepare_dir(&target, None).expect("sticky world-writable dir is fine, like /tmp");
}

#[test]
fn prepare_dir_refuses_a_file() {
    let dir = TempDir::new("dir-file");
    let target = dir.join("file");
    fs::write(&target, "").unwrap();
    assert!(matches!(
        prepare_dir(&target, None),
        Err(LifecycleError::NotADirectory { .. })
    ));
}

#[test]
fn a_symlink_at_the_directory_path_is_never_followed() {
    let dir = TempDir::new("dir-symlink");
    // Another user's world-writable directory with the sticky bit, like /tmp: it would pass
    // every check on its own, so only refusing the link itself stops the squatter.
    let open = dir.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, Permissions::from_mode(0o1777)).unwrap();
    let link = dir.join("rkllmd-1000");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let err = prepare_dir(&link, None).unwrap_err();
    assert!(matches!(err, LifecycleError::SymlinkDir { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "socket directory {} is a symbolic link (owned by uid {})",
            link.display(),
            geteuid()
        )),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);
    // A dangling link (the squatter points it nowhere yet) is refused too, never created through.
    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        prepare_dir(&dangling, None),
        Err(LifecycleError::SymlinkDir { .. })
    ));
    assert!(!dir.join("nowhere").exists());
}

#[test]
fn a_relative_socket_path_uses_the_working_directory() {
    let socket_dir = prepare_dir(Path::new(""), None).expect("the working directory");
    assert_eq!(socket_dir.path(), Path::new("."));
    assert!(!socket_dir.created());
}

#[test]
fn hand_to_gives_away_only_a_directory_this_instance_created() {
    require_root();
    let nobody = lookup_user("nobody").unwrap();
    let dir = TempDir::new("dir-hand");
    let ours = prepare_dir(&dir.join("ours"), None).unwrap();
    assert!(ours.created());
    ours.hand_to(&nobody).unwrap();
    assert_eq!(fs::metadata(dir.join("ours")).unwrap().uid(), 65534);
    ours.hand_to(&nobody)
        .expect("already theirs: nothing to do");

    // Another service's directory, holding its socket: found, so never changed; refused,
    // because nobody could not remove our socket from it.
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    let _theirs = std::os::unix::net::UnixListener::bind(shared.join("other.sock")).unwrap();
    let found = prepare_dir(&shared, None).unwrap();
    assert!(!found.created());
    let err = found.hand_to(&nobody).unwrap_err();
    assert!(
        matches!(err, LifecycleError::DirNotWritable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "directory {} was not created by rkllmd and user 'nobody' cannot write to it",
            shared.display()
        )),
        "{err}"
    );
    assert_eq!(fs::metadata(&shared).unwrap().uid(), 0, "still root's");

    // One the user may write to already (group-writable for its group) is used as it is.
    fs::set_permissions(&shared, Permissions::from_mode(0o770)).unwrap();
    std::os::unix::fs::chown(&shared, None, Some(nobody.gid.as_raw())).unwrap();
    prepare_dir(&shared, None)
        .unwrap()
        .hand_to(&nobody)
        .unwrap();
    assert_eq!(fs::metadata(&shared).unwrap().uid(), 0, "still root's");
}

#[test]
fn a_refused_second_instance_changes_nothing_it_did_not_create() {
    require_root();
    let nobody = lookup_user("nobody").unwrap();
    let dir = TempDir::new("dir-second");
    let sock = dir.join("run/rkllmd.sock");
    let first_dir = prepare_dir(&dir.join("run"), None).unwrap();
    let _first = LockFile::acquire(&first_dir, &sock).unwrap();
    // The second instance finds the directory, and the lock held: it stops there.
    let second_dir = prepare_dir(&dir.join("run"), None).unwrap();
    assert!(!second_dir.created());
    let err = LockFile::acquire(&second_dir, &sock).unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert_eq!(fs::metadata(dir.join("run")).unwrap().uid(), 0);
    assert!(
        second_dir.hand_to(&nobody).is_err(),
        "would not be given away either"
    );
}
