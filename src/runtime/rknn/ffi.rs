//! Declarations of the RKNN shim's C ABI (`shim.cpp`): structs of our own shim, never the
//! runtime's, whose layouts the C++ compiler takes from `decls.h`.

use std::ffi::c_char;

/// `rkd_rknn_model`: what `rkd_rknn_open` learnt of an encoder's tensors.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RkdRknnModel {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub image_tokens: u32,
    pub embed_dim: u32,
    pub outputs: u32,
    pub core_mask_rc: i32,
}

// The step of the encoder path a code came from (`RKD_RKNN_STEP_*`).
pub const STEP_INIT: i32 = 1;
pub const STEP_QUERY: i32 = 2;
pub const STEP_SHAPE: i32 = 3;
pub const STEP_INPUTS_SET: i32 = 4;
pub const STEP_RUN: i32 = 5;
pub const STEP_OUTPUTS_GET: i32 = 6;
pub const STEP_OUTPUT_SIZE: i32 = 7;

extern "C" {
    pub fn rkd_rknn_load(
        name: *const c_char,
        err: *mut c_char,
        err_len: usize,
        path: *mut c_char,
        path_len: usize,
    ) -> i32;
    pub fn rkd_rknn_simulator_version() -> *const c_char;
    pub fn rkd_rknn_open(
        model_path: *const c_char,
        core_mask: i32,
        ctx: *mut u64,
        out: *mut RkdRknnModel,
        step: *mut i32,
    ) -> i32;
    pub fn rkd_rknn_encode(
        ctx: u64,
        model: *const RkdRknnModel,
        rgb: *const u8,
        rgb_len: usize,
        out: *mut f32,
        out_len: usize,
        step: *mut i32,
    ) -> i32;
    pub fn rkd_rknn_destroy(ctx: u64) -> i32;
}
