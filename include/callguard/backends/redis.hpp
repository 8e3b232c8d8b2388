#pragma once

// The Redis backend: one cap shared by every process that points at the same Redis and key
// prefix. Each operation is one Lua script call (EVALSHA), atomic on the server. Needs hiredis
// (CMake target callguard::redis); works with hiredis 0.14 and 1.x.

#include "../backend.hpp"
#include "../redis/connection.hpp"
#include "../redis/errors.hpp"
#include "../redis/multiplexer.hpp"
#include "../redis/options.hpp"
#include "../redis/pool.hpp"
#include "../redis/router.hpp"
#include "../redis/scripts.hpp"

#include <fmt/core.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

namespace callguard {

/// Fleet-wide backend over Redis.
///
/// Construction never connects and never throws for an unreachable server (only malformed
/// options throw): connections are made on first use, so fail-open works from the first call.
///
/// Failure handling: every failure throws a `redis_error` (a `backend_error`), which the limiter
/// turns into its fail-mode decision. After a failure a circuit breaker opens: calls throw
/// `redis_unavailable` at once, without touching the network, and at most one call per
/// `probe_interval` tries Redis again; its success closes the breaker. So a dead or frozen Redis
/// costs at most one timeout, not one per call. Releases that fail meanwhile are kept (bounded,
/// deduplicated) and replayed once Redis answers, so a slot is not held for the whole TTL.
///
/// Copies share connections, breaker and queue (a backend is a handle).
class redis_backend {
public:
    explicit redis_backend(std::string_view url, std::string_view key_prefix = "calls")
        : redis_backend(with_prefix(redis_options::from_url(url), key_prefix)) {}

    explicit redis_backend(redis_options options)
        : st_(std::make_shared<state>(std::move(options))) {}

    slot_reply try_acquire(const slot_request& req) {
        const auto cap = std::to_string(req.max_active);
        const auto ttl = std::to_string(req.ttl.count());
        const auto tenant_cap = std::to_string(req.tenant_max);
        auto r = guarded([&] {
            return st_->eval(script::acquire, {st_->active_key, st_->owners_key},
                             {req.call_id, cap, ttl, req.tenant, tenant_cap, st_->base});
        });
        auto [code, live] = pair_of(r.get());
        static constexpr std::array<slot_state, 4> states{
            slot_state::acquired, slot_state::already_held, slot_state::rejected,
            slot_state::rejected_tenant};
        if (code < 0 || code > 3) throw redis_reply_error("unexpected acquire reply");
        return {states[static_cast<std::size_t>(code)], live};
    }

    release_reply release(std::string_view call_id) {
        try {
            auto r = guarded([&] {
                return st_->eval(script::release, {st_->active_key, st_->owners_key},
                                 {call_id, st_->base});
            });
            auto [freed, live] = pair_of(r.get());
            return {freed == 1, live};
        } catch (const redis_error&) {
            st_->keep_for_replay(call_id);
            throw;
        }
    }

    bool refresh(std::string_view call_id, std::chrono::milliseconds ttl) {
        const auto ttl_text = std::to_string(ttl.count());
        auto r = guarded([&] {
            return st_->eval(script::refresh, {st_->active_key, st_->owners_key},
                             {call_id, ttl_text, st_->base});
        });
        return integer_of(r.get()) == 1;
    }

    std::int64_t active_count() {
        auto r = guarded([&] { return st_->eval(script::count, {st_->active_key}, {}); });
        return integer_of(r.get());
    }

    std::size_t purge_expired() {
        auto r = guarded([&] {
            return st_->eval(script::cleanup, {st_->active_key, st_->owners_key}, {st_->base});
        });
        return static_cast<std::size_t>(integer_of(r.get()));
    }

    std::string_view name() const noexcept { return "redis"; }
    bool healthy() const noexcept { return !st_->breaker_open.load(); }

