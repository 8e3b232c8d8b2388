#pragma once

#include "../backend.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace callguard::detail {

/// The smallest type that models `capacity_backend`; checked below so the concept itself
/// stays satisfiable as it evolves.
struct archetype_backend {
    slot_reply try_acquire(const slot_request&) { return {}; }
    release_reply release(std::string_view) { return {}; }
    bool refresh(std::string_view, std::chrono::milliseconds) { return false; }
    std::int64_t active_count() { return 0; }
    std::size_t cleanup_expired() { return 0; }
    std::string_view name() const { return "archetype"; }
    bool healthy() const noexcept { return true; }
};
static_assert(capacity_backend<archetype_backend>);

/// The same, able to put slots back.
struct archetype_reinstating_backend : archetype_backend {
    reinstate_reply reinstate(const slot_request&) { return {}; }
};
static_assert(capacity_backend<archetype_reinstating_backend>);
static_assert(reinstates_slots<archetype_reinstating_backend>);
static_assert(!reinstates_slots<archetype_backend>);

} // namespace callguard::detail
