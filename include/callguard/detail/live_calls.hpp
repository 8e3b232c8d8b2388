#pragma once

// The calls a limiter knows to be in progress, so it can put their slots back when the backend
// lost them or never had them (admitted during an outage). Bounded; sharded by call id so
// unrelated calls do not share a lock. The calls waiting to be put back form two queues, linked
// from their entries (forgetting a call takes it out at once, and the queues never outgrow the
// set): calls held here (by a guard in this process, or vouched for by the application), which
// are known to be live, and calls only admitted here, whose end another instance may have seen. The worker that drains them
// never scans the whole set.

#include "string_hash.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace callguard::detail {

class live_calls {
public:
    using rep = std::int64_t; ///< a steady-clock time in ns, as the limiter measures it

    enum class remembered { added, updated, full };
    /// What became of a taken call by the time its slot was back.
    enum class settled {
        done,      ///< still the same call: no longer waiting
        forgotten, ///< released meanwhile
        renewed,   ///< released and remembered anew meanwhile
    };

    /// One call to put back, copied out of the set.
    struct work_item {
        std::string call_id, tenant;
        rep expires = 0;       ///< when the call's slot would have expired
        std::uint64_t gen = 0; ///< which remembering of this id it was
        bool held_here = false; ///< held by a guard here, or vouched for
    };

    explicit live_calls(std::size_t capacity, std::size_t shards = 16)
        : capacity_(capacity), shard_count_(std::max<std::size_t>(shards, 1)),
          shards_(std::make_unique<shard[]>(shard_count_)) {}

    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
    /// Calls waiting to be put back (queued, or taken and not settled yet).
    std::size_t pending() const noexcept { return pending_.load(std::memory_order_relaxed); }
    /// Calls held here (a guard, or vouched for), queued to be put back.
    std::size_t queued_held() const noexcept { return queued_[held_queue].load(std::memory_order_relaxed); }
    /// Calls queued to be put back, of both kinds.
    std::size_t queued() const noexcept {
        return queued_[held_queue].load(std::memory_order_relaxed) +
               queued_[admitted_queue].load(std::memory_order_relaxed);
    }

