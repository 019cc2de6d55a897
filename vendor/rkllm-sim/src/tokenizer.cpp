// Byte-oriented word-piece tokenizer. Pieces:
//  - a chat-template marker (<|...|>, <think>, <tool_call>, ...): one piece;
//  - a run of ASCII letters/digits with at most one leading space, at most 8 bytes;
//  - one multi-byte UTF-8 character;
//  - any other single byte.
#include "tokenizer.h"

namespace sim SIM_HIDDEN {
namespace {

constexpr size_t kMaxWordBytes = 8;
constexpr size_t kMaxMarkerBytes = 64;  // whole marker, "<|" and "|>" included
constexpr std::string_view kTags[] = {
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
};

bool is_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

size_t marker_len(std::string_view s, size_t pos) {
    if (s.compare(pos, 2, "<|") == 0) {
        for (size_t i = pos + 2; i + 1 < s.size() && i + 2 - pos <= kMaxMarkerBytes; ++i) {
            const char c = s[i];
            if (c == ' ' || c == '\n' || c == '\t' || c == '\r') break;
            if (c == '|' && s[i + 1] == '>') return i + 2 - pos;
        }
    }
    for (std::string_view tag : kTags) {
        if (s.compare(pos, tag.size(), tag) == 0) return tag.size();
    }
    return 0;
}

// Length of the piece starting at s[pos] (always >= 1).
size_t piece_len(std::string_view s, size_t pos) {
    if (const size_t n = marker_len(s, pos)) return n;
    const auto c = static_cast<unsigned char>(s[pos]);
    const bool space_word = c == ' ' && pos + 1 < s.size() &&
                            is_alnum(static_cast<unsigned char>(s[pos + 1]));
    if (is_alnum(c) || space_word) {
        size_t n = 1;
        while (pos + n < s.size() && n < kMaxWordBytes &&
               is_alnum(static_cast<unsigned char>(s[pos + n]))) {
            ++n;
        }
        return n;
    }
    if (c >= 0x80) {
        const size_t n = utf8_char_len(s, pos);
        return n ? n : 1;
    }
    return 1;
}

}  // namespace

int32_t token_id(std::string_view piece) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (const char c : piece) {
        h ^= static_cast<unsigned char>(c);
        h *= 16777619u;
    }
    return static_cast<int32_t>(h % 32000u) + 3;
}

Tokens tokenize(std::string_view text) {
    Tokens out;
    out.reserve(text.size() / 3 + 1);
    for (size_t pos = 0; pos < text.size();) {
        const size_t n = piece_len(text, pos);
        out.push_back(token_id(text.substr(pos, n)));
        pos += n;
    }
    return out;
}

void split_output(std::string_view text, Vec<String>& out) {
    for (size_t pos = 0; pos < text.size();) {
        const size_t n = piece_len(text, pos);
        const std::string_view piece = text.substr(pos, n);
        if (n >= 2 && static_cast<unsigned char>(piece[0]) >= 0x80) {
            const size_t head = n == 4 ? 2 : 1;  // 2 -> 1+1, 3 -> 1+2, 4 -> 2+2
            out.emplace_back(piece.substr(0, head));
            out.emplace_back(piece.substr(head));
        } else {
            out.emplace_back(piece);
        }
        pos += n;
    }
}

size_t utf8_char_len(std::string_view s, size_t pos) {
    const auto c = static_cast<unsigned char>(s[pos]);
    size_t n = 0;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
    } else {
        return 0;
    }
    if (pos + n > s.size()) return 0;
    for (size_t i = 1; i < n; ++i) {
        if ((static_cast<unsigned char>(s[pos + i]) & 0xC0) != 0x80) return 0;
    }
    // Reject overlong forms, surrogates and code points above U+10FFFF.
    const auto c1 = static_cast<unsigned char>(s[pos + 1]);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
        (c == 0xF4 && c1 > 0x8F)) {
        return 0;
    }
    return n;
}

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const size_t n = utf8_char_len(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

bool ends_incomplete(std::string_view s) {
    for (size_t back = 1; back <= 4 && back <= s.size(); ++back) {
        const auto c = static_cast<unsigned char>(s[s.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
        if (c < 0xC0) return false;
        const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        return need > back;
    }
    return false;
}

}  // namespace sim
