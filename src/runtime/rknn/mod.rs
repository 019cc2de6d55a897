//! The vision encoder: a `.rknn` model run by Rockchip's RKNN runtime (`librknnrt.so`), whose
//! output embeddings go to `rkllm_run` as multimodal input (`Runtime::run_multimodal`).
//!
//! Like librkllmrt, librknnrt is dlopened through our shim (`shim.cpp`), and only when a vision
//! model is opened: a board without it still serves text. Our shim is written against our own
//! declarations (`decls.h`), never Rockchip's `rknn_api.h` (its notice forbids reproduction);
//! `check.cpp` compares the two whenever a real header is at hand (`RKNN_INCLUDE_DIR`).

mod error;
mod ffi;

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

pub use error::EncoderError;

use super::dlopen::{self, Opened};

/// The `rknn-runtime-library` default: the soname, found by the normal dlopen search.
pub const DEFAULT_LIBRARY: &str = "librknnrt.so";

/// NPU cores for the encoder, as `rknn_set_core_mask` takes them: one bit per core (RK3588 has
/// three), 0 for the runtime's choice. Upstream's demo runs encoders on all three cores of an
/// RK3588; a mask naming a core the chip lacks is refused by the runtime, and the encoder then
/// runs on its default (with a warning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreMask(pub u32);

impl CoreMask {
    pub const AUTO: CoreMask = CoreMask(0);
    pub const ALL_THREE: CoreMask = CoreMask(0b111);
}

/// The librknnrt this process has loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    pub requested: PathBuf,
    pub path: PathBuf,
    /// `Some(version)` when it is our simulator.
    pub simulator: Option<String>,
}

static LOADED: OnceLock<Library> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads `requested` and resolves every function the encoder path uses. Idempotent for the same
/// name; asking for another library afterwards is an error.
pub fn load(requested: &Path) -> Result<&'static Library, EncoderError> {
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(lib) = LOADED.get() {
        return if lib.requested == requested {
            Ok(lib)
        } else {
            Err(EncoderError::OtherLibraryLoaded {
                loaded: lib.path.clone(),
                requested: requested.to_owned(),
            })
        };
    }
    match dlopen::open(ffi::rkd_rknn_load, requested) {
        Opened::Ok(path) => {
            // SAFETY: the library is loaded; the shim returns NULL or a static NUL-terminated
            // string owned by the library, which is never unloaded.
            let sim = unsafe { ffi::rkd_rknn_simulator_version() };
            // SAFETY: non-NULL, NUL-terminated and static, as above.
            let simulator = (!sim.is_null()).then(|| {
                unsafe { CStr::from_ptr(sim) }
                    .to_string_lossy()
                    .into_owned()
            });
            let lib = Library {
                requested: requested.to_owned(),
                path,
                simulator,
            };
            log::info!("RKNN runtime library loaded: {}", lib.path.display());
            Ok(LOADED.get_or_init(|| lib))
        }
        Opened::MissingSymbol(reason) => Err(EncoderError::MissingSymbol {
            library: requested.to_owned(),
            reason,
        }),
        Opened::Failed(reason) => Err(EncoderError::LibraryOpen {
            library: requested.to_owned(),
            reason,
        }),
        Opened::NulByte => Err(EncoderError::NulByte {
            what: "RKNN runtime library path",
        }),
    }
}

/// What an encoder takes and gives, read from its tensors when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderInfo {
    /// The image the encoder takes: `width` x `height` pixels of `channels` bytes (RGB), NHWC.
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    /// Embeddings per image: the `n_image_tokens` of `rkllm_run`'s multimodal input.
    pub image_tokens: u32,
    /// Floats per token in each output.
    pub embed_dim: u32,
    /// Output tensors, laid side by side per token (deepstack encoders give several).
    pub outputs: u32,
}

impl EncoderInfo {
    /// Floats per token in the embedding handed to the LLM: every output's.
    pub fn token_width(&self) -> usize {
        self.embed_dim as usize * self.outputs as usize
    }

    /// Floats `encode` returns for one image.
    pub fn embedding_len(&self) -> usize {
        self.image_tokens as usize * self.token_width()
    }

    fn input_bytes(&self) -> usize {
        self.width as usize * self.height as usize * self.channels as usize
    }
}

/// An opened vision encoder (an RKNN context). It runs one image at a time: `Send`, so the
/// inference thread can own it, but not `Sync`.
pub struct Encoder {
    ctx: u64,
    model: ffi::RkdRknnModel,
    info: EncoderInfo,
    path: PathBuf,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn step_call(step: i32) -> &'static str {
    match step {
        ffi::STEP_INIT => "rknn_init",
        ffi::STEP_QUERY => "rknn_query",
        ffi::STEP_SHAPE => "the model's tensors",
        ffi::STEP_INPUTS_SET => "rknn_inputs_set",
        ffi::STEP_RUN => "rknn_run",
        ffi::STEP_OUTPUTS_GET => "rknn_outputs_get",
        ffi::STEP_OUTPUT_SIZE => "rknn_outputs_get (an output of another size than queried)",
        _ => "the RKNN shim",
    }
}

