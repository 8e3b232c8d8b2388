#pragma once

#include "../backend.hpp"
#include "../claim.hpp"
#include "../detail/atomic_bounds.hpp"
#include "../detail/claim_table.hpp"
#include "../detail/string_hash.hpp"
#include "../detail/waiting_line.hpp"
#include "../waiting_room.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace callguard {

/// In-process backend: slots in a sharded hash map, the counts in atomics.
///
/// Admission takes one shard's lock (by call id), so unrelated calls on different threads do not
/// serialize on one mutex. Expired slots are removed when they matter: when a request would be
/// rejected, and before counting. A lower bound on the earliest expiry makes that check O(1)
/// until something can actually have expired. Released map nodes are kept per shard and reused,
/// so steady-state acquire/release does not touch the allocator.
///
/// Claims (`claim.hpp`) are a key -> expiry table under a mutex of their own.
///
/// The waiting room (`waiting_room.hpp`) is a line under one mutex. Admission checks one atomic
/// (the line's size) and takes the fast path above while nobody waits; while anyone does, it is
/// decided under the line's mutex in line order.
///
/// Copies are handles to the same slots, so two limiters (two "instances" in one process) can
/// share one cap, as they would over Redis.
///
/// `Clock` is any object with `now()` returning a `time_point` (default `steady_clock`), stored
/// by value so tests can pass a clock they move by hand.
template <class Clock = std::chrono::steady_clock>
class basic_memory_backend {
public:
    static constexpr std::size_t default_shards = 16;
    /// Never waits for I/O: the async API (async.hpp) calls it at initiation.
    static constexpr bool never_blocks = true;

    basic_memory_backend() : basic_memory_backend(Clock{}) {}

    explicit basic_memory_backend(Clock clock, std::size_t shards = default_shards)
        : state_(std::make_shared<state>(std::move(clock), std::max<std::size_t>(shards, 1))) {}

    slot_reply try_acquire(const slot_request& req) {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        if (st.waiters.load() == 0)
            if (auto r = take_slot(req, now, true)) return *r;
        return acquire_in_line(req, now); // callers wait: decide in line order
    }

    /// Puts back a call's slot without a cap check (requirement 10 of `backend.hpp`): the counts
    /// may go over the caps, and `try_acquire` rejects until they are below again. Releases are
    /// not remembered, so the answer is never `released`.
    reinstate_reply reinstate(const slot_request& req) {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        const auto expires = now + ttl_ticks(req.ttl);
        tenant_counter* tc = req.tenant_max > 0 ? st.tenant(req.tenant) : nullptr;
        auto& sh = st.shard_for(req.call_id);
        std::lock_guard lk(sh.mu);
        if (auto it = sh.slots.find(req.call_id); it != sh.slots.end()) {
            if (it->second.expires > now) {
                it->second.expires = std::max(it->second.expires, expires);
                return {reinstate_state::already_held, st.active.load()};
            }
            st.erase(sh, it);
        }
        if (tc) tc->count.fetch_add(1);
        const auto active = st.active.fetch_add(1) + 1;
        st.insert(sh, req.call_id, slot{expires, tc});
        return {reinstate_state::reinstated, active};
    }

