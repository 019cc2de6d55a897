//! The FFI boundary: a safe wrapper over our C++ shim, which calls librkllmrt.
//!
//! Everything `unsafe` in rkllmd that touches the runtime lives in this folder. Above it the
//! runtime is a `Runtime` value (owned by the inference thread) plus an `AbortHandle` that any
//! thread may use.

mod abi;
mod callback;
mod child;
mod dlopen;
mod error;
mod ffi;
mod handle;
mod hidden;
mod library;
mod multimodal;
pub mod rknn;

use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use abi::{Abi, AbiProbe};
pub use child::{probe_in_child, ChildProbe};
pub use error::RuntimeError;
pub use handle::AbortHandle;
use handle::Handle;
pub use hidden::HiddenStates;
pub use library::{load, loaded, probe_abi, verify_abi, Library, DEFAULT_LIBRARY};
pub use multimodal::{ImageTags, Images, IMAGE_PLACEHOLDER};

/// Sampling values, at init and (ABI 1.3) per run. `Default` holds rkllmd's defaults, the one
/// definition behind the config's values and `--help`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means no limit. `i32` because that is what the runtime takes.
    pub top_k: i32,
    pub top_p: f32,
    pub temperature: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            top_k: 1,
            top_p: 0.9,
            temperature: 0.8,
            repeat_penalty: 1.1,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

/// What a model is loaded with that may differ from one model to another (the config file's
/// `[model NAME]` sections).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelParams {
    pub max_context_len: u32,
    pub max_new_tokens: u32,
    pub sampling: Sampling,
    pub base_domain_id: i32,
}

#[derive(Clone, Debug)]
pub struct InitConfig {
    /// The runtime library to dlopen (`runtime-library`), unless one is loaded already.
    pub library: PathBuf,
    pub model_path: PathBuf,
    pub max_context_len: u32,
    pub max_new_tokens: u32,
    pub sampling: Sampling,
    pub base_domain_id: i32,
    /// The CPUs the runtime may use, as a bit mask; `None`: the runtime's default.
    pub cpu_mask: Option<u32>,
    /// A vision model's image tags (`None` for a text model): multimodal runs need them.
    pub image_tags: Option<ImageTags>,
}

impl InitConfig {
    /// These parameters with a model's own.
    pub fn with_params(mut self, params: &ModelParams) -> InitConfig {
        self.max_context_len = params.max_context_len;
        self.max_new_tokens = params.max_new_tokens;
        self.sampling = params.sampling;
        self.base_domain_id = params.base_domain_id;
        self
    }
}

/// Who speaks the input text of a run, as the runtime's template knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Tool,
}

impl Role {
    fn as_cstr(self) -> &'static CStr {
        match self {
            Role::User => c"user",
            Role::Tool => c"tool",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunRequest<'a> {
    pub prompt: &'a str,
    pub role: Role,
    pub enable_thinking: bool,
    pub keep_history: bool,
    /// Honoured by the runtime on ABI 1.3 only; see `Capabilities`.
    pub max_new_tokens: Option<u32>,
    /// Honoured by the runtime on ABI 1.3 only; see `Capabilities`.
    pub sampling: Option<Sampling>,
    /// Save this run's prompt cache to the file (`RKLLMPromptCacheParam`). The runtime writes it
    /// once the prefill is done and only logs a failure: the caller checks the file.
    pub save_prompt_cache: Option<&'a Path>,
    /// The LoRA adapter the run applies, by the name `load_lora` gave it; `None`: the base
    /// model.
    pub lora: Option<&'a str>,
}

/// One callback's worth of output. `text` is valid only during the callback.
#[derive(Debug)]
pub enum Output<'a> {
    Token {
        text: &'a [u8],
        token_id: i32,
    },
    /// The runtime consumed a token that ends inside a UTF-8 character.
    Waiting,
}

