#pragma once

// Metrics of the waiting room: its counters, a histogram of how long admitted callers waited,
// and their Prometheus text.

#include "wait_result.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace callguard {

/// Waiting-room totals since the limiter was created.
struct queue_counters {
    std::uint64_t queued = 0;         ///< callers who joined the line
    std::uint64_t dequeued = 0;       ///< waiters who left the line with a slot
    std::uint64_t queue_full = 0;     ///< callers turned away because the line was full
    std::uint64_t queue_left = 0;     ///< waiters who left without a slot (hung up, ...)
    std::uint64_t queue_timeouts = 0; ///< waiters let go after the application's longest wait
};

/// How long admitted waiters waited: a fixed-bucket histogram, updated lock-free.
class wait_histogram {
public:
    /// Upper bounds in seconds; a last, implicit bucket is +Inf.
    static constexpr std::array<double, 9> bounds{1, 5, 10, 30, 60, 120, 300, 600, 1800};

    struct snapshot {
        std::array<std::uint64_t, bounds.size() + 1> cumulative{}; ///< per bound, then +Inf
        double sum_seconds = 0;
        std::uint64_t count = 0;
    };

    void observe(std::chrono::milliseconds waited) noexcept {
        const auto ms = waited.count() < 0 ? 0 : waited.count();
        std::size_t i = 0;
        while (i < bounds.size() && static_cast<double>(ms) > bounds[i] * 1000.0) ++i;
        buckets_[i].fetch_add(1, std::memory_order_relaxed);
        sum_ms_.fetch_add(static_cast<std::uint64_t>(ms), std::memory_order_relaxed);
    }

    snapshot read() const noexcept {
        snapshot s;
        std::uint64_t running = 0;
        for (std::size_t i = 0; i < buckets_.size(); ++i) {
            running += buckets_[i].load(std::memory_order_relaxed);
            s.cumulative[i] = running;
        }
        s.count = running;
        s.sum_seconds = static_cast<double>(sum_ms_.load(std::memory_order_relaxed)) / 1000.0;
        return s;
    }

private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets_{};
    std::atomic<std::uint64_t> sum_ms_{0};
};

/// Prometheus text (0.0.4) of the waiting room: `{prefix}_waiting_calls` and
/// `{prefix}_queue_longest_wait_seconds` gauges, `_total` counters, and the
/// `{prefix}_queue_wait_seconds` histogram.
inline std::string to_prometheus(const waiting_room_status& s, const queue_counters& c,
                                 const wait_histogram::snapshot& h,
                                 std::string_view prefix = "callguard") {
    fmt::memory_buffer out;
    auto head = [&](std::string_view name, std::string_view type, std::string_view help) {
        fmt::format_to(std::back_inserter(out), "# HELP {0}_{1} {2}\n# TYPE {0}_{1} {3}\n", prefix,
                       name, help, type);
    };
    auto metric = [&](std::string_view name, std::string_view type, std::string_view help,
                      auto value) {
        head(name, type, help);
        fmt::format_to(std::back_inserter(out), "{}_{} {}\n", prefix, name, value);
    };
    metric("waiting_calls", "gauge", "Callers waiting in line for a slot.", s.waiting);
    metric("queue_longest_wait_seconds", "gauge", "How long the first caller in line has waited.",
           static_cast<double>(s.longest_wait.count()) / 1000.0);
    metric("queued_total", "counter", "Callers who joined the waiting line.", c.queued);
    metric("dequeued_total", "counter", "Waiters who left the line with a slot.", c.dequeued);
    metric("queue_full_total", "counter", "Callers turned away because the line was full.",
           c.queue_full);
    metric("queue_left_total", "counter", "Waiters who left the line without a slot.",
           c.queue_left);
    metric("queue_timeouts_total", "counter", "Waiters let go after the longest wait.",
           c.queue_timeouts);
    head("queue_wait_seconds", "histogram", "Time admitted waiters spent in line.");
    for (std::size_t i = 0; i < wait_histogram::bounds.size(); ++i)
        fmt::format_to(std::back_inserter(out), "{}_queue_wait_seconds_bucket{{le=\"{}\"}} {}\n",
                       prefix, wait_histogram::bounds[i], h.cumulative[i]);
    fmt::format_to(std::back_inserter(out), "{0}_queue_wait_seconds_bucket{{le=\"+Inf\"}} {1}\n"
                                            "{0}_queue_wait_seconds_sum {2}\n"
                                            "{0}_queue_wait_seconds_count {3}\n",
                   prefix, h.cumulative.back(), h.sum_seconds, h.count);
    return fmt::to_string(out);
}

} // namespace callguard
