// RKLLM_INFER_GET_LAST_HIDDEN_LAYER runs: a prefill whose result is the last layer's hidden
// states, one vector of `hidden_size` floats per input token, handed to the callback once.
//
// What the real runtime does, from rknn-llm's own demo (examples/rkllm_api_demo/deploy/src/
// llm_demo.cpp, callback): the states arrive in a RKLLM_RUN_NORMAL callback as
// `result->last_hidden_layer` {hidden_states, embd_size, num_tokens}, and the pointer is freed
// by the next callback, so the caller copies them inside the call. rkllm.h's rkllm_destroy
// mentions the mode's memory; it says nothing about the KV cache. The simulator assumes such a
// run computes on a scratch sequence: the whole input is prefilled (no prefix reuse, so every
// token gets its state), and the handle's KV cache and a paused generation stay as they were.
#include <cstddef>
#include "rkllm.h"

#include <cmath>
#include <cstdio>

#include "handle.h"
#include "trace.h"

namespace sim SIM_HIDDEN {
namespace {

uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    return h;
}

// A token's state depends on the token and everything before it (a causal model's does), so
// the last token's state is a function of the whole text, and two texts differ in it.
void fill_states(const Tokens& seq, size_t width, Vec<float>& states) {
    states.resize(seq.size() * width);
    uint64_t context = 0x51ed270b27e3a9c5ull;
    for (size_t t = 0; t < seq.size(); ++t) {
        context = mix(context, static_cast<uint32_t>(seq[t]));
        uint64_t x = context;
        for (size_t d = 0; d < width; ++d) {
            x = mix(x, d);
            // Uniform in [-1, 1): the top 24 bits as a fraction.
            states[t * width + d] = static_cast<float>(x >> 40) / 8388608.0f - 1.0f;
        }
    }
}

}  // namespace

void Handle::hidden_layer(RunRequest& req, const Snapshot& s, const Tokens& seq,
                          Outcome& out) {
    // Nothing of the handle's state changes: finish() stores these back as they were. With
    // hidden_keeps_cache = 0 the sequence takes the cache's place instead, as after a
    // keep_history = 0 generation.
    out.cache = model_.hidden_keeps_cache ? s.cache : seq;
    out.cache_sys_len = model_.hidden_keeps_cache ? s.cache_sys_len : 0;
    out.cache_lora = model_.hidden_keeps_cache ? s.cache_lora : req.lora;
    if (model_.hidden_keeps_cache) {
        out.cache_tool_names = s.cache_tool_names;
        out.paused = s.paused;
    }
    if (seq.empty()) {
        std::fprintf(stderr, "E rkllm: empty input\n");
        out.reason = Outcome::kError;
        return;
    }
    if (seq.size() > static_cast<size_t>(settings_.max_context_len)) {
        std::fprintf(stderr, "E rkllm: input of %zu tokens exceeds max_context_len %d\n",
                     seq.size(), settings_.max_context_len);
        out.reason = Outcome::kContext;
        return;
    }
    const bool done = prefill(static_cast<int64_t>(seq.size()) * model_.prefill_us_per_token);
    out.t_prefill_end = now_us();
    out.prefilled = seq.size();
    if (!done) {
        out.reason = Outcome::kAbort;
        return;
    }
    Vec<float> states;
    const auto width = static_cast<size_t>(model_.hidden_size);
    fill_states(seq, width, states);
    RKLLMResult result{};
    result.text = nullptr;
    result.token_id = -1;
    result.last_hidden_layer.hidden_states = states.data();
    result.last_hidden_layer.embd_size = model_.hidden_size;
    result.last_hidden_layer.num_tokens = static_cast<int>(seq.size());
    deliver(req.userdata, result, RKLLM_RUN_NORMAL);
    // The buffer is gone after the callback, as the real runtime's is by the next one: a caller
    // that kept the pointer reads garbage instead of plausible values.
    for (float& v : states) v = std::nanf("");
    out.reason = Outcome::kEos;
}

}  // namespace sim
