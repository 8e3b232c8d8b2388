#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>

namespace callguard {

/// Everything the limiter reports to an observer.
enum class event_kind {
    acquired,             ///< a new slot was taken
    already_held,         ///< a retried acquire for a call that holds a slot
    rejected,             ///< over the global or tenant cap
    released,             ///< a held slot was freed
    admitted_fail_open,   ///< backend down, admitted without a slot
    rejected_fail_closed, ///< backend down, rejected
    backend_down,         ///< first failure after a healthy period (once per transition)
    backend_up,           ///< first success after a failure (once per transition)
    backend_data_lost,    ///< the backend found its stored slots gone (restarted empty, flushed)
    // The waiting room (`enqueue`, `poll`, `leave_queue`):
    queued,        ///< a caller joined the line (`position`, `waiting`)
    dequeued,      ///< a waiter left the line with a slot (`waited`): it is admitted
    queue_full,    ///< a caller was turned away: the line was full
    queue_left,    ///< a waiter left without a slot (hung up, ...)
    queue_timeout, ///< a waiter was let go after the application's longest wait
    reinstated,           ///< a call in progress got its slot back (counted again, even over the cap)
};

constexpr std::string_view to_string(event_kind k) noexcept {
    switch (k) {
    case event_kind::acquired: return "acquired";
    case event_kind::already_held: return "already_held";
    case event_kind::rejected: return "rejected";
    case event_kind::released: return "released";
    case event_kind::admitted_fail_open: return "admitted_fail_open";
    case event_kind::rejected_fail_closed: return "rejected_fail_closed";
    case event_kind::backend_down: return "backend_down";
    case event_kind::backend_up: return "backend_up";
    case event_kind::backend_data_lost: return "backend_data_lost";
    case event_kind::queued: return "queued";
    case event_kind::dequeued: return "dequeued";
    case event_kind::queue_full: return "queue_full";
    case event_kind::queue_left: return "queue_left";
    case event_kind::queue_timeout: return "queue_timeout";
    case event_kind::reinstated: return "reinstated";
    }
    return "unknown";
}

/// One event. The views are valid only during the observer call: copy what you keep.
struct capacity_event {
    event_kind kind = event_kind::acquired;
    std::string_view call_id; ///< empty for the backend_* kinds
    std::string_view tenant;
    std::int64_t active = 0;
    std::int64_t max = 0;
    bool tenant_limited = false; ///< rejected by the tenant cap
    bool local_fallback = false; ///< decided by `fail_mode::local`'s in-process cap
    std::string_view message;    ///< the backend's error text for backend_down
    bool waiters_ahead = false;  ///< rejected because the free slots belong to callers in line
    std::int64_t position = 0;   ///< queued, queue_left, queue_timeout: place in line
    std::int64_t waiting = 0;    ///< waiting-room kinds: callers in line
    std::chrono::milliseconds waited{0}; ///< dequeued, queue_left, queue_timeout: time in line
};

/// Called synchronously on the thread that made the decision, after the decision, outside any
/// lock of the limiter (for slots the limiter puts back on its own: its reinstatement thread). Keep it quick (hand the event to a queue); exceptions are swallowed.
/// This is how an application records `rejected_capacity` rows in its own database.
using event_observer = std::function<void(const capacity_event&)>;

} // namespace callguard
