#pragma once

// The limiter for Asio programs: free functions in the style of `asio::async_read`, each taking
// any completion token (a callback, `asio::use_awaitable`, `asio::use_future`, `asio::deferred`
// on Boost 1.80+), with the semantics of the blocking calls:
//
//   async_acquire(limiter, call_id, [tenant,] token)  -> void(acquire_result)
//   async_release(limiter, call_id, token)            -> void(bool)
//   async_refresh(limiter, call_id, token)            -> void(bool)
//   async_status(limiter, token)                      -> void(capacity_status)
//
// Bad input throws at initiation and takes nothing; a backend that cannot answer never reaches
// the handler as an error: the fail mode decides, with the same logs, events, counters and
// breaker as the blocking calls. The handler runs exactly once, on its associated executor (by
// default the backend's: `redis_backend{executor, ...}`'s executor, else Asio's system
// executor), never inside the initiating call.
//
// Which backends: one that models `async_capacity_backend` (redis_backend) runs without a
// thread hand-off, on its executor. One that `never_blocks` (memory_backend) is called at
// initiation and the handler posted. Any other backend (only the blocking concept) is called
// on a thread of Asio's system executor, so it never blocks the caller's thread.

#include "capacity_limiter.hpp"

#include <utility> // before Asio: Boost 1.74's Asio uses std::exchange without including it

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>

#include <concepts>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

