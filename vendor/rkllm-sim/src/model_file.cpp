// Loading of "rkllm-sim 1" model files. Strict on purpose: a typo in a key must fail rkllm_init
// instead of silently changing how a test model behaves.
#include "model_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "tokenizer.h"

namespace sim SIM_HIDDEN {
namespace {

constexpr std::string_view kMagic = "rkllm-sim 1";

// A simulator model is a few hundred bytes of text; a converted model is hundreds of MB.
constexpr size_t kMaxFileBytes = 1 << 20;

// English words plus CJK, emoji and accented words, so that answers contain multi-byte
// characters (and therefore RKLLM_RUN_WAITING callbacks) by default.
constexpr const char* kDefaultVocabulary[] = {
    "the", "a", "model", "board", "answer", "question", "token", "runtime", "local", "small",
    "fast", "quiet", "simple", "daemon", "request", "reply", "context", "cache", "prompt",
    "system", "thread", "memory", "network", "socket", "server", "client", "data", "result",
    "value", "order", "time", "light", "river", "mountain", "garden", "window", "paper", "music",
    "story", "friend", "morning", "evening", "today", "tomorrow", "because", "while", "after",
    "before", "under", "over", "between", "through", "and", "or", "but", "so", "then", "is",
    "are", "was", "will", "can", "should", "might", "runs", "reads", "writes", "keeps", "finds",
    "sends", "waits", "knows", "makes", "takes", "gives", "helps", "builds", "good", "clear",
    "steady", "careful", "useful", "ready", "early", "late", "warm", "bright", "gentle",
    "interesting", "information", "processing", "RK3588", "NPU", "2024",
    "你好", "世界", "模型", "推理", "芯片", "数据", "回答", "问题", "谢谢",
    "🚀", "🙂", "✨", "🎉", "café", "naïve", "über",
};

std::string_view trim(std::string_view s) {
    const char* ws = " \t\r\n";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

bool parse_int(std::string_view v, int lo, int hi, int& out) {
    // Digits only: no sign, no spaces, no trailing junk such as "300 # ms".
    if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string_view::npos) {
        return false;
    }
    const long x = std::strtol(String(v).c_str(), nullptr, 10);
    if (x < lo || x > hi) return false;
    out = static_cast<int>(x);
    return true;
}

bool parse_bool(std::string_view v, bool& out) {
    int x = 0;
    if (!parse_int(v, 0, 1, x)) return false;
    out = x == 1;
    return true;
}

bool parse_vocabulary(std::string_view v, Vec<String>& out) {
    out.clear();
    size_t i = 0;
    while (i < v.size()) {
        const size_t b = v.find_first_not_of(" \t", i);
        if (b == std::string_view::npos) break;
        size_t e = v.find_first_of(" \t", b);
        if (e == std::string_view::npos) e = v.size();
        const std::string_view word = v.substr(b, e - b);
        if (!valid_utf8(word)) return false;
        out.emplace_back(word);
        i = e;
    }
    return !out.empty();
}

bool read_file(const char* path, String& data, String& error) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = String("failed to open model file ") + path + ": " + std::strerror(errno);
        return false;
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        error = String("model path ") + path + " is not a regular file";
        return false;
    }
    // Enough to find the magic line of a simulator model; never slurps a real multi-GB model.
    data.resize(kMaxFileBytes + 1);
    size_t got = 0;
    while (got < data.size()) {
        const ssize_t n = read(fd, &data[got], data.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = String("failed to read model file ") + path + ": " + std::strerror(errno);
            close(fd);
            return false;
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    close(fd);
    data.resize(got);
    return true;
}

}  // namespace

bool load_model_file(const char* path, ModelConfig& out, String& error) {
    String data;
    if (!read_file(path, data, error)) return false;
    std::string_view text = data;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // editors add a BOM

    ModelConfig cfg;
    bool have_magic = false;
    Vec<String> seen;
    size_t line_no = 0;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) nl = text.size();
        const std::string_view line = trim(text.substr(pos, nl - pos));
        pos = nl + 1;
        ++line_no;
        if (line.empty()) continue;
        if (!have_magic) {
            if (line != kMagic) {
                error = String(path) +
                        " is not an rkllm-sim model (first line must be \"rkllm-sim 1\"); this "
                        "librkllmrt.so is the simulator and cannot load real models";
                return false;
            }
            if (data.size() > kMaxFileBytes) {
                error = String(path) + " is larger than an rkllm-sim model may be (1 MiB)";
                return false;
            }
            have_magic = true;
            continue;
        }
        if (line[0] == '#') continue;
        const String where = String(path) + ":" + decimal(static_cast<int64_t>(line_no)) + ": ";
        const size_t eq = line.find('=');
        if (eq == std::string_view::npos) {
            error = where + "expected \"key = value\"";
            return false;
        }
        const String key(trim(line.substr(0, eq)));
        const std::string_view value = trim(line.substr(eq + 1));
        for (const String& k : seen) {
            if (k == key) {
                error = where + "duplicate key '" + key + "'";
                return false;
            }
        }
        seen.push_back(key);

