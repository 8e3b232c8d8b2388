#pragma once

// The small pieces every TwiML answer is built from; each escapes what it writes.

#include "../../detail/text.hpp"
#include "../../detail/xml.hpp"

#include <initializer_list>
#include <string>
#include <string_view>

namespace callguard::twilio::detail {

/// A whole TwiML document: the XML declaration first, as Twilio requires.
inline std::string document(std::string_view body) {
    std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>";
    out += body;
    out += "</Response>";
    return out;
}

/// ` name="value"`, the value escaped.
inline void append_attr(std::string& out, std::string_view name, std::string_view value) {
    out += ' ';
    out += name;
    out += "=\"";
    callguard::detail::append_xml_escaped(out, value);
    out += '"';
}

/// `<Say>` with the language and voice when set (a voice that cannot speak the language is silent).
inline void append_say(std::string& out, std::string_view text, std::string_view language,
                       std::string_view voice) {
    out += "<Say";
    if (!language.empty()) append_attr(out, "language", language);
    if (!voice.empty()) append_attr(out, "voice", voice);
    out += '>';
    callguard::detail::append_xml_escaped(out, text);
    out += "</Say>";
}

/// True when `url` starts with one of `schemes` (any case) and has more after it.
inline bool starts_with_scheme(std::string_view url, std::initializer_list<std::string_view> schemes) {
    for (auto s : schemes)
        if (url.size() > s.size() && callguard::detail::iequals(url.substr(0, s.size()), s))
            return true;
    return false;
}

} // namespace callguard::twilio::detail
