// A simulated librknnrt.so: the functions of the RKNN runtime's C API that a vision encoder path
// calls (rknn_init, rknn_set_core_mask, rknn_query, rknn_inputs_set, rknn_run, rknn_outputs_get,
// rknn_outputs_release, rknn_destroy), declared through rkllmd's own decls.h. It loads an
// "rknn-sim 1" text model (model.h), takes its time as the model says, and returns embeddings
// derived from the pixels it was given: each output token is a hash of its cell of the image, so
// different images give different embeddings and the same image the same ones.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "../sim.h"
#include "../trace.h"
#include "decls.h"
#include "model.h"

namespace sim SIM_HIDDEN {
namespace rknn {
namespace {

using rkd_rknn::Context;

struct Encoder {
    EncoderModel model;
    String trace_path;
    int core_mask = 0;
    Vec<uint8_t> input;  // set by rknn_inputs_set
    bool has_input = false;
    Vec<Vec<float>> outputs;  // from the last rknn_run
    std::mutex mu;            // one call at a time per context, as the runtime requires
};

std::mutex g_mu;
std::map<Context, std::shared_ptr<Encoder>, std::less<Context>,
         Alloc<std::pair<const Context, std::shared_ptr<Encoder>>>>
    g_contexts;
Context g_next = 1;

String env_trace_path() {
    const char* p = std::getenv("RKNN_SIM_TRACE");
    return p != nullptr ? String(p) : String();
}

void log_error(const char* fmt, const char* what, const String& detail) {
    std::fprintf(stderr, fmt, what, detail.c_str());
}

std::shared_ptr<Encoder> find(Context ctx) {
    std::lock_guard<std::mutex> lk(g_mu);
    const auto it = g_contexts.find(ctx);
    return it == g_contexts.end() ? nullptr : it->second;
}

// Writes one trace line for a call on `ctx` (null when there is no such context).
template <typename Fields>
void trace(const String& path, const char* fn, Context ctx, bool known, Fields&& fields) {
    if (path.empty()) return;
    try {
        JsonLine j(fn);
        if (known) {
            j.num("ctx", static_cast<int64_t>(ctx));
        } else {
            j.null("ctx");
        }
        fields(j);
        trace_write(path, j.finish());
    } catch (...) {  // tracing never fails a call
    }
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The encoder's "inference": the image is cut into a grid of one cell per output token; a token's
// values come from a hash of its cell's pixels (and of the output index), in [-1, 1).
void encode(Encoder& e) {
    const EncoderModel& m = e.model;
    const size_t w = static_cast<size_t>(m.input_width);
    const size_t h = static_cast<size_t>(m.input_height);
    const size_t c = static_cast<size_t>(m.input_channels);
    const size_t tokens = static_cast<size_t>(m.image_tokens);
    const size_t dim = static_cast<size_t>(m.embed_dim);
    size_t grid = 1;
    while (grid * grid < tokens) ++grid;
    e.outputs.assign(static_cast<size_t>(m.outputs), Vec<float>(tokens * dim));
    for (size_t t = 0; t < tokens; ++t) {
        const size_t gy = t / grid;
        const size_t gx = t % grid;
        const size_t y0 = gy * h / grid, y1 = std::max(y0 + 1, (gy + 1) * h / grid);
        const size_t x0 = gx * w / grid, x1 = std::max(x0 + 1, (gx + 1) * w / grid);
        uint64_t key = 1469598103934665603ull;
        for (size_t y = y0; y < y1 && y < h; ++y) {
            const size_t from = (y * w + std::min(x0, w - 1)) * c;
            const size_t len = (std::min(x1, w) - std::min(x0, w - 1)) * c;
            key = fnv1a(key, e.input.data() + from, len);
        }
        key = fnv1a(key, &t, sizeof t);
        for (size_t o = 0; o < e.outputs.size(); ++o) {
            float* out = e.outputs[o].data() + t * dim;
            const uint64_t base = mix(key ^ (static_cast<uint64_t>(o) << 56));
            for (size_t d = 0; d < dim; ++d) {
                const uint64_t r = mix(base + d);
                out[d] = static_cast<float>(static_cast<double>(r >> 11) / 4503599627370496.0 - 1.0);
            }
        }
    }
}

void fill_attr(const EncoderModel& m, bool input, rkd_rknn::TensorAttr& a) {
    const uint32_t index = a.index;
    std::memset(&a, 0, sizeof a);
    a.index = index;
    a.qnt_type = rkd_rknn::kQuantNone;
    a.scale = 1.0f;
    if (input) {
        a.n_dims = 4;
        a.dims[0] = 1;
        if (m.input_nchw) {
            a.dims[1] = static_cast<uint32_t>(m.input_channels);
            a.dims[2] = static_cast<uint32_t>(m.input_height);
            a.dims[3] = static_cast<uint32_t>(m.input_width);
        } else {
            a.dims[1] = static_cast<uint32_t>(m.input_height);
            a.dims[2] = static_cast<uint32_t>(m.input_width);
            a.dims[3] = static_cast<uint32_t>(m.input_channels);
        }
        a.fmt = m.input_nchw ? rkd_rknn::kTensorNchw : rkd_rknn::kTensorNhwc;
        a.type = rkd_rknn::kTensorUint8;
        a.n_elems = static_cast<uint32_t>(m.input_width * m.input_height * m.input_channels);
        a.size = a.n_elems;
        std::snprintf(a.name, sizeof a.name, "pixel_values");
    } else {
        a.n_dims = 3;
        a.dims[0] = 1;
        a.dims[1] = static_cast<uint32_t>(m.image_tokens);
        a.dims[2] = static_cast<uint32_t>(m.embed_dim);
        a.fmt = rkd_rknn::kTensorUndefined;
        a.type = rkd_rknn::kTensorFloat16;  // encoders run in fp16 on the NPU
        a.n_elems = static_cast<uint32_t>(m.image_tokens * m.embed_dim);
        a.size = a.n_elems * 2;
        std::snprintf(a.name, sizeof a.name, "image_embeds%u", index);
    }
    a.size_with_stride = a.size;
}

}  // namespace
}  // namespace rknn
}  // namespace sim

using sim::rknn::Encoder;
using sim::rknn::EncoderModel;
using rkd_rknn::Context;

extern "C" {

__attribute__((visibility("default"))) const char* rknn_sim_version(void) {
    return "rknn-sim 0.1";
}

__attribute__((visibility("default"))) int rknn_init(Context* context, void* model, uint32_t size,
                                                     uint32_t flag, rkd_rknn::InitExtend* extend) {
    using namespace sim::rknn;
    const sim::String path = env_trace_path();
    const char* file = size == 0 ? static_cast<const char*>(model) : nullptr;
    Context id = 0;
    {
        std::lock_guard<std::mutex> lk(g_mu);
        id = g_next++;
    }
    trace(path, "rknn_init", id, true, [&](sim::JsonLine& j) {
        j.str("model_path", file).num("size", size).num("flag", flag).flag("extend", extend != nullptr);
    });
    if (context == nullptr || model == nullptr) {
        std::fprintf(stderr, "E RKNN: rknn_init: invalid argument\n");
        return rkd_rknn::kErrParamInvalid;
    }
    if (size != 0) {  // a model in memory: the simulator reads files only
        std::fprintf(stderr, "E RKNN: rknn_init: the simulator loads model files only (size 0)\n");
        return rkd_rknn::kErrModelInvalid;
    }
    try {
        auto e = std::make_shared<Encoder>();
        sim::String error;
        if (!load_encoder_model(file, e->model, error)) {
            log_error("E RKNN: %s: %s\n", "rknn_init", error);
            return rkd_rknn::kErrModelInvalid;
        }
        if (e->model.fail_init) {
            log_error("E RKNN: %s: %s\n", "rknn_init", "simulated failure (fail_init)");
            return rkd_rknn::kErrModelInvalid;
        }
        sim::sleep_us(static_cast<int64_t>(e->model.load_ms) * 1000);
        e->trace_path = path;
        {
            std::lock_guard<std::mutex> lk(g_mu);
            g_contexts.emplace(id, std::move(e));
        }
        *context = id;
        return rkd_rknn::kSuccess;
    } catch (...) {
        std::fprintf(stderr, "E RKNN: rknn_init: out of memory\n");
        return rkd_rknn::kErrMallocFail;
    }
}

__attribute__((visibility("default"))) int rknn_set_core_mask(Context context,
                                                              rkd_rknn::CoreMask mask) {
    using namespace sim::rknn;
    const auto e = find(context);
    trace(e ? e->trace_path : env_trace_path(), "rknn_set_core_mask", context, e != nullptr,
          [&](sim::JsonLine& j) { j.num("core_mask", static_cast<int>(mask)); });
    if (!e) return rkd_rknn::kErrCtxInvalid;
    std::lock_guard<std::mutex> lk(e->mu);
    const int m = static_cast<int>(mask);
    // RKNN_NPU_CORE_ALL (0xffff) means "as many as the chip has"; any other mask names cores.
    if (m != 0xffff && (m < 0 || (m >> e->model.npu_cores) != 0)) {
        std::fprintf(stderr, "E RKNN: core mask %d names an NPU core this chip (%d cores) lacks\n",
                     m, e->model.npu_cores);
        return rkd_rknn::kErrParamInvalid;
    }
    e->core_mask = m;
    return rkd_rknn::kSuccess;
}

__attribute__((visibility("default"))) int rknn_query(Context context, rkd_rknn::QueryCmd cmd,
                                                      void* info, uint32_t size) {
    using namespace sim::rknn;
    const auto e = find(context);
    trace(e ? e->trace_path : env_trace_path(), "rknn_query", context, e != nullptr,
          [&](sim::JsonLine& j) { j.num("cmd", static_cast<int>(cmd)).num("size", size); });
    if (!e) return rkd_rknn::kErrCtxInvalid;
    if (info == nullptr) return rkd_rknn::kErrParamInvalid;
    std::lock_guard<std::mutex> lk(e->mu);
    switch (cmd) {
        case rkd_rknn::kQueryInOutNum: {
            if (size < sizeof(rkd_rknn::InputOutputNum)) return rkd_rknn::kErrParamInvalid;
            auto* n = static_cast<rkd_rknn::InputOutputNum*>(info);
            n->n_input = 1;
            n->n_output = static_cast<uint32_t>(e->model.outputs);
            return rkd_rknn::kSuccess;
        }
        case rkd_rknn::kQueryInputAttr:
        case rkd_rknn::kQueryOutputAttr: {
            if (size < sizeof(rkd_rknn::TensorAttr)) return rkd_rknn::kErrParamInvalid;
            auto* a = static_cast<rkd_rknn::TensorAttr*>(info);
            const bool input = cmd == rkd_rknn::kQueryInputAttr;
            const uint32_t count = input ? 1u : static_cast<uint32_t>(e->model.outputs);
            if (a->index >= count) return rkd_rknn::kErrParamInvalid;
            fill_attr(e->model, input, *a);
            return rkd_rknn::kSuccess;
        }
        default:
            std::fprintf(stderr, "E RKNN: rknn_query: command %d is not simulated\n",
                         static_cast<int>(cmd));
            return rkd_rknn::kErrParamInvalid;
    }
}

__attribute__((visibility("default"))) int rknn_inputs_set(Context context, uint32_t n,
                                                           rkd_rknn::Input inputs[]) {
    using namespace sim::rknn;
    const auto e = find(context);
    trace(e ? e->trace_path : env_trace_path(), "rknn_inputs_set", context, e != nullptr,
          [&](sim::JsonLine& j) {
              j.num("n_inputs", n);
              if (n >= 1 && inputs != nullptr) {
                  j.num("size", inputs[0].size)
                      .num("type", static_cast<int>(inputs[0].type))
                      .num("fmt", static_cast<int>(inputs[0].fmt));
              }
          });
    if (!e) return rkd_rknn::kErrCtxInvalid;
    std::lock_guard<std::mutex> lk(e->mu);
    const EncoderModel& m = e->model;
    const size_t want = static_cast<size_t>(m.input_width * m.input_height * m.input_channels);
    if (n != 1 || inputs == nullptr || inputs[0].index != 0 || inputs[0].buf == nullptr) {
        std::fprintf(stderr, "E RKNN: rknn_inputs_set: the model has one input\n");
        return rkd_rknn::kErrParamInvalid;
    }
    const rkd_rknn::Input& in = inputs[0];
    if (in.type != rkd_rknn::kTensorUint8 || in.fmt != rkd_rknn::kTensorNhwc || in.size != want) {
        std::fprintf(stderr,
                     "E RKNN: rknn_inputs_set: expected %zu bytes of uint8 NHWC (%dx%dx%d), got "
                     "%u bytes, type %d, fmt %d\n",
                     want, m.input_height, m.input_width, m.input_channels, in.size,
                     static_cast<int>(in.type), static_cast<int>(in.fmt));
        return rkd_rknn::kErrInputInvalid;
    }
    const auto* p = static_cast<const uint8_t*>(in.buf);
    e->input.assign(p, p + want);  // copied, as into the NPU's memory
    e->has_input = true;
    return rkd_rknn::kSuccess;
}

__attribute__((visibility("default"))) int rknn_run(Context context, rkd_rknn::RunExtend* extend) {
    using namespace sim::rknn;
    const auto e = find(context);
    trace(e ? e->trace_path : env_trace_path(), "rknn_run", context, e != nullptr,
          [&](sim::JsonLine& j) { j.flag("extend", extend != nullptr); });
    if (!e) return rkd_rknn::kErrCtxInvalid;
    std::lock_guard<std::mutex> lk(e->mu);
    if (!e->has_input) {
        std::fprintf(stderr, "E RKNN: rknn_run: no input set\n");
        return rkd_rknn::kErrInputInvalid;
    }
    if (e->model.hang_run) {
        for (;;) sim::sleep_us(1000000);
    }
    const int64_t t0 = sim::now_us();
    sim::sleep_us(static_cast<int64_t>(e->model.run_ms) * 1000);
    int rc = rkd_rknn::kSuccess;
    if (e->model.fail_run) {
        std::fprintf(stderr, "E RKNN: rknn_run: simulated NPU failure (fail_run)\n");
        e->outputs.clear();
        rc = rkd_rknn::kErrFail;
    } else {
        try {
            encode(*e);
        } catch (...) {
            e->outputs.clear();
            rc = rkd_rknn::kErrMallocFail;
        }
    }
    const int64_t t1 = sim::now_us();
    trace(e->trace_path, "rknn_run_end", context, true, [&](sim::JsonLine& j) {
        j.num("rc", rc)
            .num("run_us", t1 - t0)
            .num("image_tokens", e->model.image_tokens)
            .num("embed_dim", e->model.embed_dim)
            .num("outputs", e->model.outputs)
            .num("core_mask", e->core_mask);
    });
    return rc;
}

__attribute__((visibility("default"))) int rknn_outputs_get(Context context, uint32_t n,
                                                            rkd_rknn::Output outputs[],
                                                            rkd_rknn::OutputExtend* extend) {
    using namespace sim::rknn;
    const auto e = find(context);
    trace(e ? e->trace_path : env_trace_path(), "rknn_outputs_get", context, e != nullptr,
          [&](sim::JsonLine& j) { j.num("n_outputs", n).flag("extend", extend != nullptr); });
    if (!e) return rkd_rknn::kErrCtxInvalid;
    std::lock_guard<std::mutex> lk(e->mu);
    if (outputs == nullptr || n == 0 || n > e->outputs.size()) {
        std::fprintf(stderr, "E RKNN: rknn_outputs_get: %u outputs asked, %zu available\n", n,
                     e->outputs.size());
        return rkd_rknn::kErrOutputInvalid;
    }
    for (uint32_t i = 0; i < n; ++i) {
        rkd_rknn::Output& o = outputs[i];
        if (o.index >= e->outputs.size() || !o.want_float) {  // fp16 outputs are not simulated
            std::fprintf(stderr, "E RKNN: rknn_outputs_get: output %u: only want_float is simulated\n",
                         o.index);
            return rkd_rknn::kErrOutputInvalid;
        }
        const sim::Vec<float>& v = e->outputs[o.index];
        const size_t bytes = v.size() * sizeof(float);
        if (o.is_prealloc) {
            if (o.buf == nullptr || o.size < bytes) return rkd_rknn::kErrOutputInvalid;
        } else {
            o.buf = std::malloc(bytes);
            if (o.buf == nullptr) return rkd_rknn::kErrMallocFail;
            o.size = static_cast<uint32_t>(bytes);
        }
        std::memcpy(o.buf, v.data(), bytes);
    }
    return rkd_rknn::kSuccess;
}

__attribute__((visibility("default"))) int rknn_outputs_release(Context context, uint32_t n,
                                                                rkd_rknn::Output outputs[]) {
    using namespace sim::rknn;
    const auto e = find(context);
    trace(e ? e->trace_path : env_trace_path(), "rknn_outputs_release", context, e != nullptr,
          [&](sim::JsonLine& j) { j.num("n_outputs", n); });
    if (!e) return rkd_rknn::kErrCtxInvalid;
    if (outputs == nullptr) return rkd_rknn::kErrParamInvalid;
    for (uint32_t i = 0; i < n; ++i) {
        if (!outputs[i].is_prealloc) {
            std::free(outputs[i].buf);
            outputs[i].buf = nullptr;
        }
    }
    return rkd_rknn::kSuccess;
}

__attribute__((visibility("default"))) int rknn_destroy(Context context) {
    using namespace sim::rknn;
    std::shared_ptr<Encoder> e;
    {
        std::lock_guard<std::mutex> lk(g_mu);
        const auto it = g_contexts.find(context);
        if (it != g_contexts.end()) {
            e = std::move(it->second);
            g_contexts.erase(it);
        }
    }
    trace(e ? e->trace_path : env_trace_path(), "rknn_destroy", context, e != nullptr,
          [](sim::JsonLine&) {});
    return e ? rkd_rknn::kSuccess : rkd_rknn::kErrCtxInvalid;
}

}  // extern "C"