    const redis_options& options() const noexcept { return st_->pool.options(); }
    /// Releases waiting to be replayed.
    std::size_t pending_releases() const {
        std::lock_guard lk(st_->pending_mu);
        return st_->pending.size();
    }
    /// Times a new connection found the limiter's keys gone although this backend had seen them:
    /// the server restarted without persistence, was flushed, or failed over to an empty replica.
    /// Checked on every new connection (a restart always breaks the old ones); a FLUSHALL under a
    /// live connection is found at the next reconnect.
    std::uint64_t data_resets() const noexcept { return st_->resets.load(); }

    /// Multiplexed mode: round trips made so far, each carrying one command or more (pipelining
    /// at work when this grows slower than the operations); 0 in pooled mode.
    std::uint64_t round_trips() const noexcept {
        std::uint64_t n = 0;
        for (const auto& m : st_->muxes) n += m->rounds();
        return n;
    }

    /// Connections open right now (pooled: idle + in use; multiplexed: the shared sockets).
    std::size_t open_connections() const {
        std::size_t n = st_->pool.open_connections();
        for (const auto& m : st_->muxes) n += m->connected() ? 1 : 0;
        return n;
    }

private:
    enum class script : std::size_t { acquire, release, refresh, count, cleanup, count_ };
    static constexpr std::array<std::string_view, 5> sources{
        detail::lua::acquire, detail::lua::release, detail::lua::refresh, detail::lua::count,
        detail::lua::cleanup};
    static constexpr std::size_t replay_batch = 64;

    static redis_options with_prefix(redis_options o, std::string_view prefix) {
        o.key_prefix = std::string(prefix);
        return o;
    }

    struct state {
        detail::connection_pool pool;
        std::string base, active_key, owners_key, epoch_key;

        // A script's SHA never changes once known: written once under the mutex, then read
        // without it (the flag publishes the string).
        std::mutex sha_mu;
        std::array<std::string, static_cast<std::size_t>(script::count_)> shas;
        std::array<std::atomic<bool>, static_cast<std::size_t>(script::count_)> sha_known{};

        std::atomic<bool> breaker_open{false};
        std::atomic<std::int64_t> next_probe_ns{0};
        std::mutex error_mu;
        std::string last_error;

        mutable std::mutex pending_mu;
        std::unordered_set<std::string> pending;
        std::atomic<std::size_t> pending_count{0};
        std::atomic<bool> eviction_checked{false};
        std::mutex epoch_mu;
        std::string known_epoch;          // the dataset's marker as this backend last saw it
        std::atomic<std::uint64_t> resets{0};
        bool dropped_warned = false;

        detail::router router{pool.options()};
        // Multiplexed mode: the shared sockets (the pool then stays empty).
        std::vector<std::unique_ptr<detail::multiplexed_connection>> muxes;

        explicit state(redis_options o) : pool(validated(std::move(o))) {
            base = "{" + pool.options().key_prefix + "}";
            active_key = base + ":active";
            owners_key = base + ":owners";
            epoch_key = base + ":epoch";
            pool.set_opener([this] { return router.open(); });
            if (pool.options().connection_mode == redis_connection_mode::multiplexed)
                for (std::size_t i = 0; i < pool.options().multiplexed_connections; ++i)
                    muxes.push_back(std::make_unique<detail::multiplexed_connection>([this] {
                        auto c = router.open();
                        on_new_connection(*c);
                        return c;
                    }));
        }

        static redis_options validated(redis_options o) {
            o.validate();
            if (!o.on_warning)
                o.on_warning = [](std::string_view msg) {
                    fmt::print(stderr, "[CAPACITY] REDIS_WARNING {}\n", msg);
                };
            return o;
        }

        static std::int64_t now_ns() noexcept {
            return std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                .count();
        }

        /// May this call touch the network? Always while healthy; while the breaker is open,
        /// only the one caller that wins the next probe slot.
        bool allow() noexcept {
            if (!breaker_open.load()) return true;
            auto due = next_probe_ns.load();
            const auto now = now_ns();
            return now >= due &&
                   next_probe_ns.compare_exchange_strong(
                       due, now + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      pool.options().probe_interval)
                                      .count());
        }

