#include "trace.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tokenizer.h"

namespace sim SIM_HIDDEN {
namespace {

void append_escaped(String& out, std::string_view s) {
    out += '"';
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            // Valid UTF-8 goes through as is; a stray byte would make the line invalid JSON.
            const size_t n = utf8_char_len(s, i);
            if (n == 0) {
                out += "\\ufffd";
                ++i;
            } else {
                out.append(s.substr(i, n));
                i += n;
            }
            continue;
        }
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
        ++i;
    }
    out += '"';
}

}  // namespace

JsonLine::JsonLine(const char* fn) : JsonLine(fn, now_us()) {}

JsonLine::JsonLine(const char* fn, int64_t t_us) {
    out_ += '{';
    str("fn", fn);
    num("t_us", t_us);
}

void JsonLine::key(const char* k) {
    if (!first_) out_ += ',';
    first_ = false;
    append_escaped(out_, k);
    out_ += ':';
}

JsonLine& JsonLine::str(const char* k, const char* value) {
    if (value == nullptr) return null(k);
    return str(k, std::string_view(value));
}

JsonLine& JsonLine::str(const char* k, std::string_view value) {
    key(k);
    append_escaped(out_, value);
    return *this;
}

JsonLine& JsonLine::num(const char* k, int64_t value) {
    key(k);
    out_ += decimal(value);
    return *this;
}

JsonLine& JsonLine::real(const char* k, double value) {
    if (!std::isfinite(value)) return null(k);
    key(k);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.7g", value);  // float precision; 0.9f prints as 0.9
    out_ += buf;
    return *this;
}

JsonLine& JsonLine::flag(const char* k, bool value) {
    key(k);
    out_ += value ? "true" : "false";
    return *this;
}

JsonLine& JsonLine::null(const char* k) {
    key(k);
    out_ += "null";
    return *this;
}

JsonLine& JsonLine::open(const char* k) {
    key(k);
    out_ += '{';
    first_ = true;
    return *this;
}

JsonLine& JsonLine::close() {
    out_ += '}';
    first_ = false;
    return *this;
}

String JsonLine::finish() {
    out_ += "}\n";
    return std::move(out_);
}

void trace_write(const String& path, const String& line) {
    if (path.empty()) return;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ssize_t n = -1;
    if (fd >= 0) {
        do {
            n = ::write(fd, line.data(), line.size());
        } while (n < 0 && errno == EINTR);
        ::close(fd);
    }
    if (n != static_cast<ssize_t>(line.size())) {
        // Tracing must never break inference; say so once instead of once per call.
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true)) {
            std::fprintf(stderr, "W rkllm-sim: cannot write trace file %s: %s\n", path.c_str(),
                         std::strerror(errno));
        }
    }
}

}  // namespace sim
