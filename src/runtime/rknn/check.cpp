// Compiled only when RKNN_INCLUDE_DIR names a directory with a real rknn_api.h (build.rs, and
// scripts/check-rknn-decls): checks that our own declarations (decls.h) agree with it, value by
// value, field by field and function by function. Any difference fails the compile.
#include <cstddef>

#include <rknn_api.h>

#include "decls.h"

namespace {

// The real header's names, in the shape decls.h writes its function types over.
struct RealNames {
    using Context = ::rknn_context;
    using QueryCmd = ::rknn_query_cmd;
    using CoreMask = ::rknn_core_mask;
    using Input = ::rknn_input;
    using Output = ::rknn_output;
    using InitExtend = ::rknn_init_extend;
    using RunExtend = ::rknn_run_extend;
    using OutputExtend = ::rknn_output_extend;
};
using Real = rkd_rknn::Signatures<RealNames>;

// Each real function must be assignable, without a cast, to our signature spelt with the real
// types: same return type, same parameters in the same order.
[[maybe_unused]] constexpr Real::init kInit = &::rknn_init;
[[maybe_unused]] constexpr Real::destroy kDestroy = &::rknn_destroy;
[[maybe_unused]] constexpr Real::query kQuery = &::rknn_query;
[[maybe_unused]] constexpr Real::set_core_mask kSetCoreMask = &::rknn_set_core_mask;
[[maybe_unused]] constexpr Real::inputs_set kInputsSet = &::rknn_inputs_set;
[[maybe_unused]] constexpr Real::run kRun = &::rknn_run;
[[maybe_unused]] constexpr Real::outputs_get kOutputsGet = &::rknn_outputs_get;
[[maybe_unused]] constexpr Real::outputs_release kOutputsRelease = &::rknn_outputs_release;

// ...and each of our types must stand in for the real one where the shim passes it.
static_assert(sizeof(rkd_rknn::Context) == sizeof(::rknn_context), "rknn_context");
static_assert(sizeof(rkd_rknn::QueryCmd) == sizeof(::rknn_query_cmd), "rknn_query_cmd");
static_assert(sizeof(rkd_rknn::CoreMask) == sizeof(::rknn_core_mask), "rknn_core_mask");
static_assert(sizeof(rkd_rknn::TensorType) == sizeof(::rknn_tensor_type), "rknn_tensor_type");
static_assert(sizeof(rkd_rknn::TensorFormat) == sizeof(::rknn_tensor_format), "rknn_tensor_format");
static_assert(sizeof(rkd_rknn::QuantType) == sizeof(::rknn_tensor_qnt_type), "rknn_tensor_qnt_type");

#define RKD_SAME_VALUE(ours, real) static_assert(static_cast<long>(ours) == static_cast<long>(real), #real)
RKD_SAME_VALUE(rkd_rknn::kSuccess, RKNN_SUCC);
RKD_SAME_VALUE(rkd_rknn::kErrFail, RKNN_ERR_FAIL);
RKD_SAME_VALUE(rkd_rknn::kErrMallocFail, RKNN_ERR_MALLOC_FAIL);
RKD_SAME_VALUE(rkd_rknn::kErrParamInvalid, RKNN_ERR_PARAM_INVALID);
RKD_SAME_VALUE(rkd_rknn::kErrModelInvalid, RKNN_ERR_MODEL_INVALID);
RKD_SAME_VALUE(rkd_rknn::kErrCtxInvalid, RKNN_ERR_CTX_INVALID);
RKD_SAME_VALUE(rkd_rknn::kErrInputInvalid, RKNN_ERR_INPUT_INVALID);
RKD_SAME_VALUE(rkd_rknn::kErrOutputInvalid, RKNN_ERR_OUTPUT_INVALID);
RKD_SAME_VALUE(rkd_rknn::kMaxDims, RKNN_MAX_DIMS);
RKD_SAME_VALUE(rkd_rknn::kMaxNameLen, RKNN_MAX_NAME_LEN);
RKD_SAME_VALUE(rkd_rknn::kQueryInOutNum, RKNN_QUERY_IN_OUT_NUM);
RKD_SAME_VALUE(rkd_rknn::kQueryInputAttr, RKNN_QUERY_INPUT_ATTR);
RKD_SAME_VALUE(rkd_rknn::kQueryOutputAttr, RKNN_QUERY_OUTPUT_ATTR);
RKD_SAME_VALUE(rkd_rknn::kTensorFloat32, RKNN_TENSOR_FLOAT32);
RKD_SAME_VALUE(rkd_rknn::kTensorFloat16, RKNN_TENSOR_FLOAT16);
RKD_SAME_VALUE(rkd_rknn::kTensorInt8, RKNN_TENSOR_INT8);
RKD_SAME_VALUE(rkd_rknn::kTensorUint8, RKNN_TENSOR_UINT8);
RKD_SAME_VALUE(rkd_rknn::kTensorNchw, RKNN_TENSOR_NCHW);
RKD_SAME_VALUE(rkd_rknn::kTensorNhwc, RKNN_TENSOR_NHWC);
RKD_SAME_VALUE(rkd_rknn::kTensorUndefined, RKNN_TENSOR_UNDEFINED);
RKD_SAME_VALUE(rkd_rknn::kQuantNone, RKNN_TENSOR_QNT_NONE);
RKD_SAME_VALUE(rkd_rknn::kCoreAuto, RKNN_NPU_CORE_AUTO);
RKD_SAME_VALUE(rkd_rknn::kCore0, RKNN_NPU_CORE_0);
RKD_SAME_VALUE(rkd_rknn::kCore1, RKNN_NPU_CORE_1);
RKD_SAME_VALUE(rkd_rknn::kCore2, RKNN_NPU_CORE_2);
RKD_SAME_VALUE(rkd_rknn::kCore01, RKNN_NPU_CORE_0_1);
RKD_SAME_VALUE(rkd_rknn::kCore012, RKNN_NPU_CORE_0_1_2);
#undef RKD_SAME_VALUE

#define RKD_SAME_SIZE(ours, real) static_assert(sizeof(ours) == sizeof(real), "sizeof " #real)
#define RKD_SAME_FIELD(ours, real, field)                                              \
    static_assert(offsetof(ours, field) == offsetof(real, field), #real "." #field " offset"); \
    static_assert(sizeof(ours::field) == sizeof(real::field), #real "." #field " size")

RKD_SAME_SIZE(rkd_rknn::InputOutputNum, ::rknn_input_output_num);
RKD_SAME_FIELD(rkd_rknn::InputOutputNum, ::rknn_input_output_num, n_input);
RKD_SAME_FIELD(rkd_rknn::InputOutputNum, ::rknn_input_output_num, n_output);

RKD_SAME_SIZE(rkd_rknn::TensorAttr, ::rknn_tensor_attr);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, index);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, n_dims);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, dims);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, name);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, n_elems);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, size);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, fmt);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, type);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, qnt_type);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, fl);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, zp);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, scale);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, w_stride);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, size_with_stride);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, pass_through);
RKD_SAME_FIELD(rkd_rknn::TensorAttr, ::rknn_tensor_attr, h_stride);

