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
#include "slot_guard.hpp"
#include "status.hpp"
#include "validation.hpp"
#include "wait_metrics.hpp"
#include "wait_result.hpp"
#include "waiting_room.hpp"
#include "detail/logger.hpp"
#include "detail/striped_counters.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

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
    }

    capacity_limiter(const capacity_limiter&) = delete;
    capacity_limiter& operator=(const capacity_limiter&) = delete;

    /// Takes a slot for `call_id` (counted against `tenant`'s cap too, when it has one).
    /// Idempotent: a call that already holds a slot gets `already_held`, even when full.
    /// Throws `std::invalid_argument` for a malformed call id or tenant (nothing is taken);
    /// never throws for an unreachable backend (the fail mode decides).
    acquire_result acquire(std::string_view call_id, std::string_view tenant = {}) {
        validate_call_id(call_id);
        validate_tenant(tenant);
        const slot_request req{call_id, tenant, config_.max_active_calls,
                               config_.tenant_limit(tenant), ttl()};
        slot_reply reply;
        try {
            reply = backend_.try_acquire(req);
        } catch (const backend_error& e) {
            on_backend_failure(e);
            return decide_without_backend(req);
        }
        on_backend_success();
        return decided(req, reply, false);
    }

    /// Gives `call_id`'s slot back. Idempotent and `noexcept`: true if a slot was freed now.
    /// A malformed id frees nothing. If the backend cannot answer, the failure is logged and
    /// counted (a backend may keep the release and replay it later); the TTL is the last resort.
    bool release(std::string_view call_id) noexcept {
        if (!call_id_problem(call_id).empty()) return false;
        bool freed_local = false, freed = false;
        std::int64_t active = last_active_.load(std::memory_order_relaxed);
        if (local_) {
            try {
                freed_local = local_->release(call_id).released;
            } catch (...) {
            }
        }
        try {
            auto r = backend_.release(call_id);
            on_backend_success();
            freed = r.released;
            active = r.active;
        } catch (const backend_error& e) {
            on_backend_failure(e);
        } catch (...) {
            count(counter::backend_errors);
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

    /// Pushes a held slot's expiry to now + `slot_ttl` (long calls, heartbeats). False if the
    /// call holds no slot (released or expired) or the backend cannot answer.
    /// Throws `std::invalid_argument` for a malformed call id.
    bool refresh(std::string_view call_id) {
        validate_call_id(call_id);
        bool ok = false;
        if (local_) ok = local_->refresh(call_id, ttl());
        try {
            ok = backend_.refresh(call_id, ttl()) || ok;
            on_backend_success();
        } catch (const backend_error& e) {
            on_backend_failure(e);
        }
        return ok;
    }

    /// Live numbers for `/health/details`; degraded (never throwing) when the backend is down.
    capacity_status status() {
        capacity_status s;
        s.backend = std::string(backend_.name());
        s.max_calls = config_.max_active_calls;
        try {
            s.active_calls = backend_.active_count();
            on_backend_success();
            last_active_.store(s.active_calls, std::memory_order_relaxed);
            s.backend_healthy = backend_.healthy();
        } catch (const backend_error& e) {
            on_backend_failure(e);
            s.backend_healthy = false;
            s.active_calls = last_active_.load(std::memory_order_relaxed);
            if (local_) s.active_calls = std::max(s.active_calls, local_->active_count());
        }
        if constexpr (reports_data_resets<Backend>) s.backend_resets = backend_.data_resets();
        s.capacity_available = std::max<std::int64_t>(0, s.max_calls - s.active_calls);
        s.at_capacity = s.active_calls >= s.max_calls;
        return s;
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

    /// `acquire` wrapped in a guard that releases on destruction when admitted.
    slot_guard guard(std::string_view call_id, std::string_view tenant = {}) {
        auto r = acquire(call_id, tenant);
        return slot_guard(this, &release_thunk, std::string(call_id), r);
    }

    /// Totals since construction, for metrics.
    capacity_counters counters() const noexcept {
        auto get = [this](counter c) { return counters_.get(static_cast<std::size_t>(c)); };
        return {get(counter::acquired),           get(counter::already_held),
                get(counter::rejected),           get(counter::released),
                get(counter::admitted_fail_open), get(counter::rejected_fail_closed),
                get(counter::backend_errors)};
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
    enum class counter : std::size_t {
        acquired, already_held, rejected, released, admitted_fail_open, rejected_fail_closed,
        backend_errors, count_
    };
    void count(counter c) noexcept { counters_.add(static_cast<std::size_t>(c)); }

    static bool release_thunk(void* self, std::string_view call_id) noexcept {
        return static_cast<capacity_limiter*>(self)->release(call_id);
    }

    std::chrono::milliseconds ttl() const noexcept {
        return std::chrono::duration_cast<std::chrono::milliseconds>(config_.slot_ttl);
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

    acquire_result decide_without_backend(const slot_request& req) {
        const auto max = config_.max_active_calls;
        const auto known = last_active_.load(std::memory_order_relaxed);
        switch (config_.fail_mode) {
        case fail_mode::open:
            count(counter::admitted_fail_open);
            log_.log(log_level::warning, "[CAPACITY] FAIL_OPEN call_id={} backend={}", req.call_id,
                     backend_.name());
            notify(call_event(event_kind::admitted_fail_open, req, known));
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
        return decided(req, local_->try_acquire(local_req), true);
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

    void on_backend_success() noexcept {
        if constexpr (reports_data_resets<Backend>) check_data_resets();
        if (healthy_.load(std::memory_order_relaxed) || healthy_.exchange(true)) return;
        log_.log(log_level::warning, "[CAPACITY] BACKEND_UP backend={}", backend_.name());
        notify(backend_event(event_kind::backend_up));
    }

    /// Logs each reset the backend found once, on whichever thread sees it first.
    void check_data_resets() noexcept {
        const std::uint64_t now = backend_.data_resets();
        auto seen = resets_seen_.load(std::memory_order_relaxed);
        if (now == seen || !resets_seen_.compare_exchange_strong(seen, now)) return;
        log_.log(log_level::error,
                 "[CAPACITY] BACKEND_DATA_LOST backend={} resets={}: the slots held before are "
                 "gone; active_calls under-counts until those calls refresh or end",
                 backend_.name(), now);
        notify(backend_event(event_kind::backend_data_lost));
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
};

} // namespace callguard
