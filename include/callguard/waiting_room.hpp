#pragma once

// The waiting room: what a backend provides so that calls over capacity can wait for a slot in
// the order they came, fleet-wide. Optional: a backend that models only `capacity_backend` has
// no waiting room, and the limiter's queue members are not available over it.

#include "backend.hpp"

#include <chrono>
#include <concepts>
#include <cstdint>
#include <string_view>

namespace callguard {

/// Skipped waiters (held back by their own tenant's cap) that one admission decision looks past
/// before it stops and answers "wait": the bound on the work of every decision taken while
/// callers wait. A waiter behind more tenant-blocked waiters than this waits until some of them
/// leave or get their tenant's room back.
inline constexpr std::int64_t max_skipped_waiters = 1000;

/// One waiting-room request, already validated by the limiter.
struct wait_request {
    std::string_view call_id;
    std::string_view tenant;                 ///< used when the call joins the line (then kept)
    std::int64_t max_active = 0;             ///< global cap
    std::int64_t tenant_max = 0;             ///< the tenant's cap (0 = none), kept with the waiter
    std::chrono::milliseconds slot_ttl{0};   ///< the slot's TTL when the call is admitted
    std::chrono::milliseconds waiter_ttl{0}; ///< a waiter not heard from for this long is dropped
    bool join = false;           ///< not in line yet: join it (enqueue); false: only ask (poll)
    std::int64_t max_length = 0; ///< joining: refuse when this many already wait (0 = no bound)
};

/// The backend's answer to a `wait_request`.
enum class wait_state {
    acquired,     ///< a newcomer took a slot at once (it never waited)
    admitted,     ///< a waiter left the line with a slot
    already_held, ///< the call holds a slot already (its expiry was pushed); it is not in line
    queued,       ///< the call joined the line now
    waiting,      ///< the call was in line and still is (its waiter TTL was pushed)
    full,         ///< joining refused: `max_length` callers already wait
    not_waiting,  ///< a poll for a call that is neither in line nor holding a slot
};

struct wait_reply {
    wait_state state = wait_state::not_waiting;
    std::int64_t position = 0;           ///< 1-based place in line (queued, waiting), else 0
    std::int64_t waiting = 0;            ///< callers in line after the operation
    std::int64_t active = 0;             ///< live slots after the operation
    std::chrono::milliseconds waited{0}; ///< since the call joined (admitted, waiting)
    bool tenant_limited = false;         ///< queued/waiting: its own tenant's cap holds it back
};

struct leave_reply {
    bool left = false;                   ///< the call was in line, and now is not
    std::int64_t position = 0;           ///< its place when it left
    std::chrono::milliseconds waited{0}; ///< how long it had waited
    std::int64_t waiting = 0;            ///< callers in line after the operation
};

struct line_reply {
    std::int64_t waiting = 0;                  ///< callers in line (expired ones dropped first)
    std::chrono::milliseconds longest_wait{0}; ///< how long the first in line has waited
};

/// What a storage engine must provide, besides `capacity_backend`, to keep a waiting room.
///
/// The line orders waiters by arrival (a ticket that only grows, so the order is total across
/// every process sharing the storage). Every operation first drops waiters whose waiter TTL
/// passed, then decides, atomically with every other operation on the same storage.
///
/// Admission order: with F = max_active - live slots free, walk the line by ticket giving one
/// slot to each waiter whose tenant still has room (counting the slots already given in this
/// walk to the same tenant); a waiter whose own tenant is at its cap is skipped and blocks no
/// one. The waiters reached before the F slots run out are "first in line". The walk looks past
/// at most `max_skipped_waiters` skipped waiters.
///
/// 1. `b.wait_turn(req)` -> `wait_reply`:
///    - `req.call_id` holds a live slot: push its expiry as `try_acquire` would, drop it from the
///      line if it was there, answer `already_held`.
///    - it is in line: if it is first in line, take its slot (with its tenant as it joined) and
///      answer `admitted`; else push its waiter TTL to now + `req.waiter_ttl` and answer
///      `waiting` with its position.
///    - it is not in line and `!req.join`: `not_waiting`.
///    - it is not in line and `req.join`: if it would be first in line standing at the back (F
///      exceeds the slots the walk gives to the waiters, and its tenant has room after them),
///      take a slot and answer `acquired`; else if `req.max_length > 0` and that many wait,
///      `full`; else join the back of the line with `req.tenant`, `req.tenant_max`, and a waiter
///      TTL of `req.waiter_ttl`, and answer `queued`.
/// 2. `try_acquire` (requirement 1 of `capacity_backend`) follows the same order while anyone
///    waits: a new call is treated as standing at the back of the line, so it is admitted only
///    when F exceeds what the walk gives to the waiters (else `rejected_queue`, or
///    `rejected_tenant` when its own tenant is out of room after them); a call that is itself in
///    line is admitted only if it is first in line, and then leaves the line. With nobody in
///    line `try_acquire` is what it was.
/// 3. `b.leave_line(call_id)` -> `leave_reply`: drop the call from the line; idempotent.
/// 4. `b.line_status()` -> `line_reply`.
/// 5. Failure and threads as in `capacity_backend` (requirements 8 and 9).
template <class B>
concept waiting_room_backend =
    capacity_backend<B> && requires(B& b, const wait_request& req, std::string_view id) {
        { b.wait_turn(req) } -> std::same_as<wait_reply>;
        { b.leave_line(id) } -> std::same_as<leave_reply>;
        { b.line_status() } -> std::same_as<line_reply>;
    };

} // namespace callguard
