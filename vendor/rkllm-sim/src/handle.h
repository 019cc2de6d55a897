// One model instance (an LLMHandle): its settings, chat template, KV cache and the run logic.
#pragma once

#include <cstddef>
#include "rkllm.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <utility>
#include <mutex>
#include <optional>
#include <thread>

#include <pthread.h>

#include "model_file.h"
#include "sim.h"
#include "tokenizer.h"

namespace sim SIM_HIDDEN {

// The sampling values that take part in the generation seed.
struct Sampling {
    int32_t top_k = 1;
    float top_p = 0.9f;
    float temperature = 0.8f;
    float repeat_penalty = 1.1f;
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
};

// What rkllm_init fixed for the handle's lifetime.
struct InitSettings {
    int32_t max_context_len = 512;
    int32_t max_new_tokens = -1;  // <= 0: no cap below the context length
    int32_t n_keep = 0;  // leading cache tokens a context shift keeps (< 0: the system prompt)
    Sampling sampling;
    bool ignore_eos = false;
#if RKLLM_SIM_ABI_MINOR < 3
    // RKLLMParam.img_start / img_end / img_content (1.2 sets the image tags once, at init; 1.3
    // per run).
    String img_start;
    String img_end;
    String img_content;
#endif
#if RKLLM_SIM_ABI_MINOR >= 3
    // The caller's struct itself, read at every callback: the runtime keeps the pointer given to
    // rkllm_init, so a caller whose struct dies after init breaks (as with the real runtime).
    const RKLLMCallback* callbacks = nullptr;
#else
    LLMResultCallback callback = nullptr;
#endif
};

// Where a paused generation stopped (a callback returned 1): the next keep_history run resumes it.
struct Paused {
    uint64_t seed = 0;
    bool think = false;
    String tool;
    size_t emitted = 0;  // pieces of the answer already delivered
};

enum class InputKind { kPrompt, kToken, kEmbed, kMultimodal };

// A run's input and parameters, copied out of the caller's structs so that rkllm_run_async can
// return before the run starts.
struct RunRequest {
    InputKind kind = InputKind::kPrompt;
    bool tool_role = false;  // role "tool": a function result
    bool enable_thinking = false;
    String text;        // prompt text (prompt and multimodal input)
    Tokens ids;              // token input
    size_t opaque_tokens = 0;  // positions filled from embeddings / images
    // Multimodal input (Handle::take_images): the images, the positions each takes, the tags
    // around them, and a hash of their embeddings, which seeds the answer.
    size_t n_image = 0;
    size_t n_image_tokens = 0;
    String image_start;
    String image_end;
    uint64_t image_key = 0;
    bool keep_history = false;
    // RKLLM_INFER_GET_LAST_HIDDEN_LAYER: prefill only, and hand the last layer's hidden states
    // to the callback instead of generating.
    bool hidden_layer = false;
    int32_t max_new_tokens = 0;  // > 0 overrides the init value (1.3)
    std::optional<Sampling> sampling;  // overrides the init values (1.3)
    // RKLLMInferParam.prompt_cache_params: write the prefilled sequence to this file after the
    // prefill.
    bool save_prompt_cache = false;
    String prompt_cache_path;
    // RKLLMInferParam.lora_params: the name of a LoRA adapter rkllm_load_lora loaded ("": the
    // base model alone).
    String lora;
    void* userdata = nullptr;
};

// A LoRA adapter rkllm_load_lora loaded: its name and a key drawn from its file and scale, which
// takes part in the generation seed (a different adapter gives a different answer).
struct LoraAdapter {
    String name;
    uint64_t key = 0;
};

// How a run ended and what it leaves behind.
struct Outcome {
    enum Reason { kEos, kLength, kAbort, kPause, kError, kContext };
    Reason reason = kEos;
    size_t prefilled = 0;      // tokens prefilled (fewer when aborted during the prefill)
    size_t generated = 0;      // token callbacks made
    size_t shifted = 0;        // cache tokens a context shift deleted before the prefill
    int64_t t_prefill_end = 0;
    Tokens cache;              // the KV cache after the run, unless it failed
    size_t cache_sys_len = 0;
    Vec<String> cache_tool_names;  // tools defined in the prompt text that is in `cache`
    String cache_lora;             // the adapter `cache` was computed with
    // The run reused cache entries computed with another adapter (or none): keys and values of
    // other weights, which a real model would continue from as if they were its own.
    bool stale_lora_kv = false;
    std::optional<Paused> paused;  // set when a callback paused the run
    // With RKLLM_SIM_TRACE_TOKENS: when each token callback was made (us) and whether it was
    // WAITING; written to the trace after the run so the trace's I/O cannot slow the run.
    Vec<std::pair<int64_t, bool>> callback_stamps;
};

class Handle {
public:
    Handle(int id, ModelConfig model, InitSettings settings, String trace_path);
    ~Handle();
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    // Reference counting: the registry holds one reference, every API call in progress another.
    // The last release deletes the handle.
    void retain() { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }

    int id() const { return id_; }
    const String& trace_path() const { return trace_path_; }
    void* default_userdata() const;

