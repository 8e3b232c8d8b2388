#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstddef>
#include <string_view>

#include "errors.hpp"

namespace callguard {

/// One admission request, already validated by the limiter.
struct slot_request {
    std::string_view call_id;
    std::string_view tenant;            ///< empty: the call counts only against the global cap
    std::int64_t max_active = 0;        ///< global cap
    std::int64_t tenant_max = 0;        ///< the tenant's cap; 0 = none
    std::chrono::milliseconds ttl{0};   ///< how long the slot lives without a refresh
};

/// The backend's part of an admission decision.
enum class slot_state {
    acquired,        ///< added
    already_held,    ///< the call was already a member (its expiry was pushed to now + ttl)
    rejected,        ///< global cap reached
    rejected_tenant, ///< tenant cap reached
    rejected_queue,  ///< the free slots belong to callers already waiting (`waiting_room.hpp`)
};

struct slot_reply {
    slot_state state = slot_state::rejected;
    std::int64_t active = 0; ///< live slots after the operation (global)
};

struct release_reply {
    bool released = false;   ///< the call held a slot, and now does not
    std::int64_t active = 0; ///< live slots after the operation (global)
};

/// The backend's answer to putting back the slot of a call already in progress.
enum class reinstate_state {
    reinstated,   ///< added again (counted, whatever the cap)
    already_held, ///< the call held a live slot (its expiry was pushed to now + ttl)
    released,     ///< the backend knows the call was released recently and did not put it back
};

struct reinstate_reply {
    reinstate_state state = reinstate_state::reinstated;
    std::int64_t active = 0; ///< live slots after the operation (global)
};

/// What a storage engine must provide to back a `capacity_limiter`.
///
/// 1. `b.try_acquire(req)` -> `slot_reply`: atomically (against every other caller of every
///    process sharing the same storage) remove expired slots, then: if `req.call_id` holds a slot,
///    push its expiry to now + ttl and answer `already_held` (even when full); else if the global
///    count is below `req.max_active` and (when `req.tenant_max > 0`) the tenant's count is below
///    it, add the slot with expiry now + ttl and answer `acquired`; else `rejected` /
///    `rejected_tenant`. A slot remembers its tenant until it is released or expires. (A backend
///    that also keeps a waiting room puts callers already waiting first: `waiting_room.hpp`.)
/// 2. `b.release(call_id)` -> `release_reply`: remove the slot if held; idempotent.
/// 3. `b.refresh(call_id, ttl)` -> `bool`: push a held slot's expiry to now + ttl; false if not held
///    (never re-creates an expired or released slot).
/// 4. `b.active_count()` -> `std::int64_t`: live (unexpired) slots.
/// 5. `b.cleanup_expired()` -> `std::size_t`: remove expired slots now, return how many.
/// 6. `b.name()` -> something convertible to `std::string_view` ("memory", "redis", ...).
/// 7. `b.healthy()` -> `bool`, `noexcept`: false while the backend is known to be unreachable.
/// 8. Failure: when the storage cannot answer, 1-5 throw `callguard::backend_error` (or a type
///    derived from it) and change nothing that the caller can observe later; any other exception
///    is a bug. The limiter turns `backend_error` into its `fail_mode` decision.
/// 9. Every member may be called concurrently from any number of threads. A backend is
///    move-constructible (the limiter takes it by value) but need not be copyable.
template <class B>
concept capacity_backend =
    std::move_constructible<B> &&
    requires(B& b, const B& cb, const slot_request& req, std::string_view id,
             std::chrono::milliseconds ttl) {
        { b.try_acquire(req) } -> std::same_as<slot_reply>;
        { b.release(id) } -> std::same_as<release_reply>;
        { b.refresh(id, ttl) } -> std::same_as<bool>;
        { b.active_count() } -> std::same_as<std::int64_t>;
        { b.cleanup_expired() } -> std::same_as<std::size_t>;
        { cb.name() } -> std::convertible_to<std::string_view>;
        { cb.healthy() } noexcept -> std::same_as<bool>;
    };

/// Optional: a backend that can tell when its stored slots vanished behind its back (a server
/// restarted without persistence, flushed, or failed over to an empty replica) counts those
/// events in `data_resets()`. The limiter reports the count in its status and logs each new one:
/// the slots held before are gone, so the count under-states the calls in progress until they
/// refresh or end.
template <class B>
concept reports_data_resets = requires(const B& b) {
    { b.data_resets() } noexcept -> std::convertible_to<std::uint64_t>;
};

/// Optional: a backend that can put back the slot of a call already in progress, without a cap
/// check. The limiter uses it for calls it admitted without the backend (fail modes `open` and
/// `local`) and for calls whose slots the backend lost; applications use it through
/// `capacity_limiter::reinstate` when a live call finds its slot gone.
///
/// 10. `b.reinstate(req)` -> `reinstate_reply`: atomically, like `try_acquire` but without
///     comparing any count with `req.max_active` or `req.tenant_max`: remove expired slots; if
///     `req.call_id` holds a live slot, push its expiry to now + ttl and answer `already_held`;
///     else add the slot (global and, when `req.tenant` is not empty, the tenant's count) with
///     expiry now + ttl and answer `reinstated`. The counts may exceed the caps; `try_acquire`
///     then rejects until they drop below. Idempotent per call id. A backend shared by several
///     processes may remember releases for a while and answer `released` for a call released
///     within that time (so a late reinstatement never brings back a call that ended); a backend
///     that remembers nothing never answers it. Failure as in 8.
template <class B>
concept reinstates_slots = requires(B& b, const slot_request& req) {
    { b.reinstate(req) } -> std::same_as<reinstate_reply>;
};

namespace detail {
/// A callback of the asynchronous backend operations, for checking the concepts below.
template <class T>
struct async_result_sink {
    void operator()(T, const backend_error*) const noexcept {}
};
} // namespace detail

/// Optional: a backend that answers without blocking its caller, for `<callguard/async.hpp>`.
///
/// 11. `b.async_try_acquire(req, f)`, `b.async_release(id, f)`, `b.async_refresh(id, ttl, f)`
///     and `b.async_active_count(f)` start the operation of 1, 2, 3 and 4 and return at once;
///     they copy what they need of their arguments. `f(result, const backend_error* error)` is
///     called exactly once, later (never inside the starting call), on an executor of the
///     backend's; a non-null `error` means the backend could not answer (as in 8), and the
///     result is then a default value. Every other rule of 1-9 holds.
template <class B>
concept async_capacity_backend =
    capacity_backend<B> &&
    requires(B& b, const slot_request& req, std::string_view id, std::chrono::milliseconds ttl) {
        b.async_try_acquire(req, detail::async_result_sink<slot_reply>{});
        b.async_release(id, detail::async_result_sink<release_reply>{});
        b.async_refresh(id, ttl, detail::async_result_sink<bool>{});
        b.async_active_count(detail::async_result_sink<std::int64_t>{});
    };

/// Optional: 10 without blocking, as in 11: `b.async_reinstate(req, f)`.
template <class B>
concept async_reinstates_slots = reinstates_slots<B> && requires(B& b, const slot_request& req) {
    b.async_reinstate(req, detail::async_result_sink<reinstate_reply>{});
};

} // namespace callguard

// Checks that the concept stays satisfiable as it evolves.
#include "detail/archetype_backend.hpp"
