#pragma once

#include "detail/text.hpp"

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace callguard {

/// A setting has a value we cannot use. `variable()` names the setting: the environment
/// variable when the value came from `from_env()`, the field when it came from a struct filled
/// by hand. `what()` names it with the value, so the log line alone is enough to fix it.
class config_error : public std::invalid_argument {
public:
    /// `value` is shown printably (control bytes escaped, long text cut), whatever it holds.
    config_error(std::string variable, std::string_view value, std::string reason)
        : config_error(std::move(variable), detail::printable(value, 200), std::move(reason), 0) {}

    const std::string& variable() const noexcept { return variable_; }
    /// The value as shown in the message (printable).
    const std::string& value() const noexcept { return value_; }
    /// Why the value cannot be used, without the variable and the value.
    const std::string& reason() const noexcept { return reason_; }

    /// The same error reported under another name: `from_env()` maps a field to its variable.
    config_error renamed(std::string variable) const {
        return config_error(std::move(variable), value_, reason_, 0);
    }

private:
    config_error(std::string variable, std::string shown, std::string reason, int)
        : std::invalid_argument(variable + "=\"" + shown + "\": " + reason),
          variable_(std::move(variable)), value_(std::move(shown)), reason_(std::move(reason)) {}

    std::string variable_;
    std::string value_;
    std::string reason_;
};

/// The backend could not give an answer (unreachable, timed out, refused the command).
/// The limiter turns it into a decision according to its `fail_mode`; it never reaches
/// a caller of `acquire` or `release`.
class backend_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

} // namespace callguard
