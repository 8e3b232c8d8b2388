#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <functional>
#include <string_view>

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

} // namespace callguard
