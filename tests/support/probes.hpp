#pragma once

// Small probes shared by the suites: wait (bounded) for a condition, check one keeps holding,
// count a process's open file descriptors.

#include <chrono>
#include <dirent.h>
#include <string>
#include <sys/types.h>
#include <thread>

namespace test {

/// Polls `done` every 50 ms for up to `limit`; true as soon as it holds.
template <class F>
bool eventually(F&& done, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (done()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return done();
}

/// Polls `holds` every 50 ms for `span`; true only if it held at every look. For "stays so"
/// checks, where one look right after the action could pass before the change would show.
template <class F>
bool holds_for(F&& holds, std::chrono::milliseconds span) {
    const auto deadline = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < deadline) {
        if (!holds()) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return holds();
}

/// Open file descriptors of `pid` (0: this process), from /proc.
inline long open_fds(pid_t pid = 0) {
    const auto dir = "/proc/" + (pid ? std::to_string(pid) : std::string("self")) + "/fd";
    long n = 0;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        ::closedir(d);
    }
    return n;
}

} // namespace test
