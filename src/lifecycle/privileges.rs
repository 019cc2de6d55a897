//! Process privileges and limits: dropping root, resolving groups, the open-files limit.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{
    getegid, geteuid, getgid, getuid, initgroups, setgid, setuid, Gid, Group, Uid, User,
};

use super::LifecycleError;

fn lookup_user(user: &str) -> Result<User, LifecycleError> {
    User::from_name(user)
        .map_err(LifecycleError::sys(format!("look up user '{user}'")))?
        .ok_or_else(|| LifecycleError::UnknownUser {
            name: user.to_owned(),
        })
}

/// Makes `user` the owner of `dir` (the group stays), so that the daemon can still remove its
/// socket and lock file there after [`drop_privileges`]. A directory holding anything but
/// sockets and `.lock` files is refused, so `--socket /run/x.sock` never gives `/run` away.
/// Needs root; nothing to do when `user` owns `dir` already.
pub fn chown_to_user(dir: &Path, user: &str) -> Result<(), LifecycleError> {
    if !geteuid().is_root() {
        return Err(LifecycleError::NeedsRoot);
    }
    let entry = lookup_user(user)?;
    let meta = fs::symlink_metadata(dir).map_err(LifecycleError::io("inspect directory", dir))?;
    if !meta.is_dir() {
        return Err(LifecycleError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    if meta.uid() == entry.uid.as_raw() {
        return Ok(());
    }
    let shared = || LifecycleError::SharedDir {
        path: dir.to_owned(),
        user: user.to_owned(),
    };
    for item in fs::read_dir(dir).map_err(LifecycleError::io("list directory", dir))? {
        let item = item.map_err(LifecycleError::io("list directory", dir))?;
        let kind = item
            .file_type()
            .map_err(LifecycleError::io("list directory", dir))?;
        let is_lock = kind.is_file() && item.file_name().to_string_lossy().ends_with(".lock");
        if !(kind.is_socket() || is_lock) {
            return Err(shared());
        }
    }
    std::os::unix::fs::lchown(dir, Some(entry.uid.as_raw()), None)
        .map_err(LifecycleError::io("give away directory", dir))
}

/// Switches the whole process (all threads) to `user`, its primary group and its
/// supplementary groups, for good. Needs root; call after binding the socket.
pub fn drop_privileges(user: &str) -> Result<(), LifecycleError> {
    if !geteuid().is_root() {
        return Err(LifecycleError::NeedsRoot);
    }
    let entry = lookup_user(user)?;
    let name = CString::new(entry.name.as_bytes()).map_err(|_| LifecycleError::UnknownUser {
        name: user.to_owned(),
    })?;
    // Groups first: once the uid is gone we may no longer change them.
    initgroups(&name, entry.gid).map_err(LifecycleError::sys(format!(
        "set the groups of user '{user}'"
    )))?;
    setgid(entry.gid).map_err(LifecycleError::sys(format!("set group id {}", entry.gid)))?;
    setuid(entry.uid).map_err(LifecycleError::sys(format!("set user id {}", entry.uid)))?;

    let switched = getuid() == entry.uid
        && geteuid() == entry.uid
        && getgid() == entry.gid
        && getegid() == entry.gid;
    let regained = !entry.uid.is_root() && setuid(Uid::from_raw(0)).is_ok();
    if !switched || regained {
        return Err(LifecycleError::PrivilegesKept {
            user: user.to_owned(),
        });
    }
    Ok(())
}

/// The group named `name`, or numbered `name` when no group has that name.
pub fn lookup_group(name: &str) -> Result<Gid, LifecycleError> {
    if let Some(group) =
        Group::from_name(name).map_err(LifecycleError::sys(format!("look up group '{name}'")))?
    {
        return Ok(group.gid);
    }
    match name.parse::<u32>() {
        Ok(gid) if gid != u32::MAX => Ok(Gid::from_raw(gid)),
        _ => Err(LifecycleError::UnknownGroup {
            name: name.to_owned(),
        }),
    }
}

#[allow(clippy::useless_conversion)] // rlim_t is u32 on 32-bit ARM.
fn widen(v: libc::rlim_t) -> u64 {
    u64::from(v)
}

/// The open-files limit in force, `(soft, hard)`.
fn nofile_limit() -> nix::Result<(libc::rlim_t, libc::rlim_t)> {
    getrlimit(Resource::RLIMIT_NOFILE)
}

/// Raises the soft open-files limit to the hard limit (librkllmrt's init can fail with EMFILE
/// under the usual soft limit of 1024) and returns the resulting `(soft, hard)` for the log.
/// Failure is not fatal: it is logged and the limits in force are returned ((0, 0) if even
/// they cannot be read).
pub fn raise_nofile_limit() -> (u64, u64) {
    let (mut soft, hard) = match nofile_limit() {
        Ok(limits) => limits,
        Err(e) => {
            log::warn!("cannot read the open-files limit: {e}");
            return (0, 0);
        }
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => soft = hard,
            Err(e) => log::warn!("cannot raise the open-files limit to {hard}: {e}"),
        }
    }
    (widen(soft), widen(hard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::testdir::TempDir;

    /// Set in the environment of the re-executed test binary that does the real drop.
    const CHILD_ENV: &str = "RKLLMD_TEST_DROP_TO_USER";
    /// The scratch directory the child works in; the parent removes it.
    const CHILD_DIR_ENV: &str = "RKLLMD_TEST_DROP_DIR";

    #[test]
    fn nofile_soft_limit_reaches_the_hard_limit() {
        let (soft, hard) = raise_nofile_limit();
        assert!(soft > 0 && soft <= hard, "soft {soft}, hard {hard}");
        let (now_soft, now_hard) = nofile_limit().unwrap();
        assert_eq!((widen(now_soft), widen(now_hard)), (soft, hard));
        if hard != widen(libc::RLIM_INFINITY) {
            assert_eq!(soft, hard);
        }
        assert_eq!(raise_nofile_limit(), (soft, hard), "idempotent");
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(lookup_group("root").unwrap(), Gid::from_raw(0));
        assert_eq!(lookup_group("4242").unwrap(), Gid::from_raw(4242));
        let err = lookup_group("no-such-group-rkllmd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "group 'no-such-group-rkllmd' does not exist"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn unknown_user_or_no_root_is_refused_before_anything_changes() {
        let err = drop_privileges("no-such-user-rkllmd").unwrap_err();
        if geteuid().is_root() {
            assert_eq!(err.to_string(), "user 'no-such-user-rkllmd' does not exist");
            assert!(geteuid().is_root(), "still root after a refused drop");
        } else {
            assert_eq!(err.to_string(), "--user needs root");
        }
        assert_eq!(err.exit_code(), 2);
    }

    /// Runs only inside the child spawned by `drop_to_nobody_in_a_child_process`: the start-up
    /// sequence as root, the drop, then the shutdown clean-up as the unprivileged user.
    #[test]
    fn child_drops_privileges() {
        let (Ok(user), Ok(dir)) = (std::env::var(CHILD_ENV), std::env::var(CHILD_DIR_ENV)) else {
            return;
        };
        let sock_dir = Path::new(&dir).join("run");
        let sock = sock_dir.join("rkllmd.sock");
        crate::lifecycle::prepare_dir(&sock_dir, Some(Gid::from_raw(65534))).unwrap();
        chown_to_user(&sock_dir, &user).unwrap();
        let lock = crate::lifecycle::LockFile::acquire(&sock).unwrap();
        let (_listener, mut guard) = crate::lifecycle::bind(&sock, 0o660, None).unwrap();

        drop_privileges(&user).expect("drop privileges");
        let nobody = User::from_name(&user).unwrap().unwrap();
        assert_eq!(getuid(), nobody.uid);
        assert_eq!(geteuid(), nobody.uid);
        assert_eq!(getgid(), nobody.gid);
        assert!(
            setuid(Uid::from_raw(0)).is_err(),
            "root must be out of reach"
        );

        assert!(guard.remove_now(), "socket removable after the drop");
        drop(lock);
        assert_eq!(
            fs::read_dir(&sock_dir).unwrap().count(),
            0,
            "lock file removed too"
        );
        println!("CHILD-DROPPED uid={}", getuid());
    }

    #[test]
    fn drop_to_nobody_in_a_child_process() {
        if !geteuid().is_root() || User::from_name("nobody").ok().flatten().is_none() {
            eprintln!("skipped: needs root and a 'nobody' user");
            return;
        }
        let dir = TempDir::new("privdrop");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                &format!("{module}::child_drops_privileges"),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "nobody")
            .env(CHILD_DIR_ENV, dir.join(""))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("CHILD-DROPPED uid=65534"), "{stdout}");
        assert!(geteuid().is_root(), "the parent keeps its privileges");
    }

    #[test]
    fn chown_to_user_hands_over_only_a_private_directory() {
        let dir = TempDir::new("chown-user");
        let own = dir.join("own");
        fs::create_dir(&own).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(own.join("rkllmd.sock")).unwrap();
        fs::write(own.join("rkllmd.sock.lock"), "1\n").unwrap();
        let shared = dir.join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("other.pid"), "1\n").unwrap();
        if !geteuid().is_root() {
            assert!(matches!(
                chown_to_user(&own, "nobody"),
                Err(LifecycleError::NeedsRoot)
            ));
            return;
        }
        chown_to_user(&own, "nobody").unwrap();
        assert_eq!(fs::metadata(&own).unwrap().uid(), 65534);
        chown_to_user(&own, "nobody").expect("already theirs: nothing to do");

        let err = chown_to_user(&shared, "nobody").unwrap_err();
        assert!(matches!(err, LifecycleError::SharedDir { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with(&format!("directory {} holds other files", shared.display())));
        assert_eq!(fs::metadata(&shared).unwrap().uid(), 0);
        assert!(matches!(
            chown_to_user(&own, "no-such-user-rkllmd"),
            Err(LifecycleError::UnknownUser { .. })
        ));
        let file = dir.join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(
            chown_to_user(&file, "nobody"),
            Err(LifecycleError::NotADirectory { .. })
        ));
    }
}