/// What the sink tells the runtime after each output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// End the run now: it is aborted (`rkllm_abort`), never paused, and gets no more output.
    Stop,
    /// Another thread has aborted the run (or is about to): it gets no more output, and no
    /// second `rkllm_abort`. (A sink that sees that abort at the run's first output says `Stop`
    /// instead: the abort may have come before the runtime started the run, and found none.)
    Discard,
    /// Pause the run: the callback returns 1 and the run gets no more output. Only `selftest`
    /// pauses, to observe what the runtime does; the daemon never does (see `callback`).
    Pause,
}

/// The runtime's own measurements of a finished run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Perf {
    pub prefill_ms: f32,
    pub prefill_tokens: u32,
    pub generate_ms: f32,
    pub generate_tokens: u32,
    pub memory_mb: f32,
}

impl Perf {
    /// This run's figures followed by `next`'s (several runs for one job): prefills add up,
    /// memory is the larger.
    #[must_use]
    pub fn followed_by(self, next: &Perf) -> Perf {
        Perf {
            prefill_ms: self.prefill_ms + next.prefill_ms,
            prefill_tokens: self.prefill_tokens + next.prefill_tokens,
            memory_mb: self.memory_mb.max(next.memory_mb),
            ..self
        }
    }
}

impl From<ffi::RkdPerf> for Perf {
    fn from(p: ffi::RkdPerf) -> Self {
        Perf {
            prefill_ms: p.prefill_time_ms,
            prefill_tokens: u32::try_from(p.prefill_tokens).unwrap_or(0),
            generate_ms: p.generate_time_ms,
            generate_tokens: u32::try_from(p.generate_tokens).unwrap_or(0),
            memory_mb: p.memory_usage_mb,
        }
    }
}

/// How a run that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunEnd {
    /// FINISH arrived (end of sequence, length cap, context full or abort).
    Finished(Perf),
    /// The sink asked to stop and the run was aborted; the statistics when FINISH followed.
    Stopped(Option<Perf>),
    /// `rkllm_run` returned 0 with no FINISH although the sink never asked to stop: how a run
    /// may end after an `rkllm_abort` from outside (whether the runtime sends FINISH then is not
    /// known). Only the caller knows whether it aborted the run.
    Unfinished,
}

/// What the runtime can do per run in the ABI this binary was built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub run_sampling: bool,
    pub run_max_new_tokens: bool,
}

/// Which runtime this process has loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The ABI compiled in, "1.2" or "1.3".
    pub abi: &'static str,
    /// The file dlopen opened; `None` before `load` succeeded.
    pub library: Option<PathBuf>,
    /// `Some(version)` when the loaded librkllmrt.so is our simulator.
    pub simulator: Option<String>,
}

impl RuntimeInfo {
    pub fn kind(&self) -> &'static str {
        match (&self.library, &self.simulator) {
            (None, _) => "not loaded",
            (Some(_), Some(_)) => "simulator",
            (Some(_), None) => "rockchip",
        }
    }
}

/// What is known about the runtime now: call it after `load` to describe the loaded library.
pub fn info() -> RuntimeInfo {
    let library = loaded();
    // Only once `load` has published the shim's table (the OnceLock orders it before us).
    let sim = match library {
        // SAFETY: the shim's function takes no arguments and returns NULL or a static
        // NUL-terminated string owned by the loaded library, which is never unloaded.
        Some(_) => unsafe { ffi::rkd_simulator_version() },
        None => std::ptr::null(),
    };
    let simulator = (!sim.is_null())
        // SAFETY: non-NULL, NUL-terminated and static, as above.
        .then(|| {
            unsafe { CStr::from_ptr(sim) }
                .to_string_lossy()
                .into_owned()
        });
    RuntimeInfo {
        abi: env!("RKLLMD_ABI"),
        library: library.map(|lib| lib.path.clone()),
        simulator,
    }
}

pub fn capabilities() -> Capabilities {
    // SAFETY: pure function of the shim, no arguments.
    let caps = unsafe { ffi::rkd_caps() };
    Capabilities {
        run_sampling: caps & ffi::CAP_RUN_SAMPLING != 0,
        run_max_new_tokens: caps & ffi::CAP_RUN_MAX_NEW_TOKENS != 0,
    }
}

