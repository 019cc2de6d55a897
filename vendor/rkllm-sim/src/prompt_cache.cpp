// Prompt cache files. A text file: a magic line, the model it was made with, the token count and
// the token ids, so that a foreign or truncated file is recognised instead of trusted.
//
//   rkllm-sim prompt-cache 1
//   model <name>
//   tokens <n>
//   <id> <id> ...
#include "prompt_cache.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sim SIM_HIDDEN {
namespace {

constexpr const char* kMagic = "rkllm-sim prompt-cache 1";
// Far above any context length; bounds what a corrupt count can make us allocate.
constexpr unsigned long kMaxTokens = 1UL << 22;

String describe_errno(const char* what, const char* path) {
    String s = what;
    s += " ";
    s += path;
    s += ": ";
    s += std::strerror(errno);
    return s;
}

// Reads one line without its newline; false at the end of the file.
bool read_line(std::FILE* f, String& line) {
    line.clear();
    int c;
    while ((c = std::fgetc(f)) != EOF) {
        if (c == '\n') return true;
        line += static_cast<char>(c);
        if (line.size() > 4096) return false;
    }
    return !line.empty();
}

struct File {
    std::FILE* f;
    ~File() {
        if (f != nullptr) std::fclose(f);
    }
};

}  // namespace

bool write_prompt_cache(const char* path, const String& model, const Tokens& tokens,
                        WriteFault fault, String& error) {
    File file{std::fopen(path, "w")};
    if (file.f == nullptr) {
        error = describe_errno("cannot write prompt cache", path);
        return false;
    }
    if (fault == WriteFault::kNoSpace) {
        errno = ENOSPC;
        error = describe_errno("cannot write prompt cache", path);
        return false;
    }
    bool ok = std::fprintf(file.f, "%s\nmodel %s\ntokens %zu\n", kMagic, model.c_str(),
                           tokens.size()) > 0;
    const size_t written = fault == WriteFault::kTorn ? tokens.size() / 2 : tokens.size();
    for (size_t i = 0; ok && i < written; ++i) {
        ok = std::fprintf(file.f, i + 1 < written ? "%d " : "%d", tokens[i]) > 0;
    }
    ok = ok && std::fputc('\n', file.f) != EOF && std::fflush(file.f) == 0;
    if (!ok) {
        error = describe_errno("cannot write prompt cache", path);
        return false;
    }
    return true;
}

bool read_prompt_cache(const char* path, const String& model, Tokens& tokens, String& error) {
    File file{std::fopen(path, "r")};
    if (file.f == nullptr) {
        error = describe_errno("cannot open prompt cache", path);
        return false;
    }
    String line;
    if (!read_line(file.f, line) || line != kMagic) {
        error = String("not a prompt cache file: ") + path;
        return false;
    }
    if (!read_line(file.f, line) || line.compare(0, 6, "model ") != 0) {
        error = String("prompt cache without a model line: ") + path;
        return false;
    }
    if (line.substr(6) != model) {
        error = String("prompt cache ") + path + " was made for model '" + line.substr(6) +
                "', not '" + model + "'";
        return false;
    }
    unsigned long n = 0;
    if (!read_line(file.f, line) || std::sscanf(line.c_str(), "tokens %lu", &n) != 1 ||
        n > kMaxTokens) {
        error = String("prompt cache with a bad token count: ") + path;
        return false;
    }
    Tokens read;
    read.reserve(n);
    for (unsigned long i = 0; i < n; ++i) {
        int id = 0;
        if (std::fscanf(file.f, "%d", &id) != 1) {
            error = String("prompt cache cut short: ") + path;
            return false;
        }
        read.push_back(id);
    }
    tokens = std::move(read);
    return true;
}

}  // namespace sim
