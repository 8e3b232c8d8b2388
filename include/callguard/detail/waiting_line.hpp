#pragma once

// The waiting room's line in process memory: waiters in ticket order, each with a deadline after
// which it is dropped, and the admission walk of `waiting_room.hpp`. Not thread-safe: the memory
// backend calls it under one mutex.

#include "../waiting_room.hpp"
#include "string_hash.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace callguard::detail {

class waiting_line {
public:
    using rep = std::int64_t; ///< the owner's clock ticks
    /// A capped tenant's live slots (owned by the backend, outliving the line).
    using tenant_count = std::atomic<std::int64_t>;

    struct waiter {
        std::string call_id;
        std::string tenant;
        std::int64_t tenant_max = 0;
        const tenant_count* tenant_live = nullptr; ///< null when the tenant has no cap
        rep deadline = 0;
        rep since = 0;
    };

    /// What the walk decides for one caller.
    enum class verdict {
        admit,       ///< first in line: may take a slot
        wait,        ///< the free slots go to waiters ahead (or none is free)
        tenant_full, ///< its own tenant has no room left
    };

    std::size_t size() const noexcept { return by_ticket_.size(); }
    bool empty() const noexcept { return by_ticket_.empty(); }

    const waiter* find(std::string_view id) const {
        auto it = ticket_of_.find(id);
        return it == ticket_of_.end() ? nullptr : &by_ticket_.at(it->second);
    }

    const waiter* front() const { return empty() ? nullptr : &by_ticket_.begin()->second; }

    /// 1-based place of `id` in line, 0 if not in line. Linear in the waiters ahead.
    std::int64_t position(std::string_view id) const {
        auto it = ticket_of_.find(id);
        if (it == ticket_of_.end()) return 0;
        return static_cast<std::int64_t>(
                   std::distance(by_ticket_.begin(), by_ticket_.find(it->second))) + 1;
    }

    /// Joins the back of the line; returns the position.
    std::int64_t push_back(waiter w) {
        const auto ticket = next_ticket_++;
        by_deadline_.emplace(w.deadline, ticket);
        ticket_of_.emplace(w.call_id, ticket);
        by_ticket_.emplace(ticket, std::move(w));
        return static_cast<std::int64_t>(by_ticket_.size());
    }

    /// Moves `id`'s deadline to `deadline` (never earlier).
    void push_deadline(std::string_view id, rep deadline) {
        auto it = ticket_of_.find(id);
        if (it == ticket_of_.end()) return;
        auto& w = by_ticket_.at(it->second);
        if (deadline <= w.deadline) return;
        by_deadline_.erase({w.deadline, it->second});
        w.deadline = deadline;
        by_deadline_.emplace(deadline, it->second);
    }

    /// Drops `id` from the line; true if it was there.
    bool remove(std::string_view id) {
        auto it = ticket_of_.find(id);
        if (it == ticket_of_.end()) return false;
        const auto ticket = it->second;
        auto w = by_ticket_.find(ticket);
        by_deadline_.erase({w->second.deadline, ticket});
        ticket_of_.erase(it);
        by_ticket_.erase(w);
        return true;
    }

    /// Drops every waiter whose deadline is at or before `now`; returns how many.
    std::size_t purge(rep now) {
        std::size_t n = 0;
        while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
            const auto ticket = by_deadline_.begin()->second;
            by_deadline_.erase(by_deadline_.begin());
            auto w = by_ticket_.find(ticket);
            ticket_of_.erase(w->second.call_id);
            by_ticket_.erase(w);
            ++n;
        }
        return n;
    }

    /// The admission walk for `id`, a waiter in line, with `free` slots free.
    verdict walk_for_waiter(std::string_view id, std::int64_t free) const {
        auto it = ticket_of_.find(id);
        if (it == ticket_of_.end()) return verdict::wait;
        return walk(free, it->second, nullptr, 0);
    }

    /// The admission walk for a newcomer standing at the back, with `free` slots free.
    verdict walk_for_newcomer(std::int64_t free, const tenant_count* tenant_live,
                              std::int64_t tenant_max) const {
        return walk(free, 0, tenant_live, tenant_max);
    }

private:
    using given_map = std::unordered_map<const tenant_count*, std::int64_t>;

    static bool has_room(const tenant_count* live, std::int64_t max, const given_map& given) {
        if (!live || max <= 0) return true;
        auto it = given.find(live);
        return live->load() + (it == given.end() ? 0 : it->second) < max;
    }

    /// Gives the `free` slots to waiters in ticket order, skipping those whose tenant is out of
    /// room; `who` is a ticket in line, or 0 for a newcomer at the back.
    verdict walk(std::int64_t free, std::uint64_t who, const tenant_count* newcomer_live,
                 std::int64_t newcomer_max) const {
        if (free <= 0) return verdict::wait;
        given_map given;
        std::int64_t skipped = 0;
        for (const auto& [ticket, w] : by_ticket_) {
            const bool room = has_room(w.tenant_live, w.tenant_max, given);
            if (ticket == who) return room ? verdict::admit : verdict::tenant_full;
            if (!room) {
                if (++skipped >= max_skipped_waiters) return verdict::wait;
                continue;
            }
            if (w.tenant_live) ++given[w.tenant_live];
            if (--free == 0) return verdict::wait;
        }
        if (who != 0) return verdict::wait;
        return has_room(newcomer_live, newcomer_max, given) ? verdict::admit : verdict::tenant_full;
    }

    std::map<std::uint64_t, waiter> by_ticket_;
    std::unordered_map<std::string, std::uint64_t, string_hash, std::equal_to<>> ticket_of_;
    std::set<std::pair<rep, std::uint64_t>> by_deadline_;
    std::uint64_t next_ticket_ = 1;
};

} // namespace callguard::detail
