// rkllmd's shim over librknnrt, the RKNN runtime that runs a vision encoder: a narrow C ABI of
// our own (rkd_rknn_*) over the declarations in decls.h. Like the RKLLM shim, the library is not
// linked but dlopened on first use (rkd_rknn_load), so a board without librknnrt still serves
// text models and a missing library is an error rkllmd reports, not a loader failure.
//
// The encoder path is upstream's (rknn-llm, examples/multimodal_model_demo/deploy/src/
// image_enc.cc): rknn_init from a file, rknn_set_core_mask, rknn_query for the tensors, one
// uint8 NHWC input, rknn_run, float outputs, rknn_outputs_release.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <dlfcn.h>

#include "../dl.h"
#include "decls.h"

extern "C" {

// What rkd_rknn_open learnt of a model's tensors.
struct rkd_rknn_model {
    uint32_t width;         // the input image, pixels
    uint32_t height;
    uint32_t channels;
    uint32_t image_tokens;  // output tokens per image
    uint32_t embed_dim;     // floats per token and output
    uint32_t outputs;       // output tensors, interleaved per token in the embedding
    int32_t core_mask_rc;   // what rknn_set_core_mask returned (the model is usable either way)
};

// Steps of the encoder path, for errors: which call returned the code.
enum {
    RKD_RKNN_STEP_NONE = 0,
    RKD_RKNN_STEP_INIT = 1,
    RKD_RKNN_STEP_QUERY = 2,
    RKD_RKNN_STEP_SHAPE = 3,  // the tensors are not an image in, embeddings out
    RKD_RKNN_STEP_INPUTS_SET = 4,
    RKD_RKNN_STEP_RUN = 5,
    RKD_RKNN_STEP_OUTPUTS_GET = 6,
    RKD_RKNN_STEP_OUTPUT_SIZE = 7,  // an output of another size than the query said
    RKD_RKNN_STEP_ARGS = 8,         // our own arguments do not fit the model
};

}  // extern "C"

namespace {

using rkd_dl::resolve;

struct Api {
    void* lib;
    rkd_rknn::Api::init init;
    rkd_rknn::Api::destroy destroy;
    rkd_rknn::Api::query query;
    rkd_rknn::Api::set_core_mask set_core_mask;
    rkd_rknn::Api::inputs_set inputs_set;
    rkd_rknn::Api::run run;
    rkd_rknn::Api::outputs_get outputs_get;
    rkd_rknn::Api::outputs_release outputs_release;
};

Api api{};

constexpr uint32_t kMaxOutputs = 8;

}  // namespace

