// The layout of `RKLLMParam` in one ABI's header (RKLLMD_LAYOUT_MINOR), as this compiler lays
// it out for the target. build.rs compiles this file once per header, so the ABI probe knows
// both layouts whatever ABI rkllmd is built for; only offsetof and sizeof are used.
#include <cstddef>  // rkllm.h uses size_t without including it
#include <cstdint>

#include "rkllm.h"

#if RKLLMD_LAYOUT_MINOR == 2
#define RKD_LAYOUT_FN rkd_layout_1_2
#elif RKLLMD_LAYOUT_MINOR == 3
#define RKD_LAYOUT_FN rkd_layout_1_3
#else
#error "RKLLMD_LAYOUT_MINOR must be 2 or 3"
#endif

extern "C" {

// Mirrored by runtime::ffi::RkdLayout. Offsets of fields the other ABI lacks are -1.
struct rkd_layout {
    int32_t size;
    int32_t skip_special_token;
    int32_t ignore_eos_token;
    int32_t is_async;
    int32_t img_start;
    int32_t img_end;
    int32_t img_content;
    int32_t pointer_size;
    int32_t base_domain_id;
    int32_t enabled_cpus_num;
    int32_t enabled_cpus_mask;
    int32_t n_batch;
    int32_t reserved;
    int32_t reserved_len;
};

void RKD_LAYOUT_FN(rkd_layout* out) {
    const int32_t extend = static_cast<int32_t>(offsetof(RKLLMParam, extend_param));
    rkd_layout l{};
    l.size = static_cast<int32_t>(sizeof(RKLLMParam));
    l.skip_special_token = static_cast<int32_t>(offsetof(RKLLMParam, skip_special_token));
    l.is_async = static_cast<int32_t>(offsetof(RKLLMParam, is_async));
#if RKLLMD_LAYOUT_MINOR >= 3
    l.ignore_eos_token = static_cast<int32_t>(offsetof(RKLLMParam, ignore_eos_token));
    l.img_start = l.img_end = l.img_content = -1;
#else
    l.ignore_eos_token = -1;
    l.img_start = static_cast<int32_t>(offsetof(RKLLMParam, img_start));
    l.img_end = static_cast<int32_t>(offsetof(RKLLMParam, img_end));
    l.img_content = static_cast<int32_t>(offsetof(RKLLMParam, img_content));
#endif
    l.pointer_size = static_cast<int32_t>(sizeof(void*));
    l.base_domain_id = extend + static_cast<int32_t>(offsetof(RKLLMExtendParam, base_domain_id));
    l.enabled_cpus_num = extend + static_cast<int32_t>(offsetof(RKLLMExtendParam, enabled_cpus_num));
    l.enabled_cpus_mask = extend + static_cast<int32_t>(offsetof(RKLLMExtendParam, enabled_cpus_mask));
    l.n_batch = extend + static_cast<int32_t>(offsetof(RKLLMExtendParam, n_batch));
    l.reserved = extend + static_cast<int32_t>(offsetof(RKLLMExtendParam, reserved));
    l.reserved_len = static_cast<int32_t>(sizeof(RKLLMExtendParam::reserved));
    *out = l;
}

}  // extern "C"
