// Run logic: prompt assembly, KV cache with prefix reuse, timing, faults and callbacks.
#include <cstdlib>
#include <cstddef>
#include "rkllm.h"

#include "handle.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string_view>
#include <system_error>
#include <thread>

#include "generator.h"
#include "prompt_cache.h"
#include "trace.h"

namespace sim SIM_HIDDEN {
namespace {

// Guards against rkllm_destroy from inside one of this handle's callbacks (it would wait for
// the very run that is calling it).
thread_local const Handle* tl_callback_owner = nullptr;

// Waits on cv until pred() holds, with mu already held by the caller's lock_guard. The
// unique_lock only adapts mu to the condition_variable API and never unlocks it itself, which
// also keeps unique_lock's out-of-line members (exported weak symbols) out of the library.
template <class Pred>
void wait_locked(std::condition_variable& cv, std::mutex& mu, Pred pred) noexcept {
    std::unique_lock<std::mutex> lk(mu, std::adopt_lock);
    cv.wait(lk, pred);
    lk.release();
}

const char* const kDefaultSystem = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
const char* const kDefaultPrefix = "<|im_start|>user\n";
const char* const kDefaultPostfix = "<|im_end|>\n<|im_start|>assistant\n";
const char* const kEmptyThinkBlock = "<think>\n\n</think>\n\n";
// The id of the BOS token that `add_bos = 1` puts at the start of a fresh cache (tokenizer ids
// are >= 3, so it never collides with text).
constexpr int32_t kBosToken = 1;

bool ends_with(const String& s, std::string_view tail) {
    return s.size() >= tail.size() && std::string_view(s).substr(s.size() - tail.size()) == tail;
}

const char* reason_name(Outcome::Reason r) {
    switch (r) {
        case Outcome::kEos: return "eos";
        case Outcome::kLength: return "length";
        case Outcome::kAbort: return "abort";
        case Outcome::kPause: return "pause";
        case Outcome::kError: return "error";
        case Outcome::kContext: return "context";
    }
    return "error";
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

uint64_t generation_seed(const Tokens& full, const Sampling& s) {
    uint64_t h = 14695981039346656037ull;
    h = fnv1a(h, full.data(), full.size() * sizeof(int32_t));
    h = fnv1a(h, &s.top_k, sizeof s.top_k);
    for (float v : {s.top_p, s.temperature, s.repeat_penalty, s.frequency_penalty,
                    s.presence_penalty}) {
        h = fnv1a(h, &v, sizeof v);
    }
    return h;
}

size_t common_prefix(const Tokens& a, const Tokens& b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i] && a[i] != kOpaqueToken) ++i;
    return i;
}

// Peak resident memory, as the real runtime reports it.
float vm_hwm_mb() {
    FILE* f = std::fopen("/proc/self/status", "re");
    if (f == nullptr) return 0.0f;
    char line[256];
    long kb = 0;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    }
    std::fclose(f);
    return static_cast<float>(kb) / 1024.0f;
}

// Tool names as `"name": "X"` occurrences in the tools JSON, in order, without duplicates.
Vec<String> parse_tool_names(const String& json) {
    Vec<String> names;
    size_t pos = 0;
    while ((pos = json.find("\"name\"", pos)) != String::npos) {
        size_t i = json.find_first_not_of(" \t\r\n", pos + 6);
        pos += 6;
        if (i == String::npos || json[i] != ':') continue;
        i = json.find_first_not_of(" \t\r\n", i + 1);
        if (i == String::npos || json[i] != '"') continue;
        String name;
        for (++i; i < json.size() && json[i] != '"'; ++i) {
            if (json[i] == '\\' && i + 1 < json.size()) ++i;
            name += json[i];
        }
        pos = i;
        if (!name.empty() && std::find(names.begin(), names.end(), name) == names.end()) {
            names.push_back(std::move(name));
        }
    }
    return names;
}

