#pragma once

// Claims: "at most once" across every instance on the same backend. The first caller to claim a
// key gets it for a while (its TTL); everyone else, on any instance, is told it is taken until
// then. A retried webhook that must not send a second message, or a caller number that must not
// get a second invitation within a day, is one key each. Optional: a backend that models only
// `capacity_backend` keeps no claims, and `capacity_limiter::claim_once` does not exist over it.

#include "backend.hpp"

#include <chrono>
#include <concepts>
#include <cstddef>
#include <string_view>

namespace callguard {

/// Longest claim key accepted.
inline constexpr std::size_t max_claim_key_length = 512;

/// Why `key` is not acceptable as a claim key, or an empty view when it is (not empty, at most
/// 512 bytes, no control characters; any other bytes are plain data, never a pattern). Room
/// for a prefix of the application's before a call id (at most 256 bytes).
constexpr std::string_view claim_key_problem(std::string_view key) noexcept {
    if (key.empty()) return "claim key is empty";
    if (key.size() > max_claim_key_length) return "claim key is longer than 512 bytes";
    for (char ch : key) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) return "claim key contains a control character";
    }
    return {};
}

/// The backend's answer to one claim.
struct claim_reply {
    bool claimed = false;                   ///< this call took the key
    std::chrono::milliseconds remaining{0}; ///< how long the key stays taken (by whoever took it)
};

/// What a storage engine provides, besides `capacity_backend`, to keep claims.
///
/// 1. `b.claim(key, ttl)` -> `claim_reply`: atomically (against every caller of every process
///    sharing the storage) if `key` is held and its expiry has not passed, answer
///    `{false, time left}`; otherwise hold it with expiry now + `ttl` and answer `{true, ttl}`.
///    A claim is never extended, shortened or given back: it ends at its expiry. Keys share no
///    storage with call ids (a key equal to a call id is another thing).
/// 2. Failure and threads as in `capacity_backend` (requirements 8 and 9).
template <class B>
concept claim_backend =
    capacity_backend<B> && requires(B& b, std::string_view key, std::chrono::milliseconds ttl) {
        { b.claim(key, ttl) } -> std::same_as<claim_reply>;
    };

/// What `capacity_limiter::claim_once` decided.
enum class claim_outcome {
    claimed,             ///< this caller took the key: it alone goes ahead
    already_claimed,     ///< someone took it before (see `remaining`): do not go ahead
    claimed_fail_open,   ///< backend unreachable and `fail_mode::open`: go ahead, unchecked
    refused_fail_closed, ///< backend unreachable and `fail_mode::closed`: do not go ahead
};

constexpr std::string_view to_string(claim_outcome o) noexcept {
    switch (o) {
    case claim_outcome::claimed: return "claimed";
    case claim_outcome::already_claimed: return "already_claimed";
    case claim_outcome::claimed_fail_open: return "claimed_fail_open";
    case claim_outcome::refused_fail_closed: return "refused_fail_closed";
    }
    return "unknown";
}

/// The answer to `claim_once`.
struct claim_result {
    claim_outcome outcome = claim_outcome::already_claimed;
    std::chrono::milliseconds remaining{0}; ///< how long the key stays taken (0 when unknown)
    bool local_fallback = false;            ///< decided by `fail_mode::local`'s in-process claims

    /// True when the caller may go ahead (it holds the claim, or the limiter failed open).
    constexpr bool claimed() const noexcept {
        return outcome == claim_outcome::claimed || outcome == claim_outcome::claimed_fail_open;
    }
    constexpr explicit operator bool() const noexcept { return claimed(); }
};

} // namespace callguard