    release_reply release(std::string_view call_id) {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        auto& sh = st.shard_for(call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.slots.find(call_id);
        if (it == sh.slots.end()) return {false, st.active.load()};
        const bool live = it->second.expires > now;
        return {live, st.erase(sh, it)};
    }

    bool refresh(std::string_view call_id, std::chrono::milliseconds ttl) {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        auto& sh = st.shard_for(call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.slots.find(call_id);
        if (it == sh.slots.end()) return false;
        if (it->second.expires <= now) {
            st.erase(sh, it);
            return false;
        }
        it->second.expires = std::max(it->second.expires, now + ttl_ticks(ttl));
        return true;
    }

    std::int64_t active_count() {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        if (st.maybe_expired(now)) st.cleanup_expired(now);
        return st.active.load();
    }

    std::size_t cleanup_expired() {
        auto& st = *state_;
        return st.cleanup_expired(ticks(st.clock.now()));
    }

    // --- waiting room (waiting_room.hpp) ----------------------------------------------------

    wait_reply wait_turn(const wait_request& req) {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        line_lock lk(st, now);
        const slot_request as_slot{req.call_id, req.tenant, req.max_active, req.tenant_max,
                                   req.slot_ttl};
        if (auto held = push_if_held(as_slot, now)) {
            st.line.remove(req.call_id); // a slot holder is never waiting
            return {wait_state::already_held, 0, lk.size(), held->active, {}, false};
        }
        if (st.maybe_expired(now)) st.cleanup_expired(now);
        const auto free = req.max_active - st.active.load();
        if (const auto* w = st.line.find(req.call_id)) {
            const auto waited = millis(now - w->since);
            const auto v = st.line.walk_for_waiter(req.call_id, free);
            if (v == line_verdict::admit) {
                const slot_request mine{req.call_id, w->tenant, req.max_active, w->tenant_max,
                                        req.slot_ttl};
                auto r = take_slot(mine, now, false);
                if (r && r->state == slot_state::acquired) {
                    st.line.remove(req.call_id);
                    return {wait_state::admitted, 0, lk.size(), r->active, waited, false};
                }
            }
            st.line.push_deadline(req.call_id, now + ttl_ticks(req.waiter_ttl));
            return {wait_state::waiting, st.line.position(req.call_id), lk.size(),
                    st.active.load(), waited, v == line_verdict::tenant_full};
        }
        if (!req.join) return {wait_state::not_waiting, 0, lk.size(), st.active.load(), {}, false};
        tenant_counter* tc = req.tenant_max > 0 ? st.tenant(req.tenant) : nullptr;
        const auto v = st.line.walk_for_newcomer(free, tc ? &tc->count : nullptr, req.tenant_max);
        if (v == line_verdict::admit) {
            auto r = take_slot(as_slot, now, false);
            if (r && r->state == slot_state::acquired)
                return {wait_state::acquired, 0, lk.size(), r->active, {}, false};
            if (r && r->state == slot_state::already_held) // a racing acquire of the same call
                return {wait_state::already_held, 0, lk.size(), r->active, {}, false};
        }
        if (req.max_length > 0 && lk.size() >= req.max_length)
            return {wait_state::full, 0, lk.size(), st.active.load(), {}, false};
        const auto position = st.line.push_back({std::string(req.call_id), std::string(req.tenant),
                                                 req.tenant_max, tc ? &tc->count : nullptr,
                                                 now + ttl_ticks(req.waiter_ttl), now});
        return {wait_state::queued, position, lk.size(), st.active.load(), {},
                v == line_verdict::tenant_full};
    }

    leave_reply leave_line(std::string_view call_id) {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        line_lock lk(st, now);
        const auto* w = st.line.find(call_id);
        if (!w) return {false, 0, {}, lk.size()};
        leave_reply r{true, st.line.position(call_id), millis(now - w->since), 0};
        st.line.remove(call_id);
        r.waiting = lk.size();
        return r;
    }

    line_reply line_status() {
        auto& st = *state_;
        const auto now = ticks(st.clock.now());
        line_lock lk(st, now);
        const auto* head = st.line.front();
        return {lk.size(), head ? millis(now - head->since) : std::chrono::milliseconds{0}};
    }

    // --- claims (claim.hpp) -----------------------------------------------------------------

    claim_reply claim(std::string_view key, std::chrono::milliseconds ttl) {
        auto& st = *state_;
        const auto a = st.claims.claim(key, ticks(st.clock.now()), ttl_ticks(ttl));
        return {a.claimed, millis(a.remaining)};
    }

    std::string_view name() const noexcept { return "memory"; }
    bool healthy() const noexcept { return true; }

private:
    using rep = std::int64_t;

    struct tenant_counter {
        std::atomic<std::int64_t> count{0};
    };
    struct slot {
        rep expires;
        tenant_counter* tenant; // owned by state::tenants, never erased
    };
    using slot_map =
        std::unordered_map<std::string, slot, detail::string_hash, std::equal_to<>>;

    static constexpr std::size_t spare_nodes = 32;
    static constexpr rep never = std::numeric_limits<rep>::max();

    struct alignas(64) shard {
        std::mutex mu;
        slot_map slots;
        std::vector<typename slot_map::node_type> spare; // capacity reserved: no allocation
        shard() { spare.reserve(spare_nodes); }
    };

    struct state {
        Clock clock;
        std::size_t shard_count;
        std::unique_ptr<shard[]> shards;
        // Each on its own cache line: `active` is written by every decision, `next_expiry` is
        // read by every decision and rarely written.
        alignas(64) std::atomic<std::int64_t> active{0};
        alignas(64) std::atomic<rep> next_expiry{never}; // never above the earliest live expiry
        alignas(64) std::mutex cleanup_mu;
        // The waiting room: the line under its own mutex, and its size (plus one while an
        // operation on it is under way) where admissions can check it without the mutex.
        alignas(64) std::atomic<std::int64_t> waiters{0};
        std::mutex line_mu;
        detail::waiting_line line;
        // Apart from `waiters`, which every admission reads: a tenant's lookup writes this lock.
        alignas(64) std::shared_mutex tenants_mu;
        std::unordered_map<std::string, std::unique_ptr<tenant_counter>, detail::string_hash,
                           std::equal_to<>>
            tenants;
        detail::claim_table claims;

        state(Clock c, std::size_t n)
            : clock(std::move(c)), shard_count(n), shards(std::make_unique<shard[]>(n)) {}

        shard& shard_for(std::string_view id) noexcept {
            return shards[detail::string_hash{}(id) % shard_count];
        }

        tenant_counter* tenant(std::string_view name) {
            {
                std::shared_lock lk(tenants_mu);
                if (auto it = tenants.find(name); it != tenants.end()) return it->second.get();
            }
            std::unique_lock lk(tenants_mu);
            auto [it, _] = tenants.try_emplace(std::string(name));
            if (!it->second) it->second = std::make_unique<tenant_counter>();
            return it->second.get();
        }

        bool maybe_expired(rep now) const noexcept { return next_expiry.load() <= now; }

        /// After a reservation: is a line operation under way or anyone waiting? The
        /// reservation and this load, and `line_lock`'s increment and its reads of the counts,
        /// are all sequentially consistent: of two racing sides, one sees the other.
        bool line_announced() const noexcept { return waiters.load() != 0; }

        // Called with sh.mu held.
        void insert(shard& sh, std::string_view id, slot s) {
            if (!sh.spare.empty()) {
                auto nh = std::move(sh.spare.back());
                sh.spare.pop_back();
                nh.key().assign(id.data(), id.size());
                nh.mapped() = s;
                sh.slots.insert(std::move(nh));
            } else {
                sh.slots.emplace(std::string(id), s);
            }
            detail::store_min(next_expiry, s.expires);
        }

        // Called with sh.mu held. Returns the count it left.
        std::int64_t erase(shard& sh, typename slot_map::iterator it) noexcept {
            if (it->second.tenant) it->second.tenant->count.fetch_sub(1);
            const auto left = active.fetch_sub(1) - 1;
            if (sh.spare.size() < spare_nodes)
                sh.spare.push_back(sh.slots.extract(it)); // within reserved capacity
            else
                sh.slots.erase(it);
            return left;
        }

        /// Removes every slot expired at `now` and recomputes the expiry bound. Resetting the
        /// bound first and lowering it shard by shard under each shard's lock keeps it a lower
        /// bound even while other threads insert.
        std::size_t cleanup_expired(rep now) {
            std::lock_guard plk(cleanup_mu);
            next_expiry.store(never);
            std::size_t removed = 0;
            for (std::size_t i = 0; i < shard_count; ++i) {
                auto& sh = shards[i];
                std::lock_guard lk(sh.mu);
                rep earliest = never;
                for (auto it = sh.slots.begin(); it != sh.slots.end();) {
                    if (it->second.expires <= now) {
                        auto next = std::next(it);
                        erase(sh, it);
                        it = next;
                        ++removed;
                    } else {
                        earliest = std::min(earliest, it->second.expires);
                        ++it;
                    }
                }
                detail::store_min(next_expiry, earliest);
            }
            return removed;
        }
    };

    static rep ticks(typename Clock::time_point t) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }
    static rep ttl_ticks(std::chrono::milliseconds ttl) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(ttl).count();
    }

