// A Redis URL: a valid result has every field in range; anything else is a config_error naming
// `url` whose message never shows a password.
#include <callguard/backends/redis.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string url(reinterpret_cast<const char*>(data), size);
    try {
        auto o = callguard::redis_options::from_url(url);
        if (o.unix_socket.empty() && (o.host.empty() || o.port < 1 || o.port > 65535)) std::abort();
        if (!o.unix_socket.empty() && o.unix_socket.front() != '/') std::abort();
        if (o.db < 0) std::abort();
        o.validate();
        callguard::redis_backend b(o); // constructing never connects
        if (b.open_connections() != 0) std::abort();
    } catch (const callguard::config_error& e) {
        if (e.variable() != "url") std::abort();
        // Nor is the sentinels' password: in the URL shown (REDIS_URL="...", quotes inside it
        // escaped), "sentinel_password=" is always followed by "***".
        std::string_view shown = e.what();
        shown = shown.substr(0, shown.find("\": "));
        for (auto pos = shown.find("sentinel_password="); pos != std::string_view::npos;
             pos = shown.find("sentinel_password=", pos + 1))
            for (char c : shown.substr(pos + 18, 3)) // "***", or cut short by the "..." of a long URL
                if (c != '*' && c != '.') std::abort();
        // The password is never shown. It is what the parser takes as one: in the authority
        // (up to the first '/', '?' or '#'), after the first ':' of the text before the last '@'.
        auto scheme = url.find("://");
        if (scheme != std::string::npos) {
            auto start = scheme + 3;
            auto end = url.find_first_of("/?#", start);
            auto authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
            auto at = authority.rfind('@');
            if (at != std::string::npos) {
                auto userinfo = authority.substr(0, at);
                auto colon = userinfo.find(':');
                if (colon != std::string::npos) {
                    auto password = userinfo.substr(colon + 1);
                    // The masked URL shows "user:***@host"; the raw "user:password@" must not appear.
                    const auto raw = ":" + password + "@";
                    const bool once = url.find(raw) == url.rfind(raw); // not repeated in the path
                    // A password containing a backslash can be mimicked by the \xNN escapes that
                    // make other bytes of the URL printable; such a match is not a leak.
                    if (password.find('\\') != std::string::npos) return 0;
                    if (once && password != "***" && std::string_view(e.what()).find(raw) != std::string_view::npos)
                        std::abort();
                }
            }
        }
    }
    return 0;
}
