#pragma once

#include "acquire_result.hpp"
#include "backend.hpp"
#include "backends/memory.hpp"
#include "claim.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "events.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "reinstate_result.hpp"
#include "slot_guard.hpp"
#include "status.hpp"
#include "validation.hpp"
#include "wait_metrics.hpp"
#include "wait_result.hpp"
#include "waiting_room.hpp"
#include "detail/live_calls.hpp"
#include "detail/logger.hpp"
#include "detail/striped_counters.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace callguard {

/// Where the limiter's lines and events go. Both optional: the default logs to stderr.
struct limiter_hooks {
    log_sink sink;           ///< default: `stderr_sink()`
    event_observer observer; ///< default: none
};

/// Caps concurrent calls over a `capacity_backend`.
///
/// The backend makes each decision atomically (and, for a shared backend, fleet-wide); the
/// limiter validates input, applies the `fail_mode` when the backend cannot answer, logs the
/// `[CAPACITY]` lines, counts, and tells the observer. Every member is thread-safe.
/// Not movable: guards point back at it.
///
/// Calls in progress are a fact, not a request: with a backend that `reinstates_slots`, the
/// limiter remembers (up to `max_remembered_calls`) the calls it admitted without the backend
/// (fail modes `open` and `local`) and, with a backend that `reports_data_resets`, every call it
/// admitted or adopted; it forgets a call when it is released here. When the backend answers
/// again, or reports that it lost its slots, a thread of the limiter's own (started the first
/// time something waits, joined by the destructor) puts those slots back, without a cap check,
/// at most `reinstate_per_second`: at once for calls held by a `slot_guard` here (or vouched for
/// with `reinstate`), after `reinstate_delay` for calls only admitted here (their end may have
/// reached another instance, whose kept release must land first). The count may then be above
/// the cap, and new calls are rejected until it is below.
namespace detail {
struct limiter_access;
}

template <capacity_backend Backend>
class capacity_limiter {
public:
    using backend_type = Backend;

    /// Throws `config_error` if `config` is out of range (see `limiter_config::validate`).
    explicit capacity_limiter(Backend backend, limiter_config config = {},
                              limiter_hooks hooks = {})
        : backend_(std::move(backend)),
          config_((config.validate(), std::move(config))),
          log_(config_.log_level, std::move(hooks.sink)),
          observer_(std::move(hooks.observer)) {
        if (config_.fail_mode == fail_mode::local) local_.emplace();
        if constexpr (can_reinstate)
            if (config_.max_remembered_calls > 0)
                live_ = std::make_unique<detail::live_calls>(
                    static_cast<std::size_t>(config_.max_remembered_calls));
    }

    /// Stops the reinstatement thread (waiting for the operation it is in, if any).
    /// Waits (up to `async_drain_limit`) for asynchronous operations still in flight
    /// (`async.hpp`, an `async_slot_guard`'s release) to be done with the limiter: destroy it
    /// off the threads that run them.
    ~capacity_limiter() {
        const auto give_up = std::chrono::steady_clock::now() + async_drain_limit;
        while (async_in_flight_.load(std::memory_order_acquire) != 0 && std::chrono::steady_clock::now() < give_up)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        {
            std::lock_guard lk(worker_mu_);
            stopping_ = true;
        }
        worker_cv_.notify_all();
        if (worker_.joinable()) worker_.join();
    }

    capacity_limiter(const capacity_limiter&) = delete;
    capacity_limiter& operator=(const capacity_limiter&) = delete;

    /// Takes a slot for `call_id` (counted against `tenant`'s cap too, when it has one).
    /// Idempotent: a call that already holds a slot gets `already_held`, even when full.
    /// Throws `std::invalid_argument` for a malformed call id or tenant (nothing is taken);
    /// never throws for an unreachable backend (the fail mode decides).
    acquire_result acquire(std::string_view call_id, std::string_view tenant = {}) {
        return admit<false>(call_id, tenant);
    }

    /// Gives `call_id`'s slot back. Idempotent and `noexcept`: true if a slot was freed now.
    /// A malformed id frees nothing. If the backend cannot answer, the failure is logged and
    /// counted (a backend may keep the release and replay it later); the TTL is the last resort.
    bool release(std::string_view call_id) noexcept {
        if (!call_id_problem(call_id).empty()) return false;
        const bool freed_local = release_local(call_id);
        try {
            const auto r = backend_.release(call_id);
            return released_answer(call_id, freed_local, &r, nullptr);
        } catch (const backend_error& e) {
            return released_answer(call_id, freed_local, nullptr, &e);
        } catch (...) {
            count(counter::backend_errors);
            return released_answer(call_id, freed_local, nullptr, nullptr);
        }
    }

    /// Pushes a held slot's expiry to now + `slot_ttl` (long calls, heartbeats). False if the
    /// call holds no slot in the backend (released, expired, lost, or admitted without it: call
    /// `reinstate` for a call still in progress), or the backend cannot answer (with
    /// `fail_mode::local`: whether the in-process cap holds it).
    /// Throws `std::invalid_argument` for a malformed call id.
    bool refresh(std::string_view call_id) {
        validate_call_id(call_id);
        const bool held_locally = refresh_local(call_id);
        try {
            const bool held = backend_.refresh(call_id, ttl());
            return refreshed_answer(held_locally, &held, nullptr);
        } catch (const backend_error& e) {
            return refreshed_answer(held_locally, nullptr, &e);
        }
    }