    using line_verdict = detail::waiting_line::verdict;

    /// Adds a slot for `req` if the caps allow (or answers `already_held` for a live one).
    /// With `check_line`, gives up (nullopt, nothing taken) when callers started waiting: then
    /// the line decides. A reservation is made before that check, and the line announces itself
    /// before it reads the counts, so one of the two always sees the other.
    std::optional<slot_reply> take_slot(const slot_request& req, rep now, bool check_line) {
        auto& st = *state_;
        const auto expires = now + ttl_ticks(req.ttl);
        tenant_counter* tc = req.tenant_max > 0 ? st.tenant(req.tenant) : nullptr;
        auto& sh = st.shard_for(req.call_id);

        for (int attempt = 0;; ++attempt) {
            {
                std::lock_guard lk(sh.mu);
                if (auto it = sh.slots.find(req.call_id); it != sh.slots.end()) {
                    if (it->second.expires > now) {
                        it->second.expires = std::max(it->second.expires, expires);
                        return slot_reply{slot_state::already_held, st.active.load()};
                    }
                    st.erase(sh, it); // expired: it no longer counts, admit it afresh below
                }
                bool tenant_ok = !tc || detail::try_reserve(tc->count, req.tenant_max);
                if (tenant_ok) {
                    // The count comes back from the reservation itself: under contention a
                    // second look at that cache line costs as much as the reservation.
                    if (const auto active = detail::try_reserve(st.active, req.max_active)) {
                        if (check_line && st.line_announced()) {
                            st.active.fetch_sub(1);
                            if (tc) tc->count.fetch_sub(1);
                            return std::nullopt;
                        }
                        st.insert(sh, req.call_id, slot{expires, tc});
                        return slot_reply{slot_state::acquired, active};
                    }
                    if (tc) tc->count.fetch_sub(1);
                }
                if (attempt > 0 || !st.maybe_expired(now))
                    return slot_reply{tenant_ok ? slot_state::rejected : slot_state::rejected_tenant,
                                      st.active.load()};
            }
            st.cleanup_expired(now); // something may have expired: clean up outside the shard lock, retry once
        }
    }

