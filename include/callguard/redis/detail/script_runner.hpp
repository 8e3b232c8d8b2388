#pragma once

// Runs one script call wherever the topology puts it, over the configured connection mode:
// EVALSHA with the script loaded on NOSCRIPT, and a cluster's redirections followed. The reply
// may be an error reply only for errors that belong to the caller; everything else throws a
// `redis_error`.

#include "../errors.hpp"
#include "../options.hpp"
#include "connection.hpp"
#include "multiplexer.hpp"
#include "pool.hpp"
#include "router.hpp"
#include "script_cache.hpp"
#include "scripts.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace callguard::detail {

class script_runner {
public:
    /// Runs on each new connection before its first script (dataset marker, eviction advice).
    using connection_hook = std::function<void(redis_connection&)>;

    /// `o` must outlive the runner.
    script_runner(const redis_options& o, connection_hook on_connect)
        : router_(o), pool_(o), on_connect_(std::move(on_connect)) {
        pool_.set_opener([this] { return router_.open(); });
        if (o.connection_mode == redis_connection_mode::multiplexed)
            for (std::size_t i = 0; i < o.multiplexed_connections; ++i)
                muxes_.push_back(std::make_unique<multiplexed_connection>([this] {
                    auto c = router_.open();
                    if (on_connect_) on_connect_(*c);
                    return c;
                }));
    }

    /// One script call. A cluster's MOVED re-points the router and reconnects, ASK sends this
    /// one call to the named node, TRYAGAIN / CLUSTERDOWN (a slot in migration, a failover in
    /// the cluster) wait a little: all bounded by `max_hops`. A READONLY node (a master demoted
    /// by a failover) fails the call as an I/O error, so the breaker and the fail mode apply
    /// until a new connection finds the new master. With Sentinel, the sentinels are also asked
    /// once per probe interval whether the master moved, so a master demoted while still
    /// writable is left within that interval.
    reply_ptr run(script_id s, std::initializer_list<std::string_view> keys,
                  std::initializer_list<std::string_view> args) {
        static constexpr int max_hops = 5;
        if (router_.master_moved()) reconnect_all(); // Sentinel moved the master: follow now
        std::optional<redis_endpoint> ask;
        for (int hop = 0;; ++hop) {
            auto r = ask ? send_asking(*ask, s, keys, args)
                         : muxes_.empty() ? send_pooled(s, keys, args) : send_multiplexed(s, keys, args);
            ask.reset();
            if (!reply_is_error(r.get())) return r;
            const auto text = reply_text(r.get());
            const bool more = hop < max_hops;
            if (more && reply_error_is(r.get(), "MOVED")) {
                if (auto to = redirect_target(text)) {
                    router_.moved(std::move(*to));
                    reconnect_all();
                    continue;
                }
            }
            if (more && reply_error_is(r.get(), "ASK")) {
                if ((ask = redirect_target(text))) continue;
            }
            if (more && (reply_error_is(r.get(), "TRYAGAIN") || reply_error_is(r.get(), "CLUSTERDOWN"))) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10 * (hop + 1)));
                continue;
            }
            if (reply_error_is(r.get(), "READONLY")) {
                router_.forget();
                reconnect_all();
                throw redis_io_error(router_.last_target() + " no longer takes writes (" + text +
                                     "): reconnecting to the current master");
            }
            throw redis_reply_error("Redis refused the script: " + text);
        }
    }

    /// Every connection made before this point is re-made at its next use.
    void reconnect_all() noexcept {
        pool_.drop_idle();
        for (auto& m : muxes_) m->invalidate();
    }

    /// Idle pooled connections are closed (after an I/O failure they are likely dead too).
    void drop_idle() noexcept { pool_.drop_idle(); }

    /// Multiplexed mode: round trips made so far; 0 in pooled mode.
    std::uint64_t round_trips() const noexcept {
        std::uint64_t n = 0;
        for (const auto& m : muxes_) n += m->rounds();
        return n;
    }

    /// Connections open right now (pooled: idle + in use; multiplexed: the shared sockets).
    std::size_t open_connections() const {
        std::size_t n = pool_.open_connections();
        for (const auto& m : muxes_) n += m->connected() ? 1 : 0;
        return n;
    }

