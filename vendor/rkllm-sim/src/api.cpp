// The exported C API of rkllm.h: argument checks, the ABI-specific structs (1.2 or 1.3, chosen
// by RKLLM_SIM_ABI_MINOR), the trace line of every call, and dispatch to sim::Handle.
#include <cstddef>
#include "rkllm.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>

#include "handle.h"
#include "model_file.h"
#include "sim.h"
#include "trace.h"

#if !defined(RKLLM_SIM_ABI_MINOR) || (RKLLM_SIM_ABI_MINOR != 2 && RKLLM_SIM_ABI_MINOR != 3)
#error "build with -DRKLLM_SIM_ABI_MINOR=2 or 3 and the matching -I vendor/rkllm/1.x"
#endif

#define SIM_STRINGIFY2(x) #x
#define SIM_STRINGIFY(x) SIM_STRINGIFY2(x)
#define SIM_ABI "1." SIM_STRINGIFY(RKLLM_SIM_ABI_MINOR)
// The runtime release the simulator stands in for. Like the real library, the file carries it
// in an SDK banner ("RKLLM SDK (version: X | target: Linux | build: ...)", where `rkllmd check`
// reads it) and logs it at init through a format string, so no "rkllm-runtime version: X" literal
// is in the file.
#if RKLLM_SIM_ABI_MINOR == 2
#define SIM_RUNTIME_VERSION "1.2.3"
#else
#define SIM_RUNTIME_VERSION "1.3.0"
#endif

extern "C" __attribute__((visibility("default"))) const char* rkllm_sim_version(void);

namespace {

// In .rodata even though nothing reads it: it is there to be found in the file's bytes.
__attribute__((used)) const char kSdkBanner[] =
    "RKLLM SDK (version: " SIM_RUNTIME_VERSION " | target: Linux | build: rkllm-sim abi " SIM_ABI ")";
// Passed to the init log line as an argument, never spliced into its format.
const char kRuntimeVersion[] = SIM_RUNTIME_VERSION;

using sim::Handle;
using sim::JsonLine;
using sim::String;

// Inputs larger than this are garbage (a bad pointer or length), not a prompt.
constexpr size_t kMaxInputTokens = 1u << 24;

// A counted reference to a handle, released when it goes out of scope.
class Ref {
public:
    Ref() = default;
    explicit Ref(Handle* h) : h_(h) {}  // adopts a reference already taken
    Ref(Ref&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
    Ref& operator=(Ref&&) = delete;
    Ref(const Ref&) = delete;
    ~Ref() {
        if (h_ != nullptr) h_->release();
    }
    Handle* get() const { return h_; }
    Handle* operator->() const { return h_; }
    explicit operator bool() const { return h_ != nullptr; }

private:
    Handle* h_ = nullptr;
};

// Live handles. An LLMHandle is only dereferenced after it is found here, so a stale or bogus
// handle gets -1 instead of a crash, and the reference a call holds keeps the handle alive until
// the call returns even if another thread destroys it meanwhile.
// The NPU memory of one IOMMU domain (extend_param.base_domain_id): rknn-llm#437 on an RK3588
// with 16 GB: models load in one domain until they take about 4 GB together (two Qwen3-1.7B, six
// Qwen3-0.6B), the next fails to allocate; with another base_domain_id it loads.
constexpr int64_t kDomainMemoryMb = 4096;

// Live handles (what rkllm_* calls may name) and the NPU memory each domain has given out.
class Registry {
public:
    // Takes over the handle's initial reference, unless the handle's model does not fit: in its
    // domain, or (RKLLM_SIM_MAX_HANDLES) in the process. Then returns false and leaves the
    // handle to the caller.
    bool add(Handle* h, int domain, int64_t memory_mb) {
        std::lock_guard<std::mutex> lk(mu_);
        if (static_cast<int64_t>(live_.size()) >= max_handles()) {
            std::fprintf(stderr,
                         "E rkllm: another model is loaded in this process "
                         "(RKLLM_SIM_MAX_HANDLES=%lld)\n",
                         static_cast<long long>(max_handles()));
            return false;
        }
        int64_t used = 0;
        for (const Live& l : live_) {
            if (l.domain == domain) used += l.memory_mb;
        }
        if (used + memory_mb > kDomainMemoryMb) {
            std::fprintf(stderr,
                         "E RKNN: failed to malloc npu memory, size: %lld, flags: 0x2\n"
                         "E RKNN: load model file error!\n",
                         static_cast<long long>(memory_mb) * 1024 * 1024);
            return false;
        }
        live_.push_back(Live{h, domain, memory_mb});
        return true;
    }
    Ref find(LLMHandle h) {
        std::lock_guard<std::mutex> lk(mu_);
        for (const Live& l : live_) {
            if (l.handle == h) {
                l.handle->retain();
                return Ref(l.handle);
            }
        }
        return Ref();
    }
    Ref take(LLMHandle h) {  // the registry's reference moves to the caller; its memory is freed
        std::lock_guard<std::mutex> lk(mu_);
        for (auto it = live_.begin(); it != live_.end(); ++it) {
            if (it->handle == h) {
                Handle* p = it->handle;
                live_.erase(it);
                return Ref(p);
            }
        }
        return Ref();
    }

private:
    struct Live {
        Handle* handle;
        int domain;
        int64_t memory_mb;
    };
    // rkllama (PR #63) runs each model in a process of its own because, it says, the library
    // fails when models share a process, while rknn-llm#314 and #437 load several in one. Unset:
    // any number; RKLLM_SIM_MAX_HANDLES=1 gives the failing kind.
    static int64_t max_handles() {
        const char* v = std::getenv("RKLLM_SIM_MAX_HANDLES");
        const long long n = v != nullptr ? std::atoll(v) : 0;
        return n > 0 ? n : INT64_MAX;
    }