impl Encoder {
    /// Loads `library` if needed, then opens the encoder model `rknn_path` on the NPU cores of
    /// `core_mask`; blocks while the runtime loads the model.
    pub fn open(
        library: &Path,
        rknn_path: &Path,
        core_mask: CoreMask,
    ) -> Result<Encoder, EncoderError> {
        load(library)?;
        let path =
            CString::new(rknn_path.as_os_str().as_bytes()).map_err(|_| EncoderError::NulByte {
                what: "encoder model path",
            })?;
        let mut ctx = 0u64;
        let mut model = ffi::RkdRknnModel::default();
        let mut step = 0i32;
        let mask = i32::try_from(core_mask.0).unwrap_or(0);
        // SAFETY: the library is loaded (`load` succeeded); `path` lives until the call returns
        // and the runtime reads the file itself; the three out-pointers are valid and exclusive.
        let rc = unsafe {
            ffi::rkd_rknn_open(
                path.as_ptr(),
                mask,
                std::ptr::addr_of_mut!(ctx),
                std::ptr::addr_of_mut!(model),
                std::ptr::addr_of_mut!(step),
            )
        };
        if rc != 0 {
            return Err(if step == ffi::STEP_SHAPE {
                EncoderError::NotAnImageEncoder {
                    model: rknn_path.to_owned(),
                }
            } else {
                EncoderError::Open {
                    model: rknn_path.to_owned(),
                    call: step_call(step),
                    code: rc,
                }
            });
        }
        if model.core_mask_rc != 0 {
            log::warn!(
                "rknn_set_core_mask({:#b}) returned {} for '{}': the encoder runs on the runtime's \
                 default cores",
                core_mask.0,
                model.core_mask_rc,
                rknn_path.display()
            );
        }
        let info = EncoderInfo {
            width: model.width,
            height: model.height,
            channels: model.channels,
            image_tokens: model.image_tokens,
            embed_dim: model.embed_dim,
            outputs: model.outputs,
        };
        log::info!(
            "vision encoder '{}': {}x{}x{} in, {} tokens x {} x {} out",
            rknn_path.display(),
            info.width,
            info.height,
            info.channels,
            info.image_tokens,
            info.embed_dim,
            info.outputs
        );
        Ok(Encoder {
            ctx,
            model,
            info,
            path: rknn_path.to_owned(),
            _not_sync: PhantomData,
        })
    }

    pub fn info(&self) -> &EncoderInfo {
        &self.info
    }

    /// The image size `encode` takes, (width, height): decoded images are resized to it first.
    pub fn input_size(&self) -> (u32, u32) {
        (self.info.width, self.info.height)
    }

    /// Runs the encoder on `rgb`, `width` x `height` pixels of RGB bytes (NHWC), which must be
    /// the encoder's input size. Returns `image_tokens` x `token_width` floats.
    pub fn encode(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>, EncoderError> {
        if width != self.info.width
            || height != self.info.height
            || rgb.len() != self.info.input_bytes()
        {
            return Err(EncoderError::InputSize {
                expected: (self.info.width, self.info.height, self.info.channels),
                width,
                height,
                bytes: rgb.len(),
            });
        }
        let mut out = vec![0f32; self.info.embedding_len()];
        let mut step = 0i32;
        // SAFETY: `ctx` is a live context (destroyed only in Drop); `model` is what the shim
        // filled for it; `rgb` is readable for its length, which equals the model's input size
        // (checked above); `out` is writable for its length, which the shim checks against the
        // model's output size before writing; `step` is a valid out-pointer. `&self` with
        // `Encoder: !Sync` keeps calls on one context from overlapping.
        let rc = unsafe {
            ffi::rkd_rknn_encode(
                self.ctx,
                std::ptr::addr_of!(self.model),
                rgb.as_ptr(),
                rgb.len(),
                out.as_mut_ptr(),
                out.len(),
                std::ptr::addr_of_mut!(step),
            )
        };
        if rc != 0 {
            return Err(EncoderError::Encode {
                call: step_call(step),
                code: rc,
            });
        }
        Ok(out)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `ctx` is the live context from `rkd_rknn_open`, destroyed exactly once, here.
        let rc = unsafe { ffi::rkd_rknn_destroy(self.ctx) };
        if rc != 0 {
            log::warn!("rknn_destroy returned {rc} for '{}'", self.path.display());
        }
    }
}

// SAFETY: an RKNN context is an integer handle the runtime lets any thread use, one call at a
// time; `Encoder` is `!Sync`, so only its single owner calls into it.
unsafe impl Send for Encoder {}
