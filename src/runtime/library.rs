//! Loading librkllmrt with dlopen (through the shim), once per process.

use std::ffi::{c_char, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::error::RuntimeError;
use super::ffi;

/// The `runtime-library` default: the soname, found by the normal dlopen search.
pub const DEFAULT_LIBRARY: &str = "librkllmrt.so";

/// The runtime library this process has loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// As configured: a file name searched for, or a path used as is.
    pub requested: PathBuf,
    /// The file the dynamic loader opened.
    pub path: PathBuf,
}

static LOADED: OnceLock<Library> = OnceLock::new();
/// Serialises loading: two threads must not both dlopen and fill the shim's table.
static LOADING: Mutex<()> = Mutex::new(());

/// The loaded library, if `load` has succeeded in this process.
pub fn loaded() -> Option<&'static Library> {
    LOADED.get()
}

/// Loads `requested` and resolves every runtime function the shim uses. Idempotent for the same
/// name; a process holds one runtime, so asking for another one afterwards is an error.
pub fn load(requested: &Path) -> Result<&'static Library, RuntimeError> {
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(lib) = LOADED.get() {
        return if lib.requested == requested {
            Ok(lib)
        } else {
            Err(RuntimeError::OtherLibraryLoaded {
                loaded: lib.path.clone(),
                requested: requested.to_owned(),
            })
        };
    }
    let name =
        CString::new(requested.as_os_str().as_bytes()).map_err(|_| RuntimeError::NulByte {
            what: "runtime library path",
        })?;
    let mut err = [0 as c_char; 1024];
    let mut path = [0 as c_char; 4096];
    // SAFETY: `name` is NUL-terminated and outlives the call; both buffers are writable for the
    // lengths given and the shim NUL-terminates what it writes. LOADING keeps the call exclusive.
    let rc = unsafe {
        ffi::rkd_load(
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
        ffi::LOAD_OK => {
            let lib = Library {
                requested: requested.to_owned(),
                path: PathBuf::from(text(&path)),
            };
            log::info!("runtime library loaded: {}", lib.path.display());
            Ok(LOADED.get_or_init(|| lib))
        }
        ffi::LOAD_MISSING_SYMBOL => Err(RuntimeError::MissingSymbol {
            library: requested.to_owned(),
            reason: text(&err),
        }),
        _ => Err(RuntimeError::LibraryOpen {
            library: requested.to_owned(),
            reason: text(&err),
        }),
    }
}
