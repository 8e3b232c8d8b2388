#pragma once

// The limiter for Asio programs: free functions in the style of `asio::async_read`, each taking
// any completion token (a callback, `asio::use_awaitable`, `asio::use_future`, `asio::deferred`
// on Boost 1.80+), with the semantics of the blocking calls:
//
//   async_acquire(limiter, call_id, [tenant,] token)    -> void(acquire_result)
//   async_release(limiter, call_id, token)              -> void(bool)
//   async_refresh(limiter, call_id, token)              -> void(bool)
//   async_status(limiter, token)                        -> void(capacity_status)
//   async_reinstate(limiter, call_id, [tenant,] token)  -> void(reinstate_result)
//   async_guard(limiter, call_id, [tenant,] token)      -> void(async_slot_guard)
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

/// A completion token: anything but text (`async_acquire(l, id, "tenant")` is a mistake).
template <class T>
concept completion_token = !std::convertible_to<T, std::string_view>;

namespace detail {

namespace asio = boost::asio;

/// The limiter's steps around a backend call, shared with its blocking members.
struct limiter_access {
    /// Holds the limiter's destructor back while it (or a copy of it) lives: an asynchronous
    /// operation keeps one until it is done with the limiter. A counted reference, so a
    /// handler carrying it stays copyable and nothing is allocated per call.
    template <class L>
    class in_flight {
    public:
        explicit in_flight(L& l) noexcept : l_(&l) { hold(); }
        in_flight(const in_flight& o) noexcept : l_(o.l_) { hold(); }
        in_flight(in_flight&& o) noexcept : l_(std::exchange(o.l_, nullptr)) {}
        in_flight& operator=(const in_flight&) = delete;
        in_flight& operator=(in_flight&&) = delete;
        ~in_flight() {
            if (l_) l_->async_in_flight_.fetch_sub(1, std::memory_order_release);
        }