// Tool names defined in `<tools>...</tools>` blocks of prompt text, added to `names`.
void add_prompt_tool_names(const String& text, Vec<String>& names) {
    size_t pos = 0;
    while ((pos = text.find("<tools>", pos)) != String::npos) {
        const size_t end = text.find("</tools>", pos);
        if (end == String::npos) break;
        for (String& name : parse_tool_names(text.substr(pos, end - pos))) {
            if (std::find(names.begin(), names.end(), name) == names.end()) {
                names.push_back(std::move(name));
            }
        }
        pos = end;
    }
}

}  // namespace

Handle::Handle(int id, ModelConfig model, InitSettings settings, String trace_path)
    : id_(id),
      model_(std::move(model)),
      settings_(settings),
      trace_path_(std::move(trace_path)),
      trace_tokens_(std::getenv("RKLLM_SIM_TRACE_TOKENS") != nullptr) {
    tmpl_.system = kDefaultSystem;
    tmpl_.prefix = kDefaultPrefix;
    tmpl_.postfix = kDefaultPostfix;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&abort_cond_, &attr);
    pthread_condattr_destroy(&attr);
}

Handle::~Handle() {
    // close() normally stopped the worker already; this covers a handle dropped without it.
    {
        std::lock_guard<std::mutex> lk(mu_);
        closing_ = true;
        job_.reset();
    }
    work_cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    pthread_cond_destroy(&abort_cond_);
}

void* Handle::default_userdata() const {
#if RKLLM_SIM_ABI_MINOR >= 3
    return settings_.callbacks != nullptr ? settings_.callbacks->result_userdata : nullptr;
#else
    return nullptr;
#endif
}

bool Handle::begin_locked(Snapshot& snap) {
    if (running_ || closing_) return false;
    snap.tmpl = tmpl_;  // copies first: if one throws, the handle is not left marked busy
    snap.tools_system = tools_system_;
    snap.tool_names = tool_names_;
    snap.cache = cache_;
    snap.cache_sys_len = cache_sys_len_;
    snap.cache_tool_names = cache_tool_names_;
    snap.prompt_cache = prompt_cache_;
    snap.loras = loras_;
    snap.cache_lora = cache_lora_;
    snap.paused = paused_;
    paused_.reset();  // the next run resumes a paused generation or discards it
    running_ = true;
    in_prefill_ = false;
    prefill_abort_ = false;
    abort_at_us_.store(kNever);  // an abort that arrived while idle carries over only if kept
    if (idle_abort_) {
        idle_abort_ = false;
        request_abort_locked();
    }
    return true;
}

int Handle::run(RunRequest req) {
    if (model_.run_start_delay_ms > 0) {  // not running yet: an abort now is lost
        std::this_thread::sleep_for(std::chrono::milliseconds(model_.run_start_delay_ms));
    }
    Snapshot snap;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!begin_locked(snap)) {
            std::fprintf(stderr, "E rkllm: handle is busy with another run\n");
            return -1;
        }
    }
    if (model_.callback_thread) {  // the caller blocks while a thread of ours calls back
        int rc = -1;
        try {
            std::thread runner([&] { rc = execute(req, snap); });
            runner.join();
        } catch (const std::system_error&) {
            std::lock_guard<std::mutex> lk(mu_);
            running_ = false;
        }
        return rc;
    }
    return execute(req, snap);
}

int Handle::run_async(RunRequest req) {
    std::lock_guard<std::mutex> lk(mu_);
    Snapshot snap;
    if (!begin_locked(snap)) {
        std::fprintf(stderr, "E rkllm: handle is busy with another run\n");
        return -1;
    }
    job_.emplace(Job{std::move(req), std::move(snap)});
    if (!worker_.joinable()) {
        try {
            worker_ = std::thread([this] { worker_loop(); });
        } catch (const std::system_error&) {
            job_.reset();
            running_ = false;
            return -1;
        }
    }
    work_cv_.notify_one();
    return 0;
}

