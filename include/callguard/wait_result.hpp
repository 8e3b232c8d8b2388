#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace callguard {

/// How many callers `enqueue` lets wait by default before it answers `full`.
inline constexpr std::int64_t default_queue_max_length = 100;

/// What `capacity_limiter::enqueue` or `poll` decided for one call.
enum class wait_outcome {
    acquired,             ///< enqueue: a slot was free and nobody waited for it; taken at once
    dequeued,             ///< the call was first in line: it left the line with a slot
    already_held,         ///< the call holds a slot already (a retried poll after admission)
    queued,               ///< enqueue: the call joined the back of the line
    waiting,              ///< still in line (its waiter TTL pushed); see `position`
    full,                 ///< enqueue: the line is at `max_length`; the call did not join
    not_waiting,          ///< poll: the call is not in line (left, dropped after its TTL, never joined)
    admitted_fail_open,   ///< backend unreachable and `fail_mode::open`: go ahead without a slot
    rejected_fail_closed, ///< backend unreachable and `fail_mode::closed`: enqueue refused
    waiting_fail_closed,  ///< backend unreachable and `fail_mode::closed`: a poll keeps waiting
};

constexpr std::string_view to_string(wait_outcome o) noexcept {
    switch (o) {
    case wait_outcome::acquired: return "acquired";
    case wait_outcome::dequeued: return "dequeued";
    case wait_outcome::already_held: return "already_held";
    case wait_outcome::queued: return "queued";
    case wait_outcome::waiting: return "waiting";
    case wait_outcome::full: return "full";
    case wait_outcome::not_waiting: return "not_waiting";
    case wait_outcome::admitted_fail_open: return "admitted_fail_open";
    case wait_outcome::rejected_fail_closed: return "rejected_fail_closed";
    case wait_outcome::waiting_fail_closed: return "waiting_fail_closed";
    }
    return "unknown";
}

/// The answer to `enqueue` and `poll`.
struct wait_result {
    wait_outcome outcome = wait_outcome::not_waiting;
    std::int64_t position = 0;           ///< 1-based place in line when in line (0: unknown/none)
    std::int64_t waiting = 0;            ///< callers in line
    std::int64_t active = 0;             ///< live slots (best known value when degraded)
    std::int64_t max = 0;                ///< the global cap
    std::chrono::milliseconds waited{0}; ///< time in line, on the backend's clock
    bool tenant_limited = false;         ///< in line and held back by its own tenant's cap

    /// True when the call may go ahead: it holds a slot, or the limiter failed open.
    constexpr bool admitted() const noexcept {
        return outcome == wait_outcome::acquired || outcome == wait_outcome::dequeued ||
               outcome == wait_outcome::already_held ||
               outcome == wait_outcome::admitted_fail_open;
    }
    /// True when the call should keep waiting (and poll again).
    constexpr bool in_line() const noexcept {
        return outcome == wait_outcome::queued || outcome == wait_outcome::waiting ||
               outcome == wait_outcome::waiting_fail_closed;
    }
    constexpr explicit operator bool() const noexcept { return admitted(); }
};

/// Why a call leaves the line without a slot (it picks the log line and the counter).
enum class leave_reason {
    left,    ///< the caller hung up, or the call went elsewhere (`QUEUE_LEFT`)
    timeout, ///< the application's longest wait passed (`QUEUE_TIMEOUT`)
};

/// The answer to `leave_queue`.
struct leave_result {
    bool left = false;                   ///< the call was in line, and now is not
    std::int64_t position = 0;           ///< its place when it left
    std::chrono::milliseconds waited{0}; ///< how long it had waited
    std::int64_t waiting = 0;            ///< callers in line afterwards
    constexpr explicit operator bool() const noexcept { return left; }
};

/// The waiting room at a glance, for dashboards and `/health/details`.
struct waiting_room_status {
    std::int64_t waiting = 0;                  ///< callers in line
    std::chrono::milliseconds longest_wait{0}; ///< how long the first in line has waited
    bool backend_healthy = true;               ///< false: the numbers are the last known ones
};

/// `{"waiting_calls":3,"longest_wait_ms":41250,"backend_healthy":true}`
inline std::string to_json(const waiting_room_status& s) {
    std::string out = "{\"waiting_calls\":" + std::to_string(s.waiting);
    out += ",\"longest_wait_ms\":" + std::to_string(s.longest_wait.count());
    out += ",\"backend_healthy\":";
    out += s.backend_healthy ? "true" : "false";
    out += '}';
    return out;
}

} // namespace callguard
