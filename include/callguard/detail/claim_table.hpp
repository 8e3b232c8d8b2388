#pragma once

// The memory backend's claims: key -> expiry, with an index by expiry so that every claim first
// forgets what has expired (bounded memory: no claim outlives its TTL by more than the next
// claim). One mutex: claims are rare next to admissions.

#include "string_hash.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace callguard::detail {

class claim_table {
public:
    using rep = std::int64_t; ///< the backend's clock ticks

    struct answer {
        bool claimed = false;
        rep remaining = 0; ///< ticks until the key is free again
    };

    /// Takes `key` until `now + ttl` unless it is held past `now`.
    answer claim(std::string_view key, rep now, rep ttl) {
        std::lock_guard lk(mu_);
        forget_expired(now);
        if (auto it = held_.find(key); it != held_.end() && it->second > now)
            return {false, it->second - now};
        const rep expires = now + ttl;
        held_.insert_or_assign(std::string(key), expires);
        by_expiry_.emplace(expires, std::string(key));
        return {true, ttl};
    }

    std::size_t size() const {
        std::lock_guard lk(mu_);
        return held_.size();
    }

private:
    void forget_expired(rep now) {
        while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
            const auto& [expires, key] = *by_expiry_.begin();
            // A key claimed again after it expired has a newer entry: only the latest counts.
            if (auto it = held_.find(key); it != held_.end() && it->second == expires) held_.erase(it);
            by_expiry_.erase(by_expiry_.begin());
        }
    }

    mutable std::mutex mu_;
    std::unordered_map<std::string, rep, string_hash, std::equal_to<>> held_;
    std::multimap<rep, std::string> by_expiry_;
};

} // namespace callguard::detail
