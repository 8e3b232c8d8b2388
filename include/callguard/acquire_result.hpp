#pragma once

#include <cstdint>
#include <string_view>

namespace callguard {

/// What `capacity_limiter::acquire` decided for one call.
enum class acquire_outcome {
    acquired,             ///< a new slot was taken
    already_held,         ///< the call already holds a slot (a retried webhook); nothing new taken
    rejected,             ///< over capacity (global cap, or the call's tenant cap)
    admitted_fail_open,   ///< backend unreachable and `fail_mode::open`: admitted without a slot
    rejected_fail_closed, ///< backend unreachable and `fail_mode::closed`
};

/// Lower-case name of an outcome, as used in logs, events and JSON.
constexpr std::string_view to_string(acquire_outcome o) noexcept {
    switch (o) {
    case acquire_outcome::acquired: return "acquired";
    case acquire_outcome::already_held: return "already_held";
    case acquire_outcome::rejected: return "rejected";
    case acquire_outcome::admitted_fail_open: return "admitted_fail_open";
    case acquire_outcome::rejected_fail_closed: return "rejected_fail_closed";
    }
    return "unknown";
}

/// The answer to `acquire`: the outcome plus the global count it was decided against.
struct acquire_result {
    acquire_outcome outcome = acquire_outcome::rejected;
    std::int64_t active = 0; ///< active slots after the decision (best known value when degraded)
    std::int64_t max = 0;    ///< the global cap
    bool tenant_limited = false; ///< rejected by the tenant's cap, not by the global one
    bool waiters_ahead = false;  ///< rejected: the free slots belong to callers in line

    /// True when the call may go ahead (a slot was taken, is held, or the limiter failed open).
    constexpr bool admitted() const noexcept {
        return outcome == acquire_outcome::acquired || outcome == acquire_outcome::already_held ||
               outcome == acquire_outcome::admitted_fail_open;
    }
    constexpr explicit operator bool() const noexcept { return admitted(); }
};

} // namespace callguard
