#pragma once

// The Redis backend: one cap shared by every process that points at the same Redis and key
// prefix. Each operation is one Lua script call (EVALSHA), atomic on the server. Needs hiredis
// (CMake target callguard::redis); works with hiredis 0.14 and 1.x.

#include "../backend.hpp"
#include "../claim.hpp"
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

#include <utility> // before Asio

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
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
    /// For blocking callers: no thread, no executor of its own; the callers drive the I/O.
    explicit redis_backend(std::string_view url, std::string_view key_prefix = "calls")
        : redis_backend(with_prefix(redis_options::from_url(url), key_prefix)) {}

    explicit redis_backend(redis_options options)
        : st_(std::make_shared<state>(std::move(options))) {}

    /// On an application's executor (an io_context's, a strand's, any Asio executor): all I/O
    /// runs there, many commands in flight on each connection, and the `async_` members (and
    /// `<callguard/async.hpp>`) complete there without a thread hand-off. The blocking members
    /// still work from any thread that does not run `ex` (they wait for the executor); on a
    /// thread that runs it they would wait for themselves, so they fail (the fail mode decides)
    /// when the executor can tell. Destroy the backend before the executor's context.
    template <class Executor>
        requires std::convertible_to<Executor, boost::asio::any_io_executor>
    redis_backend(const Executor& ex, std::string_view url, std::string_view key_prefix = "calls")
        : redis_backend(ex, with_prefix(redis_options::from_url(url), key_prefix)) {}

    template <class Executor>
        requires std::convertible_to<Executor, boost::asio::any_io_executor>
    redis_backend(const Executor& ex, redis_options options)
        : st_(std::make_shared<state>(std::move(options), boost::asio::any_io_executor(ex), running_here_of(ex))) {}

    /// The executor given at construction, or Asio's system executor (its own small pool of
    /// threads) when none was: where completions of the `async_` members run.
    boost::asio::any_io_executor get_executor() const noexcept { return st_->executor; }

    // --- the capacity_backend operations; each one script, one round trip ------------------

    slot_reply try_acquire(const slot_request& req);
    release_reply release(std::string_view call_id);
    bool refresh(std::string_view call_id, std::chrono::milliseconds ttl);
    std::int64_t active_count();
    std::size_t cleanup_expired();

    /// The same operations without blocking (`async_capacity_backend`): `done(result, const
    /// backend_error*)` runs exactly once, later, on the backend's executor; a non-null error
    /// means the backend could not answer (the result is then empty). The arguments are copied.
    template <class Done>
    void async_try_acquire(const slot_request& req, Done done) {
        acquire_op(req, nonblocking(std::move(done)));
    }
    template <class Done>
    void async_release(std::string_view call_id, Done done) {
        release_op(call_id, nonblocking(std::move(done), call_id));
    }
    template <class Done>
    void async_refresh(std::string_view call_id, std::chrono::milliseconds ttl, Done done) {
        refresh_op(call_id, ttl, nonblocking(std::move(done)));
    }
    template <class Done>
    void async_active_count(Done done) {
        count_op(nonblocking(std::move(done)));
    }

    /// Puts back the slot of a call already in progress, with no cap check (requirement 10 of
    /// `backend.hpp`): `released` when the call was released within `release_memory` (or up to
    /// twice that ago).
    reinstate_reply reinstate(const slot_request& req);
    template <class Done>
    void async_reinstate(const slot_request& req, Done done) {
        reinstate_op(req, nonblocking(std::move(done)));
    }

    // --- waiting room (waiting_room.hpp): one script each, keys under the same hash tag -----

    wait_reply wait_turn(const wait_request& req);
    leave_reply leave_line(std::string_view call_id);
    line_reply line_status();

    // --- claims (claim.hpp): one SET NX PX, the key under the same hash tag ----------------

    claim_reply claim(std::string_view key, std::chrono::milliseconds ttl);

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
    /// Acquires and releases that travelled with others as one script call: on a shared socket,
    /// those of one limiter waiting to be written at the same moment go together, and the server
    /// reads the clock, counts and keeps the keys alive once for all of them.
    std::uint64_t batched_calls() const noexcept { return st_->runner.batched_calls(); }

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
        std::string base, active_key, owners_key, released_key, previous_key, release_memory_ms;
        boost::asio::any_io_executor executor; // given, or the system executor
        detail::circuit_breaker breaker;
        detail::replay_queue replays;
        detail::dataset_marker marker;
        detail::eviction_check eviction;
        detail::script_runner runner; // last: its new connections run the checks above

        /// Blocking callers drive the I/O.
        explicit state(redis_options o)
            : state(std::move(o), boost::asio::system_executor(), [](state& s) {
                  return detail::script_runner(s.options, s.check(), tls_of(s.options));
              }) {}

        /// The I/O runs on `ex`.
        state(redis_options o, boost::asio::any_io_executor ex, detail::running_here_fn here)
            : state(std::move(o), ex, [&](state& s) {
                  return detail::script_runner(ex, std::move(here), s.options, s.check(), tls_of(s.options));
              }) {}

        template <class MakeRunner>
        state(redis_options o, boost::asio::any_io_executor ex, MakeRunner make_runner)
            : options(validated(std::move(o))),
              base("{" + options.key_prefix + "}"),
              active_key(base + ":active"),
              owners_key(base + ":owners"),
              released_key(base + ":released:current"),
              previous_key(base + ":released:previous"),
              release_memory_ms(std::to_string(options.release_memory.count())),
              executor(std::move(ex)),
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
              runner(make_runner(*this)) {
            if (options.tls.enabled && !options.tls.verify)
                options.on_warning("TLS certificate verification is off (tls.verify=0, CALLS_REDIS_TLS_VERIFY=0): "
                                   "the connection is encrypted but the server is not authenticated");
        }

        std::shared_ptr<detail::connection_check> check() {
            return std::make_shared<detail::data_connection_check>(options, marker, eviction);
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

    // --- each operation described once: its script, keys, arguments and reply -------------
    // `call(script, keys, args, parse)` runs it blocking (returns the parsed reply, throws
    // `redis_error`) or asynchronously (hands it to a callback).

    template <class Call>
    auto acquire_op(const slot_request& req, Call&& call) {
        auto& st = *st_;
        const auto cap = std::to_string(req.max_active);
        const auto ttl = std::to_string(req.ttl.count());
        const auto tenant_cap = std::to_string(req.tenant_max);
        return call(detail::script_id::acquire, {st.active_key, st.owners_key, st.released_key, st.previous_key},
                    {st.base, req.call_id, cap, ttl, req.tenant, tenant_cap}, [](const redisReply* r) {
                        auto [code, live] = packed_of(r);
                        static constexpr std::array<slot_state, 5> states{
                            slot_state::acquired, slot_state::already_held, slot_state::rejected,
                            slot_state::rejected_tenant, slot_state::rejected_queue};
                        if (code < 0 || code > 4) throw redis_reply_error("unexpected acquire reply");
                        return slot_reply{states[static_cast<std::size_t>(code)], live};
                    });
    }

    template <class Call>
    auto release_op(std::string_view call_id, Call&& call) {
        auto& st = *st_;
        return call(detail::script_id::release, {st.active_key, st.owners_key, st.released_key, st.previous_key},
                    {st.base, st.release_memory_ms, call_id}, [](const redisReply* r) {
                        auto [freed, live] = packed_of(r);
                        return release_reply{freed == 1, live};
                    });
    }

    template <class Call>
    auto reinstate_op(const slot_request& req, Call&& call) {
        auto& st = *st_;
        const auto ttl = std::to_string(req.ttl.count());
        return call(detail::script_id::reinstate, {st.active_key, st.owners_key, st.released_key, st.previous_key},
                    {req.call_id, ttl, req.tenant, st.base}, [](const redisReply* r) {
                        auto [code, live] = packed_of(r);
                        static constexpr std::array<reinstate_state, 3> states{
                            reinstate_state::reinstated, reinstate_state::already_held, reinstate_state::released};
                        if (code < 0 || code > 2) throw redis_reply_error("unexpected reinstate reply");
                        return reinstate_reply{states[static_cast<std::size_t>(code)], live};
                    });
    }

    template <class Call>
    auto refresh_op(std::string_view call_id, std::chrono::milliseconds ttl, Call&& call) {
        auto& st = *st_;
        const auto ttl_text = std::to_string(ttl.count());
        return call(detail::script_id::refresh, {st.active_key, st.owners_key}, {call_id, ttl_text, st.base},
                    [](const redisReply* r) { return integer_of(r) == 1; });
    }

    template <class Call>
    auto count_op(Call&& call) {
        return call(detail::script_id::count, {st_->active_key}, {}, [](const redisReply* r) { return integer_of(r); });
    }

    template <class Call>
    auto cleanup_op(Call&& call) {
        auto& st = *st_;
        return call(detail::script_id::cleanup_expired, {st.active_key, st.owners_key}, {st.base},
                    [](const redisReply* r) { return static_cast<std::size_t>(integer_of(r)); });
    }

    template <class Call>
    auto wait_turn_op(const wait_request& req, Call&& call) {
        const auto cap = std::to_string(req.max_active);
        const auto slot_ttl = std::to_string(req.slot_ttl.count());
        const auto tenant_cap = std::to_string(req.tenant_max);
        const auto waiter_ttl = std::to_string(req.waiter_ttl.count());
        const auto max_length = std::to_string(req.join ? std::max<std::int64_t>(req.max_length, 0) : -1);
        return call(detail::script_id::wait_turn, {st_->active_key},
                    {req.call_id, cap, slot_ttl, req.tenant, tenant_cap, waiter_ttl, max_length},
                    [](const redisReply* r) {
                        const auto v = integers_of<6>(r);
                        if (v[0] < 0 || v[0] > static_cast<std::int64_t>(wait_state::not_waiting))
                            throw redis_reply_error("unexpected waiting-room reply");
                        return wait_reply{static_cast<wait_state>(v[0]), v[1], v[2], v[3],
                                          std::chrono::milliseconds(v[4]), v[5] == 1};
                    });
    }

    template <class Call>
    auto leave_line_op(std::string_view call_id, Call&& call) {
        return call(detail::script_id::leave_line, {st_->active_key}, {call_id}, [](const redisReply* r) {
            const auto v = integers_of<4>(r);
            return leave_reply{v[0] == 1, v[1], std::chrono::milliseconds(v[2]), v[3]};
        });
    }

    template <class Call>
    auto line_status_op(Call&& call) {
        return call(detail::script_id::line_status, {st_->active_key}, {}, [](const redisReply* r) {
            const auto v = integers_of<2>(r);
            return line_reply{v[0], std::chrono::milliseconds(v[1])};
        });
    }

    template <class Call>
    auto claim_op(std::string_view key, std::chrono::milliseconds ttl, Call&& call) {
        const auto claim_key = st_->base + ":claim:" + std::string(key);
        const auto ttl_text = std::to_string(ttl.count());
        return call(detail::script_id::claim, {claim_key}, {ttl_text}, [](const redisReply* r) {
            const auto v = integers_of<2>(r);
            return claim_reply{v[0] == 1, std::chrono::milliseconds(v[1])};
        });
    }

    using string_views = std::initializer_list<std::string_view>;

    /// Runs an operation on the calling thread (see `guarded`). A failed release is kept for
    /// replay (`replay_id`).
    struct blocking_call {
        redis_backend* self;
        std::string_view replay_id;

        template <class Parse>
        auto operator()(detail::script_id s, string_views keys, string_views args, Parse parse) const {
            try {
                auto r = self->guarded([&] {
                    return self->st_->runner.run(s, std::span(keys.begin(), keys.size()),
                                                 std::span(args.begin(), args.size()));
                });
                return parse(r.get());
            } catch (const redis_error&) {
                if (!replay_id.empty()) self->keep_for_replay(replay_id);
                throw;
            }
        }
    };
    blocking_call blocking(std::string_view replay_id = {}) { return {this, replay_id}; }

    /// Runs an operation without blocking the caller; `done(result, const backend_error*)`.
    template <class Done>
    struct async_call {
        std::shared_ptr<state> st; // kept alive until the operation completes
        Done done;
        std::string replay_id;

        template <class Parse>
        void operator()(detail::script_id s, string_views keys, string_views args, Parse parse) {
            using result = decltype(parse(nullptr));
            if (!st->runner.on_executor()) return blocking_elsewhere<result>(s, keys, args, std::move(parse));
            if (!st->breaker.allow()) {
                if (!replay_id.empty()) keep_for_replay(*st, replay_id); // as a blocking release would
                boost::asio::post(st->executor, [st = st, done = std::move(done)]() mutable {
                    redis_unavailable e(unavailable_message(*st));
                    done(result{}, static_cast<const backend_error*>(&e));
                });
                return;
            }
            st->runner.async_run(
                s, std::span(keys.begin(), keys.size()), std::span(args.begin(), args.size()),
                [st = st, parse = std::move(parse), done = std::move(done),
                 replay_id = std::move(replay_id)](detail::reply_ptr r, const detail::failure& why) mutable {
                    if (!why) {
                        std::optional<result> value;
                        detail::failure bad;
                        try {
                            value.emplace(parse(r.get()));
                        } catch (...) {
                            bad = detail::failure::current();
                        }
                        if (value) {
                            st->breaker.record_success();
                            if (!st->replays.empty()) replay_some_async(st);
                            return done(std::move(*value), static_cast<const backend_error*>(nullptr));
                        }
                        return failed<result>(*st, bad, replay_id, done);
                    }
                    failed<result>(*st, why, replay_id, done);
                });
        }

        /// A backend without an executor of its own: the blocking operation runs on a thread of
        /// Asio's system executor, never on the caller's.
        template <class Result, class Parse>
        void blocking_elsewhere(detail::script_id s, string_views keys, string_views args, Parse parse) {
            std::vector<std::string> owned;
            owned.reserve(keys.size() + args.size());
            for (auto k : keys) owned.emplace_back(k);
            for (auto a : args) owned.emplace_back(a);
            boost::asio::post(st->executor, [st = st, s, nkeys = keys.size(), owned = std::move(owned),
                                             parse = std::move(parse), done = std::move(done),
                                             replay_id = std::move(replay_id)]() mutable {
                std::vector<std::string_view> views(owned.begin(), owned.end());
                redis_backend self(st);
                std::optional<Result> value;
                try {
                    auto r = self.guarded([&] {
                        return st->runner.run(s, std::span(views).first(nkeys), std::span(views).subspan(nkeys));
                    });
                    value.emplace(parse(r.get()));
                } catch (const backend_error& e) {
                    if (!replay_id.empty()) self.keep_for_replay(replay_id);
                    return done(Result{}, static_cast<const backend_error*>(&e));
                }
                done(std::move(*value), static_cast<const backend_error*>(nullptr));
            });
        }
    };

    template <class Done>
    async_call<Done> nonblocking(Done done, std::string_view replay_id = {}) {
        return {st_, std::move(done), std::string(replay_id)};
    }

    /// An asynchronous operation failed: the breaker learns it, a release is kept for replay,
    /// and the callback hears the error.
    template <class Result, class Done>
    static void failed(state& st, const detail::failure& why, const std::string& replay_id, Done& done) {
        st.breaker.record_failure(why.message);
        if (!replay_id.empty()) keep_for_replay(st, replay_id);
        why.with_error([&](const redis_error& e) { done(Result{}, static_cast<const backend_error*>(&e)); });
    }

    /// Replays kept releases without blocking, a batch at a time; failures go back in the queue.
    static void replay_some_async(const std::shared_ptr<state>& st) noexcept {
        std::vector<std::string> batch;
        try {
            batch = st->replays.take(replay_batch);
        } catch (...) {
            return;
        }
        for (auto& id : batch) {
            try {
                st->runner.async_run(detail::script_id::release,
                                     std::array<std::string_view, 4>{st->active_key, st->owners_key,
                                                                     st->released_key, st->previous_key},
                                     std::array<std::string_view, 3>{st->base, st->release_memory_ms, id},
                                     [st, id](detail::reply_ptr, const detail::failure& why) {
                                         if (why) keep_for_replay(*st, id);
                                     });
            } catch (...) {
                keep_for_replay(*st, id);
            }
        }
    }

    explicit redis_backend(std::shared_ptr<state> st) noexcept : st_(std::move(st)) {}

    static std::string unavailable_message(state& st) {
        return "Redis unavailable (circuit open, next probe within " +
               std::to_string(st.breaker.probe_interval().count()) + " ms); last error: " + st.breaker.last_error();
    }

    /// Tells whether the calling thread runs `ex`, when the executor can tell.
    template <class Executor>
    static detail::running_here_fn running_here_of(const Executor& ex) {
        if constexpr (requires { ex.running_in_this_thread(); })
            return [ex] { return ex.running_in_this_thread(); };
        else
            return {};
    }

    /// Runs one network operation behind the breaker; maps its outcome onto the breaker, and
    /// replays kept releases after a success.
    template <class Op>
    auto guarded(Op&& op) -> decltype(op()) {
        auto& st = *st_;
        if (!st.breaker.allow()) throw redis_unavailable(unavailable_message(st));
        try {
            auto result = op();
            st.breaker.record_success();
            if (!st.replays.empty()) replay_some();
            return result;
        } catch (const redis_pool_timeout&) {
            throw; // busy, not broken: the breaker stays as it is
        } catch (const redis_wrong_thread&) {
            throw; // a misuse, not a broken server
        } catch (const redis_error& e) {
            st.breaker.record_failure(e.what());
            // Idle connections are likely dead too (a restarted server): drop them now rather
            // than find out one timeout at a time.
            if (dynamic_cast<const redis_io_error*>(&e)) st.runner.drop_idle();
            throw;
        }
    }

    void keep_for_replay(std::string_view call_id) noexcept { keep_for_replay(*st_, call_id); }

    static void keep_for_replay(state& st, std::string_view call_id) noexcept {
        if (st.replays.keep(call_id) != detail::replay_queue::keep_result::first_drop) return;
        try {
            st.options.on_warning("release replay queue is full; further releases while Redis is "
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
                auto& st = *st_;
                const std::array<std::string_view, 4> keys{st.active_key, st.owners_key, st.released_key,
                                                           st.previous_key};
                const std::array<std::string_view, 3> args{st.base, st.release_memory_ms, batch[i]};
                st.runner.run(detail::script_id::release, keys, args);
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

// The blocking operations, defined once every operation's description above is complete.
inline slot_reply redis_backend::try_acquire(const slot_request& req) { return acquire_op(req, blocking()); }
inline release_reply redis_backend::release(std::string_view call_id) { return release_op(call_id, blocking(call_id)); }
inline bool redis_backend::refresh(std::string_view call_id, std::chrono::milliseconds ttl) {
    return refresh_op(call_id, ttl, blocking());
}
inline std::int64_t redis_backend::active_count() { return count_op(blocking()); }
inline std::size_t redis_backend::cleanup_expired() { return cleanup_op(blocking()); }
inline reinstate_reply redis_backend::reinstate(const slot_request& req) { return reinstate_op(req, blocking()); }
inline wait_reply redis_backend::wait_turn(const wait_request& req) { return wait_turn_op(req, blocking()); }
inline leave_reply redis_backend::leave_line(std::string_view call_id) { return leave_line_op(call_id, blocking()); }
inline line_reply redis_backend::line_status() { return line_status_op(blocking()); }
inline claim_reply redis_backend::claim(std::string_view key, std::chrono::milliseconds ttl) {
    return claim_op(key, ttl, blocking());
}

static_assert(capacity_backend<redis_backend>);
static_assert(waiting_room_backend<redis_backend>);
static_assert(claim_backend<redis_backend>);
static_assert(max_skipped_waiters == 1000, "the admission walk in scripts.hpp counts to 1000");
static_assert(reinstates_slots<redis_backend>);

} // namespace callguard
