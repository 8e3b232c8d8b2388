#pragma once

// Advice, once per backend: a server whose maxmemory policy can evict keys may drop the
// limiter's sorted set, and an evicted set silently resets the cap.

#include "resp.hpp"

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

namespace callguard::detail {

class eviction_check {
public:
    static constexpr std::size_t command_count = 2;

    /// True once: the connection that gets it asks for the policy.
    bool claim() noexcept { return !done_.load(std::memory_order_relaxed) && !done_.exchange(true); }

    static void append_commands(std::string& resp) {
        append_resp(resp, {"CONFIG", "GET", "maxmemory-policy"});
        append_resp(resp, {"CONFIG", "GET", "maxmemory"});
    }

    /// The two replies; warns through `warn` when the policy can evict. CONFIG may be renamed
    /// or forbidden (an error reply): the check is advice, not a requirement.
    static void check(const redisReply* policy_reply, const redisReply* limit_reply,
                      const std::function<void(std::string_view)>& warn) {
        const auto policy = setting(policy_reply), limit = setting(limit_reply);
        if (!policy.empty() && policy != "noeviction" && !limit.empty() && limit != "0" && warn)
            warn("maxmemory-policy is " + policy + " with maxmemory " + limit +
                 ": Redis may evict the limiter's keys and reset the cap; use noeviction");
    }

private:
    static std::string setting(const redisReply* r) {
        return r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? reply_text(r->element[1]) : std::string();
    }

    std::atomic<bool> done_{false};
};

} // namespace callguard::detail
