#pragma once

// Where the limiter's commands go: the one server; the master that the sentinels name right
// now; or the cluster node that owns the limiter's hash slot. New connections ask the router, so
// a failover or a resharding is followed by reconnecting, and nothing else changes.

#include "connection.hpp"
#include "../errors.hpp"
#include "../options.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace callguard::detail {

/// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" -> the endpoint; nothing if malformed.
inline std::optional<redis_endpoint> redirect_target(std::string_view error) {
    auto sp = error.rfind(' ');
    if (sp == std::string_view::npos) return std::nullopt;
    auto hostport = error.substr(sp + 1);
    auto colon = hostport.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    auto port = parse_int(hostport.substr(colon + 1));
    if (!port || *port < 1 || *port > 65535) return std::nullopt;
    return redis_endpoint{std::string(hostport.substr(0, colon)), static_cast<int>(*port)};
}

class router {
public:
    explicit router(const redis_options& o) : o_(o) {
        sentinel_options_ = o;
        sentinel_options_.user.clear();
        sentinel_options_.password = o.sentinel_password;
        sentinel_options_.db = 0;
    }

    /// A new connection to where commands should go now. Throws redis_error.
    std::unique_ptr<redis_connection> open() {
        switch (o_.topology) {
        case redis_topology::standalone: return std::make_unique<redis_connection>(o_);
        case redis_topology::sentinel: return open_master();
        case redis_topology::cluster: return open_cluster_node();
        }
        throw redis_io_error("unknown topology");
    }

    /// A one-off connection to `at` (a cluster node named by an ASK redirection).
    std::unique_ptr<redis_connection> open_at(const redis_endpoint& at) {
        return std::make_unique<redis_connection>(o_, &at);
    }

    /// A MOVED redirection: the limiter's slot is served by `to` from now on.
    void moved(redis_endpoint to) {
        std::lock_guard lk(mu_);
        owner_ = std::move(to);
    }

    /// The node we wrote to refused (READONLY: a demoted master); ask again next time.
    void forget() {
        std::lock_guard lk(mu_);
        owner_.reset();
    }

    /// Sentinel: has the master moved away from the one our connections were opened to? Asks
    /// the sentinels at most once per `probe_interval` (the caller that finds the check due does
    /// it; everyone else returns at once). A manual failover or a partition leaves the old master
    /// up and writable for a while, and the sentinels know first; this bounds how long we keep
    /// writing to it.
    bool master_moved() {
        if (o_.topology != redis_topology::sentinel) return false;
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        auto due = next_check_.load(std::memory_order_relaxed);
        const auto interval =
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(o_.probe_interval).count();
        if (now < due || !next_check_.compare_exchange_strong(due, now + interval)) return false;
        std::optional<redis_endpoint> connected;
        {
            std::lock_guard lk(mu_);
            connected = master_;
        }
        if (!connected) return false;
        try {
            auto named = ask_sentinels();
            return !(named == *connected);
        } catch (const redis_error&) {
            return false; // no sentinel answers: keep what works
        }
    }

    /// Where the last connection went, for messages ("" before the first).
    std::string last_target() const {
        std::lock_guard lk(mu_);
        return last_;
    }

private:
    /// Asks each sentinel in turn (starting with the last one that answered) for the master's
    /// address. Throws redis_io_error naming what each said when none names it.
    redis_endpoint ask_sentinels() {
        std::string errors;
        const auto n = o_.seeds.size();
        const std::size_t first = [&] {
            std::lock_guard lk(mu_);
            return next_seed_;
        }();
        for (std::size_t i = 0; i < n; ++i) {
            const auto& s = o_.seeds[(first + i) % n];
            const auto where = s.host + ":" + std::to_string(s.port);
            try {
                redis_connection sentinel(sentinel_options_, &s);
                auto r = sentinel.command({"SENTINEL", "get-master-addr-by-name", o_.sentinel_master});
                if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
                    auto port = parse_int(reply_text(r->element[1]));
                    if (port && *port > 0 && *port < 65536) {
                        std::lock_guard lk(mu_);
                        next_seed_ = (first + i) % n;
                        return redis_endpoint{reply_text(r->element[0]), static_cast<int>(*port)};
                    }
                }
                errors += where + " does not know master '" + o_.sentinel_master + "' (" +
                          (reply_is_error(r.get()) ? reply_text(r.get()) : std::string("nil")) + "); ";
            } catch (const redis_error& e) {
                errors += where + ": " + e.what() + "; ";
            }
        }
        throw redis_io_error("no sentinel named a master for '" + o_.sentinel_master + "': " + errors);
    }

    /// Connects to the master the sentinels name and checks with ROLE that it really is one:
    /// during a failover a sentinel may still name the old master, back as a replica.
    std::unique_ptr<redis_connection> open_master() {
        const auto master = ask_sentinels();
        {
            std::lock_guard lk(mu_);
            last_ = master.host + ":" + std::to_string(master.port);
        }
        auto c = std::make_unique<redis_connection>(o_, &master);
        auto role = c->command({"ROLE"});
        const auto what = role && role->type == REDIS_REPLY_ARRAY && role->elements > 0
                              ? reply_text(role->element[0])
                              : reply_text(role.get());
        if (what != "master")
            throw redis_io_error("the sentinels name " + last_target() + " as master '" + o_.sentinel_master +
                                 "', but its ROLE is '" + what + "' (a failover is under way)");
        std::lock_guard lk(mu_);
        master_ = master;
        return c;
    }

    /// The node that owns our slot if known, else the seeds in turn; a MOVED reply corrects it.
    std::unique_ptr<redis_connection> open_cluster_node() {
        std::optional<redis_endpoint> owner;
        std::size_t first = 0;
        {
            std::lock_guard lk(mu_);
            owner = owner_;
            first = next_seed_;
        }
        if (owner) {
            try {
                return connect_node(*owner);
            } catch (const redis_io_error&) {
                forget(); // the owner is gone: a seed will redirect us to the new one
            }
        }
        std::string errors;
        const auto n = o_.seeds.size();
        for (std::size_t i = 0; i < n; ++i) {
            const auto& s = o_.seeds[(first + i) % n];
            try {
                auto c = connect_node(s);
                std::lock_guard lk(mu_);
                next_seed_ = (first + i) % n;
                return c;
            } catch (const redis_io_error& e) {
                errors += s.host + ":" + std::to_string(s.port) + ": " + e.what() + "; ";
            }
        }
        throw redis_io_error("no cluster node answered: " + errors);
    }

    std::unique_ptr<redis_connection> connect_node(const redis_endpoint& at) {
        auto c = std::make_unique<redis_connection>(o_, &at);
        std::lock_guard lk(mu_);
        last_ = at.host + ":" + std::to_string(at.port);
        return c;
    }

    const redis_options& o_;
    redis_options sentinel_options_; // the sentinels' own credentials, db 0
    mutable std::mutex mu_;
    std::optional<redis_endpoint> owner_; // cluster: the node a MOVED named
    std::size_t next_seed_ = 0;           // the seed that answered last
    std::string last_;
    std::optional<redis_endpoint> master_;    // sentinel: where our connections go
    std::atomic<std::int64_t> next_check_{0}; // sentinel: when master_moved() asks again
};

} // namespace callguard::detail
