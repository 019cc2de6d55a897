// Loading of "rknn-sim 1" model files: strict, like the RKLLM simulator's, so that a typo in a
// key fails rknn_init instead of silently changing a test model.
#include "model.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace sim SIM_HIDDEN {
namespace rknn {
namespace {

constexpr std::string_view kMagic = "rknn-sim 1";
constexpr long kMaxFileBytes = 1 << 16;

std::string_view trim(std::string_view s) {
    const char* ws = " \t\r\n";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

bool parse_int(std::string_view v, int lo, int hi, int& out) {
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

bool apply(std::string_view key, std::string_view v, EncoderModel& m) {
    if (key == "name") {
        if (v.empty()) return false;
        m.name = String(v);
        return true;
    }
    if (key == "input_format") {
        if (v != "nhwc" && v != "nchw") return false;
        m.input_nchw = v == "nchw";
        return true;
    }
    struct IntKey {
        const char* name;
        int* slot;
        int lo;
        int hi;
    };
    const IntKey ints[] = {
        {"input_width", &m.input_width, 1, 8192},   {"input_height", &m.input_height, 1, 8192},
        {"input_channels", &m.input_channels, 1, 4}, {"image_tokens", &m.image_tokens, 1, 65536},
        {"embed_dim", &m.embed_dim, 1, 65536},      {"outputs", &m.outputs, 1, 8},
        {"load_ms", &m.load_ms, 0, 600000},         {"run_ms", &m.run_ms, 0, 600000},
        {"npu_cores", &m.npu_cores, 1, 3},
    };
    for (const IntKey& k : ints) {
        if (key == k.name) return parse_int(v, k.lo, k.hi, *k.slot);
    }
    struct BoolKey {
        const char* name;
        bool* slot;
    };
    const BoolKey bools[] = {
        {"fail_init", &m.fail_init}, {"fail_run", &m.fail_run}, {"hang_run", &m.hang_run}};
    for (const BoolKey& k : bools) {
        if (key == k.name) return parse_bool(v, *k.slot);
    }
    return false;
}

}  // namespace

bool load_encoder_model(const char* path, EncoderModel& out, String& error) {
    const String where = path != nullptr ? String(path) : String("(null)");
    if (path == nullptr) {
        error = "model path is NULL";
        return false;
    }
    std::FILE* f = std::fopen(path, "rb");
    if (f == nullptr) {
        error = "cannot open " + where;
        return false;
    }
    String text;
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        text.append(buf, n);
        if (text.size() > static_cast<size_t>(kMaxFileBytes)) break;
    }
    std::fclose(f);
    if (text.size() > static_cast<size_t>(kMaxFileBytes)) {
        error = where + " is not an rknn-sim model (too large)";
        return false;
    }
    EncoderModel m;
    Vec<String> seen;
    bool magic = false;
    std::string_view rest(text);
    while (!rest.empty()) {
        const size_t nl = rest.find('\n');
        const std::string_view line = trim(rest.substr(0, nl));
        rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
        if (line.empty() || line[0] == '#') continue;
        if (!magic) {
            if (line != kMagic) {
                error = where + " is not an rknn-sim model (first line must be 'rknn-sim 1')";
                return false;
            }
            magic = true;
            continue;
        }
        const size_t eq = line.find('=');
        const std::string_view key = trim(line.substr(0, eq));
        const std::string_view value = eq == std::string_view::npos ? std::string_view()
                                                                    : trim(line.substr(eq + 1));
        for (const String& s : seen) {
            if (s == key) {
                error = where + ": duplicate key " + String(key);
                return false;
            }
        }
        seen.emplace_back(key);
        if (eq == std::string_view::npos || !apply(key, value, m)) {
            error = where + ": invalid line '" + String(line) + "'";
            return false;
        }
    }
    if (!magic) {
        error = where + " is not an rknn-sim model (empty)";
        return false;
    }
    out = std::move(m);
    return true;
}

}  // namespace rknn
}  // namespace sim
