#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <functional>
#include <iterator>
#include <string_view>
#include <utility>

namespace callguard {

/// Severity of a log line; lines below the limiter's `log_level` are not even formatted.
enum class log_level { debug, info, warning, error, off };

constexpr std::string_view to_string(log_level l) noexcept {
    switch (l) {
    case log_level::debug: return "DEBUG";
    case log_level::info: return "INFO";
    case log_level::warning: return "WARNING";
    case log_level::error: return "ERROR";
    case log_level::off: return "OFF";
    }
    return "UNKNOWN";
}

/// Receives each formatted line (without a trailing newline). May be called from any thread,
/// concurrently; it must be thread-safe itself. Exceptions it throws are swallowed.
using log_sink = std::function<void(log_level, std::string_view line)>;

/// The default sink: one `fwrite` per line to stderr, so lines from threads never interleave.
inline log_sink stderr_sink() {
    return [](log_level, std::string_view line) { fmt::print(stderr, "{}\n", line); };
}

/// A sink that drops everything.
inline log_sink null_sink() {
    return [](log_level, std::string_view) {};
}

namespace detail {

/// Level filter in front of a sink. Formatting happens only for enabled levels, and a
/// throwing sink can never take a caller (or a destructor) down with it.
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

} // namespace detail
} // namespace callguard

template <>
struct fmt::formatter<callguard::detail::optional_field> : fmt::formatter<std::string_view> {
    template <class Context>
    auto format(const callguard::detail::optional_field& f, Context& ctx) const {
        if (f.value.empty()) return ctx.out();
        return fmt::format_to(ctx.out(), " {}={}", f.key, f.value);
    }
};
