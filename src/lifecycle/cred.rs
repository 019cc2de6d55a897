//! Who is on the other end of a Unix socket.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

use super::LifecycleError;

/// A peer's credentials as the kernel recorded them at `connect(2)` (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    /// The peer's primary group only; supplementary groups are not reported.
    pub gid: u32,
}

impl PeerCred {
    /// Whether the allow lists admit this peer:
    /// - root (uid 0) always may: it can open any socket anyway, and the admin needs a way in;
    /// - with both lists empty, everyone who can open the socket may;
    /// - otherwise the uid must be in `allow_uid` or the primary gid in `allow_gid`.
    ///
    /// Supplementary groups are not seen here; grant groups through `--socket-group` instead.
    #[allow(clippy::similar_names)] // named after the allow-uid and allow-gid options
    pub fn allowed(&self, allow_uid: &[u32], allow_gid: &[u32]) -> bool {
        self.uid == 0
            || (allow_uid.is_empty() && allow_gid.is_empty())
            || allow_uid.contains(&self.uid)
            || allow_gid.contains(&self.gid)
    }
}

/// The credentials of the peer connected to the Unix socket `fd`.
pub fn peer_cred(fd: &impl AsFd) -> Result<PeerCred, LifecycleError> {
    let cred = getsockopt(fd, sockopt::PeerCredentials)
        .map_err(LifecycleError::sys("read peer credentials"))?;
    Ok(PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::testdir::TempDir;
    use nix::unistd::{getgid, getpid, getuid};
    use std::os::unix::net::UnixStream;

    fn ours() -> PeerCred {
        PeerCred {
            pid: getpid().as_raw(),
            uid: getuid().as_raw(),
            gid: getgid().as_raw(),
        }
    }

    #[test]
    fn pair_reports_this_process() {
        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(peer_cred(&a).unwrap(), ours());
        assert_eq!(peer_cred(&b).unwrap(), ours());
    }

    #[test]
    fn accepted_connection_reports_the_client() {
        let dir = TempDir::new("peercred");
        let path = dir.join("s.sock");
        let (listener, _guard) = crate::lifecycle::bind(&path, 0o600, None).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        assert_eq!(peer_cred(&server_side).unwrap(), ours());
    }

    #[test]
    fn not_a_socket_is_an_error() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let err = peer_cred(&file).unwrap_err();
        assert_eq!(err.to_string(), "cannot read peer credentials");
    }

    #[test]
    fn allow_rules() {
        let user = PeerCred {
            pid: 10,
            uid: 1000,
            gid: 100,
        };
        let root = PeerCred {
            pid: 11,
            uid: 0,
            gid: 0,
        };
        assert!(user.allowed(&[], &[]), "empty lists admit everyone");
        assert!(user.allowed(&[1000], &[]));
        assert!(!user.allowed(&[1001], &[]));
        assert!(user.allowed(&[], &[100]));
        assert!(!user.allowed(&[], &[101]));
        assert!(user.allowed(&[1001], &[100]), "either list may admit");
        assert!(!user.allowed(&[1001, 1002], &[101]));
        assert!(root.allowed(&[1001], &[101]), "root always may");
    }
}