    private:
        void hold() noexcept {
            if (l_) l_->async_in_flight_.fetch_add(1, std::memory_order_relaxed);
        }
        L* l_;
    };
    template <class L>
    static slot_request request(L& l, std::string_view call_id, std::string_view tenant) {
        return l.request_for(call_id, tenant);
    }
    template <bool Held, class L>
    static acquire_result acquired(L& l, const slot_request& req, const slot_reply* reply, const backend_error* e) {
        return reply ? l.template admitted_answer<Held>(req, *reply) : l.template admitted_error<Held>(req, *e);
    }
    template <class L>
    static bool release_local(L& l, std::string_view call_id) {
        return l.release_local(call_id);
    }
    template <class L>
    static bool released(L& l, std::string_view call_id, bool freed_local, const release_reply* reply,
                         const backend_error* e) {
        return l.released_answer(call_id, freed_local, reply, e);
    }
    template <class L>
    static bool refresh_local(L& l, std::string_view call_id) {
        return l.refresh_local(call_id);
    }
    template <class L>
    static std::chrono::milliseconds ttl(L& l) {
        return l.ttl();
    }
    template <class L>
    static bool refreshed(L& l, bool held_locally, const bool* held, const backend_error* e) {
        return l.refreshed_answer(held_locally, held, e);
    }
    template <class L>
    static capacity_status status(L& l, const std::int64_t* count, const backend_error* e) {
        return l.status_answer(count, e);
    }
    template <class L>
    static reinstate_result reinstated(L& l, const slot_request& req, const reinstate_reply* reply,
                                       const backend_error* e) {
        return reply ? l.reinstate_answer(req, *reply) : l.reinstate_error(req, *e);
    }
};

/// The executor a completion without one of its own runs on.
template <class Backend>
asio::any_io_executor default_executor(Backend& b) {
    if constexpr (requires { b.get_executor(); })
        return asio::any_io_executor(b.get_executor());
    else
        return asio::any_io_executor(asio::system_executor());
}

/// Hands `value` to `handler` on its associated executor, which is kept busy meanwhile.
/// `must_post`: the caller may be inside the initiating function.
template <class Handler, class Value>
void complete_on(const asio::any_io_executor& fallback, Handler handler, Value value, bool must_post) {
    auto ex = asio::get_associated_executor(handler, fallback);
    auto work = asio::prefer(ex, asio::execution::outstanding_work.tracked);
    auto fn = [handler = std::move(handler), value = std::move(value), work = std::move(work)]() mutable {
        std::move(handler)(std::move(value));
    };
    if (must_post)
        asio::post(ex, std::move(fn));
    else
        asio::dispatch(ex, std::move(fn));
}

/// One asynchronous limiter operation over a backend with asynchronous calls: `start(finish)`
/// begins the backend's call and has `finish(result)` called with the limiter's answer.
template <class Backend, class Handler, class Start>
void run_async(capacity_limiter<Backend>& l, Handler handler, Start start) {
    start([handler = std::move(handler), fallback = default_executor(l.backend()),
           busy = limiter_access::in_flight(l)](auto result) mutable {
        complete_on(fallback, std::move(handler), std::move(result), false);
    });
}

/// The same over a backend with only blocking calls: `blocking()` is the limiter's blocking
/// member, run at initiation when the backend never blocks, else on the system executor.
template <class Backend, class Handler, class Blocking>
void run_blocking(capacity_limiter<Backend>& l, Handler handler, Blocking blocking) {
    auto fallback = default_executor(l.backend());
    if constexpr (nonblocking_backend<Backend>) {
        complete_on(fallback, std::move(handler), blocking(), true);
    } else {
        asio::post(asio::system_executor(), [handler = std::move(handler), blocking = std::move(blocking),
                                             fallback, busy = limiter_access::in_flight(l)]() mutable {
            complete_on(fallback, std::move(handler), blocking(), false);
        });
    }
}

/// The strings of one call, owned: the handler may run after the caller's are gone.
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
    return boost::asio::async_initiate<Token, void(acquire_result)>(
        [&limiter](auto handler, detail::call_strings s) {
            using access = detail::limiter_access;
            if constexpr (async_capacity_backend<Backend>)
                detail::run_async(limiter, std::move(handler),
                                  [&limiter, s = std::move(s)](auto finish) {
                    limiter.backend().async_try_acquire(
                        access::request(limiter, s.call_id, s.tenant),
                        [&limiter, s, finish = std::move(finish)](slot_reply reply, const backend_error* e) mutable {
                            const auto req = access::request(limiter, s.call_id, s.tenant);
                            finish(access::acquired<false>(limiter, req, e ? nullptr : &reply, e));
                        });
                });
            else
                detail::run_blocking(limiter, std::move(handler), [&limiter, s = std::move(s)] { return limiter.acquire(s.call_id, s.tenant); });
        },
        token, detail::call_strings{std::string(call_id), std::string(tenant)});
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
            if (!call_id_problem(id).empty()) {
                detail::complete_on(detail::default_executor(limiter.backend()), std::move(handler), false, true);
                return;
            }
            if constexpr (async_capacity_backend<Backend>)
                detail::run_async(limiter, std::move(handler),
                                  [&limiter, id = std::move(id)](auto finish) {
                    const bool freed_local = access::release_local(limiter, id);
                    limiter.backend().async_release(
                        id, [&limiter, id, freed_local, finish = std::move(finish)](release_reply reply,
                                                                                    const backend_error* e) mutable {
                            finish(access::released(limiter, id, freed_local, e ? nullptr : &reply, e));
                        });
                });
            else
                detail::run_blocking(limiter, std::move(handler), [&limiter, id = std::move(id)] { return limiter.release(id); });
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
            if constexpr (async_capacity_backend<Backend>)
                detail::run_async(limiter, std::move(handler),
                                  [&limiter, id = std::move(id)](auto finish) {
                    const bool held_locally = access::refresh_local(limiter, id);
                    limiter.backend().async_refresh(id, access::ttl(limiter),
                                                    [&limiter, held_locally, finish = std::move(finish)](
                                                        bool held, const backend_error* e) mutable {
                                                        finish(access::refreshed(limiter, held_locally,
                                                                                 e ? nullptr : &held, e));
                                                    });
                });
            else
                detail::run_blocking(limiter, std::move(handler), [&limiter, id = std::move(id)] { return limiter.refresh(id); });
        },
        token, std::string(call_id));
}

