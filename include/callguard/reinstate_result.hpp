#pragma once

#include <cstdint>
#include <string_view>

namespace callguard {

/// What `capacity_limiter::reinstate` did for a call already in progress.
enum class reinstate_outcome {
    reinstated,   ///< its slot was put back (counted again, even over the cap)
    already_held, ///< it still held its slot (expiry pushed); nothing new taken
    released,     ///< the backend knows it was released lately: not put back
    deferred,     ///< the backend cannot answer: remembered, put back when it answers again
};

constexpr std::string_view to_string(reinstate_outcome o) noexcept {
    switch (o) {
    case reinstate_outcome::reinstated: return "reinstated";
    case reinstate_outcome::already_held: return "already_held";
    case reinstate_outcome::released: return "released";
    case reinstate_outcome::deferred: return "deferred";
    }
    return "unknown";
}

/// The answer to `reinstate`: the outcome plus the global count after it.
struct reinstate_result {
    reinstate_outcome outcome = reinstate_outcome::deferred;
    std::int64_t active = 0; ///< live slots after the operation (best known value when deferred)
    std::int64_t max = 0;    ///< the global cap (`active` may be above it)

    /// True when the call holds a slot in the backend now.
    constexpr bool held() const noexcept {
        return outcome == reinstate_outcome::reinstated || outcome == reinstate_outcome::already_held;
    }
    constexpr explicit operator bool() const noexcept { return held(); }
};

} // namespace callguard
