#pragma once

// Redis URLs with their passwords hidden, for error messages and logs.

#include <algorithm>
#include <string>
#include <string_view>

namespace callguard::detail {

/// `sentinel_password=...` query values replaced by `***`.
inline std::string mask_query_secret(std::string s) {
    static constexpr std::string_view key = "sentinel_password=";
    for (auto pos = s.find(key); pos != std::string::npos; pos = s.find(key, pos + 1)) {
        const auto start = pos + key.size();
        const auto end = std::min(s.find('&', start), s.size());
        s.replace(start, end - start, "***");
    }
    return s;
}

/// The URL with every password (userinfo, `sentinel_password=`) replaced by `***`. Splits
/// like the parser: userinfo ends at the last '@' before the path or query.
inline std::string mask_url_passwords(std::string_view url) {
    const auto scheme_end = url.find("://");
    const auto authority_start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
    auto authority_end = url.find_first_of("/?#", authority_start);
    if (authority_end == std::string_view::npos) authority_end = url.size();
    const auto at = url.substr(0, authority_end).rfind('@');
    if (scheme_end == std::string_view::npos || at == std::string_view::npos || at < authority_start)
        return mask_query_secret(std::string(url));
    std::string out(url.substr(0, authority_start));
    const auto colon = url.find(':', authority_start);
    if (colon != std::string_view::npos && colon < at) {
        out += url.substr(authority_start, colon - authority_start);
        out += ":***";
    } else {
        out += "***";
    }
    out += url.substr(at);
    return mask_query_secret(std::move(out));
}

} // namespace callguard::detail
