#pragma once

// Blocking callers drive the I/O themselves: an io_context of its own that the waiting callers
// run, one at a time. The first caller to wait becomes the driver and runs the io_context until
// its own command is answered; then it hands the role to a caller still waiting. So a lone
// caller pays one round trip and no thread hand-off, and under load one driver serves every
// waiting caller (their commands travel pipelined on the same connection) while the others
// sleep until their reply is in.

#include <utility> // before Asio

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace callguard::detail {

class blocking_driver {
public:
    /// One caller's wait. Its state is set by a handler on the driving thread (`answered`, then
    /// `let_go` once that thread is done with it) and by a driver handing over (`your_turn`).
    /// The caller sleeps on the state itself: an answer wakes exactly its own caller, and the
    /// driver answers without taking the lock that callers take to join or leave the line.
    struct waiter {
        std::atomic<std::uint32_t> state{0};
        waiter* prev = nullptr; // the line of sleeping callers, under the driver's lock
        waiter* next = nullptr;
    };
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free); // a futex word

    blocking_driver() : work_(ioc_.get_executor()) {}
    blocking_driver(const blocking_driver&) = delete;
    blocking_driver& operator=(const blocking_driver&) = delete;
    ~blocking_driver() {
        work_.reset();
        ioc_.stop();
    }

    boost::asio::io_context& context() noexcept { return ioc_; }

    /// Marks `w` answered; called from a handler while some thread drives. Its caller may return
    /// (and destroy `w`) only after `let_go`, so the wake-up never touches a dead waiter.
    void complete(waiter& w) noexcept {
        if (w.state.fetch_or(answered, std::memory_order_release) & asleep) wake(w.state);
        w.state.fetch_or(let_go, std::memory_order_release);
    }

    /// Returns once `w` is answered, driving the io_context meanwhile if nobody else does.
    void wait(waiter& w) {
        std::unique_lock lk(mu_);
        bool listed = false;
        for (;;) {
            if (w.state.load(std::memory_order_acquire) & answered) break;
            if (!driving_) {
                driving_ = true;
                if (listed) unlist(w);
                listed = false;
                w.state.fetch_and(~your_turn, std::memory_order_relaxed);
                lk.unlock();
                drive_until(w);
                lk.lock();
                driving_ = false;
                continue;
            }
            if (!listed) enlist(w);
            listed = true;
            // Asleep until answered or handed the turn; a turn taken meanwhile by a newcomer is
            // simply dropped (the loop sees someone drives).
            auto seen = w.state.fetch_and(~(your_turn | asleep), std::memory_order_acquire) & ~(your_turn | asleep);
            if (seen & answered) break;
            lk.unlock();
            if (w.state.compare_exchange_strong(seen, seen | asleep, std::memory_order_acq_rel))
                sleep_while(w.state, seen | asleep);
            lk.lock();
        }
        if (listed) unlist(w);
        hand_over(); // whoever stops waiting makes sure someone drives for those still waiting
        lk.unlock();
        while (!(w.state.load(std::memory_order_acquire) & let_go)) std::this_thread::yield();
    }

private:
    // `asleep`: the caller is (about to be) asleep on the state, so whoever changes it must wake it.
    static constexpr std::uint32_t answered = 1, your_turn = 2, let_go = 4, asleep = 8;

    // Straight on the futex where there is one: std::atomic::wait spins and yields first, which
    // on a machine with fewer cores than waiting callers takes the time the driver needs.
    static void sleep_while(std::atomic<std::uint32_t>& a, std::uint32_t v) noexcept {
#ifdef __linux__
        ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&a), FUTEX_WAIT_PRIVATE, v, nullptr, nullptr, 0);
#else
        a.wait(v, std::memory_order_acquire);
#endif
    }
    static void wake(std::atomic<std::uint32_t>& a) noexcept {
#ifdef __linux__
        ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&a), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
#else
        a.notify_one();
#endif
    }

    /// Under `mu_`: if nobody drives and nobody is on the way to, wakes a caller still waiting.
    void hand_over() noexcept {
        if (driving_) return;
        waiter* next = nullptr;
        for (auto* other = first_; other; other = other->next) {
            const auto s = other->state.load(std::memory_order_acquire);
            if (s & answered) continue;
            if (s & your_turn) return;
            if (!next) next = other;
        }
        if (!next) return;
        if (next->state.fetch_or(your_turn, std::memory_order_release) & asleep)
            wake(next->state); // listed, so it cannot return before it takes `mu_`
    }

    // Under `mu_`. A list threaded through the waiters themselves: joining never allocates, so
    // it cannot fail while the caller's command is already on its way.
    void enlist(waiter& w) noexcept {
        w.prev = last_;
        w.next = nullptr;
        (last_ ? last_->next : first_) = &w;
        last_ = &w;
    }
    void unlist(waiter& w) noexcept {
        (w.prev ? w.prev->next : first_) = w.next;
        (w.next ? w.next->prev : last_) = w.prev;
        w.prev = w.next = nullptr;
    }

    void drive_until(waiter& w) noexcept {
        while (!(w.state.load(std::memory_order_acquire) & answered)) {
            try {
                ioc_.run_one();
            } catch (...) {
                // Handlers do not throw; if one did, driving goes on (every command has a deadline).
            }
        }
    }

    boost::asio::io_context ioc_{1};
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::mutex mu_;
    bool driving_ = false;
    waiter* first_ = nullptr; // callers asleep, oldest first
    waiter* last_ = nullptr;
};

} // namespace callguard::detail