/// Live numbers for `/health/details`; degraded (never an error) while the backend is down.
template <capacity_backend Backend, completion_token Token>
auto async_status(capacity_limiter<Backend>& limiter, Token&& token) {
    return boost::asio::async_initiate<Token, void(capacity_status)>(
        [&limiter](auto handler) {
            using access = detail::limiter_access;
            if constexpr (async_capacity_backend<Backend>)
                detail::run_async(limiter, std::move(handler),
                                  [&limiter](auto finish) {
                    limiter.backend().async_active_count(
                        [&limiter, finish = std::move(finish)](std::int64_t n, const backend_error* e) mutable {
                            finish(access::status(limiter, e ? nullptr : &n, e));
                        });
                });
            else
                detail::run_blocking(limiter, std::move(handler), [&limiter] { return limiter.status(); });
        },
        token);
}

/// Puts back the slot of a call in progress, with no cap check (see `capacity_limiter::
/// reinstate`); completes with `reinstate_result`. Throws `std::invalid_argument` at initiation
/// for a malformed call id or tenant.
template <capacity_backend Backend, completion_token Token>
    requires reinstates_slots<Backend>
auto async_reinstate(capacity_limiter<Backend>& limiter, std::string_view call_id, std::string_view tenant,
                     Token&& token) {
    validate_call_id(call_id);
    validate_tenant(tenant);
    return boost::asio::async_initiate<Token, void(reinstate_result)>(
        [&limiter](auto handler, detail::call_strings s) {
            using access = detail::limiter_access;
            if constexpr (async_capacity_backend<Backend> && async_reinstates_slots<Backend>)
                detail::run_async(limiter, std::move(handler),
                                  [&limiter, s](auto finish) {
                    limiter.backend().async_reinstate(
                        access::request(limiter, s.call_id, s.tenant),
                        [&limiter, s, finish = std::move(finish)](reinstate_reply reply, const backend_error* e) mutable {
                            const auto req = access::request(limiter, s.call_id, s.tenant);
                            finish(access::reinstated(limiter, req, e ? nullptr : &reply, e));
                        });
                });
            else
                detail::run_blocking(limiter, std::move(handler),
                                     [&limiter, s] { return limiter.reinstate(s.call_id, s.tenant); });
        },
        token, detail::call_strings{std::string(call_id), std::string(tenant)});
}

template <capacity_backend Backend, completion_token Token>
    requires reinstates_slots<Backend>
auto async_reinstate(capacity_limiter<Backend>& limiter, std::string_view call_id, Token&& token) {
    return async_reinstate(limiter, call_id, std::string_view{}, std::forward<Token>(token));
}

/// Holds a call's slot in a coroutine (or any asynchronous flow) and gives it back when it is
/// destroyed: when the scope ends by return, exception or cancellation (a destroyed coroutine
/// frame destroys it). A destructor cannot wait, so it starts an `async_release` and does not
/// wait for it; `co_await g.release(token)` releases earlier and waits. Use it instead of
/// `slot_guard` wherever a blocking release must not run (an I/O thread); `slot_guard` is the
/// one for threads that may block. Made by `async_guard`.
template <class Limiter>
class async_slot_guard {
public:
    async_slot_guard() noexcept = default;
    async_slot_guard(Limiter& l, std::string call_id, acquire_result r) noexcept
        : limiter_(r.admitted() ? &l : nullptr), call_id_(std::move(call_id)), result_(r) {}
    async_slot_guard(async_slot_guard&& o) noexcept
        : limiter_(std::exchange(o.limiter_, nullptr)), call_id_(std::move(o.call_id_)), result_(o.result_) {}
    async_slot_guard& operator=(async_slot_guard&& o) noexcept {
        if (this != &o) {
            start_release();
            limiter_ = std::exchange(o.limiter_, nullptr);
            call_id_ = std::move(o.call_id_);
            result_ = o.result_;
        }
        return *this;
    }
    async_slot_guard(const async_slot_guard&) = delete;
    async_slot_guard& operator=(const async_slot_guard&) = delete;
    ~async_slot_guard() { start_release(); }

