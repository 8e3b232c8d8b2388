// CALLS_DB_URL: accepted only when libpq's own parser accepts it, and then shown with every
// password libpq would use replaced by "***" (checked by parsing the masked text with libpq);
// refused with a printable config_error naming CALLS_DB_URL that never quotes the password.
#include "postgres_conninfo.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

using options = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;

options libpq_parse(const std::string& text) {
    char* err = nullptr;
    options o(PQconninfoParse(text.c_str(), &err), &PQconninfoFree);
    PQfreemem(err);
    return o;
}

std::vector<std::string> passwords(const options& o) {
    std::vector<std::string> out;
    for (auto* p = o.get(); p && p->keyword; ++p)
        if (p->val && (std::string_view(p->keyword) == "password" || std::string_view(p->keyword) == "sslpassword"))
            out.emplace_back(p->val);
    return out;
}

/// The password of a postgres URI as libpq reads it (userinfo ends at the first '@' before a '/').
std::string uri_password(const std::string& text) {
    if (!calls::postgres_conninfo::is_postgres_uri(text)) return {};
    const auto start = text.find("://") + 3;
    auto p = start;
    while (p < text.size() && text[p] != '@' && text[p] != '/') ++p;
    if (p >= text.size() || text[p] != '@') return {};
    const auto colon = text.find(':', start);
    return colon < p ? text.substr(colon + 1, p - colon - 1) : std::string();
}

/// Whether `pw` shows up in the error for `text` even with the password replaced by other
/// letters: then it is our own wording (or another part of the text), not a leak.
bool in_message_anyway(const std::string& text, const std::string& pw) {
    auto other = text;
    other.replace(other.find(pw), pw.size(), std::string(pw.size(), 'Q'));
    try {
        calls::postgres_conninfo::parse("CALLS_DB_URL", other);
    } catch (const callguard::config_error& e) {
        return std::string_view(e.what()).find(pw) != std::string_view::npos;
    }
    return false;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    if (text.find('\0') != std::string::npos) return 0; // an environment variable cannot hold one
    const auto libpq = libpq_parse(text);
    try {
        const auto c = calls::postgres_conninfo::parse("CALLS_DB_URL", text);
        if (!libpq) std::abort(); // accepted something libpq refuses
        for (char ch : c.masked())
            if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) std::abort(); // one log line
        // Parsed again, the masked text gives libpq "***" for every password (when masking left
        // it as it was otherwise: no control bytes escaped, not cut at 500 bytes).
        const bool plain = text.size() <= 500 && std::none_of(text.begin(), text.end(), [](char ch) {
            return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f;
        });
        if (!plain) return 0;
        const auto shown = libpq_parse(c.masked());
        if (!shown) return 0; // masking can cut a value libpq read differently; nothing to compare
        for (const auto& p : passwords(shown))
            if (!p.empty() && p != "***") std::abort(); // a password libpq would use is visible
    } catch (const callguard::config_error& e) {
        if (e.variable() != "CALLS_DB_URL") std::abort();
        const std::string what = e.what();
        for (char ch : what)
            if (static_cast<unsigned char>(ch) < 0x20) std::abort(); // never breaks a log line
        // libpq quotes the text it cannot parse; a URI's password must not come through.
        const auto pw = uri_password(text);
        if (pw.size() >= 4 && pw.find('\\') == std::string::npos && text.find(pw) == text.rfind(pw) &&
            what.find(pw) != std::string::npos && !in_message_anyway(text, pw))
            std::abort();
    }
    return 0;
}
