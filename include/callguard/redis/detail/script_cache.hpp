#pragma once

// The SHA1 of each script, learned from SCRIPT LOAD. A SHA never changes once known, so it is
// written once under a mutex and then read without one (the flag publishes the string).

#include "scripts.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>

namespace callguard::detail {

class script_cache {
public:
    /// The script's SHA, or an empty view while it is not known yet.
    std::string_view sha(script_id s) const noexcept {
        const auto i = static_cast<std::size_t>(s);
        return known_[i].load(std::memory_order_acquire) ? std::string_view(shas_[i]) : std::string_view{};
    }

    /// Records what SCRIPT LOAD answered; returns it. The first answer wins (they are equal).
    std::string remember(script_id s, std::string sha) {
        const auto i = static_cast<std::size_t>(s);
        std::lock_guard lk(mu_);
        if (!known_[i].load(std::memory_order_relaxed)) {
            shas_[i] = sha;
            known_[i].store(true, std::memory_order_release);
        }
        return sha;
    }

private:
    std::mutex mu_;
    std::array<std::string, script_count> shas_;
    std::array<std::atomic<bool>, script_count> known_{};
};

} // namespace callguard::detail