void Handle::worker_loop() {
    for (;;) {
        Job job;
        {
            std::lock_guard<std::mutex> lk(mu_);
            wait_locked(work_cv_, mu_, [this] { return closing_ || job_.has_value(); });
            if (closing_) return;  // close() has dropped any queued job
            job = std::move(*job_);
            job_.reset();
        }
        execute(job.req, job.snap);
    }
}

void Handle::request_abort_locked() {
    int delay_ms = model_.abort_delay_ms;
    if (in_prefill_ && model_.prefill_abort_lag_ms > 0) {
        // rknn-llm#400: an abort during the prefill takes effect late. The run also stops at
        // the prefill's end if that comes first (see prefill()).
        delay_ms = std::max(delay_ms, model_.prefill_abort_lag_ms);
        prefill_abort_ = true;
    }
    const int64_t at = now_us() + static_cast<int64_t>(delay_ms) * 1000;
    if (at < abort_at_us_.load()) abort_at_us_.store(at);  // a later abort never delays one
    pthread_cond_broadcast(&abort_cond_);
}

int Handle::abort() {
    std::lock_guard<std::mutex> lk(mu_);
    if (running_) {
        request_abort_locked();
    } else if (model_.idle_abort_carries) {
        idle_abort_ = true;
    }
    return 0;
}

bool Handle::abort_due() const {
    const int64_t at = abort_at_us_.load(std::memory_order_acquire);
    return at != kNever && now_us() >= at;
}

// One wakeup per delay, not one per slice: the simulator's own CPU stays out of what callers
// measure. The wait ends early when an abort becomes due (request_abort_locked signals).
bool Handle::sleep_unless_aborted(int64_t us) {
    const int64_t deadline = now_us() + us;
    std::lock_guard<std::mutex> lk(mu_);
    for (;;) {
        const int64_t now = now_us();
        const int64_t abort_at = abort_at_us_.load();
        if (abort_at != kNever && now >= abort_at) return false;
        if (now >= deadline) return true;
        const int64_t until = std::min(deadline, abort_at);
        timespec ts{};
        ts.tv_sec = static_cast<time_t>(until / 1000000);
        ts.tv_nsec = static_cast<long>(until % 1000000) * 1000;
        pthread_cond_timedwait(&abort_cond_, mu_.native_handle(), &ts);
    }
}

// The prefill's delay; false when the run was aborted during it.
bool Handle::prefill(int64_t us) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        in_prefill_ = true;
    }
    bool done = sleep_unless_aborted(us);
    std::lock_guard<std::mutex> lk(mu_);
    in_prefill_ = false;
    return done && !prefill_abort_;
}

// Context shift: when the kept history plus `incoming` tokens exceed max_context_len, deletes a
// span of the cache after its first n_keep tokens (rkllm.h: n_keep is what is kept "when
// shifting context window"), half of the rest or as much as the input needs, whichever is more,
// as llama.cpp's context shift does. Returns how many tokens it deleted; 0 when nothing needed
// to go or the input cannot fit even then (the run then fails as too long).
size_t Handle::shift_context(Tokens& cache, size_t& cache_sys_len, size_t incoming) const {
    const auto max = static_cast<size_t>(settings_.max_context_len);
    if (cache.size() + incoming <= max) return 0;
    size_t keep = 0;
    if (settings_.n_keep > 0) keep = static_cast<size_t>(settings_.n_keep);
    if (settings_.n_keep < 0) keep = cache_sys_len;
    keep = std::min(keep, cache.size());
    const size_t left = cache.size() - keep;
    const size_t discard = std::max(left / 2, cache.size() + incoming - max);
    if (discard > left) return 0;
    const auto b = static_cast<std::ptrdiff_t>(keep);
    cache.erase(cache.begin() + b, cache.begin() + b + static_cast<std::ptrdiff_t>(discard));
    cache_sys_len = std::min(cache_sys_len, keep);
    std::fprintf(stderr, "I rkllm: context full: delete the kv cache in [%zu, %zu)\n", keep,
                 keep + discard);
    return discard;
}

