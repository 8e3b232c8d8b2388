#pragma once

// Percent-decoding, shared by the URL parser (REDIS_URL) and the form parser (Twilio webhooks).

#include <optional>
#include <string>
#include <string_view>

namespace callguard::detail {

constexpr int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// Decodes `%XX` escapes (and, for form bodies, `+` as a space); nothing on a malformed or
/// truncated escape: a guess could turn one byte string into another.
inline std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space = false) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '+' && plus_is_space) {
            out += ' ';
        } else if (c != '%') {
            out += c;
        } else {
            if (i + 2 >= s.size()) return std::nullopt; // needs two hex digits after '%'
            const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        }
    }
    return out;
}

} // namespace callguard::detail
