#pragma once

// CALLS_DB_URL: a libpq connection string, as a URI (`postgresql://user:pass@host:5432/db?...`)
// or as `key=value` pairs (`host=db port=5432 dbname=calls user=svc password=...`). Checked with
// libpq's own parser at start; shown only with its passwords masked. libpq's own parse errors
// quote the text they choke on (a password included), so every message that can carry a piece of
// the string goes through `scrub` first.

#include <callguard/errors.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace calls {

class postgres_conninfo {
public:
    /// Throws `callguard::config_error` naming `variable`, with the text masked, when libpq
    /// cannot parse it or it is a URL of another scheme.
    static postgres_conninfo parse(std::string variable, std::string_view text) {
        postgres_conninfo c(text);
        if (text.empty()) throw callguard::config_error(variable, "", "empty connection string");
        if (c.uri_ && !is_postgres_uri(text))
            throw callguard::config_error(variable, c.masked_,
                                          "expected postgresql://user:password@host:port/database or libpq "
                                          "key=value pairs");
        char* err = nullptr;
        std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> opts(PQconninfoParse(c.text_.c_str(), &err),
                                                                        &PQconninfoFree);
        if (!opts) {
            std::string why = err ? err : "out of memory";
            PQfreemem(err);
            throw callguard::config_error(variable, c.masked_, "libpq cannot parse it: " + c.scrub(one_line(why)));
        }
        for (auto* o = opts.get(); o->keyword; ++o) {
            if (!o->val || std::string_view(o->keyword) != "connect_timeout") continue;
            int v = 0;
            for (const char* p = o->val; *p; ++p) {
                if (!std::isdigit(static_cast<unsigned char>(*p)) || v > 100000) {
                    v = -1;
                    break;
                }
                v = v * 10 + (*p - '0');
            }
            if (v < 0) throw callguard::config_error(variable, c.masked_, "connect_timeout must be a number of seconds");
            if (v > 0) c.connect_timeout_ = std::chrono::seconds(std::max(v, 2)); // libpq's own minimum
        }
        return c;
    }

    /// The connection string itself: it holds the password, never log it.
    const std::string& text() const noexcept { return text_; }
    /// The connection string with every password replaced by `***`, control bytes escaped, at
    /// most 500 bytes: safe to log.
    const std::string& masked() const noexcept { return masked_; }
    /// The string's own `connect_timeout`, else 5 s: how long one connection attempt may take.
    std::chrono::seconds connect_timeout() const noexcept { return connect_timeout_; }

    /// `message` (from libpq or the server) with every piece of a password in it masked, on one
    /// printable line.
    std::string scrub(std::string_view message) const {
        const std::string out = hide_secrets(one_line(message), 3);
        // libpq quotes what it could not parse; a quoted piece of a password (or a text holding
        // one) is masked however short it is.
        std::string result;
        std::size_t pos = 0;
        while (pos < out.size()) {
            auto open = out.find('"', pos);
            if (open == std::string::npos) break;
            auto close = out.find('"', open + 1);
            if (close == std::string::npos) break;
            result.append(out, pos, open + 1 - pos);
            result += mask_quoted(out.substr(open + 1, close - open - 1));
            result += '"';
            pos = close + 1;
        }
        result.append(out, std::min(pos, out.size()), std::string::npos);
        return printable(result);
    }

    static bool is_postgres_uri(std::string_view text) {
        return text.starts_with("postgresql://") || text.starts_with("postgres://");
    }

private:
    explicit postgres_conninfo(std::string_view text) : text_(text) {
        uri_ = looks_like_url(text);
        if (uri_) find_uri_secrets();
        else find_keyword_secrets(0, text_.size());
        std::sort(regions_.begin(), regions_.end());
        std::vector<std::pair<std::size_t, std::size_t>> merged;
        for (const auto& r : regions_) {
            if (!merged.empty() && r.first <= merged.back().second) merged.back().second = std::max(merged.back().second, r.second);
            else merged.push_back(r);
        }
        std::string masked = text_;
        for (auto it = merged.rbegin(); it != merged.rend(); ++it)
            masked.replace(it->first, it->second - it->first, "***");
        masked_ = printable(masked);
    }

    static std::string one_line(std::string_view s) {
        std::string out;
        for (char c : s) {
            if (c == '\n' || c == '\r') {
                if (!out.empty() && out.back() != ' ') out += ' ';
            } else {
                out += c;
            }
        }
        while (!out.empty() && out.back() == ' ') out.pop_back();
        return out;
    }

    /// Control bytes as \xNN (a quoted string can hold any), at most 500 bytes: one log line.
    static std::string printable(std::string_view s) {
        static constexpr char hex[] = "0123456789abcdef";
        std::string out;
        for (std::size_t i = 0; i < s.size() && i < 500; ++i) {
            const auto c = static_cast<unsigned char>(s[i]);
            if (c < 0x20 || c == 0x7f) {
                out += "\\x";
                out += hex[c >> 4];
                out += hex[c & 0xf];
            } else {
                out += static_cast<char>(c);
            }
        }
        if (s.size() > 500) out += "...";
        return out;
    }