    std::mutex mu_;
    sim::Vec<Live> live_;
};

Registry& registry() {
    // Never destroyed: a hung run (or a handle never destroyed) may outlive static destruction
    // at process exit.
    static Registry* r = new Registry;
    return *r;
}

int next_handle_id() {
    static std::atomic<int> next{1};
    return next.fetch_add(1);
}

String env_trace_path() {
    const char* p = std::getenv("RKLLM_SIM_TRACE");
    return p != nullptr ? p : "";
}

__attribute__((format(printf, 1, 2))) void log_error(const char* fmt, ...) {
    // One line, prefixed like the real runtime's messages.
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "E rkllm: %s\n", buf);
}

// Writes the trace line of a call: to the handle's trace file (RKLLM_SIM_TRACE as it was at its
// rkllm_init), or, for calls without a valid handle, to RKLLM_SIM_TRACE as it is now.
template <class Fill>
void trace(const Handle* h, const char* fn, Fill&& fill) {
    const String path = h != nullptr ? h->trace_path() : env_trace_path();
    if (path.empty()) return;
    JsonLine line(fn);
    if (h != nullptr) {
        line.num("handle", h->id());
    } else {
        line.null("handle");
    }
    fill(line);
    sim::trace_write(path, line.finish());
}

void trace(const Handle* h, const char* fn) {
    trace(h, fn, [](JsonLine&) {});
}

// Runs an API function body, turning an escaping exception (e.g. bad_alloc) into -1: nothing may
// unwind into the C caller.
template <class Body>
int guarded(const char* fn, Body&& body) {
    try {
        return body();
    } catch (const std::exception& e) {
        log_error("%s: %s", fn, e.what());
    } catch (...) {
        log_error("%s: internal error", fn);
    }
    return -1;
}

void trace_sampling(JsonLine& j, int32_t top_k, float top_p, float temperature,
                    float repeat_penalty, float frequency_penalty, float presence_penalty,
                    int32_t mirostat, float tau, float eta) {
    j.open("sampling")
        .num("top_k", top_k)
        .real("top_p", top_p)
        .real("temperature", temperature)
        .real("repeat_penalty", repeat_penalty)
        .real("frequency_penalty", frequency_penalty)
        .real("presence_penalty", presence_penalty)
        .num("mirostat", mirostat)
        .real("mirostat_tau", tau)
        .real("mirostat_eta", eta)
        .close();
}

const char* input_type_name(int t) {
    switch (t) {
        case RKLLM_INPUT_PROMPT: return "prompt";
        case RKLLM_INPUT_TOKEN: return "token";
        case RKLLM_INPUT_EMBED: return "embed";
        case RKLLM_INPUT_MULTIMODAL: return "multimodal";
        default: return "unknown";
    }
}

size_t multimodal_tokens(const RKLLMMultiModalInput& mm) {
#if RKLLM_SIM_ABI_MINOR >= 3
    return mm.image.n_image * mm.image.n_image_tokens +
           mm.video.n_video * mm.video.n_frame_per_video * mm.video.n_frame_tokens;
#else
    return mm.n_image * mm.n_image_tokens;
#endif
}

void trace_run(const Handle* h, const char* fn, const RKLLMInput* in,
               const RKLLMInferParam* p) {
    trace(h, fn, [&](JsonLine& j) {
        if (in == nullptr) {
            j.null("input");
        } else {
            j.str("input_type", input_type_name(in->input_type))
                .str("role", in->role)
                .flag("enable_thinking", in->enable_thinking);
            switch (in->input_type) {
                case RKLLM_INPUT_PROMPT:
                    j.str("prompt", in->prompt_input);
                    break;
                case RKLLM_INPUT_TOKEN:
                    j.null("prompt").num("n_tokens", static_cast<int64_t>(in->token_input.n_tokens));
                    break;
                case RKLLM_INPUT_EMBED:
                    j.null("prompt").num("n_tokens", static_cast<int64_t>(in->embed_input.n_tokens));
                    break;
                case RKLLM_INPUT_MULTIMODAL:
                    j.str("prompt", in->multimodal_input.prompt)
                        .num("n_tokens", static_cast<int64_t>(multimodal_tokens(in->multimodal_input)));
                    break;
                default:
                    j.null("prompt");
            }
        }
        if (p == nullptr) {
            j.null("infer_params");
            return;
        }
        j.num("mode", p->mode).num("keep_history", p->keep_history);
        if (p->lora_params != nullptr) j.str("lora", p->lora_params->lora_adapter_name);
        if (p->prompt_cache_params != nullptr && p->prompt_cache_params->save_prompt_cache != 0) {
            j.str("save_prompt_cache", p->prompt_cache_params->prompt_cache_path);
        }
#if RKLLM_SIM_ABI_MINOR >= 3
        j.num("max_new_tokens", p->max_new_tokens);
        if (const RKLLMSamplingParam* s = p->sampling_params) {
            trace_sampling(j, s->top_k, s->top_p, s->temperature, s->repeat_penalty,
                           s->frequency_penalty, s->presence_penalty, s->mirostat,
                           s->mirostat_tau, s->mirostat_eta);
        } else {
            j.null("sampling");
        }
#endif
    });
}

// Copies a run's input out of the caller's structs. Returns false (after logging) when the input
// cannot be run.
bool make_request(const RKLLMInput* in, const RKLLMInferParam* p, void* userdata,
                  sim::RunRequest& r) {
    if (in == nullptr) {
        log_error("rkllm_run: rkllm_input is NULL");
        return false;
    }
    if (p != nullptr && p->mode != RKLLM_INFER_GENERATE &&
        p->mode != RKLLM_INFER_GET_LAST_HIDDEN_LAYER) {
        log_error("rkllm_run: infer mode %d is not supported by the simulator", p->mode);
        return false;
    }
    r.hidden_layer = p != nullptr && p->mode == RKLLM_INFER_GET_LAST_HIDDEN_LAYER;
    r.tool_role = in->role != nullptr && std::strcmp(in->role, "tool") == 0;
    r.enable_thinking = in->enable_thinking;
    switch (in->input_type) {
        case RKLLM_INPUT_PROMPT:
            if (in->prompt_input == nullptr) {
                log_error("rkllm_run: prompt_input is NULL");
                return false;
            }
            r.kind = sim::InputKind::kPrompt;
            r.text = in->prompt_input;
            break;
        case RKLLM_INPUT_TOKEN: {
            const RKLLMTokenInput& t = in->token_input;
            if ((t.input_ids == nullptr && t.n_tokens > 0) || t.n_tokens > kMaxInputTokens) {
                log_error("rkllm_run: invalid token input");
                return false;
            }
            r.kind = sim::InputKind::kToken;
            if (t.n_tokens > 0) r.ids.assign(t.input_ids, t.input_ids + t.n_tokens);
            break;
        }
        case RKLLM_INPUT_EMBED: {
            const RKLLMEmbedInput& e = in->embed_input;
            if ((e.embed == nullptr && e.n_tokens > 0) || e.n_tokens > kMaxInputTokens) {
                log_error("rkllm_run: invalid embed input");
                return false;
            }
            r.kind = sim::InputKind::kEmbed;
            r.opaque_tokens = e.n_tokens;
            break;
        }
        case RKLLM_INPUT_MULTIMODAL: {
            const RKLLMMultiModalInput& mm = in->multimodal_input;
            const size_t n = multimodal_tokens(mm);
            if (n > kMaxInputTokens) {
                log_error("rkllm_run: invalid multimodal input");
                return false;
            }
            r.kind = sim::InputKind::kMultimodal;
            r.text = mm.prompt != nullptr ? mm.prompt : "";
            r.opaque_tokens = n;
            break;
        }
        default:
            log_error("rkllm_run: unknown input_type %d", static_cast<int>(in->input_type));
            return false;
    }
    r.keep_history = p != nullptr && p->keep_history != 0;
    if (p != nullptr && p->lora_params != nullptr && p->lora_params->lora_adapter_name != nullptr) {
        r.lora = p->lora_params->lora_adapter_name;
    }
    if (p != nullptr && p->prompt_cache_params != nullptr &&
        p->prompt_cache_params->save_prompt_cache != 0) {
        r.save_prompt_cache = true;
        if (p->prompt_cache_params->prompt_cache_path != nullptr) {
            r.prompt_cache_path = p->prompt_cache_params->prompt_cache_path;
        }
    }
#if RKLLM_SIM_ABI_MINOR >= 3
    if (p != nullptr) {
        r.max_new_tokens = p->max_new_tokens;
        if (const RKLLMSamplingParam* s = p->sampling_params) {
            sim::Sampling smp;
            smp.top_k = s->top_k;
            smp.top_p = s->top_p;
            smp.temperature = s->temperature;
            smp.repeat_penalty = s->repeat_penalty;
            smp.frequency_penalty = s->frequency_penalty;
            smp.presence_penalty = s->presence_penalty;
            r.sampling = smp;
        }
    }
#endif
    r.userdata = userdata;
    return true;
}

// rkllm_run and rkllm_run_async.
int start_run(const char* fn, LLMHandle handle, RKLLMInput* in, RKLLMInferParam* p,
              void* userdata, bool async) {
    return guarded(fn, [&] {
        const Ref h = registry().find(handle);
        trace_run(h.get(), fn, in, p);
        if (!h) return -1;
        sim::RunRequest req;
        if (!make_request(in, p, userdata, req)) return -1;
        if (req.kind == sim::InputKind::kMultimodal && !h->take_images(in->multimodal_input, req)) {
            return -1;
        }
#if RKLLM_SIM_ABI_MINOR >= 3
        if (req.userdata == nullptr) req.userdata = h->default_userdata();
#endif
        return async ? h->run_async(std::move(req)) : h->run(std::move(req));
    });
}

}  // namespace

