#pragma once

// Webhooks signed as Twilio signs them (X-Twilio-Signature), for services that check signatures.
// The signing itself is the service's own (twilio_signature.hpp), which test_service_webhooks
// checks against Twilio's official helper library.

#include "service_harness.hpp"
#include "twilio_signature.hpp"

#include <string>
#include <utility>
#include <vector>

namespace svc {

using params = std::vector<std::pair<std::string, std::string>>;

/// application/x-www-form-urlencoded, every byte but the unreserved ones escaped.
inline std::string form_body(const params& p) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (const auto& [k, v] : p) {
        if (!out.empty()) out += '&';
        for (const auto* s : {&k, &v}) {
            for (unsigned char c : *s) {
                if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
                else out += {'%', hex[c >> 4], hex[c & 15]};
            }
            if (s == &k) out += '=';
        }
    }
    return out;
}

/// POSTs `p` to `target` (path and query) with the signature Twilio would send for `token`
/// (empty: no signature), over the URL the service sees (http://127.0.0.1:port + target).
inline response post_signed(const service& s, const std::string& target, const params& p, const std::string& token) {
    std::map<std::string, std::string> headers;
    if (!token.empty()) {
        std::vector<std::pair<std::string, std::string>> fields(p.begin(), p.end());
        headers["X-Twilio-Signature"] =
            calls::twilio_signature(token, "http://127.0.0.1:" + std::to_string(s.port()) + target, fields);
    }
    return s.post(target, form_body(p), headers);
}

} // namespace svc
