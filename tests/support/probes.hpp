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

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

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

namespace detail {

/// A TCP socket bound to 127.0.0.1:`port` (0: a port the kernel chooses), or -1 if it is taken.
inline int bind_loopback(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("free_port: socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    ::close(fd);
    return -1;
}

/// True if a listening socket could bind 127.0.0.1:`port` right now.
inline bool port_free(std::uint16_t port) {
    const int fd = bind_loopback(port);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

/// The kernel's range for outgoing connections' local ports (ip_local_port_range).
inline std::pair<int, int> ephemeral_ports() {
    std::pair<int, int> range{32768, 60999};
    if (std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
        int lo = 0, hi = 0;
        if (std::fscanf(f, "%d %d", &lo, &hi) == 2 && lo > 0 && hi >= lo) range = {lo, hi};
        std::fclose(f);
    }
    return range;
}

} // namespace detail

/// A TCP port on 127.0.0.1 that nothing listens on right now, for a server a test starts.
/// Chosen at random outside the kernel's range for outgoing connections: a port from that range
/// (what binding port 0 gives) can be taken, between this check and the server's bind, as the
/// local end of any connection another test makes, and the server then fails to start.
inline std::uint16_t free_port() {
    static std::mt19937 pick(static_cast<std::uint32_t>(::getpid()) ^
                             static_cast<std::uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
    static std::mutex mu;
    static std::vector<std::uint16_t> given; // never hand out one port twice (servers made in a row)
    const auto [ephemeral_lo, ephemeral_hi] = detail::ephemeral_ports();
    // Below the range if there is room (10000 up to it), else above it.
    const int lo = ephemeral_lo > 11000 ? 10000 : ephemeral_hi + 1;
    const int hi = ephemeral_lo > 11000 ? ephemeral_lo - 1 : 65535;
    if (hi > lo) {
        std::lock_guard lk(mu);
        std::uniform_int_distribution<int> in(lo, hi);
        for (int attempt = 0; attempt < 200; ++attempt) {
            const auto port = static_cast<std::uint16_t>(in(pick));
            if (std::find(given.begin(), given.end(), port) != given.end() || !detail::port_free(port)) continue;
            given.push_back(port);
            return port;
        }
    }
    // Every candidate taken (or no room outside the range): let the kernel choose.
    const int fd = detail::bind_loopback(0);
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (fd < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        if (fd >= 0) ::close(fd);
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
