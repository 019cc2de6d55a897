// Small helpers: the one clock the simulator uses, sleeping on it, number formatting.
#include <cerrno>
#include <cstdio>
#include <ctime>

#include "sim.h"

namespace sim SIM_HIDDEN {

int64_t now_us() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

void sleep_us(int64_t us) {
    if (us <= 0) return;
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(us / 1000000);
    ts.tv_nsec = static_cast<long>(us % 1000000) * 1000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

String decimal(int64_t n) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
    return String(buf);
}

}  // namespace sim
