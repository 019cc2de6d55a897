// Prompt cache files (RKLLMInferParam.prompt_cache_params, rkllm_load_prompt_cache): the tokens
// of a prefill, kept in a file that a later handle of the same model can start from.
#pragma once

#include "sim.h"
#include "tokenizer.h"

namespace sim SIM_HIDDEN {

// How a write goes wrong, for the model file's fault keys.
enum class WriteFault { kNone, kNoSpace, kTorn };

// Writes `tokens` as the prompt cache of model `model` at `path`. False (after setting `error`)
// when the file cannot be written. kNoSpace: the file is created and stays empty, ENOSPC;
// kTorn: the file ends half way through the tokens, and the write reports success (a torn file
// is only found when it is read).
bool write_prompt_cache(const char* path, const String& model, const Tokens& tokens,
                        WriteFault fault, String& error);

// Reads the prompt cache at `path`. False (after setting `error`) when the file is missing,
// unreadable, not a prompt cache, or was written for another model.
bool read_prompt_cache(const char* path, const String& model, Tokens& tokens, String& error);

}  // namespace sim
