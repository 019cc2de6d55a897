// The call trace: one JSON object per line, appended to the file named by RKLLM_SIM_TRACE.
#pragma once

#include <cstdint>
#include <string_view>

#include "sim.h"

namespace sim SIM_HIDDEN {

// Builds one trace line: {"fn":...,"t_us":..., fields...}.
class JsonLine {
public:
    explicit JsonLine(const char* fn);
    JsonLine(const char* fn, int64_t t_us);  // for an event stamped earlier

    JsonLine& str(const char* key, const char* value);  // NULL is written as null
    JsonLine& str(const char* key, std::string_view value);
    JsonLine& num(const char* key, int64_t value);
    JsonLine& real(const char* key, double value);
    JsonLine& flag(const char* key, bool value);
    JsonLine& null(const char* key);
    JsonLine& open(const char* key);  // starts a nested object
    JsonLine& close();                // ends it

    // The finished line, newline included.
    String finish();

private:
    void key(const char* k);

    String out_;
    bool first_ = true;
};

// Appends one line with a single write() on an O_APPEND descriptor, so that lines from several
// threads or processes never interleave. Does nothing when path is empty.
void trace_write(const String& path, const String& line);

}  // namespace sim
