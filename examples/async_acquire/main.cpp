// The async API in a C++20 coroutine: five calls arrive at once against a cap of 3, on one
// io_context thread. Each call is a coroutine that takes its slot with `co_await`, talks for a
// while (a timer here), and gives the slot back when its scope ends, however it ends. With
// REDIS_URL set the limiter runs on Redis, its I/O on the same io_context: no thread waits.
#include <callguard/async.hpp>
#include <callguard/callguard.hpp>
#if CALLGUARD_EXAMPLE_WITH_REDIS
#include <callguard/backends/redis.hpp>
#endif

#include <utility> // before Asio

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// One phone call: admitted or turned away, then (if admitted) a conversation.
template <class Limiter>
asio::awaitable<void> call(Limiter& limiter, std::string sid, int& admitted, int& rejected) {
    auto slot = co_await callguard::async_guard(limiter, sid, asio::use_awaitable);
    if (!slot) { // over capacity: here the caller would hear the polite rejection
        ++rejected;
        fmt::print("{}: {} (active {}/{})\n", sid, callguard::to_string(slot.result().outcome),
                   slot.result().active, slot.result().max);
        co_return;
    }
    ++admitted;
    fmt::print("{}: {} (active {}/{})\n", sid, callguard::to_string(slot.result().outcome), slot.result().active,
               slot.result().max);
    asio::steady_timer talk(co_await asio::this_coro::executor, 200ms);
    co_await talk.async_wait(asio::use_awaitable);
    // Refresh on a heartbeat, as a media stream would.
    const bool held = co_await callguard::async_refresh(limiter, sid, asio::use_awaitable);
    fmt::print("{}: still holds its slot: {}\n", sid, held);
} // the slot goes back here (async_slot_guard starts the release)

template <class Limiter>
int run(asio::io_context& ioc, Limiter& limiter) {
    int admitted = 0, rejected = 0;
    for (int i = 1; i <= 5; ++i)
        asio::co_spawn(ioc, call(limiter, fmt::format("CA{:032x}", i), admitted, rejected), asio::detached);
    ioc.run(); // returns once every call has ended and its slot is back
    // The count, asynchronously too. A plain callback runs on the backend's executor, or (memory
    // has none) on Asio's system executor: bound to the io_context, it runs in ioc.run() below,
    // before `status` is read.
    callguard::capacity_status status;
    callguard::async_status(limiter,
                            asio::bind_executor(ioc, [&](callguard::capacity_status s) { status = s; }));
    ioc.restart();
    ioc.run();
    fmt::print("admitted {}, rejected {}; {}\n", admitted, rejected, callguard::to_json(status));
    return admitted == 3 && rejected == 2 && status.active_calls == 0 ? 0 : 1;
}

int main() {
    asio::io_context ioc;
    callguard::limiter_config cfg;
    cfg.max_active_calls = 3;
    cfg.log_level = callguard::log_level::warning;
#if CALLGUARD_EXAMPLE_WITH_REDIS
    if (const char* url = std::getenv("REDIS_URL"); url && *url) {
        callguard::capacity_limiter<callguard::redis_backend> limiter(
            callguard::redis_backend(ioc.get_executor(), url, "async-example"), cfg);
        return run(ioc, limiter);
    }
#endif
    callguard::capacity_limiter<callguard::memory_backend> limiter(callguard::memory_backend{}, cfg);
    return run(ioc, limiter);
}
