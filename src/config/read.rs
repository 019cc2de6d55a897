//! Reading the small text files the configuration names (the config file, the API key file):
//! regular files only, and only so much of them.
//!
//! `/dev/zero` named as a config file once took a start to 1.5 GB in a second, and a FIFO would
//! block it for good: the file is opened without blocking, judged by `fstat` on what was
//! opened, and read no further than the limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The most a config file may hold: far more than any real one.
pub(super) const CONFIG_LIMIT: u64 = 1 << 20;
/// The most an API key file may hold.
pub(super) const KEY_LIMIT: u64 = 64 << 10;

/// The text of the regular file at `path`, refused (as `InvalidInput`, with the reason) when it
/// is anything else or longer than `limit` bytes. A missing file is `NotFound`. `/dev/null`
/// (the null device, wherever its node is) reads as empty: `--config /dev/null` is the usual
/// way to say "no config file".
pub(super) fn read_small(path: &Path, limit: u64) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if kind.is_char_device() && meta.rdev() == libc::makedev(1, 3) {
        return Ok(String::new());
    }
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(refused(format!("it is {what}, not a regular file")));
    }
    if meta.len() > limit {
        return Err(too_long(limit));
    }
    read_at_most(file, limit)
}

fn read_at_most(file: File, limit: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that grew since fstat from one that fits.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_long(limit));
    }
    String::from_utf8(bytes).map_err(|_| refused("it is not UTF-8 text".to_owned()))
}

fn too_long(limit: u64) -> io::Error {
    refused(format!("it is longer than {limit} bytes"))
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("rkllmd-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("small.conf");
        std::fs::write(&file, "model = /m\n").unwrap();
        assert_eq!(read_small(&file, 100).unwrap(), "model = /m\n");
        assert_eq!(
            read_small(&file, 4).unwrap_err().to_string(),
            "it is longer than 4 bytes"
        );
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            read_small(&fifo, 100).unwrap_err().to_string(),
            "it is a FIFO, not a regular file"
        );
        assert_eq!(
            read_small(Path::new("/dev/zero"), 100)
                .unwrap_err()
                .to_string(),
            "it is a character device, not a regular file"
        );
        assert_eq!(read_small(Path::new("/dev/null"), 100).unwrap(), "");
        assert_eq!(
            read_small(&dir, 100).unwrap_err().to_string(),
            "it is a directory, not a regular file"
        );
        assert_eq!(
            read_small(&dir.join("missing"), 100).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
