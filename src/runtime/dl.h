// Opening a runtime library with dlopen and resolving its functions: shared by the RKLLM shim
// (shim.cpp) and the RKNN shim (rknn/shim.cpp). Neither library is linked, so a board without
// one reports a clear error instead of failing to start.
#pragma once

#include <cstddef>
#include <cstdio>

#include <dlfcn.h>
#include <link.h>

namespace rkd_dl {

// Writes `text` (or "unknown error") into the caller's buffer, truncated, always terminated.
inline void copy_message(char* out, size_t out_len, const char* text) {
    if (out == nullptr || out_len == 0) {
        return;
    }
    std::snprintf(out, out_len, "%s", text != nullptr ? text : "unknown error");
}

// Opens `name` (the dlopen search applies unless it contains '/'); NULL with dlerror's text in
// `err` on failure. RTLD_NOW: an unresolvable dependency fails here, not in the middle of a run.
inline void* open(const char* name, char* err, size_t err_len) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        copy_message(err, err_len, dlerror());
    }
    return lib;
}

// Resolves `name` into `slot`; false with dlerror's text in `err` when the library lacks it.
template <typename F>
bool resolve(void* lib, const char* name, F& slot, char* err, size_t err_len) {
    dlerror();  // clear a stale error so the one below belongs to this lookup
    void* sym = dlsym(lib, name);
    if (sym == nullptr) {
        copy_message(err, err_len, dlerror());
        return false;
    }
    slot = reinterpret_cast<F>(sym);
    return true;
}

// An optional function: NULL when the library lacks it.
template <typename F>
F optional(void* lib, const char* name) {
    return reinterpret_cast<F>(dlsym(lib, name));
}

// Writes the file the loader chose for `lib` into `path` (`name` when it cannot tell).
inline void loaded_from(void* lib, const char* name, char* path, size_t path_len) {
    const char* where = name;
    struct link_map* map = nullptr;
    if (dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr &&
        map->l_name[0] != '\0') {
        where = map->l_name;
    }
    copy_message(path, path_len, where);
}

}  // namespace rkd_dl
