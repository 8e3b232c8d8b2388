#pragma once

// Runs script calls over the configured connection mode, in one of two ways:
// - on an application's executor (`redis_backend{executor, ...}`): `multiplexed_connections`
//   channels on that executor, many calls in flight on each; asynchronous calls complete on it,
//   and blocking calls from other threads wait for them;
// - for blocking callers alone (no executor given): each channel has an io_context of its own
//   that its waiting callers drive (blocking_driver). Multiplexed: a few channels shared by every
//   caller thread (each thread keeps to one), so concurrent callers' commands travel pipelined
//   on one socket. Pooled: a channel per concurrent caller, up to `pool_size`, driven by the
//   caller that holds it; a caller waits (bounded) for a free one.

#include "../errors.hpp"
#include "../options.hpp"
#include "channel.hpp"
#include "driver.hpp"
#include "failure.hpp"
#include "router.hpp"
#include "script_cache.hpp"
#include "script_call.hpp"
#include "scripts.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace callguard::detail {

/// A small number fixed per thread, to spread threads over several channels without a shared
/// counter.
inline std::size_t thread_slot() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t slot = next.fetch_add(1, std::memory_order_relaxed);
    return slot;
}

/// True while the calling thread runs the executor a backend was given (a blocking call there
/// would wait for itself); empty when the executor cannot tell.
using running_here_fn = std::function<bool()>;

class script_runner {
public:
    /// For blocking callers alone. `o` must outlive the runner; `check` runs on every new data
    /// connection.
    script_runner(const redis_options& o, std::shared_ptr<connection_check> check, tls_setup tls)
        : o_(o), router_(o), ctx_{router_, scripts_, std::move(tls), [this] { reconnect_all(); }},
          check_(std::move(check)) {
        const bool pooled = o.connection_mode == redis_connection_mode::pooled;
        const std::size_t n = pooled ? o.pool_size : o.multiplexed_connections;
        for (std::size_t i = 0; i < n; ++i) {
            auto l = std::make_unique<lane>();
            l->driver = std::make_unique<blocking_driver>();
            l->ch = make_channel(l->driver->context().get_executor(), true);
            lanes_.push_back(std::move(l));
        }
        if (pooled)
            for (auto& l : lanes_) idle_.push_back(l.get());
    }

    /// On `ex`: `multiplexed_connections` channels whatever the connection mode (a pool buys
    /// nothing when nobody blocks).
    script_runner(asio::any_io_executor ex, running_here_fn running_here, const redis_options& o,
                  std::shared_ptr<connection_check> check, tls_setup tls)
        : o_(o), router_(o), ctx_{router_, scripts_, std::move(tls), [this] { reconnect_all(); }},
          check_(std::move(check)), running_here_(std::move(running_here)), on_executor_(true) {
        for (std::size_t i = 0; i < o.multiplexed_connections; ++i) {
            auto l = std::make_unique<lane>();
            l->ch = make_channel(ex);
            lanes_.push_back(std::move(l));
        }
    }

    script_runner(const script_runner&) = delete;
    script_runner& operator=(const script_runner&) = delete;

    ~script_runner() {
        for (auto& l : lanes_) {
            if (on_executor_)
                l->ch->close(); // on its strand; nothing is in flight (calls keep the backend alive)
            else
                l->ch->close_now(); // no caller can be driving any more
        }
    }

    /// Whether the runner works on an application's executor (then `async_run` is real).
    bool on_executor() const noexcept { return on_executor_; }

    /// One script call; blocks until it is answered or fails. The reply is never an error
    /// reply; throws `redis_error`.
    reply_ptr run(script_id s, std::span<const std::string_view> keys, std::span<const std::string_view> args) {
        if (on_executor_) return run_waiting(s, keys, args);
        if (o_.connection_mode == redis_connection_mode::pooled) {
            auto held = lease();
            return run_on(*held.l, s, keys, args);
        }
        auto& l = *lanes_[lanes_.size() == 1 ? 0 : thread_slot() % lanes_.size()];
        return run_on(l, s, keys, args);
    }

    /// On an executor: starts a call and returns at once; `done(reply_ptr, const failure&)` runs
    /// exactly once, later, on a strand of that executor. The reply is never an error reply.
    template <class Done>
    void async_run(script_id s, std::span<const std::string_view> keys, std::span<const std::string_view> args,
                   Done done) {
        auto& l = *lanes_[lanes_.size() == 1 ? 0 : next_lane_.fetch_add(1, std::memory_order_relaxed) % lanes_.size()];
        start_script_call(ctx_, l.ch, s, keys, args, std::move(done));
    }

    /// Every connection made before this point is re-made before its next command.
    void reconnect_all() {
        std::lock_guard lk(pool_mu_);
        for (auto& l : lanes_) {
            if (is_idle_pooled(*l))
                l->ch->invalidate_now(); // nobody drives it now: done at once
            else
                l->ch->invalidate();
        }
    }

    /// After an I/O failure: idle pooled connections are likely dead too (a restarted server);
    /// close them rather than find out one timeout at a time.
    void drop_idle() {
        std::lock_guard lk(pool_mu_);
        for (auto* l : idle_) l->ch->invalidate_now();
    }