extern "C" {

enum {
    RKD_RKNN_LOAD_OK = 0,
    RKD_RKNN_LOAD_OPEN_FAILED = 1,
    RKD_RKNN_LOAD_MISSING_SYMBOL = 2,
};

// Opens `name` (the dlopen search applies unless it contains '/') and resolves every function
// the encoder path calls; `path` gets the file the loader chose. Called once per process, before
// anything else here (the Rust side serialises it and publishes success through a OnceLock).
int32_t rkd_rknn_load(const char* name, char* err, size_t err_len, char* path, size_t path_len) {
    void* lib = rkd_dl::open(name, err, err_len);
    if (lib == nullptr) {
        return RKD_RKNN_LOAD_OPEN_FAILED;
    }
    Api a{};
    a.lib = lib;
    const bool ok = resolve(lib, "rknn_init", a.init, err, err_len) &&
                    resolve(lib, "rknn_destroy", a.destroy, err, err_len) &&
                    resolve(lib, "rknn_query", a.query, err, err_len) &&
                    resolve(lib, "rknn_set_core_mask", a.set_core_mask, err, err_len) &&
                    resolve(lib, "rknn_inputs_set", a.inputs_set, err, err_len) &&
                    resolve(lib, "rknn_run", a.run, err, err_len) &&
                    resolve(lib, "rknn_outputs_get", a.outputs_get, err, err_len) &&
                    resolve(lib, "rknn_outputs_release", a.outputs_release, err, err_len);
    if (!ok) {
        dlclose(lib);
        return RKD_RKNN_LOAD_MISSING_SYMBOL;
    }
    rkd_dl::loaded_from(lib, name, path, path_len);
    api = a;  // never closed: contexts live as long as the process may use them
    return RKD_RKNN_LOAD_OK;
}

// The simulator exports rknn_sim_version; the real runtime does not. NULL before rkd_rknn_load.
const char* rkd_rknn_simulator_version(void) {
    if (api.lib == nullptr) return nullptr;
    void* sym = dlsym(api.lib, "rknn_sim_version");
    if (sym == nullptr) return nullptr;
    return reinterpret_cast<const char* (*)(void)>(sym)();
}

// Opens the encoder in `model_path` on the NPU cores of `core_mask` (0: the runtime chooses) and
// describes its tensors in `out`. Returns 0, or the runtime's code with `*step` saying which call
// failed (the context is destroyed then).
int32_t rkd_rknn_open(const char* model_path, int32_t core_mask, uint64_t* ctx_out,
                      rkd_rknn_model* out, int32_t* step) {
    if (api.lib == nullptr || model_path == nullptr || ctx_out == nullptr || out == nullptr ||
        step == nullptr) {
        return -1;
    }
    *step = RKD_RKNN_STEP_INIT;
    rkd_rknn::Context ctx = 0;
    // size 0: `model` is a path, and the runtime reads the file itself.
    int rc = api.init(&ctx, const_cast<char*>(model_path), 0, 0, nullptr);
    if (rc != rkd_rknn::kSuccess) return rc;
    // A mask naming cores the chip lacks (RK3576 has 2, RK3562 1) fails; the model still runs on
    // the runtime's choice, so the caller only warns.
    out->core_mask_rc = api.set_core_mask(ctx, static_cast<rkd_rknn::CoreMask>(core_mask));

    *step = RKD_RKNN_STEP_QUERY;
    rkd_rknn::InputOutputNum io{};
    rkd_rknn::TensorAttr in{};
    rkd_rknn::TensorAttr outs[kMaxOutputs];
    std::memset(outs, 0, sizeof outs);
    rc = api.query(ctx, rkd_rknn::kQueryInOutNum, &io, sizeof io);
    if (rc == rkd_rknn::kSuccess) {
        in.index = 0;
        rc = api.query(ctx, rkd_rknn::kQueryInputAttr, &in, sizeof in);
    }
    for (uint32_t i = 0; rc == rkd_rknn::kSuccess && i < io.n_output && i < kMaxOutputs; ++i) {
        outs[i].index = i;
        rc = api.query(ctx, rkd_rknn::kQueryOutputAttr, &outs[i], sizeof outs[i]);
    }
    if (rc != rkd_rknn::kSuccess) {
        api.destroy(ctx);
        return rc;
    }
    *step = RKD_RKNN_STEP_SHAPE;
    if (io.n_input != 1 || io.n_output == 0 || io.n_output > kMaxOutputs || in.n_dims != 4) {
        api.destroy(ctx);
        return -1;
    }
    if (in.fmt == rkd_rknn::kTensorNchw) {
        out->channels = in.dims[1];
        out->height = in.dims[2];
        out->width = in.dims[3];
    } else {
        out->height = in.dims[1];
        out->width = in.dims[2];
        out->channels = in.dims[3];
    }
    // As upstream reads it: the first dimension above 1 is the token count, the next one the
    // embedding width.
    out->image_tokens = 0;
    out->embed_dim = 0;
    for (uint32_t i = 0; i + 1 < outs[0].n_dims && i + 1 < rkd_rknn::kMaxDims; ++i) {
        if (outs[0].dims[i] > 1) {
            out->image_tokens = outs[0].dims[i];
            out->embed_dim = outs[0].dims[i + 1];
            break;
        }
    }
    out->outputs = io.n_output;
    if (out->image_tokens == 0 || out->embed_dim == 0 || out->width == 0 || out->height == 0 ||
        out->channels == 0) {
        api.destroy(ctx);
        return -1;
    }
    *step = RKD_RKNN_STEP_NONE;
    *ctx_out = static_cast<uint64_t>(ctx);
    return 0;
}

// Runs the encoder on one image: `rgb` is height x width x channels uint8 (NHWC), exactly the
// model's input; `out` gets image_tokens x (outputs x embed_dim) floats, the outputs of each
// token side by side as upstream concatenates deepstack features. Returns 0, or the runtime's
// code with `*step` naming the call.
int32_t rkd_rknn_encode(uint64_t ctx, const rkd_rknn_model* model, const uint8_t* rgb,
                        size_t rgb_len, float* out, size_t out_len, int32_t* step) {
    if (api.lib == nullptr || model == nullptr || rgb == nullptr || out == nullptr ||
        step == nullptr) {
        return -1;
    }
    const size_t pixels = static_cast<size_t>(model->width) * model->height * model->channels;
    const size_t per_output = static_cast<size_t>(model->image_tokens) * model->embed_dim;
    *step = RKD_RKNN_STEP_ARGS;
    if (rgb_len != pixels || pixels > UINT32_MAX || model->outputs == 0 ||
        model->outputs > kMaxOutputs || out_len != per_output * model->outputs) {
        return -1;
    }
    const auto c = static_cast<rkd_rknn::Context>(ctx);
    rkd_rknn::Input input{};
    input.index = 0;
    input.buf = const_cast<uint8_t*>(rgb);  // the runtime only reads it
    input.size = static_cast<uint32_t>(pixels);
    input.pass_through = 0;
    input.type = rkd_rknn::kTensorUint8;
    input.fmt = rkd_rknn::kTensorNhwc;
    *step = RKD_RKNN_STEP_INPUTS_SET;
    int rc = api.inputs_set(c, 1, &input);
    if (rc != rkd_rknn::kSuccess) return rc;
    *step = RKD_RKNN_STEP_RUN;
    rc = api.run(c, nullptr);
    if (rc != rkd_rknn::kSuccess) return rc;

    rkd_rknn::Output outputs[kMaxOutputs];
    std::memset(outputs, 0, sizeof outputs);
    for (uint32_t j = 0; j < model->outputs; ++j) {
        outputs[j].index = j;
        outputs[j].want_float = 1;
    }
    *step = RKD_RKNN_STEP_OUTPUTS_GET;
    rc = api.outputs_get(c, model->outputs, outputs, nullptr);
    if (rc != rkd_rknn::kSuccess) return rc;
    *step = RKD_RKNN_STEP_OUTPUT_SIZE;
    bool sizes_ok = true;
    for (uint32_t j = 0; j < model->outputs; ++j) {
        sizes_ok = sizes_ok && outputs[j].buf != nullptr &&
                   outputs[j].size == per_output * sizeof(float);
    }
    if (sizes_ok) {
        const size_t dim = model->embed_dim;
        for (size_t t = 0; t < model->image_tokens; ++t) {
            for (uint32_t j = 0; j < model->outputs; ++j) {
                std::memcpy(out + (t * model->outputs + j) * dim,
                            static_cast<const float*>(outputs[j].buf) + t * dim,
                            dim * sizeof(float));
            }
        }
        *step = RKD_RKNN_STEP_NONE;
    }
    api.outputs_release(c, model->outputs, outputs);
    return sizes_ok ? 0 : -1;
}

int32_t rkd_rknn_destroy(uint64_t ctx) {
    if (api.lib == nullptr) return -1;
    return api.destroy(static_cast<rkd_rknn::Context>(ctx));
}

}  // extern "C"
