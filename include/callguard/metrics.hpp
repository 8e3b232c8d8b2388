#pragma once

#include "status.hpp"

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace callguard {

/// Totals since the limiter was created (monotonic; a snapshot of its atomics).
struct capacity_counters {
    std::uint64_t acquired = 0;
    std::uint64_t already_held = 0;
    std::uint64_t rejected = 0;
    std::uint64_t released = 0;
    std::uint64_t admitted_fail_open = 0;
    std::uint64_t rejected_fail_closed = 0;
    std::uint64_t backend_errors = 0;
    std::uint64_t reinstated = 0;     ///< slots put back for calls already in progress
    std::uint64_t not_remembered = 0; ///< calls admitted while the remembered set was full
};

/// Prometheus text exposition (version 0.0.4) of a status and the counters: gauges for the
/// live numbers, `_total` counters for the events. `prefix` names the metric family.
inline std::string to_prometheus(const capacity_status& s, const capacity_counters& c,
                                 std::string_view prefix = "callguard") {
    fmt::memory_buffer out;
    auto metric = [&](std::string_view name, std::string_view type, std::string_view help,
                      auto value) {
        fmt::format_to(std::back_inserter(out), "# HELP {0}_{1} {2}\n# TYPE {0}_{1} {3}\n{0}_{1} {4}\n",
                       prefix, name, help, type, value);
    };
    metric("active_calls", "gauge", "Calls currently holding a slot.", s.active_calls);
    metric("max_calls", "gauge", "Configured global cap (MAX_ACTIVE_CALLS).", s.max_calls);
    metric("capacity_available", "gauge", "Slots still free.", s.capacity_available);
    metric("at_capacity", "gauge", "1 when no slot is free.", s.at_capacity ? 1 : 0);
    metric("backend_healthy", "gauge", "1 when the backend answers, 0 while degraded.",
           s.backend_healthy ? 1 : 0);
    metric("backend_resets_total", "counter",
           "Times the backend found its stored slots gone (restarted empty, flushed).",
           s.backend_resets);
    metric("acquired_total", "counter", "Slots taken.", c.acquired);
    metric("already_held_total", "counter", "Retried acquires for calls already holding a slot.",
           c.already_held);
    metric("rejected_total", "counter", "Calls rejected over capacity.", c.rejected);
    metric("released_total", "counter", "Slots released.", c.released);
    metric("fail_open_total", "counter", "Calls admitted while the backend was unreachable.",
           c.admitted_fail_open);
    metric("fail_closed_total", "counter", "Calls rejected while the backend was unreachable.",
           c.rejected_fail_closed);
    metric("backend_errors_total", "counter", "Backend operations that failed.", c.backend_errors);
    metric("reinstated_total", "counter",
           "Slots put back for calls already in progress (after an outage or a data loss).",
           c.reinstated);
    metric("reinstate_pending", "gauge", "Calls in progress waiting for their slot to be put back.",
           s.reinstate_pending);
    metric("not_remembered_total", "counter",
           "Calls admitted while the limiter's remembered set was full (not put back on their own).",
           c.not_remembered);
    return fmt::to_string(out);
}

} // namespace callguard