    /// Puts back the slot of a call already in progress, counted in the global and tenant counts
    /// with no cap check (a live call is a fact, not a request): use it when a live call finds
    /// its slot gone (a refresh answered false). Idempotent: `already_held` when the slot is
    /// there. Over the cap the count goes above it (status shows it, `at_capacity` is true) and
    /// new calls are rejected until enough calls end. `released` when the backend knows the call
    /// was released lately; `deferred` when the backend cannot answer (the limiter remembers the
    /// call and puts it back once it answers). Logs `[CAPACITY] REINSTATED call_id=..
    /// active_calls=8/5` (WARNING). Throws `std::invalid_argument` for a malformed call id or
    /// tenant.
    reinstate_result reinstate(std::string_view call_id, std::string_view tenant = {})
        requires reinstates_slots<Backend>
    {
        validate_call_id(call_id);
        validate_tenant(tenant);
        const auto req = request_for(call_id, tenant);
        reinstate_reply reply;
        try {
            reply = backend_.reinstate(req);
        } catch (const backend_error& e) {
            return reinstate_error(req, e);
        }
        return reinstate_answer(req, reply);
    }

    /// Calls waiting for their slot to be put back (0 with a backend that cannot reinstate).
    std::size_t reinstate_pending() const noexcept { return live_ ? live_->pending() : 0; }

    /// Calls the limiter remembers as in progress right now.
    std::size_t remembered_calls() const noexcept { return live_ ? live_->size() : 0; }

    /// Live numbers for `/health/details`; degraded (never throwing) when the backend is down.
    capacity_status status() {
        try {
            const auto n = backend_.active_count();
            return status_answer(&n, nullptr);
        } catch (const backend_error& e) {
            return status_answer(nullptr, &e);
        }
    }

    /// Removes expired slots now (the backend also does it on its own when it matters).
    /// Returns how many; 0 when the backend cannot answer.
    std::size_t cleanup_expired() {
        std::size_t n = local_ ? local_->cleanup_expired() : 0;
        try {
            n += backend_.cleanup_expired();
            on_backend_success();
        } catch (const backend_error& e) {
            on_backend_failure(e);
        }
        if (n > 0) log_.log(log_level::info, "[CAPACITY] CLEANUP removed={}", n);
        return n;
    }

    /// `acquire` wrapped in a guard that releases on destruction when admitted. A call held by a
    /// guard is known to be live here: if its slot must be put back, it goes first, without
    /// waiting `reinstate_delay`.
    slot_guard guard(std::string_view call_id, std::string_view tenant = {}) {
        auto r = admit<true>(call_id, tenant);
        return slot_guard(this, &release_thunk, std::string(call_id), r);
    }

    /// Totals since construction, for metrics.
    capacity_counters counters() const noexcept {
        auto get = [this](counter c) { return counters_.get(static_cast<std::size_t>(c)); };
        return {get(counter::acquired),           get(counter::already_held),
                get(counter::rejected),           get(counter::released),
                get(counter::admitted_fail_open), get(counter::rejected_fail_closed),
                get(counter::backend_errors),     get(counter::reinstated),
                get(counter::not_remembered)};
    }

    /// Status and counters in Prometheus text format.
    std::string metrics_text(std::string_view prefix = "callguard") {
        auto text = to_prometheus(status(), counters(), prefix);
        if constexpr (waiting_room_backend<Backend>)
            text += to_prometheus(queue_status(), queue_counters(), wait_histogram_.read(), prefix);
        return text;
    }

    // --- the waiting room (backends that model `waiting_room_backend`) ----------------------

    /// Puts `call_id` in line for a slot, or gives it one at once when a slot is free and no
    /// caller in line can take it (`acquired`). Otherwise `queued` (at the back, with its
    /// position), or `full` when `max_length` callers already wait. A call already in line gets
    /// `waiting` (its place is kept), one holding a slot `already_held`.
    /// Throws `std::invalid_argument` for a malformed call id or tenant or a `max_length` below 1.
    wait_result enqueue(std::string_view call_id, std::string_view tenant = {},
                        std::int64_t max_length = default_queue_max_length)
        requires waiting_room_backend<Backend>
    {
        validate_call_id(call_id);
        validate_tenant(tenant);
        if (max_length < 1)
            throw std::invalid_argument("max_length must be at least 1: " + std::to_string(max_length));
        return wait_turn(wait_request_for(call_id, tenant, true, max_length));
    }

    /// One poll of a call in line (call it on every Twilio `waitUrl` request): `dequeued` when it
    /// is first in line (it now holds a slot: let it in), else `waiting` with its position (its
    /// waiter TTL is pushed to now + `waiter_ttl`). `already_held` after an earlier admission,
    /// `not_waiting` when the call is not in line (it left, or was dropped after `waiter_ttl`).
    /// `tenant` is used only if the call has to join the line again (after a `fail_mode::local`
    /// outage). Throws `std::invalid_argument` for a malformed call id or tenant.
    wait_result poll(std::string_view call_id, std::string_view tenant = {})
        requires waiting_room_backend<Backend>
    {
        validate_call_id(call_id);
        validate_tenant(tenant);
        return wait_turn(wait_request_for(call_id, tenant, false, 0));
    }

