#pragma once

// application/x-www-form-urlencoded bodies, strictly: '+' is a space, %XX is a byte, and a
// malformed escape is an error (a 400), never a guess.

#include <callguard/detail/text.hpp>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace calls {

class form_error : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

/// Decoded name/value pairs in their original order; duplicates are kept.
class form {
public:
    using field = std::pair<std::string, std::string>;

    /// Throws form_error on a malformed escape or an empty name.
    static form parse(std::string_view body) {
        form f;
        while (!body.empty()) {
            auto amp = body.find('&');
            auto item = body.substr(0, amp);
            body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
            if (item.empty()) continue; // "a=1&&b=2": tolerated, as browsers and Twilio do
            auto eq = item.find('=');
            auto name = decode(item.substr(0, eq));
            auto value = eq == std::string_view::npos ? std::string() : decode(item.substr(eq + 1));
            if (name.empty()) throw form_error("form field with an empty name");
            f.fields_.emplace_back(std::move(name), std::move(value));
        }
        return f;
    }

    /// The first value of `name`, if any.
    std::optional<std::string_view> get(std::string_view name) const {
        for (const auto& [n, v] : fields_)
            if (n == name) return std::string_view(v);
        return std::nullopt;
    }

    const std::vector<field>& fields() const noexcept { return fields_; }

    static std::string decode(std::string_view s) {
        std::string out;
        out.reserve(s.size());
        for (std::size_t i = 0; i < s.size(); ++i) {
            char c = s[i];
            if (c == '+') {
                out += ' ';
            } else if (c == '%') {
                if (i + 2 >= s.size()) throw form_error("truncated percent-escape");
                int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
                if (hi < 0 || lo < 0) throw form_error("malformed percent-escape");
                out += static_cast<char>(hi * 16 + lo);
                i += 2;
            } else {
                out += c;
            }
        }
        return out;
    }

private:
    static int hex(char c) noexcept {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    }

    std::vector<field> fields_;
};

} // namespace calls
