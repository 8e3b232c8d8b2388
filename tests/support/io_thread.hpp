#pragma once

// An io_context run by threads of its own for the async tests, and a way to run a coroutine on
// it from the test's thread and wait (bounded) for its result.

#include <utility> // before Asio

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace test {

class io_thread {
public:
    explicit io_thread(int threads = 1) : work_(ioc_.get_executor()) {
        for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
    }
    io_thread(const io_thread&) = delete;
    io_thread& operator=(const io_thread&) = delete;
    ~io_thread() { stop(); }

    boost::asio::io_context& context() noexcept { return ioc_; }
    boost::asio::io_context::executor_type executor() noexcept { return ioc_.get_executor(); }

    /// Lets the threads finish what is queued, then joins them.
    void stop() {
        work_.reset();
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }

    /// Runs `make()` (a function returning `boost::asio::awaitable<T>`) on the io_context and
    /// waits for its result; rethrows what it threw. Fails the test after `limit`.
    template <class Make>
    auto run(Make make, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
        using T = typename decltype(make())::value_type;
        auto out = std::make_shared<outcome<T>>();
        boost::asio::co_spawn(ioc_, settle<T>(make(), out), boost::asio::detached);
        std::unique_lock lk(out->mu);
        if (!out->cv.wait_for(lk, limit, [&] { return out->ready; }))
            throw std::runtime_error("io_thread::run: the coroutine did not finish in time");
        if (out->error) std::rethrow_exception(std::exchange(out->error, nullptr));
        if constexpr (!std::is_void_v<T>) return std::move(*out->value);
    }

private:
    template <class T>
    struct outcome {
        std::mutex mu;
        std::condition_variable cv;
        bool ready = false;
        std::exception_ptr error;
        std::conditional_t<std::is_void_v<T>, std::monostate, std::optional<T>> value;
    };

    /// Hands the coroutine's result or exception to the waiting thread, which then holds the
    /// only reference to it: an exception freed here while the test reads its what() would be
    /// ordered only by libstdc++'s reference count, which ThreadSanitizer cannot see.
    template <class T>
    static boost::asio::awaitable<void> settle(boost::asio::awaitable<T> work, std::shared_ptr<outcome<T>> out) {
        std::exception_ptr error;
        std::conditional_t<std::is_void_v<T>, std::monostate, std::optional<T>> value;
        try {
            if constexpr (std::is_void_v<T>) co_await std::move(work);
            else value.emplace(co_await std::move(work));
        } catch (...) {
            error = std::current_exception();
        }
        std::lock_guard lk(out->mu);
        out->error = std::move(error);
        out->value = std::move(value);
        out->ready = true;
        out->cv.notify_one();
    }
    boost::asio::io_context ioc_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::vector<std::thread> threads_;
};

} // namespace test
