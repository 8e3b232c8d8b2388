#pragma once

// Small string helpers shared by the parsers (config, URLs, form bodies).

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace callguard::detail {

/// Where `s` has its first character that is neither an ASCII letter or digit nor one of
/// `extra`; npos when there is none (names, hosts, key prefixes).
constexpr std::size_t find_not_name_char(std::string_view s, std::string_view extra) noexcept {
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        extra.find(c) != std::string_view::npos;
        if (!ok) return i;
    }
    return std::string_view::npos;
}

constexpr bool is_space(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

constexpr std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

constexpr char to_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (to_lower(a[i]) != to_lower(b[i])) return false;
    return true;
}

/// Parses the whole of `s` as a base-10 integer; no sign, spaces or suffixes allowed.
/// Returns nothing on any leftover character or overflow.
inline std::optional<std::int64_t> parse_int(std::string_view s) noexcept {
    if (s.empty() || s.front() == '-' || s.front() == '+') return std::nullopt;
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return v;
}

/// Printable form of untrusted text for error messages: control bytes become `\xNN`
/// and very long input is cut, so an exception message can never break a log line.
inline std::string printable(std::string_view s, std::size_t limit = 80) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < s.size() && i < limit; ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (s.size() > limit) out += "...";
    return out;
}

} // namespace callguard::detail
