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
#include <condition_variable>
#include <mutex>
#include <vector>

namespace callguard::detail {

class blocking_driver {
public:
    /// One caller's wait. `done` is set by a handler (on the driving thread).
    struct waiter {
        std::atomic<bool> done{false};
        std::condition_variable wake;
    };

    blocking_driver() : work_(ioc_.get_executor()) {}
    blocking_driver(const blocking_driver&) = delete;
    blocking_driver& operator=(const blocking_driver&) = delete;
    ~blocking_driver() {
        work_.reset();
        ioc_.stop();
    }

    boost::asio::io_context& context() noexcept { return ioc_; }

    /// Marks `w` answered; called from a handler while some thread drives. The notify happens
    /// under the lock: once `done` is set, the waiter may return and destroy `w` (its condition
    /// variable with it) as soon as it holds the lock, so the notify must be over by then.
    void complete(waiter& w) noexcept {
        std::lock_guard lk(mu_);
        w.done.store(true, std::memory_order_release);
        w.wake.notify_one();
    }

    /// Returns once `w` is answered, driving the io_context meanwhile if nobody else does.
    void wait(waiter& w) {
        std::unique_lock lk(mu_);
        while (!w.done.load(std::memory_order_acquire)) {
            if (!driving_) {
                driving_ = true;
                lk.unlock();
                drive_until(w);
                lk.lock();
                driving_ = false;
                for (auto* other : waiting_) // hand over to someone still waiting
                    if (!other->done.load(std::memory_order_relaxed)) {
                        other->wake.notify_one();
                        break;
                    }
            } else {
                waiting_.push_back(&w);
                w.wake.wait(lk);
                std::erase(waiting_, &w);
            }
        }
    }

private:
    void drive_until(waiter& w) noexcept {
        while (!w.done.load(std::memory_order_acquire)) {
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
    std::vector<waiter*> waiting_;
};

} // namespace callguard::detail