/// An initialised runtime. Dropping it destroys the handle.
pub struct Runtime {
    handle: Arc<Handle>,
    ptr: *mut c_void,
    /// The image tags given at init, passed again with each multimodal run (ABI 1.3).
    image_tags: Option<multimodal::CTags>,
}

// SAFETY: see `handle::Shared`; the `Runtime` moves to the inference thread and stays there.
unsafe impl Send for Runtime {}

fn check(call: &'static str, rc: i32) -> Result<(), RuntimeError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(RuntimeError::Call { call, code: rc })
    }
}

fn cstring(what: &'static str, s: &str) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| RuntimeError::NulByte { what })
}

impl Runtime {
    /// Loads the runtime library if needed, then the model; blocks for as long as the runtime
    /// takes.
    pub fn init(cfg: &InitConfig) -> Result<Runtime, RuntimeError> {
        load(&cfg.library)?;
        verify_abi()?;
        let path = CString::new(cfg.model_path.as_os_str().as_bytes())
            .map_err(|_| RuntimeError::NulByte { what: "model path" })?;
        let image_tags = cfg
            .image_tags
            .as_ref()
            .map(multimodal::CTags::new)
            .transpose()?;
        let tag = |f: fn(&multimodal::CTags) -> &CString| {
            image_tags
                .as_ref()
                .map_or(std::ptr::null(), |t| f(t).as_ptr())
        };
        let c = ffi::RkdConfig {
            model_path: path.as_ptr(),
            max_context_len: clamp_i32(cfg.max_context_len),
            max_new_tokens: clamp_i32(cfg.max_new_tokens),
            top_k: cfg.sampling.top_k,
            top_p: cfg.sampling.top_p,
            temperature: cfg.sampling.temperature,
            repeat_penalty: cfg.sampling.repeat_penalty,
            frequency_penalty: cfg.sampling.frequency_penalty,
            presence_penalty: cfg.sampling.presence_penalty,
            base_domain_id: cfg.base_domain_id,
            enabled_cpus_mask: cfg.cpu_mask.unwrap_or(0),
            img_start: tag(|t| &t.start),
            img_end: tag(|t| &t.end),
            img_content: tag(|t| &t.content),
        };
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: `c` and the path it points to live until the call returns; the shim copies what
        // it needs into the runtime's own parameter struct, except the image tags' pointers
        // (1.2), whose strings the returned `Runtime` keeps alive. `ptr` is a valid out-pointer.
        let rc = unsafe { ffi::rkd_init(std::ptr::addr_of_mut!(ptr), std::ptr::addr_of!(c)) };
        if rc != 0 || ptr.is_null() {
            return Err(RuntimeError::Init {
                model: cfg.model_path.clone(),
                code: rc,
            });
        }
        Ok(Runtime {
            handle: Handle::new(ptr),
            ptr,
            image_tags,
        })
    }

    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle::new(&self.handle)
    }

    /// Runs one generation, calling `sink` on this thread for every piece of output.
    pub fn run(
        &mut self,
        req: &RunRequest<'_>,
        sink: &mut dyn FnMut(Output<'_>) -> Flow,
    ) -> Result<RunEnd, RuntimeError> {
        self.run_input(req, None, sink)
    }

    /// Runs one generation of `req.prompt` with `images` (`RKLLM_INPUT_MULTIMODAL`): the prompt
    /// holds one `IMAGE_PLACEHOLDER` per image, and the runtime must have been initialised with
    /// the model's image tags.
    pub fn run_multimodal(
        &mut self,
        req: &RunRequest<'_>,
        images: &Images<'_>,
        sink: &mut dyn FnMut(Output<'_>) -> Flow,
    ) -> Result<RunEnd, RuntimeError> {
        images.check(req.prompt)?;
        self.run_input(req, Some(images), sink)
    }

    fn run_input(
        &mut self,
        req: &RunRequest<'_>,
        images: Option<&Images<'_>>,
        sink: &mut dyn FnMut(Output<'_>) -> Flow,
    ) -> Result<RunEnd, RuntimeError> {
        let prompt = cstring("prompt", req.prompt)?;
        let image_input = match images {
            None => None,
            Some(im) => {
                let tags = self.image_tags.as_ref().ok_or(RuntimeError::NoImageTags)?;
                Some(ffi::RkdImageInput {
                    embed: im.embeddings.as_ptr(),
                    n_image: im.count,
                    n_image_tokens: im.tokens,
                    start: tags.start.as_ptr(),
                    end: tags.end.as_ptr(),
                    content: tags.content.as_ptr(),
                    width: im.width as usize,
                    height: im.height as usize,
                })
            }
        };
        let save = req.save_prompt_cache.map(path_cstring).transpose()?;
        let lora = req.lora.map(|l| cstring("adapter name", l)).transpose()?;
        let sampling = req.sampling.map(|s| ffi::RkdSampling {
            top_k: s.top_k,
            top_p: s.top_p,
            temperature: s.temperature,
            repeat_penalty: s.repeat_penalty,
            frequency_penalty: s.frequency_penalty,
            presence_penalty: s.presence_penalty,
        });
        let params = ffi::RkdRunParams {
            prompt: prompt.as_ptr(),
            role: req.role.as_cstr().as_ptr(),
            enable_thinking: i32::from(req.enable_thinking),
            keep_history: i32::from(req.keep_history),
            max_new_tokens: req.max_new_tokens.map_or(0, clamp_i32),
            sampling: sampling
                .as_ref()
                .map_or(std::ptr::null(), std::ptr::from_ref),
            save_prompt_cache: save.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
            lora: lora.as_ref().map_or(std::ptr::null(), |l| l.as_ptr()),
            images: image_input
                .as_ref()
                .map_or(std::ptr::null(), std::ptr::from_ref),
        };
        let mut state = callback::RunState {
            sink,
            handle: self.ptr,
            finished: None,
            error: false,
            stopped: false,
            panic: None,
        };
        // Aborts from other threads reach the runtime from here until the call returned.
        let _running = self.handle.mark_running();
        // SAFETY: `self.ptr` is live (only `Drop` destroys it and it needs `&mut self`); `params`,
        // the strings, the images and `state` outlive the call; the runtime calls `on_event` only
        // during it, on this thread, with `state` as its userdata. The runtime reads `count x
        // tokens x` its own embedding width floats of the images: `Images::check` makes the
        // buffer exactly `count x tokens x token_width`, so it holds them when `token_width` is
        // the model's width. The runtime's API cannot tell its width; the encoder beside the
        // model is converted for it (upstream's toolchain makes the pair).
        let rc = unsafe {
            ffi::rkd_run(
                self.ptr,
                std::ptr::addr_of!(params),
                callback::on_event,
                std::ptr::addr_of_mut!(state).cast(),
            )
        };
        if let Some(payload) = state.panic {
            std::panic::resume_unwind(payload);
        }
        match (state.error, state.finished, state.stopped) {
            (true, _, _) => Err(RuntimeError::RunFailed { code: rc }),
            (false, finished, true) => Ok(RunEnd::Stopped(finished)),
            (false, Some(perf), false) => Ok(RunEnd::Finished(perf)),
            (false, None, false) if rc != 0 => Err(RuntimeError::RunFailed { code: rc }),
            (false, None, false) => Ok(RunEnd::Unfinished),
        }
    }

    pub fn clear_kv_cache(&mut self, keep_system_prompt: bool) -> Result<(), RuntimeError> {
        // SAFETY: live handle owned by this thread.
        let rc = unsafe { ffi::rkd_clear_kv_cache(self.ptr, i32::from(keep_system_prompt)) };
        check("rkllm_clear_kv_cache", rc)
    }

    pub fn kv_cache_size(&mut self) -> Result<u32, RuntimeError> {
        let mut size = 0i32;
        // SAFETY: live handle; `size` is a valid out-pointer for one int (n_batch is 1).
        let rc = unsafe { ffi::rkd_kv_cache_size(self.ptr, std::ptr::addr_of_mut!(size)) };
        check("rkllm_get_kv_cache_size", rc)?;
        Ok(u32::try_from(size).unwrap_or(0))
    }

    pub fn set_chat_template(
        &mut self,
        system: &str,
        prefix: &str,
        postfix: &str,
    ) -> Result<(), RuntimeError> {
        let (s, p, q) = (
            cstring("system prompt", system)?,
            cstring("prefix", prefix)?,
            cstring("postfix", postfix)?,
        );
        // SAFETY: live handle; the strings outlive the call and the runtime copies them.
        let rc =
            unsafe { ffi::rkd_set_chat_template(self.ptr, s.as_ptr(), p.as_ptr(), q.as_ptr()) };
        check("rkllm_set_chat_template", rc)
    }

    pub fn set_function_tools(
        &mut self,
        system: &str,
        tools_json: &str,
        tag: &str,
    ) -> Result<(), RuntimeError> {
        let (s, t, g) = (
            cstring("system prompt", system)?,
            cstring("tools", tools_json)?,
            cstring("tool tag", tag)?,
        );
        // SAFETY: live handle; the strings outlive the call and the runtime copies them.
        let rc =
            unsafe { ffi::rkd_set_function_tools(self.ptr, s.as_ptr(), t.as_ptr(), g.as_ptr()) };
        check("rkllm_set_function_tools", rc)
    }

    /// `rkllm_load_prompt_cache`: the file's prompt cache becomes a prefix the next run that
    /// starts a sequence need not prefill.
    pub fn load_prompt_cache(&mut self, path: &Path) -> Result<(), RuntimeError> {
        let path = path_cstring(path)?;
        // SAFETY: live handle owned by this thread; the path outlives the call.
        let rc = unsafe { ffi::rkd_load_prompt_cache(self.ptr, path.as_ptr()) };
        check("rkllm_load_prompt_cache", rc)
    }

    /// `rkllm_release_prompt_cache`: frees what `load_prompt_cache` loaded.
    pub fn release_prompt_cache(&mut self) -> Result<(), RuntimeError> {
        // SAFETY: live handle owned by this thread.
        let rc = unsafe { ffi::rkd_release_prompt_cache(self.ptr) };
        check("rkllm_release_prompt_cache", rc)
    }

    /// `rkllm_load_lora`: the adapter file at `path` becomes selectable by runs as `name`
    /// (`RunRequest::lora`), applied at `scale`.
    pub fn load_lora(&mut self, path: &Path, name: &str, scale: f32) -> Result<(), RuntimeError> {
        let path =
            CString::new(path.as_os_str().as_bytes()).map_err(|_| RuntimeError::NulByte {
                what: "adapter path",
            })?;
        let name = cstring("adapter name", name)?;
        // SAFETY: live handle owned by this thread; both strings outlive the call, and the
        // shim passes them in a struct that lives on its stack for the call only.
        let rc = unsafe { ffi::rkd_load_lora(self.ptr, path.as_ptr(), name.as_ptr(), scale) };
        check("rkllm_load_lora", rc)
    }

    pub fn is_running(&mut self) -> bool {
        // SAFETY: live handle.
        unsafe { ffi::rkd_is_running(self.ptr) == 1 }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Null the shared pointer first so no abort can reach a handle being destroyed.
        let ptr = self.handle.take();
        if ptr.is_null() {
            return;
        }
        // SAFETY: `ptr` is the live handle from `rkd_init`, destroyed exactly once, here.
        let rc = unsafe { ffi::rkd_destroy(ptr) };
        if rc != 0 {
            log::warn!("rkllm_destroy returned {rc}");
        }
    }
}

fn path_cstring(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RuntimeError::NulByte {
        what: "prompt cache path",
    })
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
