#pragma once

// An io_context run by threads of its own for the async tests, and a way to run a coroutine on
// it from the test's thread and wait (bounded) for its result.

#include <utility> // before Asio

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <future>
#include <optional>
#include <stdexcept>
#include <thread>
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
        auto f = boost::asio::co_spawn(ioc_, make(), boost::asio::use_future);
        if (f.wait_for(limit) != std::future_status::ready)
            throw std::runtime_error("io_thread::run: the coroutine did not finish in time");
        return f.get();
    }

private:
    boost::asio::io_context ioc_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::vector<std::thread> threads_;
};

} // namespace test