RKD_SAME_SIZE(rkd_rknn::Input, ::rknn_input);
RKD_SAME_FIELD(rkd_rknn::Input, ::rknn_input, index);
RKD_SAME_FIELD(rkd_rknn::Input, ::rknn_input, buf);
RKD_SAME_FIELD(rkd_rknn::Input, ::rknn_input, size);
RKD_SAME_FIELD(rkd_rknn::Input, ::rknn_input, pass_through);
RKD_SAME_FIELD(rkd_rknn::Input, ::rknn_input, type);
RKD_SAME_FIELD(rkd_rknn::Input, ::rknn_input, fmt);

RKD_SAME_SIZE(rkd_rknn::Output, ::rknn_output);
RKD_SAME_FIELD(rkd_rknn::Output, ::rknn_output, want_float);
RKD_SAME_FIELD(rkd_rknn::Output, ::rknn_output, is_prealloc);
RKD_SAME_FIELD(rkd_rknn::Output, ::rknn_output, index);
RKD_SAME_FIELD(rkd_rknn::Output, ::rknn_output, buf);
RKD_SAME_FIELD(rkd_rknn::Output, ::rknn_output, size);
#undef RKD_SAME_FIELD
#undef RKD_SAME_SIZE

}  // namespace

// One symbol, so the object is never empty.
extern "C" int rkd_rknn_decls_checked(void) { return 1; }
