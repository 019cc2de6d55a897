// The RKNN simulator's model file: a small text file standing in for a vision encoder compiled
// to .rknn (see ../../README.md, "The RKNN simulator").
#pragma once

#include "../sim.h"

namespace sim SIM_HIDDEN {
namespace rknn {

struct EncoderModel {
    String name = "rknn-sim";
    // The input tensor: height x width x channels uint8 pixels, as the encoder was compiled.
    int input_width = 392;
    int input_height = 392;
    int input_channels = 3;
    bool input_nchw = false;  // the layout the model reports (the caller still passes NHWC)
    // The output tensor(s): [1, image_tokens, embed_dim] float each. More than one output is how
    // encoders with deepstack features (Qwen3-VL) come out; callers interleave them per token.
    int image_tokens = 196;
    int embed_dim = 1536;
    int outputs = 1;
    int load_ms = 0;  // rknn_init
    int run_ms = 0;   // rknn_run
    // NPU cores of the chip (RK3588: 3, RK3576: 2, RK3562: 1): a core mask naming another one is
    // refused by rknn_set_core_mask.
    int npu_cores = 3;
    // Faults.
    bool fail_init = false;  // rknn_init fails (-6, the model is invalid)
    bool fail_run = false;   // rknn_run fails (-1)
    bool hang_run = false;   // rknn_run never returns
};

// Reads and validates a model file; on failure returns false with one line in `error`.
bool load_encoder_model(const char* path, EncoderModel& out, String& error);

}  // namespace rknn
}  // namespace sim
