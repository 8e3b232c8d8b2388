#pragma once

#include "env.hpp"
#include "errors.hpp"
#include "logging.hpp"
#include "validation.hpp"
#include "detail/text.hpp"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace callguard {

/// What a caller over capacity gets (the example service turns it into TwiML).
enum class over_capacity_behavior { reject, voicemail, whatsapp, queue };

/// What `acquire` decides when the backend cannot answer.
enum class fail_mode {
    open,   ///< admit (the service keeps answering; the cap is not enforced meanwhile)
    closed, ///< reject (the cap is never exceeded; calls are lost meanwhile)
    local,  ///< admit against an in-process cap (each instance enforces it alone)
};

constexpr std::string_view to_string(over_capacity_behavior b) noexcept {
    switch (b) {
    case over_capacity_behavior::reject: return "reject";
    case over_capacity_behavior::voicemail: return "voicemail";
    case over_capacity_behavior::whatsapp: return "whatsapp";
    case over_capacity_behavior::queue: return "queue";
    }
    return "unknown";
}

constexpr std::string_view to_string(fail_mode m) noexcept {
    switch (m) {
    case fail_mode::open: return "open";
    case fail_mode::closed: return "closed";
    case fail_mode::local: return "local";
    }
    return "unknown";
}

/// Bounds of the reinstatement settings.
inline constexpr std::int64_t max_remembered_value = 10'000'000;
inline constexpr std::int64_t max_reinstate_rate = 1'000'000;
inline constexpr std::int64_t max_reinstate_delay_ms = 600'000;

/// Per-tenant caps; `std::less<>` so lookups by `std::string_view` do not allocate.
using tenant_limit_map = std::map<std::string, std::int64_t, std::less<>>;

/// Everything the limiter needs to decide. A plain struct: fill it by hand or with `from_env()`.
struct limiter_config {
    std::int64_t max_active_calls = 50;           ///< global cap (MAX_ACTIVE_CALLS)
    std::chrono::seconds slot_ttl{7200};          ///< safety net for crashed holders
    over_capacity_behavior behavior = over_capacity_behavior::reject;
    callguard::log_level log_level = callguard::log_level::warning;
    callguard::fail_mode fail_mode = callguard::fail_mode::open;
    tenant_limit_map tenant_limits;               ///< per-tenant caps under the global one
    /// Cap used by `fail_mode::local` while the backend is down; 0 means `max_active_calls`.
    std::int64_t local_max_active_calls = 0;
    /// A caller in the waiting room that has not polled for this long is dropped from the line
    /// (it hung up, or the instance serving it died). Longer than the gap between two polls.
    std::chrono::seconds waiter_ttl{60};
    /// Calls the limiter remembers so it can put their slots back after an outage or a data loss
    /// (CALLS_MAX_REMEMBERED_CALLS); 0 remembers none. Past it, calls are still admitted but not
    /// remembered (counted, and logged once per time the set fills up).
    std::int64_t max_remembered_calls = 100'000;
    /// How many slots per second the limiter puts back once the backend answers again
    /// (CALLS_REINSTATE_PER_SECOND), so a recovering backend is not hit by every call at once.
    std::int64_t reinstate_per_second = 500;
    /// How long the limiter waits, once the backend answers again (or reports a data loss),
    /// before it puts back the calls only admitted here (CALLS_REINSTATE_DELAY_MS): their end may
    /// have reached another instance, which replays the release it kept during the outage on its
    /// first successful call; waiting lets that land first, so such a call is not put back.
    /// Calls held by a `slot_guard` here (or vouched for with `reinstate`) do not wait.
    std::chrono::milliseconds reinstate_delay{2000};

    /// Reads the variables of the configuration table (see README); unset ones get defaults.
    /// Throws `config_error` naming the variable and the value on anything malformed.
    static limiter_config from_env(const env_lookup& lookup);
    static limiter_config from_env() { return from_env(process_env()); }

    /// Throws `config_error` naming the field (`max_active_calls`, ...) if one is out of range.
    void validate() const;

    /// The cap for `tenant`, or 0 when it has none.
    std::int64_t tenant_limit(std::string_view tenant) const noexcept {
        if (tenant.empty()) return 0;
        auto it = tenant_limits.find(tenant);
        return it == tenant_limits.end() ? 0 : it->second;
    }
};

// --- the limiter's own parsers (the generic ones are in env.hpp) -------------------------

inline over_capacity_behavior parse_behavior(std::string_view variable, std::string_view text) {
    auto t = detail::trim(text);
    for (auto b : {over_capacity_behavior::reject, over_capacity_behavior::voicemail,
                   over_capacity_behavior::whatsapp, over_capacity_behavior::queue})
        if (detail::iequals(t, to_string(b))) return b;
    throw config_error(std::string(variable), text,
                       "expected one of reject, voicemail, whatsapp, queue");
}

inline fail_mode parse_fail_mode(std::string_view variable, std::string_view text) {
    auto t = detail::trim(text);
    for (auto m : {fail_mode::open, fail_mode::closed, fail_mode::local})
        if (detail::iequals(t, to_string(m))) return m;
    throw config_error(std::string(variable), text,
                       "expected one of open, closed, local");
}

inline log_level parse_log_level(std::string_view variable, std::string_view text) {
    auto t = detail::trim(text);
    for (auto l : {log_level::debug, log_level::info, log_level::warning, log_level::error})
        if (detail::iequals(t, to_string(l))) return l;
    if (detail::iequals(t, "WARN")) return log_level::warning;
    if (detail::iequals(t, "CRITICAL")) return log_level::error;
    if (detail::iequals(t, "OFF") || detail::iequals(t, "NONE")) return log_level::off;
    throw config_error(std::string(variable), text,
                       "expected one of DEBUG, INFO, WARNING, ERROR");
}

