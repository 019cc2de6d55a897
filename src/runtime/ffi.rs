//! Declarations of the shim's C ABI (`shim.cpp`). These mirror structs of our own shim, never the
//! runtime's: the C++ compiler lays those out from the vendored header.

use std::ffi::{c_char, c_void};

#[repr(C)]
pub struct RkdConfig {
    pub model_path: *const c_char,
    pub max_context_len: i32,
    pub max_new_tokens: i32,
    pub top_k: i32,
    pub top_p: f32,
    pub temperature: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub base_domain_id: i32,
    /// 0: the runtime's default CPUs.
    pub enabled_cpus_mask: u32,
    /// A vision model's image tags, or NULL (taken by the 1.2 ABI at init).
    pub img_start: *const c_char,
    pub img_end: *const c_char,
    pub img_content: *const c_char,
}

/// `rkd_image_input`: a multimodal run's images.
#[repr(C)]
pub struct RkdImageInput {
    pub embed: *const f32,
    pub n_image: usize,
    pub n_image_tokens: usize,
    pub start: *const c_char,
    pub end: *const c_char,
    pub content: *const c_char,
    pub width: usize,
    pub height: usize,
}

/// `rkd_layout` of `layout.cpp`: offsets in `RKLLMParam` of one ABI; -1 where it has no such
/// field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RkdLayout {
    pub size: i32,
    pub skip_special_token: i32,
    pub ignore_eos_token: i32,
    pub is_async: i32,
    pub img_start: i32,
    pub img_end: i32,
    pub img_content: i32,
    pub pointer_size: i32,
    pub base_domain_id: i32,
    pub enabled_cpus_num: i32,
    pub enabled_cpus_mask: i32,
    pub n_batch: i32,
    pub reserved: i32,
    pub reserved_len: i32,
}

#[repr(C)]
pub struct RkdSampling {
    pub top_k: i32,
    pub top_p: f32,
    pub temperature: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

#[repr(C)]
pub struct RkdRunParams {
    pub prompt: *const c_char,
    pub role: *const c_char,
    pub enable_thinking: i32,
    pub keep_history: i32,
    pub max_new_tokens: i32,
    pub sampling: *const RkdSampling,
    /// Non-null: the file the runtime saves this run's prompt cache to.
    pub save_prompt_cache: *const c_char,
    /// Non-null: the LoRA adapter, by the name it was loaded under, the run applies.
    pub lora: *const c_char,
    /// Non-null: a multimodal run with these images.
    pub images: *const RkdImageInput,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RkdPerf {
    pub prefill_time_ms: f32,
    pub prefill_tokens: i32,
    pub generate_time_ms: f32,
    pub generate_tokens: i32,
    pub memory_usage_mb: f32,
}

pub type RkdEventFn = extern "C" fn(
    ctx: *mut c_void,
    state: i32,
    text: *const c_char,
    token_id: i32,
    perf: *const RkdPerf,
) -> i32;

/// For every callback of a last-hidden-layer run; `states` is NULL or `embd_size * num_tokens`
/// floats valid only during the call.
pub type RkdHiddenFn = extern "C" fn(
    ctx: *mut c_void,
    state: i32,
    states: *const f32,
    embd_size: i32,
    num_tokens: i32,
    perf: *const RkdPerf,
) -> i32;

pub const CAP_RUN_SAMPLING: i32 = 1 << 0;
pub const CAP_RUN_MAX_NEW_TOKENS: i32 = 1 << 1;

// LLMCallState values of rkllm.h (identical in 1.2 and 1.3).
pub const STATE_NORMAL: i32 = 0;
pub const STATE_WAITING: i32 = 1;
pub const STATE_FINISH: i32 = 2;
pub const STATE_ERROR: i32 = 3;

extern "C" {
    pub fn rkd_load(
        name: *const c_char,
        err: *mut c_char,
        err_len: usize,
        path: *mut c_char,
        path_len: usize,
    ) -> i32;
    pub fn rkd_caps() -> i32;
    pub fn rkd_probe_default_param(out_a: *mut u8, out_b: *mut u8, len: usize) -> i32;
    pub fn rkd_layout_1_2(out: *mut RkdLayout);
    pub fn rkd_layout_1_3(out: *mut RkdLayout);
    pub fn rkd_simulator_version() -> *const c_char;
    pub fn rkd_init(handle: *mut *mut c_void, cfg: *const RkdConfig) -> i32;
    pub fn rkd_run(
        handle: *mut c_void,
        params: *const RkdRunParams,
        on_event: RkdEventFn,
        ctx: *mut c_void,
    ) -> i32;
    pub fn rkd_run_hidden(
        handle: *mut c_void,
        prompt: *const c_char,
        lora: *const c_char,
        on_event: RkdHiddenFn,
        ctx: *mut c_void,
    ) -> i32;
    pub fn rkd_abort(handle: *mut c_void) -> i32;
    pub fn rkd_is_running(handle: *mut c_void) -> i32;
    pub fn rkd_clear_kv_cache(handle: *mut c_void, keep_system_prompt: i32) -> i32;
    pub fn rkd_kv_cache_size(handle: *mut c_void, size: *mut i32) -> i32;
    pub fn rkd_set_chat_template(
        handle: *mut c_void,
        system: *const c_char,
        prefix: *const c_char,
        postfix: *const c_char,
    ) -> i32;
    pub fn rkd_set_function_tools(
        handle: *mut c_void,
        system: *const c_char,
        tools: *const c_char,
        tag: *const c_char,
    ) -> i32;
    pub fn rkd_load_prompt_cache(handle: *mut c_void, path: *const c_char) -> i32;
    pub fn rkd_release_prompt_cache(handle: *mut c_void) -> i32;
    pub fn rkd_load_lora(
        handle: *mut c_void,
        path: *const c_char,
        name: *const c_char,
        scale: f32,
    ) -> i32;
    pub fn rkd_destroy(handle: *mut c_void) -> i32;
}