extern "C" {

const char* rkllm_sim_version(void) { return "rkllm-sim 0.1 (abi " SIM_ABI ")"; }

RKLLMParam rkllm_createDefaultParam() {
    try {
        trace(nullptr, "rkllm_createDefaultParam");
    } catch (const std::exception&) {  // the defaults are returned even if tracing fails
    }
    RKLLMParam p;
    std::memset(&p, 0, sizeof p);
    p.model_path = nullptr;
    p.max_context_len = 512;
    p.max_new_tokens = -1;
    p.top_k = 1;
    p.n_keep = 0;
    p.top_p = 0.9f;
    p.temperature = 0.8f;
    p.repeat_penalty = 1.1f;
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.0f;
    p.mirostat = 0;
    p.mirostat_tau = 5.0f;
    p.mirostat_eta = 0.1f;
    p.skip_special_token = true;
    p.is_async = false;
#if RKLLM_SIM_ABI_MINOR >= 3
    p.ignore_eos_token = false;
#else
    p.img_start = nullptr;
    p.img_end = nullptr;
    p.img_content = nullptr;
#endif
    p.extend_param.enabled_cpus_num = 4;
    p.extend_param.n_batch = 1;
    return p;
}

#if RKLLM_SIM_ABI_MINOR >= 3
int rkllm_init(LLMHandle* handle, RKLLMParam* param, RKLLMCallback* callback) {
#else
int rkllm_init(LLMHandle* handle, RKLLMParam* param, LLMResultCallback callback) {
#endif
    return guarded("rkllm_init", [&] {
        const String trace_path = env_trace_path();  // picked up at each init
        const int id = next_handle_id();
        if (!trace_path.empty()) {
            JsonLine j("rkllm_init");
            j.num("handle", id).str("abi", SIM_ABI);
            if (param == nullptr) {
                j.null("param");
            } else {
                j.str("model_path", param->model_path)
                    .num("max_context_len", param->max_context_len)
                    .num("max_new_tokens", param->max_new_tokens)
                    .num("n_keep", param->n_keep);
                trace_sampling(j, param->top_k, param->top_p, param->temperature,
                               param->repeat_penalty, param->frequency_penalty,
                               param->presence_penalty, param->mirostat, param->mirostat_tau,
                               param->mirostat_eta);
                j.flag("skip_special_token", param->skip_special_token)
                    .flag("is_async", param->is_async);
#if RKLLM_SIM_ABI_MINOR >= 3
                j.flag("ignore_eos_token", param->ignore_eos_token);
#endif
                j.num("base_domain_id", param->extend_param.base_domain_id)
                    .num("enabled_cpus_num", param->extend_param.enabled_cpus_num)
                    .num("enabled_cpus_mask", param->extend_param.enabled_cpus_mask)
                    .num("n_batch", param->extend_param.n_batch);
            }
#if RKLLM_SIM_ABI_MINOR >= 3
            j.flag("callback", callback != nullptr && callback->result_callback != nullptr);
#else
            j.flag("callback", callback != nullptr);
#endif
            sim::trace_write(trace_path, j.finish());
        }

        if (handle == nullptr) {
            log_error("rkllm_init: handle pointer is NULL");
            return -1;
        }
        *handle = nullptr;
        if (param == nullptr || param->model_path == nullptr) {
            log_error("rkllm_init: param or param->model_path is NULL");
            return -1;
        }
        sim::ModelConfig model;
        String error;
        if (!sim::load_model_file(param->model_path, model, error)) {
            log_error("%s", error.c_str());
            return -1;
        }
        if (param->max_context_len <= 0) {
            log_error("invalid max_context_len %d", param->max_context_len);
            return -1;
        }
        if (model.fail_init) {
            log_error("failed to initialise model %s (fail_init = 1)", param->model_path);
            return -1;
        }
        sim::sleep_us(static_cast<int64_t>(model.load_ms) * 1000);

        sim::InitSettings s;
        s.max_context_len = param->max_context_len;
        s.max_new_tokens = param->max_new_tokens;
        s.n_keep = param->n_keep;
        s.sampling.top_k = param->top_k;
        s.sampling.top_p = param->top_p;
        s.sampling.temperature = param->temperature;
        s.sampling.repeat_penalty = param->repeat_penalty;
        s.sampling.frequency_penalty = param->frequency_penalty;
        s.sampling.presence_penalty = param->presence_penalty;
#if RKLLM_SIM_ABI_MINOR >= 3
        s.ignore_eos = param->ignore_eos_token;
        s.callbacks = callback;  // the pointer, not a copy: the caller must keep it alive
#else
        s.callback = callback;
        if (param->img_start != nullptr) s.img_start = param->img_start;
        if (param->img_end != nullptr) s.img_end = param->img_end;
        if (param->img_content != nullptr) s.img_content = param->img_content;
#endif
        const String name = model.name;
        const int64_t memory_mb = model.npu_memory_mb;
        Handle* h = new Handle(id, std::move(model), s, trace_path);
        if (!registry().add(h, param->extend_param.base_domain_id, memory_mb)) {
            h->release();
            log_error("rkllm_init failed");
            return -1;
        }
        *handle = h;
        std::fprintf(stderr, "I rkllm: rkllm-runtime version: %s (%s), model: %s, max_context_len: %d\n",
                     kRuntimeVersion, rkllm_sim_version(), name.c_str(), param->max_context_len);
        return 0;
    });
}

int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter* lora_adapter) {
    return guarded("rkllm_load_lora", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_load_lora", [&](JsonLine& j) {
            if (lora_adapter == nullptr) {
                j.null("lora_adapter");
                return;
            }
            j.str("lora_adapter_path", lora_adapter->lora_adapter_path)
                .str("lora_adapter_name", lora_adapter->lora_adapter_name)
                .real("scale", lora_adapter->scale);
        });
        if (!h || lora_adapter == nullptr || lora_adapter->lora_adapter_path == nullptr) return -1;
        return h->load_lora(lora_adapter->lora_adapter_path, lora_adapter->lora_adapter_name,
                            lora_adapter->scale);
    });
}

