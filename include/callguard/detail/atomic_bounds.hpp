#pragma once

// Lock-free updates of shared counts and bounds, used where a cap must hold under any
// interleaving of threads.

#include <atomic>
#include <cstdint>

namespace callguard::detail {

/// Takes one unit of `counter` if it stays <= `limit`; never over-admits under contention.
/// Returns the count this reservation made (>= 1), or 0 when there was no room: the caller
/// learns the count without reading the shared cache line again.
/// Sequentially consistent, so the memory backend can order a reservation against the waiting
/// room's announcement (a `lock cmpxchg` either way on x86).
inline std::int64_t try_reserve(std::atomic<std::int64_t>& counter, std::int64_t limit) noexcept {
    auto v = counter.load(std::memory_order_relaxed);
    while (v < limit)
        if (counter.compare_exchange_weak(v, v + 1, std::memory_order_seq_cst,
                                          std::memory_order_relaxed))
            return v + 1;
    return 0;
}

/// Lowers `a` to `v` if `v` is smaller; a racing smaller value wins.
inline void store_min(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
    auto cur = a.load(std::memory_order_relaxed);
    while (v < cur && !a.compare_exchange_weak(cur, v, std::memory_order_acq_rel)) {
    }
}

} // namespace callguard::detail
