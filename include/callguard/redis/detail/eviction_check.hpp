#pragma once

// Advice, once per backend: a server whose maxmemory policy can evict keys may drop the
// limiter's sorted set, and an evicted set silently resets the cap.

#include "connection.hpp"

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

namespace callguard::detail {

class eviction_check {
public:
    /// Asks `c` for the policy the first time it is called; warns through `warn` if it can evict.
    void run_once(redis_connection& c, const std::function<void(std::string_view)>& warn) noexcept {
        if (done_.load(std::memory_order_relaxed) || done_.exchange(true)) return;
        try {
            auto policy = setting(c, "maxmemory-policy");
            auto limit = setting(c, "maxmemory");
            if (!policy.empty() && policy != "noeviction" && !limit.empty() && limit != "0" && warn)
                warn("maxmemory-policy is " + policy + " with maxmemory " + limit +
                     ": Redis may evict the limiter's keys and reset the cap; use noeviction");
        } catch (...) {
            // CONFIG may be renamed or forbidden; the check is advice, not a requirement.
        }
    }

private:
    static std::string setting(redis_connection& c, std::string_view name) {
        auto r = c.command({"CONFIG", "GET", name});
        return r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? reply_text(r->element[1])
                                                                      : std::string();
    }

    std::atomic<bool> done_{false};
};

} // namespace callguard::detail
