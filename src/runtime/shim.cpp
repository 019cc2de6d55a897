// rkllmd's shim over librkllmrt: a narrow C ABI of our own (rkd_*) on top of the runtime's
// C++ header. The compiler, not Rust, owns the layout of the runtime's structs, and the
// differences between the 1.2.x and 1.3.x ABIs stay in this file (RKLLMD_ABI_MINOR).
//
// The runtime is not linked: rkd_load dlopens it and looks up every function used here, so a
// missing or broken library is an error the daemon reports instead of a loader failure before
// main (and `rkllmd check` can run on a board whose runtime would crash).
#include <cstddef>  // rkllm.h uses size_t without including it
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <new>

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dl.h"
#include "rkllm.h"

#if !defined(RKLLMD_ABI_MINOR) || (RKLLMD_ABI_MINOR != 2 && RKLLMD_ABI_MINOR != 3)
#error "RKLLMD_ABI_MINOR must be 2 or 3"
#endif

extern "C" {

struct rkd_config {
    const char* model_path;
    int32_t max_context_len;
    int32_t max_new_tokens;
    int32_t top_k;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t base_domain_id;
    uint32_t enabled_cpus_mask;  // 0: the runtime's default CPUs
    // The image tags of a vision model (NULL: none). 1.2 takes them here, in RKLLMParam; 1.3
    // with each multimodal run (rkd_image_input), so this shim passes them there too.
    const char* img_start;
    const char* img_end;
    const char* img_content;
};

// A run's images, as a vision encoder gave them: n_image * n_image_tokens embeddings of the
// model's width, one after the other; the prompt holds one "<image>" placeholder per image.
struct rkd_image_input {
    const float* embed;
    size_t n_image;
    size_t n_image_tokens;
    const char* start;  // 1.3 only (1.2: rkd_config's)
    const char* end;
    const char* content;
    size_t width;  // the encoder's input size
    size_t height;
};

struct rkd_sampling {
    int32_t top_k;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
};

struct rkd_run_params {
    const char* prompt;
    const char* role;
    int32_t enable_thinking;
    int32_t keep_history;
    int32_t max_new_tokens;        // <= 0: the init value
    const rkd_sampling* sampling;  // NULL: the init values
    // Non-NULL: save the run's prompt cache to this file (RKLLMPromptCacheParam), which the
    // runtime writes once the prefill is done.
    const char* save_prompt_cache;
    // Non-NULL: the LoRA adapter (a name given to rkd_load_lora) the run applies.
    const char* lora;
    // Non-NULL: a multimodal run of `prompt` with these images (RKLLM_INPUT_MULTIMODAL).
    const rkd_image_input* images;
};

struct rkd_perf {
    float prefill_time_ms;
    int32_t prefill_tokens;
    float generate_time_ms;
    int32_t generate_tokens;
    float memory_usage_mb;
};

// Called for every runtime callback; `perf` is non-NULL only with the FINISH state.
// Returns what the runtime callback returns: 0 go on, 1 pause.
typedef int32_t (*rkd_event_fn)(void* ctx, int32_t state, const char* text, int32_t token_id,
                                const rkd_perf* perf);

// Called for every callback of an RKLLM_INFER_GET_LAST_HIDDEN_LAYER run: `states` (embd_size *
// num_tokens floats, valid only during the call) is non-NULL when the runtime delivered hidden
// states; `perf` is non-NULL only with the FINISH state.
typedef int32_t (*rkd_hidden_fn)(void* ctx, int32_t state, const float* states, int32_t embd_size,
                                 int32_t num_tokens, const rkd_perf* perf);

enum {
    RKD_CAP_RUN_SAMPLING = 1 << 0,        // sampling per run (1.3)
    RKD_CAP_RUN_MAX_NEW_TOKENS = 1 << 1,  // max_new_tokens per run (1.3)
};

}  // extern "C"