/// `biz1=5,biz2=10` (spaces around items allowed; blank text = no tenant caps).
inline tenant_limit_map parse_tenant_limits(std::string_view variable, std::string_view text) {
    tenant_limit_map out;
    for (auto [name, value] : parse_key_values(variable, text, "tenant=limit")) {
        if (auto why = tenant_problem(name); !why.empty())
            throw config_error(std::string(variable), text, std::string(why));
        auto limit = detail::parse_int(value);
        if (!limit || *limit < 1 || *limit > max_cap_value)
            throw config_error(std::string(variable), text,
                               "the limit of tenant '" + std::string(name) + "' is not a positive integer");
        out.emplace(std::string(name), *limit);
    }
    return out;
}

inline void limiter_config::validate() const {
    if (max_active_calls < 1 || max_active_calls > max_cap_value)
        throw config_error("max_active_calls", std::to_string(max_active_calls),
                           "expected a positive integer no larger than " +
                               std::to_string(max_cap_value));
    if (slot_ttl.count() < 1 || slot_ttl.count() > max_ttl_seconds)
        throw config_error("slot_ttl", std::to_string(slot_ttl.count()) + "s",
                           "expected 1 to " + std::to_string(max_ttl_seconds) + " seconds");
    if (waiter_ttl.count() < 1 || waiter_ttl.count() > max_ttl_seconds)
        throw config_error("waiter_ttl", std::to_string(waiter_ttl.count()) + "s",
                           "expected 1 to " + std::to_string(max_ttl_seconds) + " seconds");
    if (local_max_active_calls < 0 || local_max_active_calls > max_cap_value)
        throw config_error("local_max_active_calls", std::to_string(local_max_active_calls),
                           "expected 0 (same as max_active_calls) or a positive integer");
    if (max_remembered_calls < 0 || max_remembered_calls > max_remembered_value)
        throw config_error("max_remembered_calls", std::to_string(max_remembered_calls),
                           "expected 0 (remember none) to " + std::to_string(max_remembered_value));
    if (reinstate_per_second < 1 || reinstate_per_second > max_reinstate_rate)
        throw config_error("reinstate_per_second", std::to_string(reinstate_per_second),
                           "expected 1 to " + std::to_string(max_reinstate_rate));
    if (reinstate_delay.count() < 0 || reinstate_delay.count() > max_reinstate_delay_ms)
        throw config_error("reinstate_delay", std::to_string(reinstate_delay.count()) + "ms",
                           "expected 0 to " + std::to_string(max_reinstate_delay_ms) + " ms");
    for (const auto& [name, limit] : tenant_limits) {
        if (name.empty() || !tenant_problem(name).empty())
            throw config_error("tenant_limits", name, "invalid tenant name");
        if (limit < 1 || limit > max_cap_value)
            throw config_error("tenant_limits", name + "=" + std::to_string(limit),
                               "expected a positive integer limit");
    }
}

inline limiter_config limiter_config::from_env(const env_lookup& lookup) {
    const env_reader env(lookup);
    limiter_config c;
    bool production = false;
    if (auto v = env.get("PRODUCTION")) production = parse_flag("PRODUCTION", *v);
    c.max_active_calls = production ? 15 : 50;
    if (auto v = env.get("MAX_ACTIVE_CALLS")) c.max_active_calls = parse_positive("MAX_ACTIVE_CALLS", *v);
    if (auto v = env.get("CALLS_OVER_CAPACITY_BEHAVIOR"))
        c.behavior = parse_behavior("CALLS_OVER_CAPACITY_BEHAVIOR", *v);
    if (auto v = env.get("CALLS_CAPACITY_LOG_LEVEL"))
        c.log_level = parse_log_level("CALLS_CAPACITY_LOG_LEVEL", *v);
    if (auto v = env.get("CALLS_SLOT_TTL_SECONDS"))
        c.slot_ttl = std::chrono::seconds(
            parse_positive("CALLS_SLOT_TTL_SECONDS", *v, max_ttl_seconds));
    if (auto v = env.get("CALLS_FAIL_MODE")) c.fail_mode = parse_fail_mode("CALLS_FAIL_MODE", *v);
    if (auto v = env.get("CALLS_TENANT_LIMITS"))
        c.tenant_limits = parse_tenant_limits("CALLS_TENANT_LIMITS", *v);
    if (auto v = env.text("CALLS_LOCAL_MAX_ACTIVE_CALLS"))
        c.local_max_active_calls = parse_positive("CALLS_LOCAL_MAX_ACTIVE_CALLS", *v);
    if (auto v = env.get("CALLS_QUEUE_WAITER_TTL_SECONDS"))
        c.waiter_ttl = std::chrono::seconds(
            parse_positive("CALLS_QUEUE_WAITER_TTL_SECONDS", *v, max_ttl_seconds));
    if (auto v = env.text("CALLS_MAX_REMEMBERED_CALLS"))
        c.max_remembered_calls = parse_integer("CALLS_MAX_REMEMBERED_CALLS", *v, 0, max_remembered_value);
    if (auto v = env.text("CALLS_REINSTATE_PER_SECOND"))
        c.reinstate_per_second = parse_positive("CALLS_REINSTATE_PER_SECOND", *v, max_reinstate_rate);
    if (auto v = env.text("CALLS_REINSTATE_DELAY_MS"))
        c.reinstate_delay = std::chrono::milliseconds(
            parse_integer("CALLS_REINSTATE_DELAY_MS", *v, 0, max_reinstate_delay_ms));
    return c;
}

} // namespace callguard