        void on_failure(const redis_error& e) noexcept {
            try {
                std::lock_guard lk(error_mu);
                last_error = e.what();
            } catch (...) {
            }
            next_probe_ns.store(now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                               pool.options().probe_interval)
                                               .count());
            breaker_open.store(true);
            if (dynamic_cast<const redis_io_error*>(&e)) pool.drop_idle();
        }

        std::string unavailable_message() {
            std::lock_guard lk(error_mu);
            return "Redis unavailable (circuit open, next probe within " +
                   std::to_string(pool.options().probe_interval.count()) + " ms); last error: " +
                   last_error;
        }

        std::string_view sha_of(script s) const noexcept {
            const auto i = static_cast<std::size_t>(s);
            return sha_known[i].load(std::memory_order_acquire) ? std::string_view(shas[i]) : std::string_view{};
        }

        std::string remember_sha(script s, detail::reply_ptr r) {
            if (detail::reply_is_error(r.get()) || r->type != REDIS_REPLY_STRING)
                throw redis_reply_error("SCRIPT LOAD failed: " + detail::reply_text(r.get()));
            auto sha = detail::reply_text(r.get());
            const auto i = static_cast<std::size_t>(s);
            std::lock_guard lk(sha_mu);
            if (!sha_known[i].load(std::memory_order_relaxed)) {
                shas[i] = sha;
                sha_known[i].store(true, std::memory_order_release);
            }
            return sha;
        }