namespace {

using rkd_dl::resolve;

// The runtime's functions, resolved by rkd_load. Written once, before any other rkd_* call (the
// Rust side serialises rkd_load and publishes its success through a OnceLock).
struct Api {
    void* lib;
    decltype(&rkllm_createDefaultParam) create_default_param;
    decltype(&rkllm_init) init;
    decltype(&rkllm_run) run;
    decltype(&rkllm_abort) abort;
    decltype(&rkllm_is_running) is_running;
    decltype(&rkllm_clear_kv_cache) clear_kv_cache;
    decltype(&rkllm_get_kv_cache_size) get_kv_cache_size;
    decltype(&rkllm_set_chat_template) set_chat_template;
    decltype(&rkllm_set_function_tools) set_function_tools;
    decltype(&rkllm_destroy) destroy;
    // Optional: NULL when the library lacks them (rkd_load_prompt_cache then fails).
    decltype(&rkllm_load_prompt_cache) load_prompt_cache;
    decltype(&rkllm_release_prompt_cache) release_prompt_cache;
    // Optional: NULL when the library lacks it (rkd_load_lora then fails).
    decltype(&rkllm_load_lora) load_lora;
};

Api api{};

// The userdata of every run: the one result callback set at rkllm_init serves both kinds.
struct RunCtx {
    rkd_event_fn fn;      // generation runs
    rkd_hidden_fn hidden;  // last-hidden-layer runs (fn is NULL then)
    void* ctx;
};

int on_result(RKLLMResult* result, void* userdata, LLMCallState state) {
    auto* run = static_cast<RunCtx*>(userdata);
    if (run == nullptr) {
        return 0;
    }
    rkd_perf perf{};
    const rkd_perf* perf_ptr = nullptr;
    if (state == RKLLM_RUN_FINISH && result != nullptr) {
        perf.prefill_time_ms = result->perf.prefill_time_ms;
        perf.prefill_tokens = result->perf.prefill_tokens;
        perf.generate_time_ms = result->perf.generate_time_ms;
        perf.generate_tokens = result->perf.generate_tokens;
        perf.memory_usage_mb = result->perf.memory_usage_mb;
        perf_ptr = &perf;
    }
    if (run->fn == nullptr) {
        const float* states = nullptr;
        int32_t embd = 0;
        int32_t tokens = 0;
        if (result != nullptr && result->last_hidden_layer.hidden_states != nullptr &&
            result->last_hidden_layer.embd_size > 0 && result->last_hidden_layer.num_tokens > 0) {
            states = result->last_hidden_layer.hidden_states;
            embd = result->last_hidden_layer.embd_size;
            tokens = result->last_hidden_layer.num_tokens;
        }
        return run->hidden(run->ctx, static_cast<int32_t>(state), states, embd, tokens, perf_ptr);
    }
    const char* text = result != nullptr ? result->text : nullptr;
    int32_t token_id = result != nullptr ? result->token_id : -1;
    return run->fn(run->ctx, static_cast<int32_t>(state), text, token_id, perf_ptr);
}

#if RKLLMD_ABI_MINOR >= 3
// rkllm_init takes a pointer to this struct and the runtime may keep the pointer rather than a
// copy (the simulator does), so it must outlive every handle: static, shared by all of them
// (the per-run context travels as rkllm_run's userdata). Constant-initialised: no init race.
RKLLMCallback g_callbacks = {on_result, nullptr, nullptr, nullptr, nullptr, nullptr};
#endif

}  // namespace