        constexpr int kMaxMs = 600000;       // 10 minutes
        constexpr int kMaxUs = 10000000;     // 10 s per token
        constexpr int kMaxTokens = 1000000;
        bool ok = true;
        if (key == "name") {
            ok = !value.empty() && valid_utf8(value);
            cfg.name = String(value);
        } else if (key == "load_ms") {
            ok = parse_int(value, 0, kMaxMs, cfg.load_ms);
        } else if (key == "npu_memory_mb") {
            ok = parse_int(value, 0, 1 << 20, cfg.npu_memory_mb);
        } else if (key == "prefill_us_per_token") {
            ok = parse_int(value, 0, kMaxUs, cfg.prefill_us_per_token);
        } else if (key == "decode_us_per_token") {
            ok = parse_int(value, 0, kMaxUs, cfg.decode_us_per_token);
        } else if (key == "answer_tokens_min") {
            ok = parse_int(value, 0, kMaxTokens, cfg.answer_tokens_min);
        } else if (key == "answer_tokens_max") {
            ok = parse_int(value, 0, kMaxTokens, cfg.answer_tokens_max);
        } else if (key == "vocabulary") {
            ok = parse_vocabulary(value, cfg.vocabulary);
        } else if (key == "thinking") {
            ok = parse_bool(value, cfg.thinking);
        } else if (key == "fail_init") {
            ok = parse_bool(value, cfg.fail_init);
        } else if (key == "error_after_tokens") {
            ok = parse_int(value, 0, kMaxTokens, cfg.error_after_tokens);
        } else if (key == "hang_after_tokens") {
            ok = parse_int(value, 0, kMaxTokens, cfg.hang_after_tokens);
        } else if (key == "abort_delay_ms") {
            ok = parse_int(value, 0, kMaxMs, cfg.abort_delay_ms);
        } else if (key == "run_start_delay_ms") {
            ok = parse_int(value, 0, kMaxMs, cfg.run_start_delay_ms);
        } else if (key == "idle_abort_carries") {
            ok = parse_bool(value, cfg.idle_abort_carries);
        } else if (key == "add_bos") {
            ok = parse_bool(value, cfg.add_bos);
        } else if (key == "prefill_abort_lag_ms") {
            ok = parse_int(value, 0, kMaxMs, cfg.prefill_abort_lag_ms);
        } else if (key == "abort_finish") {
            ok = parse_bool(value, cfg.abort_finish);
        } else if (key == "answer") {
            ok = !value.empty() && valid_utf8(value);
            cfg.answer = String(value);
        } else if (key == "context_shift") {
            ok = parse_bool(value, cfg.context_shift);
        } else if (key == "custom_template") {
            ok = parse_bool(value, cfg.custom_template);
        } else if (key == "history_kept") {
            ok = parse_bool(value, cfg.history_kept);
        } else if (key == "prefix_reuse") {
            ok = parse_bool(value, cfg.prefix_reuse);
        } else if (key == "callback_thread") {
            ok = parse_bool(value, cfg.callback_thread);
        } else if (key == "general.architecture") {
            // Read by rkllmd, not by the simulator: real .rkllm files carry this GGUF-style key
            // (see rkllmd's src/chat/model_meta.rs).
            ok = !value.empty() && valid_utf8(value);
        } else if (key == "tools_removable") {
            ok = parse_bool(value, cfg.tools_removable);
        } else if (key == "hidden_size") {
            ok = parse_int(value, 1, 65536, cfg.hidden_size);
        } else if (key == "image_tokens") {
            ok = parse_int(value, 0, 65536, cfg.image_tokens);
        } else if (key == "image_tokens_checked") {
            ok = parse_bool(value, cfg.image_tokens_checked);
        } else if (key == "hidden_keeps_cache") {
            ok = parse_bool(value, cfg.hidden_keeps_cache);
        } else if (key == "prompt_cache_save_us_per_token") {
            ok = parse_int(value, 0, kMaxUs, cfg.prompt_cache_save_us_per_token);
        } else if (key == "prompt_cache_load_us_per_token") {
            ok = parse_int(value, 0, kMaxUs, cfg.prompt_cache_load_us_per_token);
        } else if (key == "prompt_cache_write_fails") {
            ok = parse_bool(value, cfg.prompt_cache_write_fails);
        } else if (key == "prompt_cache_torn") {
            ok = parse_bool(value, cfg.prompt_cache_torn);
        } else {
            error = where + "unknown key '" + key + "'";
            return false;
        }
        if (!ok) {
            error = where + "invalid value for '" + key + "': '" + String(value) + "'";
            return false;
        }
    }
    if (!have_magic) {
        error = String(path) + " is empty, not an rkllm-sim model";
        return false;
    }
    if (cfg.answer_tokens_min > cfg.answer_tokens_max) {
        error = String(path) + ": answer_tokens_min is greater than answer_tokens_max";
        return false;
    }
    if (cfg.vocabulary.empty()) {
        for (const char* w : kDefaultVocabulary) cfg.vocabulary.emplace_back(w);
    }
    out = std::move(cfg);
    return true;
}

}  // namespace sim
