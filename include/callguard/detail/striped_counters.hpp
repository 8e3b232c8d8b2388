#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace callguard::detail {

/// Monotonic event counters that threads bump without sharing a cache line: each thread adds to
/// its own stripe, readers sum the stripes. Counting must not become the bottleneck of a limiter
/// whose backend takes ~100 ns per decision.
template <std::size_t N>
class striped_counters {
public:
    void add(std::size_t which) noexcept {
        stripes_[stripe_index()].values[which].fetch_add(1, std::memory_order_relaxed);
    }

    std::uint64_t get(std::size_t which) const noexcept {
        std::uint64_t sum = 0;
        for (const auto& s : stripes_) sum += s.values[which].load(std::memory_order_relaxed);
        return sum;
    }

private:
    static constexpr std::size_t stripe_count = 8;

    struct alignas(64) stripe {
        std::array<std::atomic<std::uint64_t>, N> values{};
    };

    static std::size_t stripe_index() noexcept {
        static std::atomic<std::size_t> next{0};
        thread_local const std::size_t index = next.fetch_add(1, std::memory_order_relaxed) % stripe_count;
        return index;
    }

    std::array<stripe, stripe_count> stripes_{};
};

} // namespace callguard::detail
