#pragma once

// A circuit breaker for any backend that talks over a network. Closed, every call goes through.
// The first failure opens it: from then on calls are refused at once, without touching the
// network, except one call per probe interval (the probe); a success closes it again. So a dead
// server costs nothing per call and a frozen one costs one timeout per interval, not one per call.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace callguard::detail {

/// `Clock` is any object with `now()` returning a `time_point`, stored by value (tests pass a
/// clock moved by hand). Every member is thread-safe; `allow()` and the success path take no
/// lock.
template <class Clock = std::chrono::steady_clock>
class basic_circuit_breaker {
public:
    explicit basic_circuit_breaker(std::chrono::milliseconds probe_interval, Clock clock = Clock{})
        : clock_(std::move(clock)),
          interval_(std::chrono::duration_cast<std::chrono::nanoseconds>(probe_interval).count()) {}

    /// May this call use the network? Always while closed; while open, only the one caller
    /// that finds the next probe due (it also schedules the probe after it).
    bool allow() noexcept {
        if (!open_.load()) return true;
        auto due = next_probe_.load();
        const auto now = ticks();
        return now >= due && next_probe_.compare_exchange_strong(due, now + interval_);
    }

    /// A call went through: the breaker closes (if it was open).
    void record_success() noexcept {
        if (open_.load(std::memory_order_relaxed)) open_.store(false);
    }

    /// A call failed: the breaker opens (or stays open) and the next probe is one interval away.
    void record_failure(std::string_view error) noexcept {
        try {
            std::lock_guard lk(error_mu_);
            last_error_.assign(error.data(), error.size());
        } catch (...) {
        }
        next_probe_.store(ticks() + interval_);
        open_.store(true);
    }

    bool is_open() const noexcept { return open_.load(); }

    /// The text of the last failure ("" before any).
    std::string last_error() const {
        std::lock_guard lk(error_mu_);
        return last_error_;
    }

    std::chrono::milliseconds probe_interval() const noexcept {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(interval_));
    }

private:
    std::int64_t ticks() const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch()).count();
    }

    Clock clock_;
    std::int64_t interval_;
    std::atomic<bool> open_{false};
    std::atomic<std::int64_t> next_probe_{0};
    mutable std::mutex error_mu_;
    std::string last_error_;
};

using circuit_breaker = basic_circuit_breaker<>;

} // namespace callguard::detail