    /// Takes `call_id` out of the line without a slot (the caller hung up: `leave_reason::left`;
    /// the application's longest wait passed: `leave_reason::timeout`). Idempotent, `noexcept`:
    /// `left` is true if the call was in line. If the backend cannot answer, the waiter is
    /// dropped by its `waiter_ttl` instead.
    leave_result leave_queue(std::string_view call_id, leave_reason reason = leave_reason::left) noexcept
        requires waiting_room_backend<Backend>
    {
        if (!call_id_problem(call_id).empty()) return {};
        leave_reply r;
        if (local_) {
            try {
                r = local_->leave_line(call_id);
            } catch (...) {
            }
        }
        try {
            auto b = backend_.leave_line(call_id);
            on_backend_success();
            if (b.left || !r.left) r = b;
        } catch (const backend_error& e) {
            on_backend_failure(e);
        } catch (...) {
            count(counter::backend_errors);
        }
        if (!r.left) {
            log_.log(log_level::debug, "[CAPACITY] LEAVE_NOOP call_id={}", call_id);
            return {false, 0, {}, r.waiting};
        }
        const bool timeout = reason == leave_reason::timeout;
        count_queue(timeout ? queue_counter::timeouts : queue_counter::left);
        if (timeout)
            log_.log(log_level::warning,
                     "[CAPACITY] QUEUE_TIMEOUT call_id={} position={} waited_ms={} waiting={}",
                     call_id, r.position, r.waited.count(), r.waiting);
        else
            log_.log(log_level::info,
                     "[CAPACITY] QUEUE_LEFT call_id={} position={} waited_ms={} waiting={}",
                     call_id, r.position, r.waited.count(), r.waiting);
        capacity_event ev = backend_event(timeout ? event_kind::queue_timeout : event_kind::queue_left);
        ev.call_id = call_id;
        ev.position = r.position;
        ev.waiting = r.waiting;
        ev.waited = r.waited;
        notify(ev);
        return {true, r.position, r.waited, r.waiting};
    }

    /// Callers in line and the longest wait; the last known numbers (and `backend_healthy`
    /// false) while the backend cannot answer.
    waiting_room_status queue_status() requires waiting_room_backend<Backend> {
        waiting_room_status s;
        try {
            auto r = backend_.line_status();
            on_backend_success();
            s.waiting = r.waiting;
            s.longest_wait = r.longest_wait;
            s.backend_healthy = backend_.healthy();
            last_waiting_.store(r.waiting, std::memory_order_relaxed);
        } catch (const backend_error& e) {
            on_backend_failure(e);
            s.backend_healthy = false;
            s.waiting = last_waiting_.load(std::memory_order_relaxed);
            if (local_) s.waiting = std::max(s.waiting, local_->line_status().waiting);
        }
        return s;
    }

    /// Waiting-room totals since construction, for metrics.
    callguard::queue_counters queue_counters() const noexcept {
        auto get = [this](queue_counter c) { return queue_counts_.get(static_cast<std::size_t>(c)); };
        return {get(queue_counter::queued), get(queue_counter::dequeued),
                get(queue_counter::full), get(queue_counter::left), get(queue_counter::timeouts)};
    }

    /// How long admitted waiters waited (the `queue_wait_seconds` histogram).
    wait_histogram::snapshot queue_wait_histogram() const noexcept { return wait_histogram_.read(); }

    // --- claims (backends that model `claim_backend`) --------------------------------------

    /// "At most once" across every instance on this backend: the first caller to claim `key`
    /// holds it for `ttl` (`claimed`); every other caller until then gets `already_claimed` with
    /// the time left. A claim is never given back early. While the backend cannot answer, the
    /// fail mode decides: `open` lets the caller go ahead unchecked (`claimed_fail_open`),
    /// `closed` refuses (`refused_fail_closed`), `local` claims in this process only.
    /// Throws `std::invalid_argument` for a malformed key (see `claim_key_problem`) or a `ttl`
    /// outside 1 ms .. 366 days.
    claim_result claim_once(std::string_view key, std::chrono::milliseconds ttl)
        requires claim_backend<Backend>
    {
        if (auto why = claim_key_problem(key); !why.empty())
            throw std::invalid_argument(std::string(why) + ": \"" + detail::printable(key) + "\"");
        if (ttl.count() < 1 || ttl > std::chrono::seconds(max_ttl_seconds))
            throw std::invalid_argument("claim ttl must be 1 ms to 366 days: " + std::to_string(ttl.count()) + " ms");
        claim_reply reply;
        bool local = false;
        try {
            reply = backend_.claim(key, ttl);
        } catch (const backend_error& e) {
            on_backend_failure(e);
            switch (config_.fail_mode) {
            case fail_mode::open:
                log_.log(log_level::warning, "[CAPACITY] CLAIM_FAIL_OPEN key={} backend={}", key, backend_.name());
                return {claim_outcome::claimed_fail_open, {}, false};
            case fail_mode::closed:
                log_.log(log_level::warning, "[CAPACITY] CLAIM_FAIL_CLOSED key={} backend={}", key, backend_.name());
                return {claim_outcome::refused_fail_closed, {}, false};
            case fail_mode::local: break;
            }
            reply = local_->claim(key, ttl);
            local = true;
        }
        if (!local) on_backend_success();
        if (reply.claimed) {
            log_.log(log_level::debug, "[CAPACITY] CLAIMED key={} ttl_ms={}{}", key, ttl.count(), local_suffix(local));
            return {claim_outcome::claimed, reply.remaining, local};
        }
        log_.log(log_level::debug, "[CAPACITY] ALREADY_CLAIMED key={} remaining_ms={}{}", key,
                 reply.remaining.count(), local_suffix(local));
        return {claim_outcome::already_claimed, reply.remaining, local};
    }

    const limiter_config& config() const noexcept { return config_; }
    Backend& backend() noexcept { return backend_; }
    const Backend& backend() const noexcept { return backend_; }

private:
    friend struct detail::limiter_access; // async.hpp drives the same steps as the blocking calls

    /// How long the destructor waits for asynchronous operations in flight.
    static constexpr std::chrono::seconds async_drain_limit{5};
    /// Asynchronous operations started and not yet done with this limiter.
    std::atomic<std::size_t> async_in_flight_{0};

    static constexpr bool can_reinstate = reinstates_slots<Backend>;
    /// A backend that can lose its slots: every call admitted here is remembered, not only the
    /// ones admitted without it.
    static constexpr bool remembers_every_call = can_reinstate && reports_data_resets<Backend>;
    /// The reinstatement thread's pace: one batch per tick.
    static constexpr std::chrono::milliseconds reinstate_tick{50};
    /// How soon it tries again after the backend failed it.
    static constexpr std::chrono::milliseconds reinstate_retry{250};

