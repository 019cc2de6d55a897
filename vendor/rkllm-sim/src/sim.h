// Private declarations shared by all of the simulator's translation units.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

// The library's ABI is rkllm.h plus rkllm_sim_version, and the build command has no
// -fvisibility flag, so internal code opts out of the dynamic symbol table explicitly.
#define SIM_HIDDEN __attribute__((visibility("hidden")))

namespace sim SIM_HIDDEN {

// Containers and strings use this allocator rather than std::allocator. A template
// instantiation is only as visible as its arguments, so std::vector/std::basic_string code
// emitted here stays hidden; with std::allocator it would be exported as weak symbols.
template <class T>
struct Alloc {
    using value_type = T;
    Alloc() noexcept = default;
    template <class U>
    Alloc(const Alloc<U>&) noexcept {}  // NOLINT: allocators convert implicitly
    T* allocate(size_t n) {
        if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_alloc();
        return static_cast<T*>(::operator new(n * sizeof(T)));
    }
    void deallocate(T* p, size_t) noexcept { ::operator delete(p); }
    template <class U>
    bool operator==(const Alloc<U>&) const noexcept { return true; }
    template <class U>
    bool operator!=(const Alloc<U>&) const noexcept { return false; }
};

using String = std::basic_string<char, std::char_traits<char>, Alloc<char>>;
template <class T>
using Vec = std::vector<T, Alloc<T>>;

// CLOCK_MONOTONIC in microseconds (the trace's t_us and every delay use it).
int64_t now_us();
void sleep_us(int64_t us);
// Decimal text of n (std::to_string would return a std::string).
String decimal(int64_t n);

// Placeholder id for positions filled from embeddings or images: they have no token id and never
// take part in prefix reuse.
constexpr int32_t kOpaqueToken = -2;

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

}  // namespace sim