void Handle::hang_forever() const {
    // A wedged NPU: the run never returns and abort is ignored.
    for (;;) sleep_us(1000000);
}

bool Handle::is_running() {
    std::lock_guard<std::mutex> lk(mu_);
    return running_;
}

int Handle::load_lora(const char* path, const char* name, float scale) {
    if (name == nullptr || *name == '\0') {
        std::fprintf(stderr, "E rkllm: lora adapter has no name\n");
        return -1;
    }
    FILE* f = std::fopen(path, "rbe");
    if (f == nullptr) {
        std::fprintf(stderr, "E rkllm: failed to open lora adapter %s\n", path);
        return -1;
    }
    uint64_t key = 14695981039346656037ull;
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) key = fnv1a(key, buf, n);
    std::fclose(f);
    key = fnv1a(key, &scale, sizeof scale);
    std::lock_guard<std::mutex> lk(mu_);
    const auto it = std::find_if(loras_.begin(), loras_.end(),
                                 [&](const LoraAdapter& a) { return a.name == name; });
    if (it != loras_.end()) {
        it->key = key;
    } else {
        loras_.push_back(LoraAdapter{name, key});
    }
    return 0;
}

int Handle::clear_kv_cache(bool keep_system_prompt, const int* start, const int* end) {
    std::lock_guard<std::mutex> lk(mu_);
    if (running_) return -1;
    paused_.reset();
    cache_tool_names_.clear();  // conservative: the block may be in the part that goes
    if (start == nullptr && end == nullptr) {
        if (keep_system_prompt) {
            cache_.resize(cache_sys_len_);
        } else {
            cache_.clear();
            cache_sys_len_ = 0;
            cache_lora_.clear();  // an empty cache holds nobody's keys and values
        }
        return 0;
    }
    if (start == nullptr || end == nullptr || *start < 0 || *start >= *end) return -1;
    const size_t b = std::min(static_cast<size_t>(*start), cache_.size());
    const size_t e = std::min(static_cast<size_t>(*end), cache_.size());
    cache_.erase(cache_.begin() + static_cast<std::ptrdiff_t>(b),
                 cache_.begin() + static_cast<std::ptrdiff_t>(e));
    cache_sys_len_ = std::min(cache_sys_len_, b);
    return 0;
}

size_t Handle::kv_cache_size() {
    std::lock_guard<std::mutex> lk(mu_);
    return cache_.size();
}

void Handle::set_chat_template(const char* system, const char* prefix, const char* postfix) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!model_.custom_template) return;  // accepted, and the model's own template stays
    if (system != nullptr) tmpl_.system = system;
    if (prefix != nullptr) tmpl_.prefix = prefix;
    if (postfix != nullptr) tmpl_.postfix = postfix;
    tmpl_.custom = true;
}

int Handle::set_function_tools(const char* system, const char* tools) {
    std::lock_guard<std::mutex> lk(mu_);
    // The runtime builds the tools' system turn from the chat template (rknn-llm#397).
    if (tmpl_.custom && tmpl_.system.empty() && tmpl_.prefix.empty() && tmpl_.postfix.empty()) {
        std::fprintf(stderr, "E rkllm: cannot set function tools: the chat template is empty\n");
        return -1;
    }
    // A new system prompt: the cache built on the old one is dropped (rknn-llm#377).
    cache_.clear();
    cache_sys_len_ = 0;
    cache_tool_names_.clear();
    paused_.reset();
    if (tools == nullptr || *tools == '\0') {
        if (!model_.tools_removable) return 0;  // accepted; the tools stay
        tools_system_.clear();
        tool_names_.clear();
        return 0;
    }
    // The tool definitions are part of the system turn, as in Qwen's template, so they are
    // prefilled (and cached) with it.
    tools_system_ = "<|im_start|>system\n";
    tools_system_ += system != nullptr ? system : "You are a helpful assistant.";
    tools_system_ += "\n\n# Tools\n\n<tools>\n";
    tools_system_ += tools;
    tools_system_ += "\n</tools><|im_end|>\n";
    tool_names_ = parse_tool_names(tools);
    return 0;
}