int rkllm_load_prompt_cache(LLMHandle handle, const char* prompt_cache_path) {
    return guarded("rkllm_load_prompt_cache", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_load_prompt_cache",
              [&](JsonLine& j) { j.str("prompt_cache_path", prompt_cache_path); });
        if (!h || prompt_cache_path == nullptr) return -1;
        return h->load_prompt_cache(prompt_cache_path);
    });
}

int rkllm_release_prompt_cache(LLMHandle handle) {
    return guarded("rkllm_release_prompt_cache", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_release_prompt_cache");
        return h ? h->release_prompt_cache() : -1;
    });
}

int rkllm_destroy(LLMHandle handle) {
    return guarded("rkllm_destroy", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_destroy");
        if (!h || h->close() != 0) return -1;
        registry().take(handle);  // drops the registry's reference; ours goes at return
        return 0;
    });
}

int rkllm_run(LLMHandle handle, RKLLMInput* rkllm_input, RKLLMInferParam* rkllm_infer_params,
              void* userdata) {
    return start_run("rkllm_run", handle, rkllm_input, rkllm_infer_params, userdata, false);
}

int rkllm_run_async(LLMHandle handle, RKLLMInput* rkllm_input,
                    RKLLMInferParam* rkllm_infer_params, void* userdata) {
    return start_run("rkllm_run_async", handle, rkllm_input, rkllm_infer_params, userdata, true);
}

