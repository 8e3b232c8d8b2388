#pragma once

// One real redis-server per test process, and a fresh key prefix per fixture object, so tests
// share the server but never each other's slots.

#include "../support/redis_server.hpp"

#include <callguard/backends/redis.hpp>

#include <atomic>
#include <memory>
#include <string>

namespace test {

inline redis_server& shared_redis() {
    static redis_server server; // started on first use, killed at exit
    return server;
}

inline std::string unique_prefix(std::string_view stem = "t") {
    static std::atomic<int> n{0};
    return std::string(stem) + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

/// Contract fixture: every backend it makes uses the same server and prefix.
struct redis_fixture {
    using backend_type = callguard::redis_backend;
    std::string prefix = unique_prefix("contract");
    backend_type make_backend() { return backend_type(shared_redis().url(), prefix); }
};

/// The same over the connection pool instead of the default multiplexed socket.
struct redis_pooled_fixture {
    using backend_type = callguard::redis_backend;
    std::string prefix = unique_prefix("contract-pooled");
    backend_type make_backend() {
        auto o = callguard::redis_options::from_url(shared_redis().url());
        o.key_prefix = prefix;
        o.connection_mode = callguard::redis_connection_mode::pooled;
        o.pool_size = 8;
        return backend_type(std::move(o));
    }
};

/// Options for a backend at `url` with short timeouts, so failure tests stay quick.
inline callguard::redis_options quick_options(std::string_view url, std::string prefix) {
    auto o = callguard::redis_options::from_url(url);
    o.key_prefix = std::move(prefix);
    o.connect_timeout = std::chrono::milliseconds(200);
    o.command_timeout = std::chrono::milliseconds(200);
    o.probe_interval = std::chrono::milliseconds(300);
    o.on_warning = [](std::string_view) {};
    return o;
}

inline callguard::redis_options quick_options(const redis_server& server, std::string prefix) {
    return quick_options(server.url(), std::move(prefix));
}

} // namespace test
