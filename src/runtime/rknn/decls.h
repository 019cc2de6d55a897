// rkllmd's own declarations of the few parts of librknnrt's C API that the vision encoder path
// uses: open a model file, choose NPU cores, ask for its tensors, set one input, run, fetch and
// release the outputs, destroy.
//
// Why not the vendor's header: the copy of rknn_api.h that Rockchip ships with its examples
// carries a confidentiality notice that conflicts with this repository's licence (issue #15), so
// it is never vendored. These declarations were written from the documented API (names, values
// and field order as the RKNN Runtime documentation describes them). Values and layouts must
// match the real library, which is why build.rs compiles rknn_check.cpp against a real
// rknn_api.h whenever RKNN_INCLUDE_DIR names one, and fails the build on any difference.
//
// Everything sits in namespace rkd_rknn under names of our own, so this header and the real one
// can be included in the same translation unit (the check does exactly that).
#pragma once

#include <cstdint>

namespace rkd_rknn {

// The context handle: a 32-bit integer on 32-bit Arm, 64-bit elsewhere.
#ifdef __arm__
using Context = uint32_t;
#else
using Context = uint64_t;
#endif

// Every call returns 0 on success, a negative code otherwise.
constexpr int kSuccess = 0;
constexpr int kErrFail = -1;
constexpr int kErrMallocFail = -4;
constexpr int kErrParamInvalid = -5;
constexpr int kErrModelInvalid = -6;
constexpr int kErrCtxInvalid = -7;
constexpr int kErrInputInvalid = -8;
constexpr int kErrOutputInvalid = -9;

constexpr unsigned kMaxDims = 16;
constexpr unsigned kMaxNameLen = 256;

// rknn_query commands used here.
enum QueryCmd : int {
    kQueryInOutNum = 0,
    kQueryInputAttr = 1,
    kQueryOutputAttr = 2,
};

// Element types (the first four of the runtime's list; the others are never asked for).
enum TensorType : int {
    kTensorFloat32 = 0,
    kTensorFloat16 = 1,
    kTensorInt8 = 2,
    kTensorUint8 = 3,
};

enum TensorFormat : int {
    kTensorNchw = 0,
    kTensorNhwc = 1,
    kTensorUndefined = 3,  // how outputs without an image layout are described
};

enum QuantType : int {
    kQuantNone = 0,
};

// NPU core selection for rknn_set_core_mask: one bit per core; 0 lets the runtime choose.
enum CoreMask : int {
    kCoreAuto = 0,
    kCore0 = 1,
    kCore1 = 2,
    kCore2 = 4,
    kCore01 = 3,
    kCore012 = 7,
};

struct InputOutputNum {
    uint32_t n_input;
    uint32_t n_output;
};

// A tensor's description, filled by RKNN_QUERY_INPUT_ATTR / RKNN_QUERY_OUTPUT_ATTR for the
// `index` set by the caller.
struct TensorAttr {
    uint32_t index;
    uint32_t n_dims;
    uint32_t dims[kMaxDims];
    char name[kMaxNameLen];
    uint32_t n_elems;
    uint32_t size;  // bytes
    TensorFormat fmt;
    TensorType type;
    QuantType qnt_type;
    int8_t fl;
    int32_t zp;
    float scale;
    uint32_t w_stride;
    uint32_t size_with_stride;
    uint8_t pass_through;
    uint32_t h_stride;
};

// One input buffer for rknn_inputs_set: the runtime converts `type`/`fmt` to the model's own
// unless `pass_through` is set.
struct Input {
    uint32_t index;
    void* buf;
    uint32_t size;
    uint8_t pass_through;
    TensorType type;
    TensorFormat fmt;
};

// One output for rknn_outputs_get: with `is_prealloc` 0 the runtime allocates `buf` and
// rknn_outputs_release frees it.
struct Output {
    uint8_t want_float;
    uint8_t is_prealloc;
    uint32_t index;
    void* buf;
    uint32_t size;
};

// Extension structs rkllmd always passes as NULL: only their pointer types are needed.
struct InitExtend;
struct RunExtend;
struct OutputExtend;

// The function types, written once over a set of type names `N`: instantiated with ours
// (`Api` below) for the shim and the simulator, and with the real header's names by the check,
// so a signature that differs fails to compile there.
template <class N>
struct Signatures {
    // `model` is a file path when `size` is 0.
    using init = int (*)(typename N::Context*, void* model, uint32_t size, uint32_t flag,
                         typename N::InitExtend*);
    using destroy = int (*)(typename N::Context);
    using query = int (*)(typename N::Context, typename N::QueryCmd, void* info, uint32_t size);
    using set_core_mask = int (*)(typename N::Context, typename N::CoreMask);
    using inputs_set = int (*)(typename N::Context, uint32_t n, typename N::Input inputs[]);
    using run = int (*)(typename N::Context, typename N::RunExtend*);
    using outputs_get = int (*)(typename N::Context, uint32_t n, typename N::Output outputs[],
                                typename N::OutputExtend*);
    using outputs_release = int (*)(typename N::Context, uint32_t n, typename N::Output outputs[]);
};

struct OurNames {
    using Context = rkd_rknn::Context;
    using QueryCmd = rkd_rknn::QueryCmd;
    using CoreMask = rkd_rknn::CoreMask;
    using Input = rkd_rknn::Input;
    using Output = rkd_rknn::Output;
    using InitExtend = rkd_rknn::InitExtend;
    using RunExtend = rkd_rknn::RunExtend;
    using OutputExtend = rkd_rknn::OutputExtend;
};

using Api = Signatures<OurNames>;

}  // namespace rkd_rknn
