#pragma once

// Where the limiter's commands go: the one server; the master that the sentinels name right
// now; or the cluster node that owns the limiter's hash slot. Each new connection asks the
// router for its targets, so a failover or a resharding is followed by reconnecting, and
// nothing else changes.

#include "../options.hpp"
#include "channel.hpp"
#include "failure.hpp"
#include "resp.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

inline redis_target target_of(const redis_endpoint& e) { return {e.host, e.port, {}}; }

/// Sends one command on a connection of its own to `at` and hands the reply to `done(reply,
/// failure)`: a sentinel's answer, a cluster's ASK. The connection closes after it.
template <class Done>
void one_shot(asio::any_io_executor ex, channel_settings s, redis_target at, std::vector<std::string> commands,
              Done done) {
    s.targets = [at](auto give) { give({at}, {}); };
    auto ch = std::make_shared<channel>(std::move(ex), std::move(s));
    // Every command but the last is a preamble (ASKING): only the last reply matters.
    for (std::size_t i = 0; i + 1 < commands.size(); ++i)
        ch->exec(make_request(std::move(commands[i]), [](reply_ptr, const failure&) {}));
    ch->exec(make_request(std::move(commands.back()),
                          [ch, done = std::move(done)](reply_ptr r, const failure& why) mutable {
                              ch->close(); // after this reply: nothing else is queued on it
                              done(std::move(r), why);
                          }));
}

class router {
public:
    /// `o` must outlive the router.
    explicit router(const redis_options& o) : o_(o) {}

    /// The settings every data connection uses, but for its checks (the caller adds them).
    channel_settings data_settings(const tls_setup& tls) const {
        channel_settings s;
        s.user = o_.user;
        s.password = o_.password;
        s.db = o_.db;
        s.connect_timeout = o_.connect_timeout;
        s.command_timeout = o_.command_timeout;
        s.tls = tls;
        return s;
    }

    /// The targets of a new data connection, in the order to try them, handed to `give(targets,
    /// failure)`. Sentinel: asks the sentinels first (on `ex`), so this may take a while.
    template <class Give>
    void async_targets(asio::any_io_executor ex, const tls_setup& tls, Give give) {
        switch (o_.topology) {
        case redis_topology::standalone:
            if (!o_.unix_socket.empty()) return give(std::vector<redis_target>{{{}, 0, o_.unix_socket}}, failure{});
            return give(std::vector<redis_target>{{o_.host, o_.port, {}}}, failure{});
        case redis_topology::cluster: return give(cluster_targets(), failure{});
        case redis_topology::sentinel:
            return async_ask_sentinels(std::move(ex), tls, [give = std::move(give)](std::optional<redis_endpoint> m,
                                                                                     const failure& why) mutable {
                if (!m) return give(std::vector<redis_target>{}, why);
                give(std::vector<redis_target>{target_of(*m)}, failure{});
            });
        }
    }