        /// One script call, wherever the topology puts it. The reply of `send_*` may be an error
        /// reply; here it is sorted out. A cluster's MOVED re-points the router and reconnects,
        /// ASK sends this one call to the named node, TRYAGAIN / CLUSTERDOWN (a slot in
        /// migration, a failover in the cluster) wait a little: all bounded by `max_hops`. A
        /// READONLY node (a master demoted by a failover) fails the call as an I/O error, so the
        /// breaker and the fail mode apply until a new connection finds the new master. With
        /// Sentinel, the sentinels are also asked once per probe interval whether the master
        /// moved, so a master demoted while still writable is left within that interval.
        detail::reply_ptr eval(script s, std::initializer_list<std::string_view> keys,
                               std::initializer_list<std::string_view> args) {
            static constexpr int max_hops = 5;
            if (router.master_moved()) reconnect_all(); // Sentinel moved the master: follow now
            std::optional<redis_endpoint> ask;
            for (int hop = 0;; ++hop) {
                auto r = ask ? send_asking(*ask, s, keys, args)
                             : muxes.empty() ? send_pooled(s, keys, args) : send_multiplexed(s, keys, args);
                ask.reset();
                if (!detail::reply_is_error(r.get())) return r;
                const auto text = detail::reply_text(r.get());
                const bool more = hop < max_hops;
                if (more && detail::reply_error_is(r.get(), "MOVED")) {
                    if (auto to = detail::redirect_target(text)) {
                        router.moved(std::move(*to));
                        reconnect_all();
                        continue;
                    }
                }
                if (more && detail::reply_error_is(r.get(), "ASK")) {
                    if ((ask = detail::redirect_target(text))) continue;
                }
                if (more && (detail::reply_error_is(r.get(), "TRYAGAIN") ||
                             detail::reply_error_is(r.get(), "CLUSTERDOWN"))) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(10 * (hop + 1)));
                    continue;
                }
                if (detail::reply_error_is(r.get(), "READONLY")) {
                    router.forget();
                    reconnect_all();
                    throw redis_io_error(router.last_target() + " no longer takes writes (" + text +
                                         "): reconnecting to the current master");
                }
                throw redis_reply_error("Redis refused the script: " + text);
            }
        }

        /// Every connection made before this point is re-made at its next use.
        void reconnect_all() noexcept {
            pool.drop_idle();
            for (auto& m : muxes) m->invalidate();
        }

        /// EVALSHA through `send` (a connection's or the multiplexer's), loading the script on
        /// NOSCRIPT (a restarted or failed-over server, SCRIPT FLUSH) and sending it once more.
        template <class Send>
        detail::reply_ptr evalsha(Send&& send, script s, std::initializer_list<std::string_view> keys,
                                  std::initializer_list<std::string_view> args) {
            const auto src = sources[static_cast<std::size_t>(s)];
            auto load_here = [&] {
                const std::array<std::string_view, 3> load{"SCRIPT", "LOAD", src};
                return remember_sha(s, send(std::span<const std::string_view>(load)));
            };
            std::string loaded;
            std::string_view sha = sha_of(s);
            if (sha.empty()) sha = loaded = load_here();
            const auto nkeys = std::to_string(keys.size());
            std::array<std::string_view, 3 + 2 + 6> argv; // the most any script takes: acquire
            std::size_t n = 0;
            argv[n++] = "EVALSHA";
            argv[n++] = sha;
            argv[n++] = nkeys;
            for (auto k : keys) argv[n++] = k;
            for (auto a : args) argv[n++] = a;
            const std::span<const std::string_view> cmd(argv.data(), n);
            auto r = send(cmd);
            if (detail::reply_error_is(r.get(), "NOSCRIPT")) {
                loaded = load_here();
                argv[1] = loaded;
                r = send(cmd);
            }
            return r;
        }

        /// Pooled: a connection of our own for the call. One that turns out closed (CLIENT KILL,
        /// the server's idle `timeout`, a restart) is replaced and the call sent once more on a
        /// new connection: every script is idempotent per call id, so even one that did run is
        /// safe to repeat. A timeout is never retried: the server may be stuck.
        detail::reply_ptr send_pooled(script s, std::initializer_list<std::string_view> keys,
                                      std::initializer_list<std::string_view> args) {
            auto on = [&](detail::connection_pool::lease& c) {
                if (!c.reused()) on_new_connection(*c);
                return evalsha([&](std::span<const std::string_view> cmd) { return c->command(cmd); },
                               s, keys, args);
            };
            {
                auto c = pool.get();
                if (!c.reused()) return on(c);
                try {
                    return on(c);
                } catch (const redis_timeout_error&) {
                    throw;
                } catch (const redis_io_error&) {
                } // the broken connection goes back (and is destroyed) here
            }
            pool.drop_idle(); // its siblings were likely closed too
            auto fresh = pool.get();
            return on(fresh);
        }

        /// Multiplexed: the call joins the next round on a shared socket; the multiplexer does
        /// the reconnect-and-send-once-more for a closed connection.
        detail::reply_ptr send_multiplexed(script s, std::initializer_list<std::string_view> keys,
                                           std::initializer_list<std::string_view> args) {
            auto& m = *muxes[muxes.size() == 1 ? 0 : detail::thread_slot() % muxes.size()];
            return evalsha([&](std::span<const std::string_view> cmd) { return m.call(cmd); }, s, keys, args);
        }

        /// A cluster's ASK: this one call goes to `at`, each EVALSHA preceded by ASKING.
        detail::reply_ptr send_asking(const redis_endpoint& at, script s,
                                      std::initializer_list<std::string_view> keys,
                                      std::initializer_list<std::string_view> args) {
            auto c = router.open_at(at);
            return evalsha(
                [&](std::span<const std::string_view> cmd) {
                    if (cmd.front() == "EVALSHA") c->command({"ASKING"});
                    return c->command(cmd);
                },
                s, keys, args);
        }

        /// Runs once on each new connection, before its first script. The dataset carries a
        /// marker key written by whichever client finds it missing first; a marker different
        /// from the one this backend saw before means the keys were lost in between.
        void on_new_connection(detail::redis_connection& c) {
            check_eviction_policy(c);
            // An error reply (OOM, READONLY, an ACL) skips the check; the scripts will say more.
            c.command({"SET", epoch_key, new_epoch_token(), "NX"});
            auto got = c.command({"GET", epoch_key});
            if (!got || got->type != REDIS_REPLY_STRING) return;
            auto epoch = detail::reply_text(got.get());
            std::lock_guard lk(epoch_mu);
            if (!known_epoch.empty() && epoch != known_epoch) {
                resets.fetch_add(1);
                pool.options().on_warning(
                    "REDIS_DATA_RESET the limiter's keys under " + base +
                    " were gone (restart without persistence, FLUSHALL or failover to an empty "
                    "replica): slots held before are lost until their calls refresh or end");
            }
            known_epoch = std::move(epoch);
        }

        static std::string new_epoch_token() {
            std::random_device rd;
            const auto t = static_cast<std::uint64_t>(now_ns());
            return fmt::format("{:08x}{:08x}{:016x}", rd(), rd(), t);
        }

        /// Warns once when the server may evict our keys: an evicted set silently resets the cap.
        void check_eviction_policy(detail::redis_connection& c) noexcept {
            if (eviction_checked.load(std::memory_order_relaxed) || eviction_checked.exchange(true)) return;
            try {
                auto policy = c.command({"CONFIG", "GET", "maxmemory-policy"});
                auto limit = c.command({"CONFIG", "GET", "maxmemory"});
                auto value = [](const redisReply* r) {
                    return r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
                               ? detail::reply_text(r->element[1])
                               : std::string();
                };
                auto p = value(policy.get()), m = value(limit.get());
                if (!p.empty() && p != "noeviction" && !m.empty() && m != "0")
                    pool.options().on_warning(
                        "maxmemory-policy is " + p + " with maxmemory " + m +
                        ": Redis may evict the limiter's keys and reset the cap; use noeviction");
            } catch (...) {
                // CONFIG may be renamed or forbidden; the check is advice, not a requirement.
            }
        }

        void keep_for_replay(std::string_view call_id) noexcept {
            try {
                std::lock_guard lk(pending_mu);
                if (pending.size() >= pool.options().max_pending_releases) {
                    if (!dropped_warned) {
                        dropped_warned = true;
                        pool.options().on_warning(
                            "release replay queue is full; further releases while Redis is "
                            "unreachable are left to the slot TTL");
                    }
                    return;
                }
                pending.emplace(call_id);
                pending_count.store(pending.size());
            } catch (...) {
            }
        }

        /// Replays a batch of kept releases; stops at the first failure (kept for later).
        void replay_some() noexcept {
            std::vector<std::string> batch;
            try {
                std::lock_guard lk(pending_mu);
                for (auto it = pending.begin(); it != pending.end() && batch.size() < replay_batch;) {
                    batch.push_back(std::move(pending.extract(it++).value()));
                }
                pending_count.store(pending.size());
            } catch (...) {
                return;
            }
            for (std::size_t i = 0; i < batch.size(); ++i) {
                try {
                    eval(script::release, {active_key, owners_key}, {batch[i], base});
                } catch (...) {
                    for (std::size_t j = i; j < batch.size(); ++j) keep_for_replay(batch[j]);
                    return;
                }
            }
        }
    };

    /// Runs one network operation behind the breaker; maps its outcome onto the breaker.
    template <class Op>
    auto guarded(Op&& op) -> decltype(op()) {
        if (!st_->allow()) throw redis_unavailable(st_->unavailable_message());
        try {
            auto result = op();
            if (st_->breaker_open.load(std::memory_order_relaxed)) st_->breaker_open.store(false);
            if (st_->pending_count.load() > 0) st_->replay_some();
            return result;
        } catch (const redis_pool_timeout&) {
            throw; // busy, not broken: the breaker stays as it is
        } catch (const redis_error& e) {
            st_->on_failure(e);
            throw;
        }
    }

    static std::int64_t integer_of(const redisReply* r) {
        if (!r || r->type != REDIS_REPLY_INTEGER) throw redis_reply_error("unexpected reply type");
        return r->integer;
    }

    static std::pair<std::int64_t, std::int64_t> pair_of(const redisReply* r) {
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            throw redis_reply_error("unexpected reply shape");
        return {integer_of(r->element[0]), integer_of(r->element[1])};
    }

    std::shared_ptr<state> st_;
};

static_assert(capacity_backend<redis_backend>);

} // namespace callguard
