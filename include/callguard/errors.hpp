#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace callguard {

/// A setting (environment variable or option) has a value we cannot use.
/// `what()` names the variable and the value, so the log line alone is enough to fix it.
class config_error : public std::invalid_argument {
public:
    config_error(std::string variable, std::string value, const std::string& why)
        : std::invalid_argument(variable + "=\"" + value + "\": " + why),
          variable_(std::move(variable)),
          value_(std::move(value)) {}

    const std::string& variable() const noexcept { return variable_; }
    const std::string& value() const noexcept { return value_; }

private:
    std::string variable_;
    std::string value_;
};

/// The backend could not give an answer (unreachable, timed out, refused the command).
/// The limiter turns it into a decision according to its `fail_mode`; it never reaches
/// a caller of `acquire` or `release`.
class backend_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

} // namespace callguard
