#pragma once

// Small probes shared by the suites: wait (bounded) for a condition, check one keeps holding,
// count a process's open file descriptors, pick a free loopback port, find a program on PATH.
// No hiredis here: the service suites that run without Redis use these too.

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
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

/// A TCP port on 127.0.0.1 that nothing listens on right now.
inline std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("free_port: socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        ::close(fd);
        throw std::runtime_error("free_port: bind failed");
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

/// Full path of `program` on PATH, or empty.
inline std::string find_program(std::string_view program) {
    const char* path = std::getenv("PATH");
    std::string p = path ? path : "/usr/bin:/bin";
    for (std::size_t start = 0; start <= p.size();) {
        auto end = p.find(':', start);
        if (end == std::string::npos) end = p.size();
        auto candidate = std::filesystem::path(p.substr(start, end - start)) / std::string(program);
        if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
        start = end + 1;
    }
    for (auto dir : {"/usr/bin/", "/usr/sbin/", "/usr/local/bin/"}) {
        auto candidate = std::string(dir) + std::string(program);
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return {};
}

} // namespace test