    /// Pushes a live slot's expiry as `take_slot` would; nullopt when `req.call_id` holds none.
    std::optional<slot_reply> push_if_held(const slot_request& req, rep now) {
        auto& st = *state_;
        auto& sh = st.shard_for(req.call_id);
        std::lock_guard lk(sh.mu);
        auto it = sh.slots.find(req.call_id);
        if (it == sh.slots.end() || it->second.expires <= now) return std::nullopt;
        it->second.expires = std::max(it->second.expires, now + ttl_ticks(req.ttl));
        return slot_reply{slot_state::already_held, st.active.load()};
    }

    /// `try_acquire` while callers wait: a waiter takes its slot only when first in line, a
    /// newcomer only when the free slots exceed what the waiters ahead of it take.
    slot_reply acquire_in_line(const slot_request& req, rep now) {
        auto& st = *state_;
        line_lock lk(st, now);
        if (st.line.empty()) return *take_slot(req, now, false);
        if (auto held = push_if_held(req, now)) return *held;
        if (st.maybe_expired(now)) st.cleanup_expired(now);
        const auto free = req.max_active - st.active.load();
        if (free <= 0) return {slot_state::rejected, st.active.load()};
        line_verdict v;
        const bool in_line = st.line.find(req.call_id) != nullptr;
        if (in_line) {
            v = st.line.walk_for_waiter(req.call_id, free);
        } else {
            tenant_counter* tc = req.tenant_max > 0 ? st.tenant(req.tenant) : nullptr;
            v = st.line.walk_for_newcomer(free, tc ? &tc->count : nullptr, req.tenant_max);
        }
        if (v == line_verdict::wait) return {slot_state::rejected_queue, st.active.load()};
        if (v == line_verdict::tenant_full) return {slot_state::rejected_tenant, st.active.load()};
        auto r = *take_slot(req, now, false);
        if (in_line && r.state == slot_state::acquired) st.line.remove(req.call_id);
        return r;
    }

    /// Holds the line's mutex; while held, `waiters` is non-zero (announced), so admissions
    /// outside the line step aside. On release it publishes the line's true size.
    class line_lock {
    public:
        line_lock(state& s, rep now) : st_(s), lk_(s.line_mu) {
            st_.waiters.fetch_add(1);
            st_.line.purge(now);
        }
        ~line_lock() { st_.waiters.store(static_cast<std::int64_t>(st_.line.size())); }
        line_lock(const line_lock&) = delete;
        line_lock& operator=(const line_lock&) = delete;
        std::int64_t size() const noexcept { return static_cast<std::int64_t>(st_.line.size()); }

    private:
        state& st_;
        std::lock_guard<std::mutex> lk_;
    };

    static std::chrono::milliseconds millis(rep d) noexcept {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(d));
    }

    std::shared_ptr<state> state_; // shared: copies of a backend see the same slots
};

/// The in-process backend on `std::chrono::steady_clock`.
using memory_backend = basic_memory_backend<>;

static_assert(capacity_backend<memory_backend>);
static_assert(waiting_room_backend<memory_backend>);
static_assert(reinstates_slots<memory_backend>);
static_assert(claim_backend<memory_backend>);

} // namespace callguard