extern "C" {

int32_t rkd_abi_minor(void) { return RKLLMD_ABI_MINOR; }

int32_t rkd_caps(void) {
#if RKLLMD_ABI_MINOR >= 3
    return RKD_CAP_RUN_SAMPLING | RKD_CAP_RUN_MAX_NEW_TOKENS;
#else
    return 0;
#endif
}

enum {
    RKD_LOAD_OK = 0,
    RKD_LOAD_OPEN_FAILED = 1,
    RKD_LOAD_MISSING_SYMBOL = 2,
};

// Opens `name` (the dlopen search applies unless it contains '/') and resolves every runtime
// function. On failure `err` gets dlerror's text; on success `path` gets the file the loader
// chose. Called once per process, before anything else here.
int32_t rkd_load(const char* name, char* err, size_t err_len, char* path, size_t path_len) {
    void* lib = rkd_dl::open(name, err, err_len);
    if (lib == nullptr) {
        return RKD_LOAD_OPEN_FAILED;
    }
    Api a{};
    a.lib = lib;
    bool ok = resolve(lib, "rkllm_createDefaultParam", a.create_default_param, err, err_len) &&
              resolve(lib, "rkllm_init", a.init, err, err_len) &&
              resolve(lib, "rkllm_run", a.run, err, err_len) &&
              resolve(lib, "rkllm_abort", a.abort, err, err_len) &&
              resolve(lib, "rkllm_is_running", a.is_running, err, err_len) &&
              resolve(lib, "rkllm_clear_kv_cache", a.clear_kv_cache, err, err_len) &&
              resolve(lib, "rkllm_get_kv_cache_size", a.get_kv_cache_size, err, err_len) &&
              resolve(lib, "rkllm_set_chat_template", a.set_chat_template, err, err_len) &&
              resolve(lib, "rkllm_set_function_tools", a.set_function_tools, err, err_len) &&
              resolve(lib, "rkllm_destroy", a.destroy, err, err_len);
    if (!ok) {
        dlclose(lib);
        return RKD_LOAD_MISSING_SYMBOL;
    }
    // Snapshots of the KV cache are an optimisation: a runtime without them still serves.
    a.load_prompt_cache =
        rkd_dl::optional<decltype(a.load_prompt_cache)>(lib, "rkllm_load_prompt_cache");
    a.release_prompt_cache =
        rkd_dl::optional<decltype(a.release_prompt_cache)>(lib, "rkllm_release_prompt_cache");
    // LoRA adapters are per model: a runtime without them still serves the base models.
    a.load_lora = rkd_dl::optional<decltype(a.load_lora)>(lib, "rkllm_load_lora");
    rkd_dl::loaded_from(lib, name, path, path_len);
    // Never closed: the runtime starts threads of its own and lives as long as the process.
    api = a;
    return RKD_LOAD_OK;
}

// The simulator exports rkllm_sim_version; the real runtime does not. NULL before rkd_load.
const char* rkd_simulator_version(void) {
    if (api.lib == nullptr) {
        return nullptr;
    }
    using version_fn = const char* (*)(void);
    void* sym = dlsym(api.lib, "rkllm_sim_version");
    if (sym == nullptr) {
        return nullptr;
    }
    return reinterpret_cast<version_fn>(sym)();
}

// What rkllm_createDefaultParam returns, seen through a buffer larger than either ABI's
// RKLLMParam (184 and 208 bytes on 64-bit). Both struct returns go through the same hidden
// result pointer (x8 on aarch64, rdi on x86_64), so the runtime writes its own struct at the
// start of this buffer whatever its ABI. The destructor makes the type non-trivial for calls:
// the compiler may then not return through a temporary, so the result pointer is `buf` below.
struct ProbeBuf {
    unsigned char bytes[1024];
    ~ProbeBuf() {}
};

// Calls rkllm_createDefaultParam twice, into buffers filled with two different canaries, and
// copies what each call left into `out_a` / `out_b` (`len` bytes each, at most 1024): a byte
// the runtime wrote is equal in both. The buffer ends at a PROT_NONE page, so a runtime that
// wrote beyond it would fault instead of corrupting memory. Returns 0, or -1 before rkd_load,
// -2 when the pages cannot be mapped.
int32_t rkd_probe_default_param(uint8_t* out_a, uint8_t* out_b, size_t len) {
    if (api.lib == nullptr || out_a == nullptr || out_b == nullptr) {
        return -1;
    }
    const long page_size = sysconf(_SC_PAGESIZE);
    const size_t page = page_size > 0 ? static_cast<size_t>(page_size) : 4096;
    const size_t usable = (sizeof(ProbeBuf) + page - 1) / page * page;
    void* map = mmap(nullptr, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        return -2;
    }
    unsigned char* guard = static_cast<unsigned char*>(map) + usable;
    if (mprotect(guard, page, PROT_NONE) != 0) {
        munmap(map, usable + page);
        return -2;
    }
    unsigned char* buf = guard - sizeof(ProbeBuf);
    using probe_fn = ProbeBuf (*)();
    // Through void(*)(), the generic function pointer type: the runtime's own signature is the
    // very thing in question.
    auto fn = reinterpret_cast<probe_fn>(reinterpret_cast<void (*)()>(api.create_default_param));
    const size_t n = len < sizeof(ProbeBuf) ? len : sizeof(ProbeBuf);
    uint8_t* outs[2] = {out_a, out_b};
    const unsigned char canaries[2] = {0xa5, 0x5a};
    for (int i = 0; i < 2; ++i) {
        std::memset(buf, canaries[i], sizeof(ProbeBuf));
        // The canary must be in memory before the call, not dropped as a dead store.
        asm volatile("" : : "r"(buf) : "memory");
        ProbeBuf* result = new (buf) ProbeBuf(fn());
        asm volatile("" : : "r"(result) : "memory");
        std::memcpy(outs[i], buf, n);
    }
    munmap(map, usable + page);
    return 0;
}

int32_t rkd_init(void** handle, const rkd_config* cfg) {
    if (handle == nullptr || cfg == nullptr || api.lib == nullptr) {
        return -1;
    }
    RKLLMParam param = api.create_default_param();
    param.model_path = cfg->model_path;
    param.max_context_len = cfg->max_context_len;
    param.max_new_tokens = cfg->max_new_tokens;
    param.top_k = cfg->top_k;
    param.top_p = cfg->top_p;
    param.temperature = cfg->temperature;
    param.repeat_penalty = cfg->repeat_penalty;
    param.frequency_penalty = cfg->frequency_penalty;
    param.presence_penalty = cfg->presence_penalty;
    param.skip_special_token = true;
    param.is_async = false;
#if RKLLMD_ABI_MINOR < 3
    param.img_start = cfg->img_start;
    param.img_end = cfg->img_end;
    param.img_content = cfg->img_content;
#endif
    param.extend_param.base_domain_id = cfg->base_domain_id;
    if (cfg->enabled_cpus_mask != 0) {
        param.extend_param.enabled_cpus_mask = cfg->enabled_cpus_mask;
        param.extend_param.enabled_cpus_num = static_cast<int8_t>(__builtin_popcount(cfg->enabled_cpus_mask));
    }

    LLMHandle h = nullptr;
#if RKLLMD_ABI_MINOR >= 3
    param.ignore_eos_token = false;
    int rc = api.init(&h, &param, &g_callbacks);
#else
    int rc = api.init(&h, &param, on_result);
#endif
    *handle = rc == 0 ? h : nullptr;
    return rc;
}

int32_t rkd_run(void* handle, const rkd_run_params* p, rkd_event_fn fn, void* ctx) {
    if (handle == nullptr || p == nullptr || fn == nullptr) {
        return -1;
    }
    RKLLMInput input{};
    input.role = p->role;
    input.enable_thinking = p->enable_thinking != 0;
    if (p->images == nullptr) {
        input.input_type = RKLLM_INPUT_PROMPT;
        input.prompt_input = p->prompt;
    } else {
        const rkd_image_input* im = p->images;
        input.input_type = RKLLM_INPUT_MULTIMODAL;
        // The header's fields are not const; the runtime only reads them.
        input.multimodal_input.prompt = const_cast<char*>(p->prompt);
#if RKLLMD_ABI_MINOR >= 3
        input.multimodal_input.image.image_embed = const_cast<float*>(im->embed);
        input.multimodal_input.image.n_image_tokens = im->n_image_tokens;
        input.multimodal_input.image.n_image = im->n_image;
        input.multimodal_input.image.image_start = im->start;
        input.multimodal_input.image.image_end = im->end;
        input.multimodal_input.image.image_content = im->content;
        input.multimodal_input.image.image_width = im->width;
        input.multimodal_input.image.image_height = im->height;
#else
        input.multimodal_input.image_embed = const_cast<float*>(im->embed);
        input.multimodal_input.n_image_tokens = im->n_image_tokens;
        input.multimodal_input.n_image = im->n_image;
        input.multimodal_input.image_width = im->width;
        input.multimodal_input.image_height = im->height;
#endif
    }

    RKLLMInferParam infer{};
    infer.mode = RKLLM_INFER_GENERATE;
    RKLLMLoraParam lora{};
    if (p->lora != nullptr) {
        lora.lora_adapter_name = p->lora;
        infer.lora_params = &lora;
    } else {
        infer.lora_params = nullptr;
    }
    RKLLMPromptCacheParam cache{};
    if (p->save_prompt_cache != nullptr) {
        cache.save_prompt_cache = 1;
        cache.prompt_cache_path = p->save_prompt_cache;
        infer.prompt_cache_params = &cache;
    } else {
        infer.prompt_cache_params = nullptr;
    }
    infer.keep_history = p->keep_history;
#if RKLLMD_ABI_MINOR >= 3
    RKLLMSamplingParam sampling{};
    if (p->sampling != nullptr) {
        RKLLMParam defaults = api.create_default_param();
        sampling.top_k = p->sampling->top_k;
        sampling.top_p = p->sampling->top_p;
        sampling.temperature = p->sampling->temperature;
        sampling.repeat_penalty = p->sampling->repeat_penalty;
        sampling.frequency_penalty = p->sampling->frequency_penalty;
        sampling.presence_penalty = p->sampling->presence_penalty;
        sampling.mirostat = defaults.mirostat;
        sampling.mirostat_tau = defaults.mirostat_tau;
        sampling.mirostat_eta = defaults.mirostat_eta;
        infer.sampling_params = &sampling;
    }
    infer.max_new_tokens = p->max_new_tokens;
#endif
    RunCtx run{fn, nullptr, ctx};
    return api.run(handle, &input, &infer, &run);
}

// One RKLLM_INFER_GET_LAST_HIDDEN_LAYER run of `prompt` with keep_history 0: the runtime prefills
// it (with the LoRA adapter named `lora`, unless NULL) and hands its last layer's hidden states
// to `fn`.
int32_t rkd_run_hidden(void* handle, const char* prompt, const char* lora, rkd_hidden_fn fn,
                       void* ctx) {
    if (handle == nullptr || prompt == nullptr || fn == nullptr) {
        return -1;
    }
    RKLLMInput input{};
    input.role = "user";
    input.enable_thinking = false;
    input.input_type = RKLLM_INPUT_PROMPT;
    input.prompt_input = prompt;

    RKLLMInferParam infer{};
    infer.mode = RKLLM_INFER_GET_LAST_HIDDEN_LAYER;
    RKLLMLoraParam adapter{};
    if (lora != nullptr) {
        adapter.lora_adapter_name = lora;
        infer.lora_params = &adapter;
    } else {
        infer.lora_params = nullptr;
    }
    infer.prompt_cache_params = nullptr;
    infer.keep_history = 0;
    RunCtx run{nullptr, fn, ctx};
    return api.run(handle, &input, &infer, &run);
}

int32_t rkd_abort(void* handle) { return handle == nullptr ? -1 : api.abort(handle); }

int32_t rkd_is_running(void* handle) { return handle == nullptr ? 0 : api.is_running(handle); }

int32_t rkd_clear_kv_cache(void* handle, int32_t keep_system_prompt) {
    return handle == nullptr ? -1 : api.clear_kv_cache(handle, keep_system_prompt, nullptr, nullptr);
}

int32_t rkd_kv_cache_size(void* handle, int32_t* size) {
    if (handle == nullptr || size == nullptr) {
        return -1;
    }
    int sizes[1] = {0};  // n_batch is 1: one entry
    int rc = api.get_kv_cache_size(handle, sizes);
    *size = sizes[0];
    return rc;
}

int32_t rkd_set_chat_template(void* handle, const char* system, const char* prefix, const char* postfix) {
    return handle == nullptr ? -1 : api.set_chat_template(handle, system, prefix, postfix);
}

int32_t rkd_set_function_tools(void* handle, const char* system, const char* tools, const char* tag) {
    return handle == nullptr ? -1 : api.set_function_tools(handle, system, tools, tag);
}

// -2: the library has no rkllm_load_prompt_cache.
int32_t rkd_load_prompt_cache(void* handle, const char* path) {
    if (handle == nullptr || path == nullptr) {
        return -1;
    }
    return api.load_prompt_cache == nullptr ? -2 : api.load_prompt_cache(handle, path);
}

int32_t rkd_release_prompt_cache(void* handle) {
    if (handle == nullptr) {
        return -1;
    }
    return api.release_prompt_cache == nullptr ? -2 : api.release_prompt_cache(handle);
}

// Loads the adapter file at `path` under `name` (what a run's `lora` selects), at `scale`.
// -2: the library has no rkllm_load_lora.
int32_t rkd_load_lora(void* handle, const char* path, const char* name, float scale) {
    if (handle == nullptr || path == nullptr || name == nullptr) {
        return -1;
    }
    if (api.load_lora == nullptr) {
        return -2;
    }
    RKLLMLoraAdapter adapter{};
    adapter.lora_adapter_path = path;
    adapter.lora_adapter_name = name;
    adapter.scale = scale;
    return api.load_lora(handle, &adapter);
}

int32_t rkd_destroy(void* handle) { return handle == nullptr ? -1 : api.destroy(handle); }

}  // extern "C"