int rkllm_abort(LLMHandle handle) {
    return guarded("rkllm_abort", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_abort");
        return h ? h->abort() : -1;
    });
}

int rkllm_is_running(LLMHandle handle) {
    return guarded("rkllm_is_running", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_is_running");
        if (!h) return -1;
        return h->is_running() ? 1 : 0;
    });
}

int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int* start_pos, int* end_pos) {
    return guarded("rkllm_clear_kv_cache", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_clear_kv_cache", [&](JsonLine& j) {
            j.num("keep_system_prompt", keep_system_prompt);
            if (start_pos != nullptr) {
                j.num("start", *start_pos);
            } else {
                j.null("start");
            }
            if (end_pos != nullptr) {
                j.num("end", *end_pos);
            } else {
                j.null("end");
            }
        });
        if (!h) return -1;
        return h->clear_kv_cache(keep_system_prompt != 0, start_pos, end_pos);
    });
}

int rkllm_get_kv_cache_size(LLMHandle handle, int* cache_sizes) {
    return guarded("rkllm_get_kv_cache_size", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_get_kv_cache_size");
        if (!h || cache_sizes == nullptr) return -1;
        cache_sizes[0] = static_cast<int>(h->kv_cache_size());
        return 0;
    });
}

int rkllm_set_chat_template(LLMHandle handle, const char* system_prompt, const char* prompt_prefix,
                            const char* prompt_postfix) {
    return guarded("rkllm_set_chat_template", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_set_chat_template", [&](JsonLine& j) {
            j.str("system_prompt", system_prompt)
                .str("prompt_prefix", prompt_prefix)
                .str("prompt_postfix", prompt_postfix);
        });
        if (!h) return -1;
        h->set_chat_template(system_prompt, prompt_prefix, prompt_postfix);
        return 0;
    });
}

int rkllm_set_function_tools(LLMHandle handle, const char* system_prompt, const char* tools,
                             const char* tool_response_str) {
    return guarded("rkllm_set_function_tools", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_set_function_tools", [&](JsonLine& j) {
            j.str("system_prompt", system_prompt)
                .str("tools", tools)
                .str("tool_response_str", tool_response_str);
        });
        if (!h) return -1;
        return h->set_function_tools(system_prompt, tools);
    });
}

int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam* cross_attn_params) {
    return guarded("rkllm_set_cross_attn_params", [&] {
        const Ref h = registry().find(handle);
        trace(h.get(), "rkllm_set_cross_attn_params", [&](JsonLine& j) {
            if (cross_attn_params != nullptr) {
                j.num("num_tokens", cross_attn_params->num_tokens);
            } else {
                j.null("num_tokens");
            }
        });
        return h && cross_attn_params != nullptr ? 0 : -1;
    });
}

}  // extern "C"
