#pragma once

// Twilio's webhook bodies: application/x-www-form-urlencoded, parsed strictly ('+' is a space,
// %XX is a byte, and a malformed escape is an error, never a guess).

#include "../detail/percent.hpp"
#include "../detail/text.hpp"

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace callguard::twilio {

/// A body that is not a well-formed form (answer it with a 400).
class form_error : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

/// True when a Content-Type header names a form body (`application/x-www-form-urlencoded`,
/// any case, parameters such as `; charset=utf-8` allowed).
constexpr bool is_form_content_type(std::string_view content_type) noexcept {
    return callguard::detail::iequals(callguard::detail::trim(content_type.substr(0, content_type.find(';'))),
                                      "application/x-www-form-urlencoded");
}

/// Decoded name/value pairs in their original order; duplicates are kept (Twilio's signature
/// covers every one of them).
class form {
public:
    using field = std::pair<std::string, std::string>;

    /// Throws `form_error` on a malformed escape or an empty name. Empty items (`a=1&&b=2`)
    /// are skipped, as browsers and Twilio do.
    static form parse(std::string_view body) {
        form f;
        while (!body.empty()) {
            const auto amp = body.find('&');
            const auto item = body.substr(0, amp);
            body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
            if (item.empty()) continue;
            const auto eq = item.find('=');
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

    /// One name or value, decoded; throws `form_error` on a malformed escape.
    static std::string decode(std::string_view s) {
        auto d = callguard::detail::percent_decode(s, true);
        if (!d) throw form_error("malformed percent-escape");
        return std::move(*d);
    }

private:
    std::vector<field> fields_;
};

} // namespace callguard::twilio
