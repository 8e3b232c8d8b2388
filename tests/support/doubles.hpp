#pragma once

// Test doubles for the limiter's own logic: a clock moved by hand, a sink that keeps lines,
// a backend that can be switched to failing, and an observer that records events.

#include <callguard/callguard.hpp>

#include <dirent.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace test {

/// A steady clock that only moves when told to. Copies share the same time.
struct manual_clock {
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<manual_clock, duration>;
    static constexpr bool is_steady = true;

    std::shared_ptr<std::atomic<rep>> ticks = std::make_shared<std::atomic<rep>>(1'000'000'000);

    time_point now() const noexcept { return time_point(duration(ticks->load())); }
    void advance(duration d) const noexcept { ticks->fetch_add(d.count()); }
};

/// Keeps every line it is given (thread-safe).
struct capture_sink {
    struct line {
        callguard::log_level level;
        std::string text;
    };
    std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
    std::shared_ptr<std::vector<line>> lines = std::make_shared<std::vector<line>>();

    callguard::log_sink sink() const {
        return [mu = mu, lines = lines](callguard::log_level l, std::string_view text) {
            std::lock_guard lk(*mu);
            lines->push_back({l, std::string(text)});
        };
    }
    std::vector<line> snapshot() const {
        std::lock_guard lk(*mu);
        return *lines;
    }
    std::size_t count_containing(std::string_view needle) const {
        std::size_t n = 0;
        for (const auto& l : snapshot())
            if (l.text.find(needle) != std::string::npos) ++n;
        return n;
    }
};

/// Records events (thread-safe), copying the views it is given.
struct event_log {
    struct entry {
        callguard::event_kind kind;
        std::string call_id;
        std::string tenant;
        std::int64_t active;
        bool tenant_limited;
        bool local_fallback;
    };
    std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
    std::shared_ptr<std::vector<entry>> entries = std::make_shared<std::vector<entry>>();

    callguard::event_observer observer() const {
        return [mu = mu, entries = entries](const callguard::capacity_event& e) {
            std::lock_guard lk(*mu);
            entries->push_back({e.kind, std::string(e.call_id), std::string(e.tenant), e.active,
                                e.tenant_limited, e.local_fallback});
        };
    }
    std::vector<entry> snapshot() const {
        std::lock_guard lk(*mu);
        return *entries;
    }
    std::size_t count(callguard::event_kind k) const {
        std::size_t n = 0;
        for (const auto& e : snapshot()) n += e.kind == k;
        return n;
    }
};

/// A memory backend that can be told to fail like an unreachable server, or to lose every slot
/// like a server restarted empty; counts calls and records each reinstatement's thread and time.
class switchable_backend {
public:
    struct reinstate_call {
        std::string call_id;
        std::thread::id thread;
        std::chrono::steady_clock::time_point at;
        std::chrono::milliseconds ttl;
    };
    struct control {
        std::atomic<bool> failing{false};
        std::atomic<int> acquires{0}, releases{0}, refreshes{0}, counts{0}, reinstates{0};
        std::atomic<int> waits{0}; ///< waiting-room polls and enqueues
        std::atomic<std::uint64_t> resets{0}; ///< what `data_resets()` reports

        /// Every slot gone, and the loss reported (as a Redis restarted empty would).
        void lose_data() {
            std::lock_guard lk(mu);
            inner = callguard::memory_backend{};
            ++resets;
        }
        callguard::memory_backend storage() {
            std::lock_guard lk(mu);
            return inner; // a handle: copies share the slots
        }
        std::vector<reinstate_call> reinstate_calls() {
            std::lock_guard lk(mu);
            return calls;
        }

        std::mutex mu;
        callguard::memory_backend inner;
        std::vector<reinstate_call> calls;
    };

    switchable_backend() = default;

    callguard::slot_reply try_acquire(const callguard::slot_request& r) {
        ++ctl_->acquires;
        check();
        return ctl_->storage().try_acquire(r);
    }
    callguard::reinstate_reply reinstate(const callguard::slot_request& r) {
        ++ctl_->reinstates;
        {
            std::lock_guard lk(ctl_->mu);
            ctl_->calls.push_back({std::string(r.call_id), std::this_thread::get_id(),
                                   std::chrono::steady_clock::now(), r.ttl});
        }
        check();
        return ctl_->storage().reinstate(r);
    }
    callguard::release_reply release(std::string_view id) {
        ++ctl_->releases;
        check();
        return ctl_->storage().release(id);
    }
    bool refresh(std::string_view id, std::chrono::milliseconds ttl) {
        ++ctl_->refreshes;
        check();
        return ctl_->storage().refresh(id, ttl);
    }
    std::int64_t active_count() {
        ++ctl_->counts;
        check();
        return ctl_->storage().active_count();
    }
    std::size_t cleanup_expired() {
        check();
        return ctl_->storage().cleanup_expired();
    }
    // The waiting room, forwarded the same way.
    callguard::wait_reply wait_turn(const callguard::wait_request& r) {
        ++ctl_->waits;
        check();
        return ctl_->storage().wait_turn(r);
    }
    callguard::leave_reply leave_line(std::string_view id) {
        check();
        return ctl_->storage().leave_line(id);
    }
    callguard::line_reply line_status() {
        check();
        return ctl_->storage().line_status();
    }

    std::string_view name() const { return "switchable"; }
    bool healthy() const noexcept { return !ctl_->failing.load(); }
    std::uint64_t data_resets() const noexcept { return ctl_->resets.load(); }

    control& ctl() const { return *ctl_; }

private:
    void check() const {
        if (ctl_->failing.load()) throw callguard::backend_error("connection refused (test)");
    }
    std::shared_ptr<control> ctl_ = std::make_shared<control>();
};
static_assert(callguard::capacity_backend<switchable_backend>);
static_assert(callguard::reinstates_slots<switchable_backend>);
static_assert(callguard::reports_data_resets<switchable_backend>);
static_assert(callguard::waiting_room_backend<switchable_backend>);
static_assert(!callguard::reports_data_resets<callguard::memory_backend>);

/// Threads of this process right now (from /proc).
inline long thread_count() {
    long n = 0;
    if (DIR* d = ::opendir("/proc/self/task")) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        ::closedir(d);
    }
    return n;
}

/// A config with a small cap and quiet logs, for tests.
inline callguard::limiter_config small_config(std::int64_t cap) {
    callguard::limiter_config c;
    c.max_active_calls = cap;
    c.log_level = callguard::log_level::debug;
    c.reinstate_delay = std::chrono::milliseconds(0); // tests of the delay set their own
    return c;
}

} // namespace test
