#pragma once

// Notices when the limiter's keys were lost behind its back (a restart without persistence,
// FLUSHALL, a failover to an empty replica). The dataset carries a marker key written by
// whichever client finds it missing first; a new connection that finds a marker other than the
// one this backend saw before means the keys were lost in between. Checked once per new
// connection (a restart always breaks the old ones), in the connection's first round trip.

#include "resp.hpp"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

namespace callguard::detail {

class dataset_marker {
public:
    /// `key` is the marker's key; `on_reset` hears each loss found (may be called on any thread).
    dataset_marker(std::string key, std::function<void()> on_reset)
        : key_(std::move(key)), on_reset_(std::move(on_reset)) {}

    /// The two commands of the check: set the marker if missing, then read it.
    static constexpr std::size_t command_count = 2;
    void append_commands(std::string& resp) const {
        append_resp(resp, {"SET", key_, new_token(), "NX"});
        append_resp(resp, {"GET", key_});
    }

    /// The GET's reply. Anything but a string (an error: OOM, READONLY, an ACL) skips the
    /// check: the scripts will say more.
    void check(const redisReply* got) {
        if (!got || got->type != REDIS_REPLY_STRING) return;
        auto marker = reply_text(got);
        bool lost = false;
        {
            std::lock_guard lk(mu_);
            lost = !known_.empty() && marker != known_;
            known_ = std::move(marker);
        }
        if (lost) {
            resets_.fetch_add(1);
            if (on_reset_) on_reset_();
        }
    }

    /// Losses found so far.
    std::uint64_t resets() const noexcept { return resets_.load(); }

private:
    static std::string new_token() {
        std::random_device rd;
        const auto t = static_cast<std::uint64_t>(
            std::chrono::steady_clock::now().time_since_epoch().count());
        return fmt::format("{:08x}{:08x}{:016x}", rd(), rd(), t);
    }

    std::string key_;
    std::function<void()> on_reset_;
    std::mutex mu_;
    std::string known_; // the marker as this backend last saw it
    std::atomic<std::uint64_t> resets_{0};
};

} // namespace callguard::detail