    /// `s` with every occurrence of a secret of at least `min_size` bytes hidden, each run of
    /// hidden bytes shown as one `***` (marked first, then written once: never compounding).
    std::string hide_secrets(std::string_view s, std::size_t min_size) const {
        std::vector<char> hidden(s.size(), 0);
        for (const auto& secret : secrets_) {
            if (secret.size() < min_size) continue;
            std::size_t done = 0; // overlapping occurrences: each byte marked once
            for (auto p = s.find(secret); p != std::string_view::npos; p = s.find(secret, p + 1)) {
                for (auto i = std::max(p, done); i < p + secret.size(); ++i) hidden[i] = 1;
                done = p + secret.size();
            }
        }
        std::string out;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (!hidden[i]) out += s[i];
            else if (i == 0 || !hidden[i - 1]) out += "***";
        }
        return out;
    }

    std::string mask_quoted(const std::string& quoted) const {
        if (quoted.empty()) return quoted;
        for (const auto& s : secrets_)
            if (s.find(quoted) != std::string::npos) return "***";
        return hide_secrets(quoted, 1);
    }

    static bool looks_like_url(std::string_view t) {
        auto sep = t.find("://");
        if (sep == std::string_view::npos || sep == 0) return false;
        return std::all_of(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(sep), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
        });
    }

    void add_secret(std::size_t begin, std::size_t end, std::string decoded) {
        if (end <= begin) return;
        regions_.emplace_back(begin, end);
        secrets_.push_back(text_.substr(begin, end - begin));
        if (!decoded.empty() && decoded != secrets_.back()) secrets_.push_back(std::move(decoded));
    }

    static std::string percent_decoded(std::string_view s) {
        std::string out;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
                std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
                out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
                i += 2;
            } else {
                out += s[i];
            }
        }
        return out;
    }

    static bool is_password_key(std::string_view k) { return k == "password" || k == "sslpassword"; }

    /// scheme://[user[:password]@]hosts[/db][?key=value&...]: userinfo ends at the first '@'
    /// before a '/', as libpq reads it; `password=` and `sslpassword=` may also be query keys.
    void find_uri_secrets() {
        const auto start = text_.find("://") + 3;
        auto p = start;
        while (p < text_.size() && text_[p] != '@' && text_[p] != '/') ++p;
        auto hosts = start;
        if (p < text_.size() && text_[p] == '@') {
            auto colon = text_.find(':', start);
            if (colon < p) add_secret(colon + 1, p, percent_decoded(std::string_view(text_).substr(colon + 1, p - colon - 1)));
            hosts = p + 1;
        }
        auto q = text_.find('?', hosts); // libpq decodes query keys too: `pass%77ord=` is a password
        while (q != std::string::npos && q < text_.size()) {
            const auto key_start = q + 1;
            auto amp = text_.find('&', key_start);
            const auto end = amp == std::string::npos ? text_.size() : amp;
            const auto eq = text_.find('=', key_start);
            if (eq < end) {
                const auto key = percent_decoded(std::string_view(text_).substr(key_start, eq - key_start));
                const auto value = std::string_view(text_).substr(eq + 1, end - eq - 1);
                if (is_password_key(key)) add_secret(eq + 1, end, percent_decoded(value));
                else if (key == "dbname" && is_postgres_uri(percent_decoded(value)))
                    add_secret(eq + 1, end, {}); // a whole URI inside: hide it all
            }
            q = amp;
        }
    }

    static bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

    static const std::set<std::string, std::less<>>& known_keywords() {
        static const std::set<std::string, std::less<>> names = [] {
            std::set<std::string, std::less<>> n;
            if (PQconninfoOption* d = PQconndefaults()) {
                for (auto* o = d; o->keyword; ++o) n.insert(o->keyword);
                PQconninfoFree(d);
            }
            return n;
        }();
        return names;
    }

    /// key = value pairs as libpq reads them: values quoted with '...' or ending at whitespace,
    /// backslash escapes in both. After an unquoted password, the words up to the next
    /// `known_keyword =` are taken as more of it (a password with a space, not quoted).
    void find_keyword_secrets(std::size_t i, std::size_t n) {
        bool after_password = false;
        while (i < n) {
            while (i < n && is_space(text_[i])) ++i;
            if (i >= n) break;
            const auto key_start = i;
            while (i < n && text_[i] != '=' && !is_space(text_[i])) ++i;
            if (i == key_start) ++i; // "=" with no keyword: step over it (libpq refuses it anyway)
            const auto key = std::string_view(text_).substr(key_start, i - key_start);
            auto j = i;
            while (j < n && is_space(text_[j])) ++j;
            const bool has_value = j < n && text_[j] == '=';
            if (after_password && !(has_value && known_keywords().count(key))) {
                add_secret(key_start, i, {}); // a stray word after the password: part of it
                continue;
            }
            after_password = false;
            if (!has_value) continue;
            i = j + 1;
            while (i < n && is_space(text_[i])) ++i;
            const auto value_start = i;
            std::string value;
            bool quoted = i < n && text_[i] == '\'';
            bool closed = false; // a quoted value's closing quote was found
            if (quoted) {
                ++i;
                while (i < n && text_[i] != '\'') {
                    if (text_[i] == '\\' && i + 1 < n) ++i;
                    value += text_[i++];
                }
                if (i < n) { // the closing quote
                    ++i;
                    closed = true;
                }
            } else {
                while (i < n && !is_space(text_[i])) {
                    if (text_[i] == '\\' && i + 1 < n) ++i;
                    value += text_[i++];
                }
            }
            if (is_password_key(key)) {
                // Inside the quotes only: '***' stays one value even when the next keyword
                // follows the closing quote with no space.
                if (closed) add_secret(value_start + 1, i - 1, value);
                else add_secret(value_start, i, value);
                after_password = !quoted;
            } else if (key == "dbname" && is_postgres_uri(value)) {
                add_secret(value_start, i, {}); // a whole URI inside: hide it all
            }
        }
    }

    std::string text_, masked_;
    bool uri_ = false;
    std::vector<std::pair<std::size_t, std::size_t>> regions_; // byte ranges of text_ that are secret
    std::vector<std::string> secrets_;                         // their text, as written and decoded
    std::chrono::seconds connect_timeout_{5};
};

} // namespace calls