private:
    using command_view = std::span<const std::string_view>;

    /// EVALSHA through `send` (a connection's or the multiplexer's), loading the script on
    /// NOSCRIPT (a restarted or failed-over server, SCRIPT FLUSH) and sending it once more.
    template <class Send>
    reply_ptr evalsha(Send&& send, script_id s, std::initializer_list<std::string_view> keys,
                      std::initializer_list<std::string_view> args) {
        auto load_here = [&] {
            const std::array<std::string_view, 3> load{"SCRIPT", "LOAD", script_source(s)};
            auto r = send(command_view(load));
            if (reply_is_error(r.get()) || r->type != REDIS_REPLY_STRING)
                throw redis_reply_error("SCRIPT LOAD failed: " + reply_text(r.get()));
            return scripts_.remember(s, reply_text(r.get()));
        };
        std::string loaded;
        std::string_view sha = scripts_.sha(s);
        if (sha.empty()) sha = loaded = load_here();
        const auto nkeys = std::to_string(keys.size());
        std::array<std::string_view, 3 + 2 + 6> argv; // the most any script takes: acquire
        std::size_t n = 0;
        argv[n++] = "EVALSHA";
        argv[n++] = sha;
        argv[n++] = nkeys;
        for (auto k : keys) argv[n++] = k;
        for (auto a : args) argv[n++] = a;
        const command_view cmd(argv.data(), n);
        auto r = send(cmd);
        if (reply_error_is(r.get(), "NOSCRIPT")) {
            loaded = load_here();
            argv[1] = loaded;
            r = send(cmd);
        }
        return r;
    }

    /// Pooled: a connection of our own for the call. One that turns out closed (CLIENT KILL,
    /// the server's idle `timeout`, a restart) is replaced and the call sent once more on a new
    /// connection: every script is idempotent per call id, so even one that did run is safe to
    /// repeat. A timeout is never retried: the server may be stuck.
    reply_ptr send_pooled(script_id s, std::initializer_list<std::string_view> keys,
                          std::initializer_list<std::string_view> args) {
        auto on = [&](connection_pool::lease& c) {
            if (!c.reused() && on_connect_) on_connect_(*c);
            return evalsha([&](command_view cmd) { return c->command(cmd); }, s, keys, args);
        };
        {
            auto c = pool_.get();
            if (!c.reused()) return on(c);
            try {
                return on(c);
            } catch (const redis_timeout_error&) {
                throw;
            } catch (const redis_io_error&) {
            } // the broken connection goes back (and is destroyed) here
        }
        pool_.drop_idle(); // its siblings were likely closed too
        auto fresh = pool_.get();
        return on(fresh);
    }

    /// Multiplexed: the call joins the next round on a shared socket; the multiplexer does the
    /// reconnect-and-send-once-more for a closed connection.
    reply_ptr send_multiplexed(script_id s, std::initializer_list<std::string_view> keys,
                               std::initializer_list<std::string_view> args) {
        auto& m = *muxes_[muxes_.size() == 1 ? 0 : thread_slot() % muxes_.size()];
        return evalsha([&](command_view cmd) { return m.call(cmd); }, s, keys, args);
    }

    /// A cluster's ASK: this one call goes to `at`, each EVALSHA preceded by ASKING.
    reply_ptr send_asking(const redis_endpoint& at, script_id s,
                          std::initializer_list<std::string_view> keys,
                          std::initializer_list<std::string_view> args) {
        auto c = router_.open_at(at);
        return evalsha(
            [&](command_view cmd) {
                if (cmd.front() == "EVALSHA") c->command({"ASKING"});
                return c->command(cmd);
            },
            s, keys, args);
    }

    router router_;
    connection_pool pool_;
    connection_hook on_connect_;
    script_cache scripts_;
    std::vector<std::unique_ptr<multiplexed_connection>> muxes_; // multiplexed mode only
};

} // namespace callguard::detail
