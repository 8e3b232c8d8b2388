#pragma once

// X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value,
// sorted by name)). Compared in constant time; the URL is tried with and without its default
// port, as Twilio's own validators do.

#include <callguard/twilio/form.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace calls {

inline std::string base64(const unsigned char* data, std::size_t len) {
    std::string out(4 * ((len + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(len));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

/// The signature Twilio computes for `url` and form `params` with `auth_token`.
inline std::string twilio_signature(std::string_view auth_token, std::string_view url,
                                    const std::vector<callguard::twilio::form::field>& params) {
    std::vector<const callguard::twilio::form::field*> sorted;
    for (const auto& f : params) sorted.push_back(&f);
    std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
        return a->first != b->first ? a->first < b->first : a->second < b->second;
    });
    std::string data(url);
    for (const auto* f : sorted) {
        data += f->first;
        data += f->second;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha1(), auth_token.data(), static_cast<int>(auth_token.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &mac_len);
    return base64(mac, mac_len);
}

inline bool constant_time_equal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

/// `url` as given, plus the same URL with its default port added or removed.
inline std::vector<std::string> url_variants(std::string_view url) {
    std::vector<std::string> out{std::string(url)};
    auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) return out;
    auto scheme = url.substr(0, scheme_end);
    const std::string_view default_port = (scheme == "https" || scheme == "wss") ? "443" : "80";
    auto host_start = scheme_end + 3;
    auto path_start = url.find_first_of("/?", host_start);
    if (path_start == std::string_view::npos) path_start = url.size();
    auto authority = url.substr(host_start, path_start - host_start);
    auto colon = authority.rfind(':');
    bool has_port = colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos;
    std::string variant(url.substr(0, host_start));
    if (has_port) {
        if (authority.substr(colon + 1) != default_port) return out;
        variant += authority.substr(0, colon);
    } else {
        variant += authority;
        variant += ':';
        variant += default_port;
    }
    variant += url.substr(path_start);
    out.push_back(std::move(variant));
    return out;
}

/// True if `signature` is Twilio's for `url` (or its default-port variant) and `params`.
inline bool valid_twilio_signature(std::string_view auth_token, std::string_view signature,
                                   std::string_view url, const std::vector<callguard::twilio::form::field>& params) {
    if (signature.empty()) return false;
    bool ok = false;
    for (const auto& u : url_variants(url)) // check both, always: no early exit to time
        ok = constant_time_equal(twilio_signature(auth_token, u, params), signature) || ok;
    return ok;
}

} // namespace calls
