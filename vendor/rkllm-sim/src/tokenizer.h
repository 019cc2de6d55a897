// The simulator's tokenizer: simple, but consistent, so that token counts mean something.
#pragma once

#include <cstdint>
#include <string_view>

#include "sim.h"

namespace sim SIM_HIDDEN {

using Tokens = Vec<int32_t>;

// Stable id of a token piece, in [3, 32003) (0..2 are left for pad/bos/eos like real vocabularies).
int32_t token_id(std::string_view piece);

// Input side: one token per piece; a multi-byte UTF-8 character is one token.
Tokens tokenize(std::string_view text);

// Output side: the same pieces, except that multi-byte characters are cut into byte pieces
// (2 bytes: 1+1, 3 bytes: 1+2, 4 bytes: 2+2) the way byte-level BPE vocabularies emit them.
void split_output(std::string_view text, Vec<String>& out);

// Length of the valid UTF-8 multi-byte character starting at s[pos], or 0 if there is none.
size_t utf8_char_len(std::string_view s, size_t pos);

bool valid_utf8(std::string_view s);

// True when s ends in the middle of a multi-byte character.
bool ends_incomplete(std::string_view s);

}  // namespace sim
