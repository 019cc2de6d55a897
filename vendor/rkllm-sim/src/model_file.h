// The simulator's model file: a small text file standing in for a converted .rkllm model.
#pragma once


#include "sim.h"

namespace sim SIM_HIDDEN {

struct ModelConfig {
    String name = "rkllm-sim";
    int load_ms = 0;
    int prefill_us_per_token = 0;
    int decode_us_per_token = 0;
    int answer_tokens_min = 24;
    int answer_tokens_max = 96;
    Vec<String> vocabulary;  // never empty once loaded
    bool thinking = false;
    bool fail_init = false;
    int error_after_tokens = -1;  // -1: fault not configured
    int hang_after_tokens = -1;   // -1: fault not configured
    int abort_delay_ms = 0;
    // rkllm_run takes this long before its run counts as started: an rkllm_abort meanwhile finds
    // no run, like one made before the call, and is lost (0: the run starts at the call).
    int run_start_delay_ms = 0;
    // An rkllm_abort while no run is under way aborts the next run at its start (false: it is
    // lost). Unknown on the real runtime.
    bool idle_abort_carries = false;
    bool add_bos = false;  // a BOS token opens every fresh KV cache (llama.cpp's add_bos_token)
    // An abort that arrives during the prefill takes effect at the prefill's end or this many ms
    // after the call, whichever comes first (0: at once, like any other abort).
    int prefill_abort_lag_ms = 0;
    bool abort_finish = true;  // an aborted run ends with FINISH (false: no final callback)
    // A scripted answer: every answer is this text (after any think block) instead of words.
    String answer;
    // Faults for testing a caller's checks of the runtime (`rkllmd selftest`); the defaults are
    // what the evidence says the real runtime does.
    bool context_shift = true;     // false: a keep_history run past the context fails instead
    bool custom_template = true;   // false: rkllm_set_chat_template is accepted but ignored
    bool history_kept = true;      // false: keep_history = 1 runs as keep_history = 0
    bool prefix_reuse = true;      // false: a keep_history = 0 run reuses nothing of the cache
    bool callback_thread = false;  // true: callbacks come from a thread of the runtime's own
    bool tools_removable = true;   // false: rkllm_set_function_tools with no tools keeps them
    // The width of a token's last hidden state (RKLLM_INFER_GET_LAST_HIDDEN_LAYER): the
    // model's hidden size, 1536 as in Qwen2.5-1.5B.
    int hidden_size = 1536;
    // A vision-language model: the image tokens one image takes in the LLM (Qwen2-VL at 392x392:
    // 196), each embedding `hidden_size` floats wide. 0: not declared.
    int image_tokens = 0;
    // A multimodal run whose n_image_tokens differs from `image_tokens` fails (1) or is taken at
    // the caller's word (0); what the real runtime does is unknown.
    bool image_tokens_checked = true;
    // false: a last-hidden-layer run leaves its sequence in the KV cache, as a keep_history = 0
    // generation does (what the real runtime does is unknown; callers must cope with both).
    bool hidden_keeps_cache = true;
    // Prompt cache files: the time to write and to read one cached token. The real file holds
    // each token's keys and values (Qwen2.5-1.5B: 28 layers x 2 x 256 fp16 = 28 KiB a token),
    // copied off the NPU's memory and written out; nothing public measures it.
    int prompt_cache_save_us_per_token = 0;
    int prompt_cache_load_us_per_token = 0;
    // Faults: a save that fails as on a full disk (the file is created, nothing fits in it), and
    // one that leaves a torn file (cut short half way, as by a crash or a full disk mid-write).
    bool prompt_cache_write_fails = false;
    bool prompt_cache_torn = false;
    // The NPU memory the loaded model takes (MB), counted against its IOMMU domain's 4 GB
    // (rknn-llm#437); 0: not counted.
    int npu_memory_mb = 0;
};

// Reads and validates a model file. On failure returns false and sets `error` to one line
// that names the file and the problem.
bool load_model_file(const char* path, ModelConfig& out, String& error);

}  // namespace sim
