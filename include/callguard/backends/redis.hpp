#pragma once

// The Redis backend: one cap shared by every process that points at the same Redis and key
// prefix. Each operation is one Lua script call (EVALSHA), atomic on the server. Needs hiredis
// (CMake target callguard::redis); works with hiredis 0.14 and 1.x.

#include "../backend.hpp"
#include "../waiting_room.hpp"
#include "../detail/circuit_breaker.hpp"
#include "../detail/replay_queue.hpp"
#include "../redis/errors.hpp"
#include "../redis/options.hpp"
#include "../redis/detail/connection_checks.hpp"
#include "../redis/detail/dataset_marker.hpp"
#include "../redis/detail/eviction_check.hpp"
#include "../redis/detail/script_runner.hpp"
#include "../redis/detail/tls_context.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

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
        auto& st = *st_;
        const auto cap = std::to_string(req.max_active);
        const auto ttl = std::to_string(req.ttl.count());
        const auto tenant_cap = std::to_string(req.tenant_max);
        auto r = guarded([&] {
            return st.runner.run(detail::script_id::acquire, {st.active_key, st.owners_key},
                                 {req.call_id, cap, ttl, req.tenant, tenant_cap, st.base});
        });
        auto [code, live] = packed_of(r.get());
        static constexpr std::array<slot_state, 5> states{
            slot_state::acquired, slot_state::already_held, slot_state::rejected,
            slot_state::rejected_tenant, slot_state::rejected_queue};
        if (code < 0 || code > 4) throw redis_reply_error("unexpected acquire reply");
        return {states[static_cast<std::size_t>(code)], live};
    }

    release_reply release(std::string_view call_id) {
        try {
            auto r = guarded([&] { return run_release(call_id); });
            auto [freed, live] = packed_of(r.get());
            return {freed == 1, live};
        } catch (const redis_error&) {
            keep_for_replay(call_id);
            throw;
        }
    }

    bool refresh(std::string_view call_id, std::chrono::milliseconds ttl) {
        auto& st = *st_;
        const auto ttl_text = std::to_string(ttl.count());
        auto r = guarded([&] {
            return st.runner.run(detail::script_id::refresh, {st.active_key, st.owners_key},
                                 {call_id, ttl_text, st.base});
        });
        return integer_of(r.get()) == 1;
    }

    std::int64_t active_count() {
        auto& st = *st_;
        auto r = guarded([&] { return st.runner.run(detail::script_id::count, {st.active_key}, {}); });
        return integer_of(r.get());
    }

    std::size_t cleanup_expired() {
        auto& st = *st_;
        auto r = guarded([&] {
            return st.runner.run(detail::script_id::cleanup_expired, {st.active_key, st.owners_key},
                                 {st.base});
        });
        return static_cast<std::size_t>(integer_of(r.get()));
    }

    // --- waiting room (waiting_room.hpp): one script each, keys under the same hash tag -----

    wait_reply wait_turn(const wait_request& req) {
        auto& st = *st_;
        const auto cap = std::to_string(req.max_active);
        const auto slot_ttl = std::to_string(req.slot_ttl.count());
        const auto tenant_cap = std::to_string(req.tenant_max);
        const auto waiter_ttl = std::to_string(req.waiter_ttl.count());
        const auto max_length = std::to_string(req.join ? std::max<std::int64_t>(req.max_length, 0) : -1);
        auto r = guarded([&] {
            return st.runner.run(detail::script_id::wait_turn, {st.active_key},
                                 {req.call_id, cap, slot_ttl, req.tenant, tenant_cap, waiter_ttl,
                                  max_length});
        });
        const auto v = integers_of<6>(r.get());
        if (v[0] < 0 || v[0] > static_cast<std::int64_t>(wait_state::not_waiting))
            throw redis_reply_error("unexpected waiting-room reply");
        return {static_cast<wait_state>(v[0]), v[1], v[2], v[3], std::chrono::milliseconds(v[4]),
                v[5] == 1};
    }

    leave_reply leave_line(std::string_view call_id) {
        auto& st = *st_;
        auto r = guarded([&] {
            return st.runner.run(detail::script_id::leave_line, {st.active_key}, {call_id});
        });
        const auto v = integers_of<4>(r.get());
        return {v[0] == 1, v[1], std::chrono::milliseconds(v[2]), v[3]};
    }

    line_reply line_status() {
        auto& st = *st_;
        auto r = guarded([&] { return st.runner.run(detail::script_id::line_status, {st.active_key}, {}); });
        const auto v = integers_of<2>(r.get());
        return {v[0], std::chrono::milliseconds(v[1])};
    }

    std::string_view name() const noexcept { return "redis"; }
    bool healthy() const noexcept { return !st_->breaker.is_open(); }

    const redis_options& options() const noexcept { return st_->options; }
    /// Releases waiting to be replayed.
    std::size_t pending_releases() const noexcept { return st_->replays.size(); }
    /// Times a new connection found the limiter's keys gone although this backend had seen them:
    /// the server restarted without persistence, was flushed, or failed over to an empty replica.
    /// Checked on every new connection (a restart always breaks the old ones); a FLUSHALL under a
    /// live connection is found at the next reconnect.
    std::uint64_t data_resets() const noexcept { return st_->marker.resets(); }

    /// Multiplexed mode: round trips made so far, each carrying one command or more (pipelining
    /// at work when this grows slower than the operations); 0 in pooled mode.
    std::uint64_t round_trips() const noexcept { return st_->runner.round_trips(); }

    /// Connections open right now (pooled: idle + in use; multiplexed: the shared sockets).
    std::size_t open_connections() const { return st_->runner.open_connections(); }