int Handle::load_prompt_cache(const char* path) {
    Tokens tokens;
    String error;
    if (!read_prompt_cache(path, model_.name, tokens, error)) {
        std::fprintf(stderr, "E rkllm: %s\n", error.c_str());
        return -1;
    }
    // Reading the keys and values back into the NPU's memory.
    sleep_us(static_cast<int64_t>(tokens.size()) * model_.prompt_cache_load_us_per_token);
    std::lock_guard<std::mutex> lk(mu_);
    prompt_cache_ = std::move(tokens);
    return 0;
}

int Handle::release_prompt_cache() {
    std::lock_guard<std::mutex> lk(mu_);
    prompt_cache_.clear();
    return 0;
}

int Handle::close() {
    if (tl_callback_owner == this) {
        std::fprintf(stderr, "E rkllm: rkllm_destroy called from the handle's own callback\n");
        return -1;
    }
    std::thread worker;
    {
        std::lock_guard<std::mutex> lk(mu_);
        closing_ = true;
        if (job_) {  // accepted by run_async but not started: it never will be
            job_.reset();
            running_ = false;
        }
        if (running_) request_abort_locked();
        work_cv_.notify_all();
        wait_locked(idle_cv_, mu_, [this] { return !running_; });
        worker = std::move(worker_);
    }
    if (worker.joinable()) worker.join();
    return 0;
}

int Handle::deliver(void* userdata, RKLLMResult& result, LLMCallState state) {
#if RKLLM_SIM_ABI_MINOR >= 3
    // Read through the caller's struct at every call (see InitSettings::callbacks).
    const LLMResultCallback callback =
        settings_.callbacks != nullptr ? settings_.callbacks->result_callback : nullptr;
#else
    const LLMResultCallback callback = settings_.callback;
#endif
    if (callback == nullptr) return 0;
    const Handle* outer = tl_callback_owner;
    tl_callback_owner = this;
    const int rc = callback(&result, userdata, state);
    tl_callback_owner = outer;
    return rc;
}

int Handle::execute(RunRequest& req, Snapshot& s) {
    const int64_t t_start = now_us();
    Outcome out;
    out.t_prefill_end = t_start;
    try {
        generate(req, s, t_start, out);
    } catch (const std::exception& e) {  // e.g. bad_alloc: fail the run, never the process
        std::fprintf(stderr, "E rkllm: %s\n", e.what());
        out.reason = Outcome::kError;
    }
    return finish(req, out, t_start);
}

