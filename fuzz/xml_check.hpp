#pragma once

// A small, strict well-formedness check for the TwiML we produce: the declaration first, balanced
// tags, quoted attributes, only the five predefined entities and numeric references, valid UTF-8
// with XML 1.0 characters only. Aborts (a fuzzer finding) on any violation.

#include <callguard/detail/xml.hpp>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace fuzz {

[[noreturn]] inline void fail() { std::abort(); }

inline bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/// Checks text (between tags or inside quotes): valid characters, no raw '<', and '&' only as
/// a known entity or a numeric reference.
inline void check_text(std::string_view t, bool in_attribute) {
    for (std::size_t i = 0; i < t.size();) {
        if (t[i] == '<' || (in_attribute && t[i] == '"')) fail();
        if (t[i] == '&') {
            auto semi = t.find(';', i);
            if (semi == std::string_view::npos) fail();
            auto ent = t.substr(i + 1, semi - i - 1);
            bool ok = ent == "amp" || ent == "lt" || ent == "gt" || ent == "quot" || ent == "apos";
            if (!ok && ent.size() >= 2 && ent[0] == '#') {
                ok = true;
                for (char c : ent.substr(1)) ok = ok && c >= '0' && c <= '9';
            }
            if (!ok) fail();
            i = semi + 1;
            continue;
        }
        auto n = callguard::detail::xml_char_length(t.substr(i));
        if (n == 0) fail();
        i += n;
    }
}

inline void require_well_formed(std::string_view doc) {
    constexpr std::string_view decl = R"(<?xml version="1.0" encoding="UTF-8"?>)";
    if (doc.substr(0, decl.size()) != decl) fail();
    std::vector<std::string_view> open;
    std::size_t i = decl.size();
    bool seen_root = false;
    while (i < doc.size()) {
        if (doc[i] != '<') {
            auto next = doc.find('<', i);
            if (next == std::string_view::npos) fail();
            if (open.empty()) fail(); // text outside the root
            check_text(doc.substr(i, next - i), false);
            i = next;
            continue;
        }
        bool closing = i + 1 < doc.size() && doc[i + 1] == '/';
        std::size_t j = i + (closing ? 2 : 1);
        std::size_t start = j;
        while (j < doc.size() && name_char(doc[j])) ++j;
        auto name = doc.substr(start, j - start);
        if (name.empty()) fail();
        if (closing) {
            if (j >= doc.size() || doc[j] != '>' || open.empty() || open.back() != name) fail();
            open.pop_back();
            i = j + 1;
            continue;
        }
        if (open.empty() && seen_root) fail(); // a second root
        seen_root = true;
        while (true) { // attributes
            if (j >= doc.size()) fail();
            if (doc[j] == '>') { open.push_back(name); i = j + 1; break; }
            if (doc.substr(j, 2) == "/>") { i = j + 2; break; }
            if (doc[j] != ' ') fail();
            ++j;
            std::size_t as = j;
            while (j < doc.size() && name_char(doc[j])) ++j;
            if (j == as || doc.substr(j, 2) != "=\"") fail();
            j += 2;
            auto close = doc.find('"', j);
            if (close == std::string_view::npos) fail();
            check_text(doc.substr(j, close - j), true);
            j = close + 1;
        }
    }
    if (!open.empty() || !seen_root) fail();
}

inline std::string unescape(std::string_view t) {
    std::string out;
    for (std::size_t i = 0; i < t.size(); ++i) {
        if (t[i] != '&') { out += t[i]; continue; }
        auto semi = t.find(';', i);
        auto ent = t.substr(i + 1, semi - i - 1);
        if (ent == "amp") out += '&';
        else if (ent == "lt") out += '<';
        else if (ent == "gt") out += '>';
        else if (ent == "quot") out += '"';
        else if (ent == "apos") out += '\'';
        else out += static_cast<char>(std::atoi(std::string(ent.substr(1)).c_str()));
        i = semi;
    }
    return out;
}

/// The unescaped text of the first <Say>.
inline std::string say_text(std::string_view doc) {
    auto open = doc.find("<Say");
    if (open == std::string_view::npos) return {};
    auto start = doc.find('>', open) + 1;
    auto end = doc.find("</Say>", start);
    return unescape(doc.substr(start, end - start));
}

/// What the escaper must preserve: the input with each unusable byte replaced by U+FFFD.
inline std::string sanitized(std::string_view in) {
    std::string out;
    while (!in.empty()) {
        auto n = callguard::detail::xml_char_length(in);
        if (n == 0) { out += "\xef\xbf\xbd"; in.remove_prefix(1); }
        else { out.append(in.data(), n); in.remove_prefix(n); }
    }
    return out;
}

} // namespace fuzz