    // Checks a multimodal input against the model file and the prompt, hashes its embeddings
    // into `req` and traces it; false (logged) when the run must fail.
    bool take_images(const RKLLMMultiModalInput& mm, RunRequest& req) const;
    // Appends the tokens of `text` (a multimodal turn) to `out`, each image placeholder replaced
    // by the image's start tag, its embedding positions and its end tag.
    static void append_images(const String& text, const RunRequest& req, Tokens& out);
    int run(RunRequest req);        // blocks until the run ends; callbacks on this thread
    int run_async(RunRequest req);  // returns at once; callbacks on the handle's worker thread
    int abort();
    bool is_running();
    int clear_kv_cache(bool keep_system_prompt, const int* start, const int* end);
    size_t kv_cache_size();
    void set_chat_template(const char* system, const char* prefix, const char* postfix);
    // -1 under an empty chat template; on success the KV cache is emptied.
    int set_function_tools(const char* system, const char* tools);
    // rkllm_load_prompt_cache: -1 (logged) for a missing, unreadable or foreign file.
    int load_prompt_cache(const char* path);
    // rkllm_release_prompt_cache.
    int release_prompt_cache();
    // rkllm_load_lora: -1 (logged) for a missing name or an unreadable file; a name loaded again
    // is replaced.
    int load_lora(const char* path, const char* name, float scale);
    // rkllm_destroy: aborts and waits for a run in progress, stops the worker thread.
    int close();

private:
    struct Template {
        String system;
        String prefix;
        String postfix;
        bool custom = false;  // set by rkllm_set_chat_template; the prompt then decides thinking
    };
    // The state a run works from, taken when it is accepted.
    struct Snapshot {
        Template tmpl;
        String tools_system;  // non-empty while function tools are set
        Vec<String> tool_names;
        Tokens cache;
        size_t cache_sys_len = 0;
        Vec<String> cache_tool_names;
        std::optional<Paused> paused;
        Tokens prompt_cache;  // loaded from a file: a prefix the prefill can skip
        Vec<LoraAdapter> loras;
        String cache_lora;
    };
    struct Job {
        RunRequest req;
        Snapshot snap;
    };

    bool begin_locked(Snapshot& snap);
    int execute(RunRequest& req, Snapshot& snap);
    void generate(RunRequest& req, Snapshot& snap, int64_t t_start, Outcome& out);
    // An RKLLM_INFER_GET_LAST_HIDDEN_LAYER run of `seq` (hidden_layer.cpp).
    void hidden_layer(RunRequest& req, const Snapshot& snap, const Tokens& seq, Outcome& out);
    int finish(RunRequest& req, Outcome& out, int64_t t_start);
    void worker_loop();
    void request_abort_locked();
    bool abort_due() const;
    bool sleep_unless_aborted(int64_t us);
    bool prefill(int64_t us);
    size_t shift_context(Tokens& cache, size_t& cache_sys_len, size_t incoming) const;
    int deliver(void* userdata, RKLLMResult& result, LLMCallState state);
    [[noreturn]] void hang_forever() const;

    std::atomic<int> refs_{1};
    const int id_;
    const ModelConfig model_;
    const InitSettings settings_;
    const String trace_path_;
    // RKLLM_SIM_TRACE_TOKENS set at init: also trace every token callback (latency benchmarks).
    const bool trace_tokens_;

    // When the current run must stop (kNever: not requested). Written under mu_, read lock-free
    // by the running thread between tokens and delay slices.
    std::atomic<int64_t> abort_at_us_{kNever};
    // The run is prefilling (written under mu_), and an abort arrived during it.
    bool in_prefill_ = false;
    bool prefill_abort_ = false;

    std::mutex mu_;
    std::condition_variable idle_cv_;  // running_ became false
    std::condition_variable work_cv_;  // job_ was queued or closing_ was set
    // abort_at_us_ was set: delays wait on it with mu_ until their end or the abort, whichever
    // comes first. A pthread condition on CLOCK_MONOTONIC, the simulator's one clock.
    pthread_cond_t abort_cond_;
    // Guarded by mu_:
    bool running_ = false;
    bool closing_ = false;
    // An rkllm_abort came while idle and the model keeps it (`idle_abort_carries`): the next run
    // is aborted at its start.
    bool idle_abort_ = false;
    Template tmpl_;
    String tools_system_;
    Vec<String> tool_names_;
    Tokens cache_;
    Tokens prompt_cache_;  // rkllm_load_prompt_cache's tokens until released
    size_t cache_sys_len_ = 0;  // leading cache tokens that are the system prompt
    std::optional<Paused> paused_;  // a paused generation the next keep_history run resumes
    Vec<LoraAdapter> loras_;        // loaded by rkllm_load_lora, for the handle's lifetime
    String cache_lora_;             // the adapter the cache's entries were computed with
    // Tools defined by a `<tools>` block in prompt text now in the cache: a model knows the tools
    // it was shown, whether the runtime or the caller's own template wrote them.
    Vec<String> cache_tool_names_;
    std::optional<Job> job_;
    std::thread worker_;
};

}  // namespace sim
