#pragma once

// The limiter's level filter in front of a `log_sink`.

#include "../logging.hpp"

#include <fmt/format.h>

#include <iterator>
#include <string_view>
#include <utility>

namespace callguard::detail {

/// Formats only enabled levels, and a throwing sink can never take a caller (or a destructor)
/// down with it.
class logger {
public:
    logger(log_level threshold, log_sink sink)
        : threshold_(threshold), sink_(sink ? std::move(sink) : stderr_sink()) {}

    bool enabled(log_level l) const noexcept { return l != log_level::off && l >= threshold_; }

    template <class... Args>
    void log(log_level l, fmt::format_string<Args...> f, Args&&... args) const noexcept {
        if (!enabled(l)) return;
        try {
            fmt::memory_buffer buf;
            fmt::format_to(std::back_inserter(buf), f, std::forward<Args>(args)...);
            sink_(l, std::string_view(buf.data(), buf.size()));
        } catch (...) {
            // Logging must never change what the limiter decided.
        }
    }

private:
    log_level threshold_;
    log_sink sink_;
};

/// ` key=value` in a log line, or nothing when `value` is empty; formatting it costs nothing
/// when the line is filtered out.
struct optional_field {
    std::string_view key;
    std::string_view value;
};

} // namespace callguard::detail

template <>
struct fmt::formatter<callguard::detail::optional_field> : fmt::formatter<std::string_view> {
    template <class Context>
    auto format(const callguard::detail::optional_field& f, Context& ctx) const {
        if (f.value.empty()) return ctx.out();
        return fmt::format_to(ctx.out(), " {}={}", f.key, f.value);
    }
};