namespace callguard {

/// A backend whose operations never wait for I/O (in-process data structures): the async API
/// calls it at initiation and posts the handler.
template <class B>
concept nonblocking_backend = capacity_backend<B> && requires { requires B::never_blocks; };

/// A completion token (not a string: `async_acquire(l, id, "tenant")` is a mistake, not a token).
template <class T>
concept completion_token = !std::convertible_to<T, std::string_view>;

namespace detail {

namespace asio = boost::asio;

/// The executor a completion without one of its own runs on.
template <class Backend>
asio::any_io_executor default_executor(Backend& b) {
    if constexpr (requires { b.get_executor(); })
        return asio::any_io_executor(b.get_executor());
    else
        return asio::any_io_executor(asio::system_executor());
}

/// Hands `value` to `handler` on its associated executor (keeping that executor busy meanwhile).
template <class Handler, class Value>
void complete_on(asio::any_io_executor fallback, Handler&& handler, Value&& value, bool must_post) {
    auto ex = asio::get_associated_executor(handler, fallback);
    auto work = asio::prefer(ex, asio::execution::outstanding_work.tracked);
    auto fn = [handler = std::forward<Handler>(handler), value = std::forward<Value>(value),
               work = std::move(work)]() mutable { std::move(handler)(std::move(value)); };
    if (must_post)
        asio::post(ex, std::move(fn));
    else
        asio::dispatch(ex, std::move(fn));
}

/// The owned strings of one call: the request's views point into them, and the handler may
/// run after the caller's strings are gone.
struct call_strings {
    std::string call_id, tenant;
};

} // namespace detail

/// Takes a slot for `call_id` (against `tenant`'s cap too); completes with `acquire_result`.
/// Throws `std::invalid_argument` at initiation for a malformed call id or tenant.
template <capacity_backend Backend, completion_token Token>
auto async_acquire(capacity_limiter<Backend>& limiter, std::string_view call_id, std::string_view tenant,
                   Token&& token) {
    validate_call_id(call_id);
    validate_tenant(tenant);
    auto strings = std::make_unique<detail::call_strings>(detail::call_strings{std::string(call_id), std::string(tenant)});
    return boost::asio::async_initiate<Token, void(acquire_result)>(
        [&limiter](auto handler, std::unique_ptr<detail::call_strings> s) {
            using access = detail::limiter_access;
            auto fallback = detail::default_executor(limiter.backend());
            const auto req = access::request(limiter, s->call_id, s->tenant);
            if constexpr (async_capacity_backend<Backend>) {
                limiter.backend().async_try_acquire(
                    req, [&limiter, s = std::move(s), handler = std::move(handler), fallback](
                             slot_reply reply, const backend_error* error) mutable {
                        const auto r = access::request(limiter, s->call_id, s->tenant);
                        auto result = error ? access::acquire_failed(limiter, r, *error)
                                            : access::acquire_answered(limiter, r, reply);
                        detail::complete_on(fallback, std::move(handler), result, false);
                    });
            } else if constexpr (nonblocking_backend<Backend>) {
                auto result = limiter.acquire(s->call_id, s->tenant);
                detail::complete_on(fallback, std::move(handler), result, true);
            } else {
                boost::asio::post(boost::asio::system_executor(),
                                  [&limiter, s = std::move(s), handler = std::move(handler), fallback]() mutable {
                                      auto result = limiter.acquire(s->call_id, s->tenant);
                                      detail::complete_on(fallback, std::move(handler), result, false);
                                  });
            }
        },
        token, std::move(strings));
}

/// `async_acquire` without a tenant.
template <capacity_backend Backend, completion_token Token>
auto async_acquire(capacity_limiter<Backend>& limiter, std::string_view call_id, Token&& token) {
    return async_acquire(limiter, call_id, std::string_view{}, std::forward<Token>(token));
}

/// Gives `call_id`'s slot back; completes with whether a slot was freed. Like `release`, never
/// fails: a malformed id completes with false, an unreachable backend is logged, counted and
/// (for Redis) kept for replay.
template <capacity_backend Backend, completion_token Token>
auto async_release(capacity_limiter<Backend>& limiter, std::string_view call_id, Token&& token) {
    return boost::asio::async_initiate<Token, void(bool)>(
        [&limiter](auto handler, std::string id) {
            using access = detail::limiter_access;
            auto fallback = detail::default_executor(limiter.backend());
            if constexpr (async_capacity_backend<Backend>) {
                if (!call_id_problem(id).empty())
                    return detail::complete_on(fallback, std::move(handler), false, true);
                const bool freed_local = access::release_local(limiter, id);
                auto& backend = limiter.backend();
                backend.async_release(id, [&limiter, id, freed_local, handler = std::move(handler), fallback](
                                              release_reply reply, const backend_error* error) mutable {
                    const bool freed = access::release_answered(limiter, id, freed_local, error ? nullptr : &reply, error);
                    detail::complete_on(fallback, std::move(handler), freed, false);
                });
            } else if constexpr (nonblocking_backend<Backend>) {
                detail::complete_on(fallback, std::move(handler), limiter.release(id), true);
            } else {
                boost::asio::post(boost::asio::system_executor(),
                                  [&limiter, id, handler = std::move(handler), fallback]() mutable {
                                      detail::complete_on(fallback, std::move(handler), limiter.release(id), false);
                                  });
            }
        },
        token, std::string(call_id));
}

/// Pushes a held slot's expiry; completes with whether the call holds a slot. Throws
/// `std::invalid_argument` at initiation for a malformed call id.
template <capacity_backend Backend, completion_token Token>
auto async_refresh(capacity_limiter<Backend>& limiter, std::string_view call_id, Token&& token) {
    validate_call_id(call_id);
    return boost::asio::async_initiate<Token, void(bool)>(
        [&limiter](auto handler, std::string id) {
            using access = detail::limiter_access;
            auto fallback = detail::default_executor(limiter.backend());
            if constexpr (async_capacity_backend<Backend>) {
                const bool held_locally = access::refresh_local(limiter, id);
                auto& backend = limiter.backend();
                backend.async_refresh(id, access::ttl(limiter),
                                      [&limiter, id, held_locally, handler = std::move(handler), fallback](
                                          bool held, const backend_error* error) mutable {
                                          const bool ok = access::refresh_answered(limiter, id, held_locally,
                                                                                   error ? nullptr : &held, error);
                                          detail::complete_on(fallback, std::move(handler), ok, false);
                                      });
            } else if constexpr (nonblocking_backend<Backend>) {
                detail::complete_on(fallback, std::move(handler), limiter.refresh(id), true);
            } else {
                boost::asio::post(boost::asio::system_executor(),
                                  [&limiter, id, handler = std::move(handler), fallback]() mutable {
                                      detail::complete_on(fallback, std::move(handler), limiter.refresh(id), false);
                                  });
            }
        },
        token, std::string(call_id));
}

/// Live numbers for `/health/details`; degraded (never an error) while the backend is down.
template <capacity_backend Backend, completion_token Token>
auto async_status(capacity_limiter<Backend>& limiter, Token&& token) {
    return boost::asio::async_initiate<Token, void(capacity_status)>(
        [&limiter](auto handler) {
            using access = detail::limiter_access;
            auto fallback = detail::default_executor(limiter.backend());
            if constexpr (async_capacity_backend<Backend>) {
                limiter.backend().async_active_count([&limiter, handler = std::move(handler), fallback](
                                                         std::int64_t count, const backend_error* error) mutable {
                    auto s = access::status_answered(limiter, error ? nullptr : &count, error);
                    detail::complete_on(fallback, std::move(handler), std::move(s), false);
                });
            } else if constexpr (nonblocking_backend<Backend>) {
                detail::complete_on(fallback, std::move(handler), limiter.status(), true);
            } else {
                boost::asio::post(boost::asio::system_executor(),
                                  [&limiter, handler = std::move(handler), fallback]() mutable {
                                      detail::complete_on(fallback, std::move(handler), limiter.status(), false);
                                  });
            }
        },
        token);
}

} // namespace callguard