    bool admitted() const noexcept { return result_.admitted(); }
    explicit operator bool() const noexcept { return admitted(); }
    const acquire_result& result() const noexcept { return result_; }
    const std::string& call_id() const noexcept { return call_id_; }
    /// True while the guard still has a release to start (see `slot_guard::release_pending`).
    bool release_pending() const noexcept { return limiter_ != nullptr; }

    /// Releases now and completes with whether a slot was freed; the guard then holds nothing.
    /// With nothing left to release it completes with false.
    template <completion_token Token>
    auto release(Token&& token) {
        auto* l = std::exchange(limiter_, nullptr);
        if (l) return async_release(*l, call_id_, std::forward<Token>(token));
        return boost::asio::async_initiate<Token, void(bool)>(
            [](auto handler) {
                auto ex = boost::asio::get_associated_executor(handler, boost::asio::system_executor());
                boost::asio::post(ex, [handler = std::move(handler)]() mutable { std::move(handler)(false); });
            },
            token);
    }

private:
    void start_release() noexcept {
        auto* l = std::exchange(limiter_, nullptr);
        if (!l) return;
        try {
            async_release(*l, call_id_, [](bool) {});
        } catch (...) {
            // Out of memory starting it: the slot's TTL is the last resort.
        }
    }

    Limiter* limiter_ = nullptr; // null: nothing to release
    std::string call_id_;
    acquire_result result_{};
};

/// `async_acquire` that completes with an `async_slot_guard` holding the slot when admitted:
///
///     auto call = co_await callguard::async_guard(limiter, call_sid, asio::use_awaitable);
///     if (!call) co_return reject();
///     ... // the slot goes back however this scope ends
template <capacity_backend Backend, completion_token Token>
auto async_guard(capacity_limiter<Backend>& limiter, std::string_view call_id, std::string_view tenant,
                 Token&& token) {
    validate_call_id(call_id);
    validate_tenant(tenant);
    using guard_type = async_slot_guard<capacity_limiter<Backend>>;
    return boost::asio::async_initiate<Token, void(guard_type)>(
        [&limiter](auto handler, detail::call_strings s) {
            using access = detail::limiter_access;
            auto make = [&limiter, id = s.call_id](const acquire_result& r) { return guard_type(limiter, id, r); };
            if constexpr (async_capacity_backend<Backend>)
                detail::run_async(limiter, std::move(handler),
                                  [&limiter, s, make](auto finish) {
                    limiter.backend().async_try_acquire(
                        access::request(limiter, s.call_id, s.tenant),
                        [&limiter, s, make, finish = std::move(finish)](slot_reply reply,
                                                                        const backend_error* e) mutable {
                            const auto req = access::request(limiter, s.call_id, s.tenant);
                            finish(make(access::acquired<true>(limiter, req, e ? nullptr : &reply, e)));
                        });
                });
            else
                detail::run_blocking(limiter, std::move(handler), [&limiter, s, make] { return make(limiter.acquire(s.call_id, s.tenant)); });
        },
        token, detail::call_strings{std::string(call_id), std::string(tenant)});
}

template <capacity_backend Backend, completion_token Token>
auto async_guard(capacity_limiter<Backend>& limiter, std::string_view call_id, Token&& token) {
    return async_guard(limiter, call_id, std::string_view{}, std::forward<Token>(token));
}

} // namespace callguard