void Handle::generate(RunRequest& req, Snapshot& s, int64_t t_start, Outcome& out) {
    // The token sequence this run adds, and whether the system turn precedes it.
    Tokens input;
    bool templated = false;
    bool thinking_switched_off = false;  // the turn ends with the empty think block
    switch (req.kind) {
        case InputKind::kPrompt:
        case InputKind::kMultimodal: {
            String prefix = s.tmpl.prefix;
            String body = req.text;
            if (req.tool_role) {
                prefix += "<tool_response>\n";
                body += "\n</tool_response>";
            }
            body += s.tmpl.postfix;
            thinking_switched_off = ends_with(prefix + body, kEmptyThinkBlock);
            if (req.n_image > 0) {
                input = tokenize(prefix);
                append_images(body, req, input);
            } else if (req.opaque_tokens == 0) {
                input = tokenize(prefix + body);
            } else {  // video positions sit at the start of the user turn
                input = tokenize(prefix);
                input.insert(input.end(), req.opaque_tokens, kOpaqueToken);
                const Tokens rest = tokenize(body);
                input.insert(input.end(), rest.begin(), rest.end());
            }
            templated = true;
            break;
        }
        case InputKind::kToken:
            input = std::move(req.ids);
            break;
        case InputKind::kEmbed:
            input.assign(req.opaque_tokens, kOpaqueToken);
            break;
    }
    const String& system_text = s.tools_system.empty() ? s.tmpl.system : s.tools_system;
    Tokens system = templated ? tokenize(system_text) : Tokens{};
    // llama.cpp-style runtimes may add BOS themselves when a sequence starts from scratch; a
    // template that also writes BOS text then gives two.
    if (templated && model_.add_bos) system.insert(system.begin(), kBosToken);
    if (req.hidden_layer) {
        Tokens seq = system;
        seq.insert(seq.end(), input.begin(), input.end());
        hidden_layer(req, s, seq, out);
        return;
    }

    // The full sequence that will be in the KV cache, and how much of it is already there.
    Tokens& full = out.cache;
    size_t reused = 0;
    if (!model_.history_kept) req.keep_history = false;
    if (req.keep_history && !s.cache.empty()) {
        full = s.cache;
        out.cache_sys_len = s.cache_sys_len;
        out.cache_tool_names = s.cache_tool_names;
        if (model_.context_shift) out.shifted = shift_context(full, out.cache_sys_len, input.size());
        reused = full.size();
    } else {
        full = system;
        out.cache_sys_len = system.size();
    }
    full.insert(full.end(), input.begin(), input.end());
    if (!req.keep_history && model_.prefix_reuse) reused = common_prefix(full, s.cache);
    // A loaded prompt cache counts as computed for the part of the input that starts with it
    // (SDK manual 3.2.9: the runtime compares the input with the prompt cache from the start),
    // and only for a run that starts a sequence: in multi-turn mode, on a cache that already
    // holds turns, a loaded prompt cache did not shorten the prefill (rknn-llm#399: 151 tokens
    // in the cache, the next turn prefilled 118, as without it).
    if (!req.keep_history || s.cache.empty()) {
        reused = std::max(reused, common_prefix(full, s.prompt_cache));
    }
    const size_t to_prefill = full.size() - reused;

    // A LoRA adapter must have been loaded; what the cache reuses was computed with the adapter
    // of the run that left it there, which need not be this one's.
    uint64_t lora_key = 0;
    if (!req.lora.empty()) {
        const auto it = std::find_if(s.loras.begin(), s.loras.end(),
                                     [&](const LoraAdapter& a) { return a.name == req.lora; });
        if (it == s.loras.end()) {
            std::fprintf(stderr, "E rkllm: lora adapter %s is not loaded\n", req.lora.c_str());
            out.reason = Outcome::kError;
            return;
        }
        lora_key = it->key;
    }
    out.cache_lora = req.lora;
    out.stale_lora_kv = reused > 0 && s.cache_lora != req.lora;

    if (full.empty()) {
        std::fprintf(stderr, "E rkllm: empty input\n");
        out.reason = Outcome::kError;
        return;
    }
    if (full.size() > static_cast<size_t>(settings_.max_context_len)) {
        std::fprintf(stderr, "E rkllm: input of %zu tokens exceeds max_context_len %d\n",
                     full.size(), settings_.max_context_len);
        out.reason = Outcome::kContext;
        return;
    }

    const Sampling sampling = req.sampling.value_or(settings_.sampling);
    if (templated) add_prompt_tool_names(req.text, out.cache_tool_names);
    Vec<String> known = s.tool_names;
    for (const String& name : out.cache_tool_names) {
        if (std::find(known.begin(), known.end(), name) == known.end()) known.push_back(name);
    }
    String tool;
    if (req.kind == InputKind::kPrompt && !req.tool_role) {
        // A request names a tool; the definitions themselves do not count.
        const size_t defs_end = req.text.rfind("</tools>");
        const std::string_view asked = std::string_view(req.text).substr(
            defs_end == String::npos ? 0 : defs_end);
        for (const String& name : known) {
            if (asked.find(name) != std::string_view::npos) {
                tool = name;
                break;
            }
        }
    }
    // The runtime's own template honours enable_thinking. With a custom one the caller renders
    // the prompt, and a thinking model thinks unless that prompt switched it off, as Qwen3's
    // template does, by ending with an empty think block.
    const bool wants_think =
        s.tmpl.custom ? templated && !thinking_switched_off : req.enable_thinking;
    // A keep_history run after a pause continues the paused answer (after its own input).
    const bool resume = req.keep_history && s.paused.has_value();
    Paused cont;
    if (resume) {
        cont = *s.paused;
    } else {
        cont.seed = generation_seed(full, sampling);
        if (lora_key != 0) cont.seed = fnv1a(cont.seed, &lora_key, sizeof lora_key);
        // The answer is about the images: their embeddings take part in its seed.
        if (req.n_image > 0) cont.seed = fnv1a(cont.seed, &req.image_key, sizeof req.image_key);
        cont.think = model_.thinking && wants_think && tool.empty();
        cont.tool = tool;
    }
    Generator gen(model_, cont.seed, cont.think, cont.tool, settings_.ignore_eos);
    String skipped;
    for (size_t i = 0; i < cont.emitted && gen.next(skipped); ++i) {
    }
    const int32_t cap = req.max_new_tokens > 0 ? req.max_new_tokens : settings_.max_new_tokens;

    // Prefill.
    const int64_t per_token = model_.prefill_us_per_token;
    const bool prefill_done = prefill(static_cast<int64_t>(to_prefill) * per_token);
    out.t_prefill_end = now_us();
    out.prefilled = to_prefill;
    if (!prefill_done) {
        out.reason = Outcome::kAbort;
        if (per_token > 0) {  // report the part that was "computed"
            const auto done = static_cast<size_t>((out.t_prefill_end - t_start) / per_token);
            out.prefilled = std::min(to_prefill, done);
        }
        return;
    }
    // The SDK manual (3.2.9): the file holds the prefill's results, written when the run has
    // prefilled. A file that cannot be written is logged; the run goes on.
    if (req.save_prompt_cache) {
        const char* path =
            req.prompt_cache_path.empty() ? "./prompt_cache.bin" : req.prompt_cache_path.c_str();
        String error;
        const WriteFault fault = model_.prompt_cache_write_fails ? WriteFault::kNoSpace
                                 : model_.prompt_cache_torn       ? WriteFault::kTorn
                                                                  : WriteFault::kNone;
        // Copying every token's keys and values off the NPU and out to the file.
        sleep_us(static_cast<int64_t>(full.size()) * model_.prompt_cache_save_us_per_token);
        if (!write_prompt_cache(path, model_.name, full, fault, error)) {
            std::fprintf(stderr, "E rkllm: %s\n", error.c_str());
        }
    }

    // Decode.
    Tokens generated;
    String pending;  // bytes of a character not yet complete
    String piece;
    for (bool first = true;; first = false) {
        const size_t n = generated.size();
        if (abort_due()) {
            out.reason = Outcome::kAbort;
            break;
        }
        if (model_.error_after_tokens >= 0 && n == static_cast<size_t>(model_.error_after_tokens)) {
            std::fprintf(stderr, "E rkllm: simulated NPU error after %zu tokens\n", n);
            out.reason = Outcome::kError;
            break;
        }
        if (model_.hang_after_tokens >= 0 && n == static_cast<size_t>(model_.hang_after_tokens)) {
            hang_forever();
        }
        if ((cap > 0 && n >= static_cast<size_t>(cap)) ||
            full.size() + n >= static_cast<size_t>(settings_.max_context_len)) {
            out.reason = Outcome::kLength;
            break;
        }
        // The first token comes out of the prefill; each later one costs a decode step.
        if (!first && !sleep_unless_aborted(model_.decode_us_per_token)) {
            out.reason = Outcome::kAbort;
            break;
        }
        if (!gen.next(piece)) {
            out.reason = Outcome::kEos;
            break;
        }
        const int32_t id = token_id(piece);
        generated.push_back(id);
        pending += piece;
        RKLLMResult result{};
        result.token_id = id;
        const bool waiting = ends_incomplete(pending);
        result.text = waiting ? "" : pending.c_str();
        if (trace_tokens_ && !trace_path_.empty()) out.callback_stamps.emplace_back(now_us(), waiting);
        const int rc =
            deliver(req.userdata, result, waiting ? RKLLM_RUN_WAITING : RKLLM_RUN_NORMAL);
        if (!waiting) pending.clear();
        if (rc == 1) {
            out.reason = Outcome::kPause;
            cont.emitted += generated.size();
            out.paused = std::move(cont);
            break;
        }
    }
    out.generated = generated.size();
    // A pause keeps the generated tokens in the cache whatever keep_history says: the paused
    // generation is resumed from there.
    if (req.keep_history || out.reason == Outcome::kPause) {
        full.insert(full.end(), generated.begin(), generated.end());
    }
}

