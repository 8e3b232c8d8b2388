#pragma once

// Releases that could not reach a networked backend, kept to be replayed once it answers again,
// so their slots do not wait for the TTL. Bounded (a long outage must not grow memory without
// limit: past the bound the TTL is the safety net) and de-duplicated (a release repeated while the
// backend is down is kept once).

#include "string_hash.hpp"

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace callguard::detail {

class replay_queue {
public:
    enum class keep_result {
        kept,       ///< queued
        duplicate,  ///< already queued
        dropped,    ///< the queue is full
        first_drop, ///< the queue is full, and this is the first drop since it last had room
    };

    explicit replay_queue(std::size_t bound) : bound_(bound) {}

    /// Keeps `id` for a replay. Never throws: a failure to allocate counts as a drop.
    keep_result keep(std::string_view id) noexcept {
        try {
            std::lock_guard lk(mu_);
            if (ids_.find(id) != ids_.end()) return keep_result::duplicate;
            if (ids_.size() >= bound_) return overflowed_ ? keep_result::dropped : (overflowed_ = true, keep_result::first_drop);
            ids_.emplace(id);
            size_.store(ids_.size());
            return keep_result::kept;
        } catch (...) {
            return keep_result::dropped;
        }
    }

    /// Takes up to `n` ids out of the queue, to be replayed; whatever fails goes back with `keep`.
    std::vector<std::string> take(std::size_t n) {
        std::vector<std::string> batch;
        std::lock_guard lk(mu_);
        batch.reserve(std::min(n, ids_.size()));
        for (auto it = ids_.begin(); it != ids_.end() && batch.size() < n;)
            batch.push_back(std::move(ids_.extract(it++).value()));
        size_.store(ids_.size());
        if (ids_.size() < bound_) overflowed_ = false;
        return batch;
    }

    /// Ids waiting; lock-free, for the fast "anything to replay?" check of every call.
    std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
    bool empty() const noexcept { return size() == 0; }
    std::size_t bound() const noexcept { return bound_; }

private:
    const std::size_t bound_;
    mutable std::mutex mu_;
    std::unordered_set<std::string, string_hash, std::equal_to<>> ids_;
    bool overflowed_ = false; // a drop was reported since the queue last had room
    std::atomic<std::size_t> size_{0};
};

} // namespace callguard::detail