    enum class counter : std::size_t {
        acquired, already_held, rejected, released, admitted_fail_open, rejected_fail_closed,
        backend_errors, reinstated, not_remembered, count_
    };
    void count(counter c) noexcept { counters_.add(static_cast<std::size_t>(c)); }

    static bool release_thunk(void* self, std::string_view call_id) noexcept {
        return static_cast<capacity_limiter*>(self)->release(call_id);
    }

    std::chrono::milliseconds ttl() const noexcept {
        return std::chrono::duration_cast<std::chrono::milliseconds>(config_.slot_ttl);
    }
    std::int64_t ttl_ticks() const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(config_.slot_ttl).count();
    }
    static std::chrono::steady_clock::rep steady_now() noexcept {
        return std::chrono::steady_clock::now().time_since_epoch().count();
    }
    static std::int64_t now_ticks() noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    /// `acquire`; `Held`: for a guard of this process.
    template <bool Held>
    acquire_result admit(std::string_view call_id, std::string_view tenant) {
        validate_call_id(call_id);
        validate_tenant(tenant);
        const auto req = request_for(call_id, tenant);
        slot_reply reply;
        try {
            reply = backend_.try_acquire(req);
        } catch (const backend_error& e) {
            return admitted_error<Held>(req, e);
        }
        return admitted_answer<Held>(req, reply); // returned in place: no copy on the hot path
    }

    // ---- the steps around each backend call, shared by the blocking calls and async.hpp ------

    slot_request request_for(std::string_view call_id, std::string_view tenant) const noexcept {
        return {call_id, tenant, config_.max_active_calls, config_.tenant_limit(tenant), ttl()};
    }

    /// The backend decided an acquire.
    template <bool Held>
    acquire_result admitted_answer(const slot_request& req, const slot_reply& reply) {
        on_backend_success();
        if constexpr (remembers_every_call) {
            auto result = decided(req, reply, false);
            if (result.admitted()) remember(req, false, Held);
            return result;
        } else {
            return decided(req, reply, false);
        }
    }

    /// The backend could not decide an acquire: the fail mode does.
    template <bool Held>
    acquire_result admitted_error(const slot_request& req, const backend_error& e) {
        on_backend_failure(e);
        return decide_without_backend(req, Held);
    }

    /// The backend put a slot back (or knew better).
    reinstate_result reinstate_answer(const slot_request& req, const reinstate_reply& reply)
        requires reinstates_slots<Backend>
    {
        on_backend_success();
        const auto outcome = reinstated(req, reply);
        if (outcome == reinstate_outcome::released) {
            forget(req.call_id);
        } else if (live_ && (remembers_every_call || live_->size() != 0)) {
            remember(req, false, true);
        }
        return {outcome, reply.active, config_.max_active_calls};
    }

    /// The backend could not put a slot back: remembered, to be put back once it answers.
    reinstate_result reinstate_error(const slot_request& req, const backend_error& e)
        requires reinstates_slots<Backend>
    {
        on_backend_failure(e);
        remember(req, true, true);
        return {reinstate_outcome::deferred, last_active_.load(std::memory_order_relaxed), config_.max_active_calls};
    }

    /// A release's part before the backend: forget the call (a released call is never put
    /// back), free it in the in-process fallback. True if that held it.
    bool release_local(std::string_view call_id) noexcept {
        forget(call_id);
        if (!local_) return false;
        try {
            return local_->release(call_id).released;
        } catch (...) {
            return false;
        }
    }

    /// A release's end: `reply` from the backend, or `error` (both null: an unexpected failure,
    /// already counted).
    bool released_answer(std::string_view call_id, bool freed_local, const release_reply* reply,
                         const backend_error* error) noexcept {
        bool freed = false;
        std::int64_t active = last_active_.load(std::memory_order_relaxed);
        if (reply) {
            on_backend_success();
            freed = reply->released;
            active = reply->active;
        } else if (error) {
            on_backend_failure(*error);
        }
        if (!freed && !freed_local) {
            log_.log(log_level::debug, "[CAPACITY] RELEASE_NOOP call_id={}", call_id);
            return false;
        }
        const bool local = !freed; // only the in-process fallback held it
        count(counter::released);
        log_.log(log_level::info, "[CAPACITY] RELEASED call_id={} active_calls={}/{}{}", call_id,
                 active, config_.max_active_calls, local_suffix(local));
        capacity_event ev = backend_event(event_kind::released);
        ev.call_id = call_id;
        ev.active = active;
        ev.local_fallback = local;
        notify(ev);
        return true;
    }

    /// A refresh's part before the backend: the remembered call and the in-process fallback.
    bool refresh_local(std::string_view call_id) {
        if (live_ && (remembers_every_call || live_->size() != 0)) {
            try {
                live_->touch(call_id, now_ticks() + ttl_ticks());
            } catch (...) {
            }
        }
        return local_ && local_->refresh(call_id, ttl());
    }

    /// A refresh's end: `held` from the backend, or `error`.
    bool refreshed_answer(bool held_locally, const bool* held, const backend_error* error) noexcept {
        if (held) {
            on_backend_success();
            return *held;
        }
        if (error) on_backend_failure(*error);
        return held_locally;
    }

    /// The status from the backend's `count`, or from what is known when it failed (`error`).
    capacity_status status_answer(const std::int64_t* count, const backend_error* error) {
        capacity_status s;
        s.backend = std::string(backend_.name());
        s.max_calls = config_.max_active_calls;
        if (count) {
            s.active_calls = *count;
            on_backend_success();
            last_active_.store(s.active_calls, std::memory_order_relaxed);
            s.backend_healthy = backend_.healthy();
        } else {
            if (error) on_backend_failure(*error);
            s.backend_healthy = false;
            s.active_calls = last_active_.load(std::memory_order_relaxed);
            if (local_) s.active_calls = std::max(s.active_calls, local_->active_count());
        }
        if constexpr (reports_data_resets<Backend>) s.backend_resets = backend_.data_resets();
        s.reinstate_pending = static_cast<std::int64_t>(reinstate_pending());
        s.capacity_available = std::max<std::int64_t>(0, s.max_calls - s.active_calls);
        s.at_capacity = s.active_calls >= s.max_calls;
        return s;
    }

    // ---- the calls remembered, and putting their slots back -----------------------------------

    /// Remembers a call admitted or adopted here; `missing`: the backend does not hold its slot
    /// (admitted without it), so it waits to be put back; `held`: a guard here holds it, or the
    /// application vouched for it. Never throws: a call that cannot be remembered is still
    /// admitted.
    void remember(const slot_request& req, bool missing, bool held) noexcept {
        if (!live_) {
            if (missing) count(counter::not_remembered);
            return;
        }
        try {
            const auto r = live_->remember(req.call_id, req.tenant, now_ticks() + ttl_ticks(), missing, held);
            if (r == detail::live_calls::remembered::full) {
                count(counter::not_remembered);
                if (!remember_full_.exchange(true))
                    log_.log(log_level::warning,
                             "[CAPACITY] REMEMBER_FULL call_id={} max_remembered_calls={}: calls "
                             "admitted now are not put back if their slots are lost",
                             req.call_id, config_.max_remembered_calls);
                return;
            }
            remember_full_.store(false, std::memory_order_relaxed);
            if (missing) wake_worker();
        } catch (...) {
            count(counter::not_remembered); // out of memory: admitted all the same
        }
    }

    void forget(std::string_view call_id) noexcept {
        if (!live_ || (!remembers_every_call && live_->size() == 0)) return;
        try {
            live_->forget(call_id);
        } catch (...) {
        }
    }

    /// Logs, counts and tells the observer what a reinstatement did.
    reinstate_outcome reinstated(const slot_request& req, const reinstate_reply& reply) {
        switch (reply.state) {
        case reinstate_state::reinstated:
            count(counter::reinstated);
            log_.log(log_level::warning, "[CAPACITY] REINSTATED call_id={} active_calls={}/{}{}",
                     req.call_id, reply.active, config_.max_active_calls, tenant_suffix(req.tenant));
            notify(call_event(event_kind::reinstated, req, reply.active));
            return reinstate_outcome::reinstated;
        case reinstate_state::already_held:
            log_.log(log_level::debug, "[CAPACITY] REINSTATE_HELD call_id={} active_calls={}/{}",
                     req.call_id, reply.active, config_.max_active_calls);
            return reinstate_outcome::already_held;
        case reinstate_state::released:
            break;
        }
        log_.log(log_level::info, "[CAPACITY] REINSTATE_SKIPPED call_id={} reason=released",
                 req.call_id);
        return reinstate_outcome::released;
    }

    /// Starts the reinstatement thread if needed, and wakes it.
    void wake_worker() noexcept {
        if constexpr (can_reinstate) {
            std::lock_guard lk(worker_mu_);
            if (stopping_) return;
            worker_wake_ = true;
            if (!worker_.joinable()) {
                try {
                    worker_ = std::thread([this] { run_worker(); });
                } catch (...) {
                    log_.log(log_level::error,
                             "[CAPACITY] REINSTATE_THREAD_FAILED: slots are not put back on their own");
                    return;
                }
            }
        }
        worker_cv_.notify_one();
    }

    /// The reinstatement thread: sleeps until something waits; while the backend is down, probes
    /// it (a count, which changes nothing) at most every `reinstate_retry`; once it answers (or
    /// reported a data loss) and `reinstate_delay` has passed, puts slots back one batch per tick
    /// (the rate). A data loss found by any thread is turned into waiting calls here, off the
    /// callers' path.
    void run_worker() noexcept {
        using std::chrono::steady_clock;
        const auto per_tick = static_cast<std::size_t>(std::max<std::int64_t>(
            1, config_.reinstate_per_second * reinstate_tick.count() / 1000));
        auto awake = [&] { return stopping_ || worker_wake_ || reset_found_; };
        std::unique_lock lk(worker_mu_);
        auto next = steady_clock::now();
        while (!stopping_) {
            if (std::exchange(reset_found_, false)) {
                lk.unlock();
                try {
                    live_->mark_all_pending(now_ticks());
                } catch (...) {
                }
                lk.lock();
                continue;
            }
            worker_wake_ = false;
            if (live_->queued() == 0) {
                worker_cv_.wait(lk, awake);
                continue;
            }
            const auto now = steady_clock::now();
            if (!healthy_.load()) {
                if (now < next) {
                    worker_cv_.wait_until(lk, next, awake);
                    continue;
                }
                lk.unlock();
                probe();
                lk.lock();
                next = steady_clock::now() + reinstate_retry;
                continue;
            }
            // Calls held here go back at once; calls only admitted here after the delay.
            const auto ready = steady_clock::time_point(steady_clock::duration(
                                   up_since_.load(std::memory_order_relaxed))) +
                               config_.reinstate_delay;
            const bool admitted_too = now >= ready;
            const auto wake_at = live_->queued_held() != 0 || admitted_too ? next : std::max(next, ready);
            if (now < wake_at) {
                worker_cv_.wait_until(lk, wake_at, awake);
                continue;
            }
            lk.unlock();
            const bool ok = reinstate_some(per_tick, admitted_too);
            lk.lock();
            next = steady_clock::now() + (ok ? reinstate_tick : reinstate_retry);
        }
    }

    /// Asks the backend for its count: the cheapest operation that tells whether it answers.
    void probe() noexcept {
        try {
            const auto n = backend_.active_count();
            on_backend_success();
            last_active_.store(n, std::memory_order_relaxed);
        } catch (const backend_error& e) {
            on_backend_failure(e);
        } catch (...) {
            count(counter::backend_errors);
        }
    }

    /// Puts back up to `n` waiting slots (of calls held here first, then, when `admitted_too`,
    /// of calls only admitted here); false when the backend failed (the rest wait again).
    bool reinstate_some(std::size_t n, bool admitted_too) noexcept {
        std::vector<detail::live_calls::work_item> batch;
        const auto now = now_ticks();
        try {
            batch = live_->take(n, now, admitted_too);
        } catch (...) {
            return false;
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            const auto& w = batch[i];
            // The slot lives as long as it would have: a call that was never refreshed here
            // (its end seen by another instance) cannot linger past its original expiry.
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::nanoseconds(w.expires - now));
            const slot_request req{w.call_id, w.tenant, config_.max_active_calls,
                                   config_.tenant_limit(w.tenant),
                                   std::max(left, std::chrono::milliseconds(1))};
            try {
                const auto reply = backend_.reinstate(req);
                on_backend_success();
                settle(w, req, reply);
            } catch (const backend_error& e) {
                on_backend_failure(e);
                put_back(batch, i);
                return false;
            } catch (...) {
                count(counter::backend_errors);
                put_back(batch, i);
                return false;
            }
        }
        return true;
    }

    /// Records what the backend did with one waiting call.
    void settle(const detail::live_calls::work_item& w, const slot_request& req,
                const reinstate_reply& reply) {
        using done = detail::live_calls::settled;
        if (reply.state == reinstate_state::released) {
            live_->drop(w); // it ended, released through another instance
            reinstated(req, reply);
            return;
        }
        const auto d = live_->done(w);
        if (d == done::forgotten && reply.state == reinstate_state::reinstated) {
            // Released here while its slot was on the way back: give it back again.
            try {
                backend_.release(w.call_id);
            } catch (...) {
            }
            return;
        }
        reinstated(req, reply);
    }

    void put_back(const std::vector<detail::live_calls::work_item>& batch, std::size_t from) noexcept {
        try {
            live_->put_back({batch.begin() + static_cast<std::ptrdiff_t>(from), batch.end()});
        } catch (...) {
        }
    }

    acquire_result decided(const slot_request& req, const slot_reply& reply, bool local) {
        const auto max = config_.max_active_calls;
        switch (reply.state) {
        case slot_state::acquired:
            count(counter::acquired);
            log_.log(log_level::info, "[CAPACITY] ACQUIRED call_id={} active_calls={}/{}{}{}",
                     req.call_id, reply.active, max, tenant_suffix(req.tenant), local_suffix(local));
            notify(call_event(event_kind::acquired, req, reply.active, local));
            return {acquire_outcome::acquired, reply.active, max};
        case slot_state::already_held:
            count(counter::already_held);
            log_.log(log_level::debug, "[CAPACITY] ALREADY_HELD call_id={} active_calls={}/{}{}",
                     req.call_id, reply.active, max, local_suffix(local));
            notify(call_event(event_kind::already_held, req, reply.active, local));
            return {acquire_outcome::already_held, reply.active, max};
        case slot_state::rejected:
        case slot_state::rejected_tenant:
        case slot_state::rejected_queue:
            break;
        }
        const bool by_tenant = reply.state == slot_state::rejected_tenant;
        const bool by_line = reply.state == slot_state::rejected_queue;
        count(counter::rejected);
        if (by_tenant)
            log_.log(log_level::warning,
                     "[CAPACITY] REJECTED call_id={} active_calls={} max={} tenant={} "
                     "tenant_max={}{}",
                     req.call_id, reply.active, max, req.tenant, req.tenant_max,
                     local_suffix(local));
        else
            log_.log(log_level::warning, "[CAPACITY] REJECTED call_id={} active_calls={} max={}{}{}{}",
                     req.call_id, reply.active, max, tenant_suffix(req.tenant),
                     detail::optional_field{"reason", by_line ? "waiters_ahead" : ""},
                     local_suffix(local));
        auto ev = call_event(event_kind::rejected, req, reply.active, local);
        ev.tenant_limited = by_tenant;
        ev.waiters_ahead = by_line;
        notify(ev);
        return {acquire_outcome::rejected, reply.active, max, by_tenant, by_line};
    }

    // --- the waiting room's internals -------------------------------------------------------

    enum class queue_counter : std::size_t { queued, dequeued, full, left, timeouts, count_ };
    void count_queue(queue_counter c) noexcept { queue_counts_.add(static_cast<std::size_t>(c)); }

    wait_request wait_request_for(std::string_view call_id, std::string_view tenant, bool join,
                                  std::int64_t max_length) const {
        return {call_id, tenant, config_.max_active_calls, config_.tenant_limit(tenant), ttl(),
                std::chrono::duration_cast<std::chrono::milliseconds>(config_.waiter_ttl), join,
                max_length};
    }

    wait_result wait_turn(const wait_request& req) {
        wait_reply reply;
        try {
            reply = backend_.wait_turn(req);
            if (local_) reply = settle_local_waiter(req, reply);
        } catch (const backend_error& e) {
            on_backend_failure(e);
            return wait_without_backend(req);
        }
        on_backend_success();
        return wait_decided(req, reply, false);
    }

    /// `fail_mode::local` after an outage: a call that waited in the in-process line leaves it;
    /// if the shared line does not know the call, it joins that line at the back.
    wait_reply settle_local_waiter(const wait_request& req, const wait_reply& reply) {
        if (!local_->leave_line(req.call_id).left || reply.state != wait_state::not_waiting)
            return reply;
        wait_request rejoin = req;
        rejoin.join = true;
        rejoin.max_length = 0;
        return backend_.wait_turn(rejoin);
    }

    wait_result wait_without_backend(const wait_request& req) {
        const auto max = config_.max_active_calls;
        const auto known = last_active_.load(std::memory_order_relaxed);
        const auto waiting = last_waiting_.load(std::memory_order_relaxed);
        const slot_request as_slot{req.call_id, req.tenant, req.max_active, req.tenant_max,
                                   req.slot_ttl};
        switch (config_.fail_mode) {
        case fail_mode::open:
            count(counter::admitted_fail_open);
            log_.log(log_level::warning, "[CAPACITY] FAIL_OPEN call_id={} backend={}", req.call_id,
                     backend_.name());
            notify(call_event(event_kind::admitted_fail_open, as_slot, known));
            return {wait_outcome::admitted_fail_open, 0, waiting, known, max, {}, false};
        case fail_mode::closed:
            if (!req.join) {
                log_.log(log_level::info, "[CAPACITY] WAITING_FAIL_CLOSED call_id={} backend={}",
                         req.call_id, backend_.name());
                return {wait_outcome::waiting_fail_closed, 0, waiting, known, max, {}, false};
            }
            count(counter::rejected_fail_closed);
            log_.log(log_level::warning, "[CAPACITY] FAIL_CLOSED call_id={} backend={}",
                     req.call_id, backend_.name());
            notify(call_event(event_kind::rejected_fail_closed, as_slot, known));
            return {wait_outcome::rejected_fail_closed, 0, waiting, known, max, {}, false};
        case fail_mode::local:
            break;
        }
        wait_request local_req = req;
        if (config_.local_max_active_calls > 0) local_req.max_active = config_.local_max_active_calls;
        auto reply = local_->wait_turn(local_req);
        if (reply.state == wait_state::not_waiting) { // in the shared line before the outage
            local_req.join = true;
            local_req.max_length = 0;
            reply = local_->wait_turn(local_req);
        }
        return wait_decided(req, reply, true);
    }

    /// Logs, counts and reports one waiting-room decision. A poll that had to join the line
    /// again (a `local` fallback) reads as a poll: `waiting` or `dequeued`.
    wait_result wait_decided(const wait_request& req, wait_reply reply, bool local) {
        if (!req.join && reply.state == wait_state::queued) reply.state = wait_state::waiting;
        if (!req.join && reply.state == wait_state::acquired) reply.state = wait_state::admitted;
        if (!local) last_waiting_.store(reply.waiting, std::memory_order_relaxed);
        const auto max = config_.max_active_calls;
        wait_result out{wait_outcome::not_waiting, reply.position, reply.waiting, reply.active,
                        max, reply.waited, reply.tenant_limited};
        const slot_request as_slot{req.call_id, req.tenant, req.max_active, req.tenant_max,
                                   req.slot_ttl};
        auto event = [&](event_kind kind) {
            auto ev = call_event(kind, as_slot, reply.active, local);
            ev.position = reply.position;
            ev.waiting = reply.waiting;
            ev.waited = reply.waited;
            notify(ev);
        };
        switch (reply.state) {
        case wait_state::acquired:
            count(counter::acquired);
            log_.log(log_level::info, "[CAPACITY] ACQUIRED call_id={} active_calls={}/{}{}{}",
                     req.call_id, reply.active, max, tenant_suffix(req.tenant), local_suffix(local));
            event(event_kind::acquired);
            out.outcome = wait_outcome::acquired;
            break;
        case wait_state::admitted:
            count(counter::acquired);
            count_queue(queue_counter::dequeued);
            wait_histogram_.observe(reply.waited);
            log_.log(log_level::info,
                     "[CAPACITY] DEQUEUED call_id={} waited_ms={} active_calls={}/{}{}",
                     req.call_id, reply.waited.count(), reply.active, max, local_suffix(local));
            event(event_kind::dequeued);
            out.outcome = wait_outcome::dequeued;
            break;
        case wait_state::already_held:
            count(counter::already_held);
            log_.log(log_level::debug, "[CAPACITY] ALREADY_HELD call_id={} active_calls={}/{}{}",
                     req.call_id, reply.active, max, local_suffix(local));
            event(event_kind::already_held);
            out.outcome = wait_outcome::already_held;
            break;
        case wait_state::queued:
            count_queue(queue_counter::queued);
            log_.log(log_level::warning, "[CAPACITY] QUEUED call_id={} position={} waiting={}{}{}{}",
                     req.call_id, reply.position, reply.waiting, tenant_suffix(req.tenant),
                     detail::optional_field{"held_by", reply.tenant_limited ? "tenant_cap" : ""},
                     local_suffix(local));
            event(event_kind::queued);
            out.outcome = wait_outcome::queued;
            break;
        case wait_state::waiting:
            log_.log(log_level::debug,
                     "[CAPACITY] WAITING call_id={} position={} waiting={} waited_ms={}{}{}",
                     req.call_id, reply.position, reply.waiting, reply.waited.count(),
                     detail::optional_field{"held_by", reply.tenant_limited ? "tenant_cap" : ""},
                     local_suffix(local));
            out.outcome = wait_outcome::waiting;
            break;
        case wait_state::full:
            count_queue(queue_counter::full);
            log_.log(log_level::warning, "[CAPACITY] QUEUE_FULL call_id={} waiting={} max_length={}{}",
                     req.call_id, reply.waiting, req.max_length, local_suffix(local));
            event(event_kind::queue_full);
            out.outcome = wait_outcome::full;
            break;
        case wait_state::not_waiting:
            log_.log(log_level::debug, "[CAPACITY] NOT_WAITING call_id={}{}", req.call_id,
                     local_suffix(local));
            out.outcome = wait_outcome::not_waiting;
            break;
        }
        return out;
    }

    acquire_result decide_without_backend(const slot_request& req, bool held) {
        const auto max = config_.max_active_calls;
        const auto known = last_active_.load(std::memory_order_relaxed);
        switch (config_.fail_mode) {
        case fail_mode::open:
            count(counter::admitted_fail_open);
            log_.log(log_level::warning, "[CAPACITY] FAIL_OPEN call_id={} backend={}", req.call_id,
                     backend_.name());
            notify(call_event(event_kind::admitted_fail_open, req, known));
            if constexpr (can_reinstate) remember(req, true, held);
            return {acquire_outcome::admitted_fail_open, known, max};
        case fail_mode::closed:
            count(counter::rejected_fail_closed);
            log_.log(log_level::warning, "[CAPACITY] FAIL_CLOSED call_id={} backend={}",
                     req.call_id, backend_.name());
            notify(call_event(event_kind::rejected_fail_closed, req, known));
            return {acquire_outcome::rejected_fail_closed, known, max};
        case fail_mode::local:
            break;
        }
        slot_request local_req = req;
        if (config_.local_max_active_calls > 0) local_req.max_active = config_.local_max_active_calls;
        auto result = decided(req, local_->try_acquire(local_req), true);
        if constexpr (can_reinstate)
            if (result.admitted()) remember(req, true, held);
        return result;
    }

    void on_backend_failure(const backend_error& e) noexcept {
        count(counter::backend_errors);
        if (!healthy_.exchange(false)) return; // already down: logged at the transition
        log_.log(log_level::error, "[CAPACITY] BACKEND_DOWN backend={} fail_mode={} error={}",
                 backend_.name(), to_string(config_.fail_mode), e.what());
        auto ev = backend_event(event_kind::backend_down);
        ev.message = e.what();
        notify(ev);
    }

    /// Small enough to inline on every decision: the transition is out of line.
    void on_backend_success() noexcept {
        if constexpr (reports_data_resets<Backend>) check_data_resets();
        if (!healthy_.load(std::memory_order_relaxed)) on_backend_back();
    }

    void on_backend_back() noexcept {
        if (healthy_.exchange(true)) return;
        up_since_.store(steady_now(), std::memory_order_relaxed);
        log_.log(log_level::warning, "[CAPACITY] BACKEND_UP backend={}", backend_.name());
        notify(backend_event(event_kind::backend_up));
        if (live_ && live_->pending() != 0) wake_worker(); // the waiting slots can go back now
    }

    /// Logs each reset the backend found once, on whichever thread sees it first.
    void check_data_resets() noexcept {
        const std::uint64_t now = backend_.data_resets();
        auto seen = resets_seen_.load(std::memory_order_relaxed);
        if (now == seen || !resets_seen_.compare_exchange_strong(seen, now)) return;
        const bool put_back = live_ && live_->size() != 0;
        log_.log(log_level::error, "[CAPACITY] BACKEND_DATA_LOST backend={} resets={}: {}",
                 backend_.name(), now,
                 put_back ? "the slots held before are gone; the calls in progress known here are "
                            "being put back"
                          : "the slots held before are gone; active_calls under-counts until "
                            "those calls refresh or end");
        notify(backend_event(event_kind::backend_data_lost));
        if (put_back) {
            up_since_.store(steady_now(), std::memory_order_relaxed); // the delay starts again
            {
                std::lock_guard lk(worker_mu_);
                reset_found_ = true;
            }
            wake_worker();
        }
    }

    /// An event about one call's decision.
    capacity_event call_event(event_kind kind, const slot_request& req, std::int64_t active,
                              bool local = false) const noexcept {
        capacity_event ev = backend_event(kind);
        ev.call_id = req.call_id;
        ev.tenant = req.tenant;
        ev.active = active;
        ev.local_fallback = local;
        return ev;
    }

    /// An event about the backend as a whole (the last count seen).
    capacity_event backend_event(event_kind kind) const noexcept {
        capacity_event ev;
        ev.kind = kind;
        ev.active = last_active_.load();
        ev.max = config_.max_active_calls;
        return ev;
    }

    void notify(const capacity_event& ev) const noexcept {
        if (!observer_) return;
        try {
            observer_(ev);
        } catch (...) {
            // An observer's failure (say, a full database) must never fail a call.
        }
    }

    static detail::optional_field tenant_suffix(std::string_view tenant) noexcept {
        return {"tenant", tenant};
    }
    static detail::optional_field local_suffix(bool local) noexcept {
        return {"fallback", local ? "local" : ""};
    }

    Backend backend_;
    limiter_config config_;
    detail::logger log_;
    event_observer observer_;
    std::optional<memory_backend> local_; // only with fail_mode::local
    std::atomic<bool> healthy_{true};
    std::atomic<std::int64_t> last_active_{0}; // last count status() saw: reported when degraded
    std::atomic<std::uint64_t> resets_seen_{0};  // backend data resets already logged
    detail::striped_counters<static_cast<std::size_t>(counter::count_)> counters_;
    // The waiting room's numbers.
    std::atomic<std::int64_t> last_waiting_{0}; // last line size seen: reported when degraded
    detail::striped_counters<static_cast<std::size_t>(queue_counter::count_)> queue_counts_;
    wait_histogram wait_histogram_;
    std::unique_ptr<detail::live_calls> live_; // calls in progress known here; null: none kept
    std::atomic<bool> remember_full_{false};   // REMEMBER_FULL logged for the current fill-up
    // When the backend last came back (or reported a data loss): the reinstatement delay
    // counts from here. steady_clock ticks.
    std::atomic<std::chrono::steady_clock::rep> up_since_{0};
    // The reinstatement thread, started the first time a slot waits to be put back.
    std::mutex worker_mu_;
    std::condition_variable worker_cv_;
    bool stopping_ = false;    // guarded by worker_mu_
    bool worker_wake_ = false; // guarded by worker_mu_
    bool reset_found_ = false; // guarded by worker_mu_: mark every known call as waiting
    std::thread worker_;       // last: started after everything it uses
};

} // namespace callguard