    /// Writes made so far, each carrying every command queued at that moment (the handshake's
    /// included); fewer than the commands when callers' commands travel together.
    std::uint64_t round_trips() const noexcept {
        std::uint64_t n = 0;
        for (const auto& l : lanes_) n += l->ch->writes();
        return n;
    }

    /// Script calls that travelled with others as one command (channel.hpp).
    std::uint64_t batched_calls() const noexcept {
        std::uint64_t n = 0;
        for (const auto& l : lanes_) n += l->ch->batched();
        return n;
    }

    /// Connections open right now.
    std::size_t open_connections() const {
        std::size_t n = 0;
        for (const auto& l : lanes_) n += l->ch->connected() ? 1 : 0;
        return n;
    }

    router& route() noexcept { return router_; }

private:
    /// A channel, and (for blocking callers alone) the io_context its callers drive.
    struct lane {
        std::unique_ptr<blocking_driver> driver;
        std::shared_ptr<channel> ch;
    };

    std::shared_ptr<channel> make_channel(asio::any_io_executor ex, bool own_context = false) {
        auto s = router_.data_settings(ctx_.tls);
        s.own_context = own_context;
        // Blocking callers' commands travel together (a pooled lane, one caller at a time,
        // never has two writes out, so this changes nothing there).
        if (own_context) s.max_writes_in_flight = 2;
        s.check = check_;
        s.targets = [this, ex](auto give) { router_.async_targets(ex, ctx_.tls, std::move(give)); };
        s.on_connected = [this](const redis_target& t) { router_.connected(t); };
        return std::make_shared<channel>(std::move(ex), std::move(s));
    }

    reply_ptr run_on(lane& l, script_id s, std::span<const std::string_view> keys,
                     std::span<const std::string_view> args) {
        blocking_driver::waiter w;
        reply_ptr out;
        failure why;
        start_script_call(ctx_, l.ch, s, keys, args, [&](reply_ptr r, const failure& f) {
            out = std::move(r);
            why = f;
            l.driver->complete(w);
        });
        l.driver->wait(w);
        if (why) why.raise();
        return out;
    }

    /// On an executor that other threads run: start the call there and wait for it.
    reply_ptr run_waiting(script_id s, std::span<const std::string_view> keys,
                          std::span<const std::string_view> args) {
        if (running_here_ && running_here_())
            throw redis_wrong_thread("a blocking call on a thread that runs the Redis backend's executor would "
                                     "wait for itself: use the async API (callguard/async.hpp) there");
        // Shared with the call: if the executor never runs it (stopped), this caller stops
        // waiting after the longest a call can take, and the call may still end later.
        struct waiting {
            std::mutex mu;
            std::condition_variable cv;
            bool done = false;
            reply_ptr out;
            failure why;
        };
        auto w = std::make_shared<waiting>();
        async_run(s, keys, args, [w](reply_ptr r, const failure& f) {
            std::lock_guard lk(w->mu);
            w->out = std::move(r);
            w->why = f;
            w->done = true;
            w->cv.notify_one();
        });
        const auto limit = 2 * o_.connect_timeout + 4 * o_.command_timeout + std::chrono::milliseconds(100);
        std::unique_lock lk(w->mu);
        if (!w->cv.wait_for(lk, limit, [&] { return w->done; }))
            throw redis_timeout_error("the Redis backend's executor did not run the call within " +
                                      std::to_string(limit.count()) + " ms (is it running?)");
        if (w->why) w->why.raise();
        return std::move(w->out);
    }

    // --- pooled mode ----------------------------------------------------------------------

    struct leased {
        script_runner* runner;
        lane* l;
        leased(script_runner* r, lane* x) : runner(r), l(x) {}
        leased(const leased&) = delete;
        ~leased() { runner->give_back(l); }
    };

    /// A free channel; throws `redis_pool_timeout` when none frees up in time.
    leased lease() {
        std::unique_lock lk(pool_mu_);
        const auto wait = o_.connect_timeout + o_.command_timeout;
        if (!pool_cv_.wait_for(lk, wait, [&] { return !idle_.empty(); }))
            throw redis_pool_timeout("all " + std::to_string(o_.pool_size) + " Redis connections stayed busy for " +
                                     std::to_string(wait.count()) + " ms");
        // The most recently used first: it is the likeliest to be connected already.
        lane* l = idle_.back();
        idle_.pop_back();
        return leased(this, l);
    }

    void give_back(lane* l) noexcept {
        {
            std::lock_guard lk(pool_mu_);
            idle_.push_back(l);
        }
        pool_cv_.notify_one();
    }

    bool is_idle_pooled(const lane& l) const {
        for (auto* i : idle_)
            if (i == &l) return true;
        return false;
    }

    const redis_options& o_;
    router router_;
    script_cache scripts_;
    script_context ctx_;
    std::shared_ptr<connection_check> check_;
    running_here_fn running_here_;
    bool on_executor_ = false;
    std::atomic<std::size_t> next_lane_{0};
    std::vector<std::unique_ptr<lane>> lanes_;
    std::mutex pool_mu_;
    std::condition_variable pool_cv_;
    std::vector<lane*> idle_; // pooled mode: lanes nobody holds
};

} // namespace callguard::detail
