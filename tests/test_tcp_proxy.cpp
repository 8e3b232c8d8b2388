// The fault-injection proxy itself, against a loopback echo server: it must forward, delay,
// stall and cut exactly as told, or the fault tests built on it prove nothing.

#include "support/probes.hpp"
#include "support/tcp_proxy.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <thread>

using namespace std::chrono_literals;

namespace {

/// Echoes every byte back, one connection at a time, until destroyed.
class echo_server {
public:
    echo_server() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd_, 16) == 0);
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] {
            while (!stop_) {
                pollfd p{fd_, POLLIN, 0};
                if (::poll(&p, 1, 20) <= 0) continue;
                int c = ::accept(fd_, nullptr, nullptr);
                if (c < 0) continue;
                std::thread([c] {
                    char buf[4096];
                    ssize_t n;
                    while ((n = ::read(c, buf, sizeof buf)) > 0)
                        if (::write(c, buf, static_cast<std::size_t>(n)) != n) break;
                    ::close(c);
                }).detach();
            }
        });
    }
    ~echo_server() {
        stop_ = true;
        thread_.join();
        ::close(fd_);
    }
    std::uint16_t port() const { return port_; }

private:
    int fd_;
    std::uint16_t port_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

int connect_to(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return fd;
}

/// Sends `msg` and reads up to msg.size() bytes back within `wait`; returns what came.
std::string round_trip(int fd, const std::string& msg, std::chrono::milliseconds wait) {
    REQUIRE(::write(fd, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
    std::string got;
    auto deadline = std::chrono::steady_clock::now() + wait;
    while (got.size() < msg.size() && std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10) <= 0) continue;
        char buf[4096];
        auto n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
    }
    return got;
}

} // namespace

TEST_CASE("tcp_proxy forwards, delays, stalls, cuts and drops as told") {
    echo_server echo;
    test::tcp_proxy proxy(echo.port());
    int fd = connect_to(proxy.port());
    CHECK(round_trip(fd, "hello", 1s) == "hello");

    proxy.set_latency(100ms);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(round_trip(fd, "slow", 2s) == "slow");
    CHECK(std::chrono::steady_clock::now() - t0 >= 190ms); // 100 ms each way
    proxy.set_latency(0ms);

    proxy.set_mode(test::tcp_proxy::mode::stall);
    CHECK(round_trip(fd, "stuck", 200ms).empty());
    proxy.set_mode(test::tcp_proxy::mode::pass);
    CHECK(round_trip(fd, "", 300ms) == ""); // the stalled bytes flow again once resumed
    std::string rest;
    char buf[16];
    auto deadline = std::chrono::steady_clock::now() + 1s;
    while (rest.size() < 5 && std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10) > 0) {
            auto n = ::read(fd, buf, sizeof buf);
            if (n <= 0) break;
            rest.append(buf, static_cast<std::size_t>(n));
        }
    }
    CHECK(rest == "stuck");

    proxy.cut_replies_after(3);
    int fd2 = connect_to(proxy.port());
    CHECK(round_trip(fd2, "abcdef", 1s) == "abc"); // cut mid-reply
    ::close(fd2);
    proxy.cut_replies_after(static_cast<std::size_t>(-1) >> 1);

    CHECK(proxy.connections() >= 1);
    proxy.drop_all();
    char one;
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 1000) == 1);
    CHECK(::read(fd, &one, 1) <= 0); // reset by the proxy
    ::close(fd);

    proxy.set_mode(test::tcp_proxy::mode::blackhole);
    int fd3 = connect_to(proxy.port()); // accepted, never answered
    CHECK(round_trip(fd3, "void", 200ms).empty());
    ::close(fd3);
    CHECK(test::eventually([&] { return proxy.accepted() == 3; }, 5s)); // accepted on the proxy's thread
}

TEST_CASE("free_port: distinct ports a server can bind, outside the range outgoing connections use") {
    const auto [ephemeral_lo, ephemeral_hi] = test::detail::ephemeral_ports();
    std::set<std::uint16_t> seen;
    for (int i = 0; i < 50; ++i) {
        const auto port = test::free_port();
        CHECK(seen.insert(port).second); // never the same port twice in one process
        CHECK((port < ephemeral_lo || port > ephemeral_hi)); // the kernel's fallback would fail this
        // A server can listen there (the port is not one a test's connection can hold).
        const int fd = test::detail::bind_loopback(port);
        REQUIRE(fd >= 0);
        CHECK(::listen(fd, 1) == 0);
        ::close(fd);
    }
}
