// Deterministic answer generation: the same seed always yields the same pieces.
#pragma once

#include <cstdint>
#include <string_view>

#include "model_file.h"
#include "sim.h"

namespace sim SIM_HIDDEN {

class Generator {
public:
    // tool_name non-empty: the answer is a <tool_call> for that tool. think: the answer starts
    // with a <think> block. ignore_eos: never end; keep writing sentences after the answer.
    Generator(const ModelConfig& model, uint64_t seed, bool think, std::string_view tool_name,
              bool ignore_eos);

    // Stores the next output piece and returns true, or returns false at end of sequence.
    bool next(String& piece);

private:
    uint64_t random();
    size_t answer_length();
    size_t sentence_words();
    void append_think_block();
    void append_words(size_t n);  // exactly n pieces, the last one a "."

    const ModelConfig& model_;
    uint64_t state_;
    bool ignore_eos_;
    Vec<String> pieces_;
    size_t next_ = 0;
    bool line_start_ = true;      // the next word gets no leading space
    bool sentence_start_ = true;  // the next word is capitalised
};

}  // namespace sim
