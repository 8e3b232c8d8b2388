#pragma once

// Following the TwiML a service answered, as Twilio does: the URLs in its attributes, fetched
// with the form fields Twilio would send.

#include "service_harness.hpp"

#include <string>

namespace svc {

/// The unescaped value of attribute `name` of the first `<element ...>` in `twiml` ("" if none).
inline std::string twiml_attribute(const std::string& twiml, const std::string& element, const std::string& name) {
    const auto open = twiml.find("<" + element + " ");
    if (open == std::string::npos) return {};
    const auto end = twiml.find('>', open);
    const auto key = " " + name + "=\"";
    const auto at = twiml.find(key, open);
    if (at == std::string::npos || at > end) return {};
    const auto from = at + key.size();
    std::string v = twiml.substr(from, twiml.find('"', from) - from);
    for (std::string::size_type p; (p = v.find("&amp;")) != std::string::npos;) v.replace(p, 5, "&");
    return v;
}

/// The path and query of one of `s`'s own URLs (http://127.0.0.1:port/...), as it is posted to.
inline std::string own_target(const service& s, const std::string& url) {
    const auto base = "http://127.0.0.1:" + std::to_string(s.port());
    REQUIRE_MESSAGE(url.rfind(base, 0) == 0, "not this service's URL: " << url);
    return url.substr(base.size());
}

/// The path and query of a URL of any instance (the instances differ only in their port).
inline std::string target_of(const std::string& url) {
    const auto scheme = url.find("://");
    REQUIRE(scheme != std::string::npos);
    const auto slash = url.find('/', scheme + 3);
    return slash == std::string::npos ? "/" : url.substr(slash);
}

} // namespace svc
