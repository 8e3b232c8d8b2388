#pragma once

// Reading settings from the environment: a layer of its own. Structs validate their fields and
// name them; each `from_env()` reads variables through an `env_lookup` with the parsers below,
// which name the variable in their errors. Public, so applications reuse them for their own
// variables (the example service does).

#include "errors.hpp"
#include "detail/text.hpp"

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace callguard {

/// Largest accepted cap and TTL: far beyond any real deployment, small enough that no
/// arithmetic on them (milliseconds, Lua doubles) can overflow.
inline constexpr std::int64_t max_cap_value = 1'000'000'000;
inline constexpr std::int64_t max_ttl_seconds = 366LL * 24 * 3600;

/// Looks up one environment variable; an empty optional means "unset". An empty lookup
/// function reads as "everything unset".
using env_lookup = std::function<std::optional<std::string>(const char* name)>;

/// The process environment, through `std::getenv`.
inline env_lookup process_env() {
    return [](const char* name) -> std::optional<std::string> {
        if (const char* v = std::getenv(name)) return std::string(v);
        return std::nullopt;
    };
}

/// Reads variables through an `env_lookup`.
class env_reader {
public:
    explicit env_reader(env_lookup lookup) : lookup_(std::move(lookup)) {}

    /// The value as set, or nothing when unset.
    std::optional<std::string> get(const char* name) const {
        return lookup_ ? lookup_(name) : std::nullopt;
    }

    /// The value without surrounding white space; nothing when unset or blank.
    std::optional<std::string> text(const char* name) const {
        auto v = get(name);
        if (!v) return std::nullopt;
        auto t = detail::trim(*v);
        if (t.empty()) return std::nullopt;
        return std::string(t);
    }

private:
    env_lookup lookup_;
};

/// An integer in [`min`, `max`] (surrounding white space allowed); otherwise `config_error`
/// naming `variable`.
inline std::int64_t parse_integer(std::string_view variable, std::string_view text,
                                  std::int64_t min, std::int64_t max) {
    auto v = detail::parse_int(detail::trim(text));
    if (!v || *v < min || *v > max)
        throw config_error(std::string(variable), text,
                           min == 1 ? "expected a positive integer no larger than " + std::to_string(max)
                                    : "expected an integer from " + std::to_string(min) + " to " +
                                          std::to_string(max));
    return *v;
}

/// A positive integer in [1, limit]; otherwise `config_error` naming `variable`.
inline std::int64_t parse_positive(std::string_view variable, std::string_view text,
                                   std::int64_t limit = max_cap_value) {
    return parse_integer(variable, text, 1, limit);
}

/// `1/0`, `true/false`, `yes/no`, `on/off` (any case); blank is false.
inline bool parse_flag(std::string_view variable, std::string_view text) {
    auto t = detail::trim(text);
    for (auto yes : {"1", "true", "yes", "on"})
        if (detail::iequals(t, yes)) return true;
    for (auto no : {"", "0", "false", "no", "off"})
        if (detail::iequals(t, no)) return false;
    throw config_error(std::string(variable), text, "expected 1/0, true/false, yes/no or on/off");
}

/// One `key=value` item of a list.
struct key_value {
    std::string_view key;
    std::string_view value;
};

/// `k1=v1,k2=v2` with white space allowed around items, keys and values; blank text is an
/// empty list. Every item needs a key and a value, and no key may repeat; otherwise
/// `config_error` naming `variable` (`shape` says what an item looks like, e.g. "tenant=limit").
/// The views point into `text`.
inline std::vector<key_value> parse_key_values(std::string_view variable, std::string_view text,
                                               std::string_view shape) {
    std::vector<key_value> out;
    if (detail::trim(text).empty()) return out;
    auto fail = [&](const std::string& why) { throw config_error(std::string(variable), text, why); };
    for (std::string_view rest = text;;) {
        const auto comma = rest.find(',');
        const auto item = detail::trim(rest.substr(0, comma));
        const auto eq = item.find('=');
        if (eq == std::string_view::npos)
            fail("expected " + std::string(shape) + " items separated by commas");
        key_value kv{detail::trim(item.substr(0, eq)), detail::trim(item.substr(eq + 1))};
        if (kv.key.empty() || kv.value.empty())
            fail("an item of " + std::string(shape) + " has an empty side");
        for (const auto& seen : out)
            if (seen.key == kv.key) fail("'" + detail::printable(kv.key) + "' is listed twice");
        out.push_back(kv);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    return out;
}

} // namespace callguard
