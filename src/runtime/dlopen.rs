//! The Rust side of a shim's loader (`rkd_load` for librkllmrt, `rkd_rknn_load` for
//! librknnrt): the C side dlopens the library and resolves every function it needs; here is the
//! call, and what it answered.

use std::ffi::{c_char, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A shim's loader: dlopens `name`, resolves its functions, and writes a message into `err` on
/// failure, or the file the dynamic loader opened into `path`. Both shims answer with these
/// codes.
pub type Loader = unsafe extern "C" fn(
    name: *const c_char,
    err: *mut c_char,
    err_len: usize,
    path: *mut c_char,
    path_len: usize,
) -> i32;

const LOAD_OK: i32 = 0;
const LOAD_MISSING_SYMBOL: i32 = 2;

/// How a load went.
pub enum Opened {
    /// Loaded from this file.
    Ok(PathBuf),
    /// Opened, but a function the shim needs is not in it (another runtime version).
    MissingSymbol(String),
    /// Not opened: dlopen's message.
    Failed(String),
    /// The configured name holds a NUL byte, which no file name can.
    NulByte,
}

/// Calls `loader` for `requested`. The caller keeps the call exclusive (the shims fill one
/// table of functions each).
pub fn open(loader: Loader, requested: &Path) -> Opened {
    let Ok(name) = CString::new(requested.as_os_str().as_bytes()) else {
        return Opened::NulByte;
    };
    let mut err = [0 as c_char; 1024];
    let mut path = [0 as c_char; 4096];
    // SAFETY: `name` is NUL-terminated and outlives the call; both buffers are writable for the
    // lengths given and the shim NUL-terminates what it writes. The caller keeps the call
    // exclusive.
    let rc = unsafe {
        loader(
            name.as_ptr(),
            err.as_mut_ptr(),
            err.len(),
            path.as_mut_ptr(),
            path.len(),
        )
    };
    let text = |buf: &[c_char]| {
        // SAFETY: the buffer was zeroed and the shim writes at most len-1 bytes plus a NUL.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    match rc {
        LOAD_OK => Opened::Ok(PathBuf::from(text(&path))),
        LOAD_MISSING_SYMBOL => Opened::MissingSymbol(text(&err)),
        _ => Opened::Failed(text(&err)),
    }
}