int Handle::finish(RunRequest& req, Outcome& out, int64_t t_start) {
    const int64_t t_end = now_us();
    const bool ok = out.reason != Outcome::kError && out.reason != Outcome::kContext;
    size_t cache_tokens = 0;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (ok) {
            cache_.swap(out.cache);
            cache_sys_len_ = out.cache_sys_len;
            paused_ = std::move(out.paused);
            cache_tool_names_ = std::move(out.cache_tool_names);
            cache_lora_ = std::move(out.cache_lora);
        }
        cache_tokens = cache_.size();
        // Idle before the final callback, so that a client may start its next run from it.
        running_ = false;
    }
    idle_cv_.notify_all();

    if (!trace_path_.empty()) {
        try {
            for (const auto& [t_us, waiting] : out.callback_stamps) {
                JsonLine cb("callback", t_us);
                cb.num("handle", id_).str("state", waiting ? "waiting" : "normal");
                trace_write(trace_path_, cb.finish());
            }
            JsonLine line("run_end");
            line.num("handle", id_)
                .num("prefill_tokens", static_cast<int64_t>(out.prefilled))
                .num("generate_tokens", static_cast<int64_t>(out.generated))
                .num("cache_tokens", static_cast<int64_t>(cache_tokens))
                .num("shifted_tokens", static_cast<int64_t>(out.shifted))
                .str("reason", reason_name(out.reason));
            if (out.stale_lora_kv) line.flag("stale_lora_kv", true);
            trace_write(trace_path_, line.finish());
        } catch (const std::exception&) {  // tracing never fails a run
        }
    }
    if (out.reason == Outcome::kPause) return 0;  // the pausing callback was the last one
    if (out.reason == Outcome::kAbort && !model_.abort_finish) return 0;

    RKLLMResult result{};
    result.token_id = -1;
    result.perf.prefill_time_ms = static_cast<float>(out.t_prefill_end - t_start) / 1000.0f;
    result.perf.prefill_tokens = static_cast<int>(out.prefilled);
    result.perf.generate_time_ms = static_cast<float>(t_end - out.t_prefill_end) / 1000.0f;
    result.perf.generate_tokens = static_cast<int>(out.generated);
    result.perf.memory_usage_mb = vm_hwm_mb();
    deliver(req.userdata, result, ok ? RKLLM_RUN_FINISH : RKLLM_RUN_ERROR);
    return ok ? 0 : -1;
}

}  // namespace sim
