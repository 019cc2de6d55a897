//! Readiness notification: a newline on an inherited fd (s6, newer `OpenRC`) and/or `READY=1` to
//! `$NOTIFY_SOCKET` (systemd).

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixDatagram;

/// Tells the supervisor we are ready. Failures are logged, never fatal.
pub fn notify_ready(notify_fd: Option<i32>) {
    if let Some(fd) = notify_fd {
        write_newline(fd);
    }
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let result = UnixDatagram::unbound().and_then(|sock| {
            let bytes = path.as_encoded_bytes();
            if let Some(name) = bytes.strip_prefix(b"@") {
                // Abstract namespace socket.
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(b"READY=1\n", &addr)
            } else {
                sock.send_to(b"READY=1\n", &path)
            }
        });
        if let Err(e) = result {
            log::warn!("cannot notify {}: {e}", path.to_string_lossy());
        }
    }
}

fn write_newline(fd: i32) {
    if fd <= 2 {
        log::warn!("--notify-fd {fd} is a standard stream; not writing to it");
        return;
    }
    // SAFETY: the supervisor handed us this fd for exactly this purpose; we take ownership and
    // close it after writing, as the protocol expects (one notification, then EOF).
    let mut file = unsafe { File::from_raw_fd(fd) };
    if let Err(e) = file.write_all(b"\n") {
        log::warn!("cannot write readiness to fd {fd}: {e}");
    }
}
