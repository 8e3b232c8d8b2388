#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace callguard::detail {

/// Length of the valid UTF-8 sequence at the start of `s` whose code point is allowed in
/// XML 1.0 text, or 0 if there is none (bad encoding, overlong form, surrogate, control).
inline std::size_t xml_char_length(std::string_view s) noexcept {
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char c = b(0);
    if (c < 0x80) return (c >= 0x20 || c == '\t' || c == '\n' || c == '\r') && c != 0x7f ? 1 : 0;
    std::size_t n;
    std::uint32_t cp;
    if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07;
    else return 0;
    if (s.size() < n) return 0;
    for (std::size_t i = 1; i < n; ++i) {
        if ((b(i) & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (b(i) & 0x3f);
    }
    static constexpr std::uint32_t min_for_length[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[n] || cp > 0x10ffff) return 0;
    if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff) return 0;
    if (cp >= 0x80 && cp <= 0x9f) return 0; // C1 controls: legal but never wanted in speech
    return n;
}

/// Appends `s` escaped for XML text and attribute values. Whatever the input (binary,
/// broken UTF-8), the output is well-formed: anything XML cannot carry becomes U+FFFD.
inline void append_xml_escaped(std::string& out, std::string_view s) {
    while (!s.empty()) {
        const std::size_t n = xml_char_length(s);
        if (n == 0) {
            out += "\xef\xbf\xbd";
            s.remove_prefix(1);
            continue;
        }
        if (n == 1) {
            switch (s[0]) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&apos;"; break;
            case '\t': out += "&#9;"; break;
            case '\n': out += "&#10;"; break;
            case '\r': out += "&#13;"; break;
            default: out += s[0];
            }
        } else {
            out.append(s.data(), n);
        }
        s.remove_prefix(n);
    }
}

inline std::string xml_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 16);
    append_xml_escaped(out, s);
    return out;
}

} // namespace callguard::detail