    /// Remembers `call_id` as live until `expires` (pushed, never shortened): waiting to be put
    /// back when `pending`, else known to hold its slot (no longer waiting). `held_here`: a guard
    /// in this process holds it, or the application vouched for it with `reinstate` (stays so
    /// until the call is forgotten). A call already known keeps its tenant.
    remembered remember(std::string_view call_id, std::string_view tenant, rep expires, bool pending,
                        bool held_here) {
        auto& sh = shard_for(call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.calls.find(call_id);
        if (it == sh.calls.end()) {
            if (size_.fetch_add(1, std::memory_order_relaxed) >= capacity_) {
                size_.fetch_sub(1, std::memory_order_relaxed);
                return remembered::full;
            }
            it = sh.calls.try_emplace(std::string(call_id)).first;
            it->second.tenant = std::string(tenant);
            it->second.expires = expires;
            it->second.gen = next_gen_++;
            it->second.held_here = held_here;
            if (pending) mark_pending(it);
            return remembered::added;
        }
        auto& e = it->second;
        e.expires = std::max(e.expires, expires);
        if (held_here && !e.held_here) {
            e.held_here = true;
            if (e.queued) { // move to the queue of calls known to be live
                unqueue(it);
                enqueue(it, false);
            }
        }
        if (pending) {
            mark_pending(it);
        } else if (e.pending) {
            unqueue(it);
            e.pending = false;
            pending_.fetch_sub(1, std::memory_order_relaxed);
        }
        return remembered::updated;
    }

    /// Pushes a known call's expiry (a refresh); false if unknown.
    bool touch(std::string_view call_id, rep expires) {
        auto& sh = shard_for(call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.calls.find(call_id);
        if (it == sh.calls.end()) return false;
        it->second.expires = std::max(it->second.expires, expires);
        return true;
    }

    /// Forgets a call (it was released): it is never put back after this returns.
    void forget(std::string_view call_id) {
        auto& sh = shard_for(call_id);
        std::lock_guard lk(sh.mu);
        if (auto it = sh.calls.find(call_id); it != sh.calls.end()) erase(sh, it);
    }

    /// Marks every call still live at `now` as waiting to be put back (the backend lost its
    /// slots); forgets the expired ones. Returns how many wait now.
    std::size_t mark_all_pending(rep now) {
        for (std::size_t i = 0; i < shard_count_; ++i) {
            auto& sh = shards_[i];
            std::lock_guard lk(sh.mu);
            for (auto it = sh.calls.begin(); it != sh.calls.end();) {
                if (it->second.expires <= now) {
                    it = erase(sh, it);
                } else {
                    mark_pending(it);
                    ++it;
                }
            }
        }
        return pending();
    }

    /// Takes up to `n` calls waiting to be put back, oldest first: those held here, then (when
    /// `admitted_too`) the ones only admitted here. They stay pending until `done`, `drop` or
    /// `put_back`. Expired ones are forgotten on the way.
    std::vector<work_item> take(std::size_t n, rep now, bool admitted_too) {
        std::vector<work_item> out;
        for (std::size_t q : {held_queue, admitted_queue}) {
            if (q == admitted_queue && !admitted_too) break;
            while (out.size() < n) {
                std::string id;
                {
                    std::lock_guard lk(queue_mu_);
                    if (queues_[q].empty()) break;
                    id = queues_[q].front();
                }
                auto& sh = shard_for(id);
                std::lock_guard lk(sh.mu);
                auto it = sh.calls.find(id);
                // Forgotten or moved between the two locks: look again.
                if (it == sh.calls.end() || !it->second.queued) continue;
                unqueue(it);
                if (it->second.expires <= now) {
                    erase(sh, it);
                    continue;
                }
                out.push_back({it->first, it->second.tenant, it->second.expires, it->second.gen, it->second.held_here});
            }
        }
        return out;
    }

    /// The slot of `w` is back: it stops waiting (unless it was queued again meanwhile, after a
    /// new data loss). The caller undoes what it did for a call `forgotten` meanwhile.
    settled done(const work_item& w) {
        auto& sh = shard_for(w.call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.calls.find(w.call_id);
        if (it == sh.calls.end()) return settled::forgotten;
        if (it->second.gen != w.gen) return settled::renewed;
        if (it->second.pending && !it->second.queued) {
            it->second.pending = false;
            pending_.fetch_sub(1, std::memory_order_relaxed);
        }
        return settled::done;
    }

    /// Forgets `w`'s call if it is still the remembering `w` came from (the backend says the call
    /// ended elsewhere).
    void drop(const work_item& w) {
        auto& sh = shard_for(w.call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.calls.find(w.call_id);
        if (it != sh.calls.end() && it->second.gen == w.gen) erase(sh, it);
    }

    /// Queues taken calls again, at the front (the backend could not answer).
    void put_back(const std::vector<work_item>& items) {
        for (auto w = items.rbegin(); w != items.rend(); ++w) {
            auto& sh = shard_for(w->call_id);
            std::lock_guard lk(sh.mu);
            auto it = sh.calls.find(w->call_id);
            if (it == sh.calls.end() || it->second.gen != w->gen || !it->second.pending || it->second.queued)
                continue;
            enqueue(it, true);
        }
    }

private:
    using queue_type = std::list<std::string>;
    static constexpr std::size_t held_queue = 0, admitted_queue = 1;

    struct entry {
        std::string tenant;
        rep expires = 0;
        std::uint64_t gen = 0;
        bool held_here = false; ///< a guard in this process holds it, or the application vouched
        bool pending = false; ///< waiting to be put back
        bool queued = false;  ///< in `queues_[queue]`, at `queue_pos`
        std::size_t queue = held_queue;
        queue_type::iterator queue_pos{};
    };
    using map = std::unordered_map<std::string, entry, string_hash, std::equal_to<>>;

    struct alignas(64) shard {
        std::mutex mu;
        map calls;
    };

    shard& shard_for(std::string_view id) noexcept { return shards_[string_hash{}(id) % shard_count_]; }

    // The helpers below are called with the entry's shard lock held; they take the queue's lock
    // inside it (never the reverse).
    void mark_pending(map::iterator it) {
        if (!it->second.pending) {
            it->second.pending = true;
            pending_.fetch_add(1, std::memory_order_relaxed);
        }
        if (!it->second.queued) enqueue(it, false);
    }

    void enqueue(map::iterator it, bool front) {
        auto& e = it->second;
        e.queue = e.held_here ? held_queue : admitted_queue;
        std::lock_guard lk(queue_mu_);
        auto& q = queues_[e.queue];
        e.queue_pos = q.insert(front ? q.begin() : q.end(), it->first);
        e.queued = true;
        queued_[e.queue].fetch_add(1, std::memory_order_relaxed);
    }

    void unqueue(map::iterator it) {
        auto& e = it->second;
        if (!e.queued) return;
        std::lock_guard lk(queue_mu_);
        queues_[e.queue].erase(e.queue_pos);
        e.queued = false;
        queued_[e.queue].fetch_sub(1, std::memory_order_relaxed);
    }

    map::iterator erase(shard& sh, map::iterator it) {
        unqueue(it);
        if (it->second.pending) pending_.fetch_sub(1, std::memory_order_relaxed);
        size_.fetch_sub(1, std::memory_order_relaxed);
        return sh.calls.erase(it);
    }

    const std::size_t capacity_;
    const std::size_t shard_count_;
    std::unique_ptr<shard[]> shards_;
    std::atomic<std::size_t> size_{0}, pending_{0};
    std::array<std::atomic<std::size_t>, 2> queued_{};
    std::atomic<std::uint64_t> next_gen_{1};
    std::mutex queue_mu_;
    std::array<queue_type, 2> queues_; // ids waiting to be put back, oldest first, by kind
};

} // namespace callguard::detail
