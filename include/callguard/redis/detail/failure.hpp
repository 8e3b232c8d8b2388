#pragma once

// Why a command got no reply, as a value: a failure reaches every command it broke (a whole
// pipeline, a queue), and each caller throws an exception of its own from it (one exception
// object rethrown on many threads would be destroyed under their feet).

#include "../errors.hpp"

#include <string>

namespace callguard::detail {

struct failure {
    enum class kind { none, io, timeout, reply, shutdown } what = kind::none;
    std::string message;

    explicit operator bool() const noexcept { return what != kind::none; }

    static failure io(std::string m) { return {kind::io, std::move(m)}; }
    static failure timeout(std::string m) { return {kind::timeout, std::move(m)}; }
    static failure reply(std::string m) { return {kind::reply, std::move(m)}; }
    static failure shutdown() { return {kind::shutdown, "the Redis backend is shutting down"}; }

    /// The exception for this failure (`redis_io_error`, `redis_timeout_error`, ...).
    [[noreturn]] void raise() const {
        switch (what) {
        case kind::timeout: throw redis_timeout_error(message);
        case kind::reply: throw redis_reply_error(message);
        default: throw redis_io_error(message);
        }
    }

    /// Calls `f` with the exception object for this failure (without throwing it): for
    /// asynchronous completions, which hand an error to a callback.
    template <class F>
    decltype(auto) with_error(F&& f) const {
        switch (what) {
        case kind::timeout: return f(redis_timeout_error(message));
        case kind::reply: return f(redis_reply_error(message));
        default: return f(redis_io_error(message));
        }
    }

    /// The failure an exception in flight stands for.
    static failure current() noexcept {
        try {
            throw;
        } catch (const redis_timeout_error& e) {
            return make(kind::timeout, e.what());
        } catch (const redis_io_error& e) {
            return make(kind::io, e.what());
        } catch (const std::exception& e) {
            return make(kind::reply, e.what());
        } catch (...) {
            return make(kind::io, "unknown failure");
        }
    }

private:
    static failure make(kind k, const char* text) noexcept {
        failure f;
        f.what = k;
        try {
            f.message = text;
        } catch (...) {
        }
        return f;
    }
};

} // namespace callguard::detail
