// Answers are words from the model's vocabulary with a "." every few words, cut into output
// pieces by the tokenizer. The answer proper is exactly N pieces (N drawn from the seed within
// [answer_tokens_min, answer_tokens_max]) and is followed by end of sequence.
#include "generator.h"

#include "tokenizer.h"

namespace sim SIM_HIDDEN {
namespace {

uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

}  // namespace

Generator::Generator(const ModelConfig& model, uint64_t seed, bool think,
                     std::string_view tool_name, bool ignore_eos)
    : model_(model), state_(seed), ignore_eos_(ignore_eos) {
    if (!tool_name.empty()) {
        String call = "<tool_call>\n{\"name\": \"";
        call.append(tool_name);
        call += "\", \"arguments\": {}}\n</tool_call>";
        split_output(call, pieces_);
        return;
    }
    const size_t n = answer_length();
    if (think) append_think_block();
    if (!model_.answer.empty()) {
        split_output(model_.answer, pieces_);
        return;
    }
    append_words(n);
}

bool Generator::next(String& piece) {
    if (next_ == pieces_.size()) {
        if (!ignore_eos_) return false;
        // Past the end of sequence a real model keeps writing; so do we, a sentence at a time.
        pieces_.clear();
        next_ = 0;
        const size_t n = answer_length();
        append_words(n > 0 ? n : 1);
    }
    piece = pieces_[next_++];
    return true;
}

uint64_t Generator::random() { return splitmix64(state_); }

size_t Generator::answer_length() {
    const auto lo = static_cast<uint64_t>(model_.answer_tokens_min);
    const auto hi = static_cast<uint64_t>(model_.answer_tokens_max);
    return static_cast<size_t>(lo + random() % (hi - lo + 1));
}

size_t Generator::sentence_words() { return 4 + random() % 9; }

void Generator::append_think_block() {
    pieces_.emplace_back("<think>");
    pieces_.emplace_back("\n");
    line_start_ = true;
    sentence_start_ = true;
    append_words(8 + random() % 17);
    for (const char* p : {"\n", "</think>", "\n", "\n"}) pieces_.emplace_back(p);
    line_start_ = true;
    sentence_start_ = true;
}

void Generator::append_words(size_t n) {
    if (n == 0) return;
    const size_t end = pieces_.size() + n;  // the piece at end-1 is the final "."
    size_t words_left = sentence_words();
    Vec<String> word;
    while (pieces_.size() + 1 < end) {
        const size_t room = end - 1 - pieces_.size();
        if (words_left == 0 && room >= 2) {
            pieces_.emplace_back(".");
            sentence_start_ = true;
            words_left = sentence_words();
            continue;
        }
        // Draw until a word fits the remaining room so the piece count comes out exact.
        bool placed = false;
        for (int attempt = 0; attempt < 8 && !placed; ++attempt) {
            String text = line_start_ ? "" : " ";
            String w = model_.vocabulary[random() % model_.vocabulary.size()];
            if (sentence_start_ && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 32);
            text += w;
            word.clear();
            split_output(text, word);
            if (word.size() <= room) {
                for (String& p : word) pieces_.push_back(std::move(p));
                placed = true;
            }
        }
        if (!placed) pieces_.emplace_back(",");  // one-piece filler; keeps the count exact
        line_start_ = false;
        sentence_start_ = false;
        if (words_left > 0) --words_left;
    }
    pieces_.emplace_back(".");
    sentence_start_ = true;
}

}  // namespace sim