private:
    static constexpr std::size_t replay_batch = 64;

    static redis_options with_prefix(redis_options o, std::string_view prefix) {
        o.key_prefix = std::string(prefix);
        return o;
    }

    /// One backend's parts; copies of the backend share them.
    struct state {
        redis_options options; // validated; the parts below refer to it
        std::string base, active_key, owners_key;
        detail::circuit_breaker breaker;
        detail::replay_queue replays;
        detail::dataset_marker marker;
        detail::eviction_check eviction;
        detail::script_runner runner; // last: its new connections run the checks above

        explicit state(redis_options o)
            : options(validated(std::move(o))),
              base("{" + options.key_prefix + "}"),
              active_key(base + ":active"),
              owners_key(base + ":owners"),
              breaker(options.probe_interval),
              replays(options.max_pending_releases),
              marker(base + ":epoch",
                     [this] {
                         options.on_warning(
                             "REDIS_DATA_RESET the limiter's keys under " + base +
                             " were gone (restart without persistence, FLUSHALL or failover to an "
                             "empty replica): slots held before are lost until their calls refresh "
                             "or end");
                     }),
              runner(options,
                     std::make_shared<detail::data_connection_check>(options, marker, eviction),
                     tls_of(options)) {
            if (options.tls.enabled && !options.tls.verify)
                options.on_warning("TLS certificate verification is off (tls.verify=0, CALLS_REDIS_TLS_VERIFY=0): "
                                   "the connection is encrypted but the server is not authenticated");
        }

        static detail::tls_setup tls_of(const redis_options& o) {
            if (!o.tls.enabled) return {};
            return {detail::make_tls_context(o.tls), o.tls.server_name, o.tls.verify};
        }

        static redis_options validated(redis_options o) {
            o.validate();
            if (!o.on_warning)
                o.on_warning = [](std::string_view msg) {
                    fmt::print(stderr, "[CAPACITY] REDIS_WARNING {}\n", msg);
                };
            return o;
        }
    };

    detail::reply_ptr run_release(std::string_view call_id) {
        auto& st = *st_;
        return st.runner.run(detail::script_id::release, {st.active_key, st.owners_key}, {call_id, st.base});
    }

    /// Runs one network operation behind the breaker; maps its outcome onto the breaker, and
    /// replays kept releases after a success.
    template <class Op>
    auto guarded(Op&& op) -> decltype(op()) {
        auto& st = *st_;
        if (!st.breaker.allow())
            throw redis_unavailable("Redis unavailable (circuit open, next probe within " +
                                    std::to_string(st.breaker.probe_interval().count()) +
                                    " ms); last error: " + st.breaker.last_error());
        try {
            auto result = op();
            st.breaker.record_success();
            if (!st.replays.empty()) replay_some();
            return result;
        } catch (const redis_pool_timeout&) {
            throw; // busy, not broken: the breaker stays as it is
        } catch (const redis_error& e) {
            st.breaker.record_failure(e.what());
            // Idle connections are likely dead too (a restarted server): drop them now rather
            // than find out one timeout at a time.
            if (dynamic_cast<const redis_io_error*>(&e)) st.runner.drop_idle();
            throw;
        }
    }

    void keep_for_replay(std::string_view call_id) noexcept {
        if (st_->replays.keep(call_id) != detail::replay_queue::keep_result::first_drop) return;
        try {
            st_->options.on_warning("release replay queue is full; further releases while Redis is "
                                    "unreachable are left to the slot TTL");
        } catch (...) {
        }
    }

    /// Replays a batch of kept releases; stops at the first failure (the rest are kept).
    void replay_some() noexcept {
        std::vector<std::string> batch;
        try {
            batch = st_->replays.take(replay_batch);
        } catch (...) {
            return;
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            try {
                run_release(batch[i]);
            } catch (...) {
                for (std::size_t j = i; j < batch.size(); ++j) keep_for_replay(batch[j]);
                return;
            }
        }
    }

    static std::int64_t integer_of(const redisReply* r) {
        if (!r || r->type != REDIS_REPLY_INTEGER) throw redis_reply_error("unexpected reply type");
        return r->integer;
    }

    /// A script's `10 * count + state` reply, as {state, count}.
    static std::pair<std::int64_t, std::int64_t> packed_of(const redisReply* r) {
        const auto v = integer_of(r);
        if (v < 0) throw redis_reply_error("unexpected reply value");
        return {v % 10, v / 10};
    }

    template <std::size_t N>
    static std::array<std::int64_t, N> integers_of(const redisReply* r) {
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != N)
            throw redis_reply_error("unexpected reply shape");
        std::array<std::int64_t, N> out{};
        for (std::size_t i = 0; i < N; ++i) out[i] = integer_of(r->element[i]);
        return out;
    }

    std::shared_ptr<state> st_;
};

static_assert(capacity_backend<redis_backend>);
static_assert(waiting_room_backend<redis_backend>);
static_assert(max_skipped_waiters == 1000, "the admission walk in scripts.hpp counts to 1000");

} // namespace callguard
