#pragma once

#include "acquire_result.hpp"
#include "backend.hpp"

#include <string>
#include <string_view>
#include <utility>

namespace callguard {

template <capacity_backend Backend>
class capacity_limiter;

/// Holds one call's slot and gives it back when it goes out of scope: a `finally` for every way
/// a handler can end (return, exception, dropped connection).
///
/// Made by `capacity_limiter::guard()`. Move-only; the destructor never throws (a failed
/// release is reported through the limiter's logger and kept for replay by the backend).
/// A guard for an `already_held` call adopts the slot and releases it too: the media
/// WebSocket adopts the slot its webhook took.
class slot_guard {
public:
    slot_guard() noexcept = default;

    slot_guard(slot_guard&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)),
          release_(std::exchange(other.release_, nullptr)),
          call_id_(std::move(other.call_id_)),
          result_(other.result_) {}

    slot_guard& operator=(slot_guard&& other) noexcept {
        if (this != &other) {
            release();
            owner_ = std::exchange(other.owner_, nullptr);
            release_ = std::exchange(other.release_, nullptr);
            call_id_ = std::move(other.call_id_);
            result_ = other.result_;
        }
        return *this;
    }

    slot_guard(const slot_guard&) = delete;
    slot_guard& operator=(const slot_guard&) = delete;

    ~slot_guard() { release(); }

    /// Whether the call was admitted (and so may go ahead), as decided at acquire time.
    bool admitted() const noexcept { return result_.admitted(); }
    explicit operator bool() const noexcept { return admitted(); }

    /// The full decision: outcome, active count, cap.
    const acquire_result& result() const noexcept { return result_; }

    const std::string& call_id() const noexcept { return call_id_; }

    /// True while the guard still has a release to run: the call was admitted and neither
    /// `release()` nor a move has happened since. For `admitted_fail_open` no slot was taken,
    /// but the release still runs (the call may have taken a slot since, on a refresh).
    bool release_pending() const noexcept { return release_ != nullptr; }

    /// Gives the slot back now. Idempotent; true if this call freed a slot.
    bool release() noexcept {
        auto fn = std::exchange(release_, nullptr);
        return fn ? fn(owner_, call_id_) : false;
    }

private:
    template <capacity_backend Backend>
    friend class capacity_limiter;

    using release_fn = bool (*)(void* owner, std::string_view call_id) noexcept;

    slot_guard(void* owner, release_fn fn, std::string call_id, acquire_result r) noexcept
        : owner_(owner), release_(r.admitted() ? fn : nullptr), call_id_(std::move(call_id)),
          result_(r) {}

    void* owner_ = nullptr;
    release_fn release_ = nullptr;
    std::string call_id_;
    acquire_result result_{};
};

} // namespace callguard
