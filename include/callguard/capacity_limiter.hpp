#pragma once

#include "acquire_result.hpp"
#include "backend.hpp"
#include "backends/memory.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "events.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "reinstate_result.hpp"
#include "slot_guard.hpp"
#include "status.hpp"
#include "validation.hpp"
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
    ~capacity_limiter() {
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
        forget(call_id); // first: a released call is never put back
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
    /// call holds no slot in the backend (released, expired, lost, or admitted without it: call
    /// `reinstate` for a call still in progress), or the backend cannot answer (with
    /// `fail_mode::local`: whether the in-process cap holds it).
    /// Throws `std::invalid_argument` for a malformed call id.
    bool refresh(std::string_view call_id) {
        validate_call_id(call_id);
        if (live_ && (remembers_every_call || live_->size() != 0)) {
            try {
                live_->touch(call_id, now_ticks() + ttl_ticks());
            } catch (...) {
            }
        }
        const bool held_locally = local_ && local_->refresh(call_id, ttl());
        try {
            const bool held = backend_.refresh(call_id, ttl());
            on_backend_success();
            return held;
        } catch (const backend_error& e) {
            on_backend_failure(e);
        }
        return held_locally;
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
        requires can_reinstate
    {
        validate_call_id(call_id);
        validate_tenant(tenant);
        const slot_request req{call_id, tenant, config_.max_active_calls,
                               config_.tenant_limit(tenant), ttl()};
        reinstate_reply reply;
        try {
            reply = backend_.reinstate(req);
        } catch (const backend_error& e) {
            on_backend_failure(e);
            remember(req, true, true);
            return {reinstate_outcome::deferred, last_active_.load(std::memory_order_relaxed),
                    config_.max_active_calls};
        }
        on_backend_success();
        const auto outcome = reinstated(req, reply);
        if (outcome == reinstate_outcome::released) {
            forget(call_id);
        } else if (live_ && (remembers_every_call || live_->size() != 0)) {
            remember(req, false, true);
        }
        return {outcome, reply.active, config_.max_active_calls};
    }

    /// Calls waiting for their slot to be put back (0 with a backend that cannot reinstate).
    std::size_t reinstate_pending() const noexcept { return live_ ? live_->pending() : 0; }

    /// Calls the limiter remembers as in progress right now.
    std::size_t remembered_calls() const noexcept { return live_ ? live_->size() : 0; }

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
        s.reinstate_pending = static_cast<std::int64_t>(reinstate_pending());
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
        return to_prometheus(status(), counters(), prefix);
    }

    const limiter_config& config() const noexcept { return config_; }
    Backend& backend() noexcept { return backend_; }
    const Backend& backend() const noexcept { return backend_; }

private:
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
        const slot_request req{call_id, tenant, config_.max_active_calls,
                               config_.tenant_limit(tenant), ttl()};
        slot_reply reply;
        try {
            reply = backend_.try_acquire(req);
        } catch (const backend_error& e) {
            on_backend_failure(e);
            return decide_without_backend(req, Held);
        }
        on_backend_success();
        if constexpr (remembers_every_call) {
            auto result = decided(req, reply, false);
            if (result.admitted()) remember(req, false, Held);
            return result;
        } else {
            return decided(req, reply, false); // returned in place: no copy on the hot path
        }
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
            break;
        }
        const bool by_tenant = reply.state == slot_state::rejected_tenant;
        count(counter::rejected);
        if (by_tenant)
            log_.log(log_level::warning,
                     "[CAPACITY] REJECTED call_id={} active_calls={} max={} tenant={} "
                     "tenant_max={}{}",
                     req.call_id, reply.active, max, req.tenant, req.tenant_max,
                     local_suffix(local));
        else
            log_.log(log_level::warning, "[CAPACITY] REJECTED call_id={} active_calls={} max={}{}{}",
                     req.call_id, reply.active, max, tenant_suffix(req.tenant), local_suffix(local));
        auto ev = call_event(event_kind::rejected, req, reply.active, local);
        ev.tenant_limited = by_tenant;
        notify(ev);
        return {acquire_outcome::rejected, reply.active, max, by_tenant};
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
