//! Process privileges and limits: dropping root, resolving groups, the open-files limit.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{
    getegid, geteuid, getgid, getgrouplist, getuid, initgroups, setgid, setuid, Gid, Group, Uid,
    User,
};

use super::LifecycleError;

/// The user `--user` names, resolved once before anything is changed.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Every group the user is in (primary and supplementary).
    pub groups: Vec<Gid>,
}

impl Account {
    /// Whether this user may create and remove entries in a directory with `meta`, by its mode
    /// bits (ACLs are not consulted).
    pub fn may_write(&self, meta: &fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid.as_raw() {
            return mode & 0o300 == 0o300;
        }
        if self.groups.iter().any(|g| g.as_raw() == meta.gid()) {
            return mode & 0o030 == 0o030;
        }
        mode & 0o003 == 0o003
    }
}

/// Resolves `user`. The lookup's errors that mean "no such entry" (`getpwnam_r(3)` lists
/// ENOENT, ESRCH, EBADF and EPERM) count as an unknown user, a configuration error.
pub fn lookup_user(user: &str) -> Result<Account, LifecycleError> {
    let unknown = || LifecycleError::UnknownUser {
        name: user.to_owned(),
    };
    let entry = match User::from_name(user) {
        Ok(Some(entry)) => entry,
        Ok(None) | Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => {
            return Err(unknown())
        }
        Err(e) => return Err(LifecycleError::sys(format!("look up user '{user}'"))(e)),
    };
    let name = CString::new(entry.name.as_bytes()).map_err(|_| unknown())?;
    let groups = getgrouplist(&name, entry.gid).map_err(LifecycleError::sys(format!(
        "list the groups of user '{user}'"
    )))?;
    Ok(Account {
        name: entry.name,
        uid: entry.uid,
        gid: entry.gid,
        groups,
    })
}

/// Switches the whole process (all threads) to `user`, its primary group and its
/// supplementary groups, for good. Needs root; call after binding the socket.
pub fn drop_privileges(user: &Account) -> Result<(), LifecycleError> {
    if !geteuid().is_root() {
        return Err(LifecycleError::NeedsRoot);
    }
    let name = &user.name;
    let c_name = CString::new(name.as_bytes())
        .map_err(|_| LifecycleError::UnknownUser { name: name.clone() })?;
    // Groups first: once the uid is gone we may no longer change them.
    initgroups(&c_name, user.gid).map_err(LifecycleError::sys(format!(
        "set the groups of user '{name}'"
    )))?;
    setgid(user.gid).map_err(LifecycleError::sys(format!("set group id {}", user.gid)))?;
    setuid(user.uid).map_err(LifecycleError::sys(format!("set user id {}", user.uid)))?;

    let switched = getuid() == user.uid
        && geteuid() == user.uid
        && getgid() == user.gid
        && getegid() == user.gid;
    let regained = !user.uid.is_root() && setuid(Uid::from_raw(0)).is_ok();
    if !switched || regained {
        return Err(LifecycleError::PrivilegesKept { user: name.clone() });
    }
    Ok(())
}

/// The group named `name`, or numbered `name` when no group has that name.
pub fn lookup_group(name: &str) -> Result<Gid, LifecycleError> {
    match Group::from_name(name) {
        Ok(Some(group)) => return Ok(group.gid),
        // As for users: these mean "no such entry" (getgrnam_r(3)).
        Ok(None) | Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => {}
        Err(e) => return Err(LifecycleError::sys(format!("look up group '{name}'"))(e)),
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
    use std::path::Path;

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

    /// These tests change owners and users: CI runs them as root, and anywhere else they fail
    /// rather than pass without having checked anything.
    fn require_root() {
        assert!(
            geteuid().is_root(),
            "this test needs root (CI runs as root): run it with sudo"
        );
    }

    #[test]
    fn unknown_user_is_a_configuration_error() {
        let err = lookup_user("no-such-user-rkllmd").unwrap_err();
        assert_eq!(err.to_string(), "user 'no-such-user-rkllmd' does not exist");
        assert_eq!(err.exit_code(), 2);
        let nobody = lookup_user("nobody").expect("a 'nobody' user");
        assert_eq!(nobody.uid.as_raw(), 65534);
        assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
    }

    #[test]
    fn dropping_privileges_needs_root() {
        let nobody = lookup_user("nobody").unwrap();
        if !geteuid().is_root() {
            let err = drop_privileges(&nobody).unwrap_err();
            assert_eq!(err.to_string(), "--user needs root");
            assert_eq!(err.exit_code(), 2);
        }
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
        let account = lookup_user(&user).unwrap();
        let socket_dir =
            crate::lifecycle::prepare_dir(&sock_dir, Some(Gid::from_raw(65534))).unwrap();
        let lock = crate::lifecycle::LockFile::acquire(&socket_dir, &sock).unwrap();
        socket_dir.hand_to(&account).unwrap();
        let (_listener, mut guard) = crate::lifecycle::bind(&sock, 0o660, None).unwrap();

        drop_privileges(&account).expect("drop privileges");
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
        require_root();
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
}
