//! Loading librkllmrt with dlopen (through the shim), once per process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::abi::{self, Abi, AbiProbe, PROBE_LEN};
use super::dlopen::{self, Opened};
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
    match dlopen::open(ffi::rkd_load, requested) {
        Opened::Ok(path) => {
            let lib = Library {
                requested: requested.to_owned(),
                path,
            };
            log::info!("runtime library loaded: {}", lib.path.display());
            Ok(LOADED.get_or_init(|| lib))
        }
        Opened::MissingSymbol(reason) => Err(RuntimeError::MissingSymbol {
            library: requested.to_owned(),
            reason,
        }),
        Opened::Failed(reason) => Err(RuntimeError::LibraryOpen {
            library: requested.to_owned(),
            reason,
        }),
        Opened::NulByte => Err(RuntimeError::NulByte {
            what: "runtime library path",
        }),
    }
}

/// Runs the ABI probe on the loaded library (see `abi`). Calls `rkllm_createDefaultParam`, so
/// it runs the runtime's code: `rkllmd check` calls it in a child process.
pub fn probe_abi() -> Result<AbiProbe, RuntimeError> {
    let Some(lib) = LOADED.get() else {
        return Err(RuntimeError::Call {
            call: "the ABI probe (before the runtime loaded)",
            code: -1,
        });
    };
    let mut a = [0u8; PROBE_LEN];
    let mut b = [0u8; PROBE_LEN];
    // SAFETY: the library is loaded (LOADED is set only after rkd_load succeeded); both buffers
    // are writable for PROBE_LEN bytes and the shim copies at most that many into each. The
    // runtime itself writes only into the shim's own guarded mapping.
    let rc = unsafe { ffi::rkd_probe_default_param(a.as_mut_ptr(), b.as_mut_ptr(), PROBE_LEN) };
    if rc != 0 {
        return Err(RuntimeError::Call {
            call: "the ABI probe",
            code: rc,
        });
    }
    let mut l12 = ffi::RkdLayout::default();
    let mut l13 = ffi::RkdLayout::default();
    // SAFETY: each function writes one RkdLayout through a valid out-pointer.
    unsafe {
        ffi::rkd_layout_1_2(std::ptr::addr_of_mut!(l12));
        ffi::rkd_layout_1_3(std::ptr::addr_of_mut!(l13));
    }
    let verdict = abi::classify(
        &abi::Written::new(&a, &b),
        &[(Abi::V1_2, l12), (Abi::V1_3, l13)],
    );
    log::debug!("ABI probe of {}: {verdict:?}", lib.path.display());
    Ok(verdict)
}

static VERIFIED: OnceLock<Result<(), RuntimeError>> = OnceLock::new();

/// Refuses a loaded runtime of another ABI than the one built in, before anything hands it an
/// `RKLLMParam`. Probes once per process.
pub fn verify_abi() -> Result<(), RuntimeError> {
    VERIFIED
        .get_or_init(|| {
            let library = LOADED.get().map(|l| l.path.clone()).unwrap_or_default();
            let built = Abi::built();
            match probe_abi()? {
                AbiProbe::Is(abi) if abi == built => Ok(()),
                AbiProbe::Is(found) => Err(RuntimeError::AbiMismatch {
                    library,
                    built,
                    found,
                }),
                AbiProbe::Either => {
                    log::warn!(
                        "cannot tell the ABI of {} from its defaults; assuming {built}, as built",
                        library.display()
                    );
                    Ok(())
                }
                AbiProbe::Neither { detail } => Err(RuntimeError::AbiUnknown { library, detail }),
            }
        })
        .clone()
}