    /// A data connection went to `t`: the sentinels' master for the next check; the cluster
    /// seed that answered first next time.
    void connected(const redis_target& t) {
        std::lock_guard lk(mu_);
        last_ = t.name();
        const redis_endpoint e{t.host, t.port};
        if (o_.topology == redis_topology::sentinel) master_ = e;
        if (o_.topology == redis_topology::cluster)
            for (std::size_t i = 0; i < o_.seeds.size(); ++i)
                if (o_.seeds[i] == e) next_seed_ = i;
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

    /// Sentinel: is a check due of whether the master moved away from the one our connections
    /// went to? True at most once per `probe_interval` (for the caller that finds it due).
    /// A manual failover or a partition leaves the old master up and writable for a while, and
    /// the sentinels know first; the check bounds how long we keep writing to it.
    bool master_check_due() {
        if (o_.topology != redis_topology::sentinel) return false;
        {
            std::lock_guard lk(mu_);
            if (!master_) return false;
        }
        const auto now = steady::now().time_since_epoch().count();
        auto due = next_check_.load(std::memory_order_relaxed);
        const auto interval = std::chrono::duration_cast<steady::duration>(o_.probe_interval).count();
        return now >= due && next_check_.compare_exchange_strong(due, now + interval);
    }

    /// Asks the sentinels and calls `done(bool moved)`; no sentinel answering counts as "not
    /// moved" (keep what works).
    template <class Done>
    void async_master_moved(asio::any_io_executor ex, const tls_setup& tls, Done done) {
        async_ask_sentinels(std::move(ex), tls, [this, done = std::move(done)](std::optional<redis_endpoint> m,
                                                                               const failure&) mutable {
            std::optional<redis_endpoint> connected;
            {
                std::lock_guard lk(mu_);
                connected = master_;
            }
            done(m && connected && !(*m == *connected));
        });
    }

    /// Where the last connection went, for messages ("" before the first).
    std::string last_target() const {
        std::lock_guard lk(mu_);
        return last_;
    }

    /// Settings for a one-off connection to a data node (a cluster's ASK).
    channel_settings node_settings(const tls_setup& tls) const { return data_settings(tls); }

private:
    /// The node that owns our slot if known, then the seeds (starting with the one that
    /// answered last): a MOVED reply corrects the choice.
    std::vector<redis_target> cluster_targets() const {
        std::vector<redis_target> out;
        std::lock_guard lk(mu_);
        if (owner_) out.push_back(target_of(*owner_));
        const auto n = o_.seeds.size();
        for (std::size_t i = 0; i < n; ++i) out.push_back(target_of(o_.seeds[(next_seed_ + i) % n]));
        return out;
    }

    channel_settings sentinel_settings(const tls_setup& tls) const {
        channel_settings s;
        s.password = o_.sentinel_password; // the sentinels' own credentials, db 0
        s.connect_timeout = o_.connect_timeout;
        s.command_timeout = o_.command_timeout;
        s.tls = tls;
        return s;
    }

    /// Asks each sentinel in turn (starting with the last one that answered) for the master's
    /// address; `done(endpoint, failure)` with what each said when none names it.
    template <class Done>
    void async_ask_sentinels(asio::any_io_executor ex, const tls_setup& tls, Done done) {
        struct asking {
            router* self;
            asio::any_io_executor ex;
            tls_setup tls;
            Done done;
            std::size_t first = 0, i = 0;
            std::string errors;

            static void next(std::shared_ptr<asking> a) {
                auto& r = *a->self;
                const auto n = r.o_.seeds.size();
                if (a->i == n) {
                    return a->done(std::nullopt, failure::io("no sentinel named a master for '" +
                                                             r.o_.sentinel_master + "': " + a->errors));
                }
                const auto& seed = r.o_.seeds[(a->first + a->i) % n];
                one_shot(a->ex, r.sentinel_settings(a->tls), target_of(seed),
                         {encode({"SENTINEL", "get-master-addr-by-name", r.o_.sentinel_master})},
                         [a, seed](reply_ptr reply, const failure& why) {
                             auto& rt = *a->self;
                             const auto where = seed.host + ":" + std::to_string(seed.port);
                             if (!why && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
                                 auto port = parse_int(reply_text(reply->element[1]));
                                 if (port && *port > 0 && *port < 65536) {
                                     {
                                         std::lock_guard lk(rt.mu_);
                                         rt.next_sentinel_ = (a->first + a->i) % rt.o_.seeds.size();
                                     }
                                     return a->done(redis_endpoint{reply_text(reply->element[0]), static_cast<int>(*port)},
                                                    failure{});
                                 }
                             }
                             if (why)
                                 a->errors += where + ": " + why.message + "; ";
                             else
                                 a->errors += where + " does not know master '" + rt.o_.sentinel_master + "' (" +
                                              (reply_is_error(reply.get()) ? reply_text(reply.get()) : std::string("nil")) +
                                              "); ";
                             ++a->i;
                             next(a);
                         });
            }
        };
        auto a = std::make_shared<asking>(asking{this, std::move(ex), tls, std::move(done), 0, 0, {}});
        {
            std::lock_guard lk(mu_);
            a->first = next_sentinel_;
        }
        asking::next(a);
    }

    const redis_options& o_;
    mutable std::mutex mu_;
    std::optional<redis_endpoint> owner_;  // cluster: the node a MOVED named
    std::size_t next_seed_ = 0;            // cluster: the seed that answered last
    std::size_t next_sentinel_ = 0;        // sentinel: the sentinel that answered last
    std::string last_;
    std::optional<redis_endpoint> master_;    // sentinel: where our connections go
    std::atomic<std::int64_t> next_check_{0}; // sentinel: when master_check_due() is true again
};

} // namespace callguard::detail
