#pragma once

// The limiter's behaviour through the async API (callguard/async.hpp), written once and run over
// every backend: coroutines on an io_context thread, and callbacks checked for where and when
// they run. A test file instantiates it with CALLGUARD_ASYNC_CONTRACT(fixture).
//
// A fixture provides:
//   using backend_type = ...;
//   backend_type make_backend(boost::asio::any_io_executor ex);  // same storage each call
// A fresh fixture object starts from empty storage.

#include "../support/doubles.hpp"
#include "../support/io_thread.hpp"
#include "../support/probes.hpp"

#include <callguard/async.hpp>
#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace async_contract {

namespace asio = boost::asio;
using callguard::acquire_outcome;

template <class Fixture>
using limiter_for = callguard::capacity_limiter<typename Fixture::backend_type>;

template <class Fixture>
std::unique_ptr<limiter_for<Fixture>> make_limiter(Fixture& f, test::io_thread& io, std::int64_t cap) {
    return std::make_unique<limiter_for<Fixture>>(f.make_backend(io.executor()), test::small_config(cap),
                                                  callguard::limiter_hooks{callguard::null_sink(), {}});
}

} // namespace async_contract

TEST_CASE_TEMPLATE_DEFINE("async contract: admits up to the cap, retries are already_held, releases make room", F,
                          async_contract_cap) {
    namespace asio = boost::asio;
    using callguard::acquire_outcome;
    F f;
    test::io_thread io;
    auto l = async_contract::make_limiter(f, io, 2);
    auto outcomes = io.run([&]() -> asio::awaitable<std::vector<acquire_outcome>> {
        std::vector<acquire_outcome> out;
        for (auto id : {"CA-a", "CA-b", "CA-c", "CA-a"}) {
            const callguard::acquire_result r = co_await callguard::async_acquire(*l, id, asio::use_awaitable);
            out.push_back(r.outcome);
        }
        co_return out;
    });
    CHECK(outcomes == std::vector<acquire_outcome>{acquire_outcome::acquired, acquire_outcome::acquired,
                                                   acquire_outcome::rejected, acquire_outcome::already_held});
    auto after = io.run([&]() -> asio::awaitable<std::vector<int>> {
        std::vector<int> out;
        out.push_back(co_await callguard::async_release(*l, "CA-a", asio::use_awaitable));
        out.push_back(co_await callguard::async_release(*l, "CA-a", asio::use_awaitable)); // idempotent
        out.push_back(co_await callguard::async_release(*l, "CA-never", asio::use_awaitable));
        const auto s = co_await callguard::async_status(*l, asio::use_awaitable);
        out.push_back(static_cast<int>(s.active_calls));
        const callguard::acquire_result again = co_await callguard::async_acquire(*l, "CA-c", asio::use_awaitable);
        out.push_back(again.outcome == acquire_outcome::acquired);
        out.push_back(co_await callguard::async_refresh(*l, "CA-c", asio::use_awaitable));
        out.push_back(co_await callguard::async_refresh(*l, "CA-gone", asio::use_awaitable));
        const auto full = co_await callguard::async_status(*l, asio::use_awaitable);
        out.push_back(full.at_capacity);
        co_return out;
    });
    CHECK(after == std::vector<int>{1, 0, 0, 1, 1, 1, 0, 1});
    // The blocking calls see the same slots.
    CHECK(l->status().active_calls == 2);
}

TEST_CASE_TEMPLATE_DEFINE("async contract: bad input throws at initiation and takes nothing", F,
                          async_contract_bad_input) {
    namespace asio = boost::asio;
    F f;
    test::io_thread io;
    auto l = async_contract::make_limiter(f, io, 3);
    std::atomic<int> handlers{0};
    auto count = [&](auto) { ++handlers; };
    CHECK_THROWS_AS(callguard::async_acquire(*l, "", count), std::invalid_argument);
    CHECK_THROWS_AS(callguard::async_acquire(*l, std::string(300, 'x'), count), std::invalid_argument);
    CHECK_THROWS_AS(callguard::async_acquire(*l, "CA\n1", count), std::invalid_argument);
    CHECK_THROWS_AS(callguard::async_acquire(*l, "CA-t", "bad tenant", count), std::invalid_argument);
    CHECK_THROWS_AS(callguard::async_refresh(*l, "", count), std::invalid_argument);
    CHECK_THROWS_AS(callguard::async_guard(*l, "", count), std::invalid_argument);
    // A malformed release is not an error (as the blocking one): it frees nothing.
    auto freed = io.run([&]() -> asio::awaitable<bool> {
        co_return co_await callguard::async_release(*l, "", asio::use_awaitable);
    });
    CHECK_FALSE(freed);
    CHECK(handlers.load() == 0);
    CHECK(l->status().active_calls == 0);
}

TEST_CASE_TEMPLATE_DEFINE("async contract: the handler runs once, on its executor, never inside the initiating call",
                          F, async_contract_handler) {
    namespace asio = boost::asio;
    F f;
    test::io_thread io(2);
    auto l = async_contract::make_limiter(f, io, 100);
    auto strand = asio::make_strand(io.context());
    std::atomic<int> calls{0}, on_strand{0}, inside_initiation{0};
    constexpr int n = 40;
    std::promise<void> all_done;
    std::atomic<int> remaining{n};
    bool initiating = false; // touched only on the strand
    asio::post(strand, [&] {
        for (int i = 0; i < n; ++i) {
            initiating = true;
            callguard::async_acquire(*l, "CA-h" + std::to_string(i),
                                     asio::bind_executor(strand, [&](callguard::acquire_result) {
                                         ++calls;
                                         if (strand.running_in_this_thread()) ++on_strand;
                                         if (initiating) ++inside_initiation;
                                         if (--remaining == 0) all_done.set_value();
                                     }));
            initiating = false;
        }
    });
    REQUIRE(all_done.get_future().wait_for(std::chrono::seconds(20)) == std::future_status::ready);
    CHECK(calls.load() == n);
    CHECK(on_strand.load() == n);
    CHECK(inside_initiation.load() == 0);
    CHECK(l->status().active_calls == n);
}

TEST_CASE_TEMPLATE_DEFINE("async contract: the async guard gives the slot back however the coroutine ends", F,
                          async_contract_guard) {
    namespace asio = boost::asio;
    F f;
    test::io_thread io;
    auto l = async_contract::make_limiter(f, io, 2);
    // Scope end.
    io.run([&]() -> asio::awaitable<void> {
        auto g = co_await callguard::async_guard(*l, "CA-g1", asio::use_awaitable);
        CHECK(g.admitted());
        CHECK(g.release_pending());
    });
    CHECK(test::eventually([&] { return l->status().active_calls == 0; }, std::chrono::seconds(5)));
    // An exception.
    CHECK_THROWS_AS(io.run([&]() -> asio::awaitable<void> {
        auto g = co_await callguard::async_guard(*l, "CA-g2", "biz1", asio::use_awaitable);
        CHECK(g.admitted());
        throw std::runtime_error("the call's handler failed");
    }),
                    std::runtime_error);
    CHECK(test::eventually([&] { return l->status().active_calls == 0; }, std::chrono::seconds(5)));
    // Early, awaited; a rejected guard holds nothing.
    auto freed = io.run([&]() -> asio::awaitable<std::vector<int>> {
        std::vector<int> out;
        auto a = co_await callguard::async_guard(*l, "CA-g3", asio::use_awaitable);
        auto b = co_await callguard::async_guard(*l, "CA-g4", asio::use_awaitable);
        auto c = co_await callguard::async_guard(*l, "CA-g5", asio::use_awaitable);
        out.push_back(c.admitted());
        out.push_back(c.release_pending());
        out.push_back(co_await a.release(asio::use_awaitable));
        out.push_back(co_await a.release(asio::use_awaitable)); // nothing left
        out.push_back(a.release_pending());
        auto moved = std::move(b);
        out.push_back(moved.release_pending());
        out.push_back(b.release_pending());
        co_return out;
    });
    CHECK(freed == std::vector<int>{0, 0, 1, 0, 0, 1, 0});
    CHECK(test::eventually([&] { return l->status().active_calls == 0; }, std::chrono::seconds(5)));
}

TEST_CASE_TEMPLATE_DEFINE("async contract: 200 concurrent acquires from one thread never exceed the cap", F,
                          async_contract_concurrent) {
    namespace asio = boost::asio;
    F f;
    test::io_thread io;
    auto l = async_contract::make_limiter(f, io, 25);
    std::atomic<int> admitted{0}, rejected{0};
    std::promise<void> done;
    std::atomic<int> remaining{200};
    asio::post(io.context(), [&] {
        for (int i = 0; i < 200; ++i)
            callguard::async_acquire(*l, "CA-c" + std::to_string(i), "biz1", [&](callguard::acquire_result r) {
                (r.outcome == callguard::acquire_outcome::acquired ? admitted : rejected)++;
                if (--remaining == 0) done.set_value();
            });
    });
    REQUIRE(done.get_future().wait_for(std::chrono::seconds(20)) == std::future_status::ready);
    CHECK(admitted.load() == 25);
    CHECK(rejected.load() == 175);
    CHECK(l->status().active_calls == 25);
}

#define CALLGUARD_ASYNC_CONTRACT(fixture)                                                        \
    TEST_CASE_TEMPLATE_INVOKE(async_contract_cap, fixture);                                      \
    TEST_CASE_TEMPLATE_INVOKE(async_contract_bad_input, fixture);                                \
    TEST_CASE_TEMPLATE_INVOKE(async_contract_handler, fixture);                                  \
    TEST_CASE_TEMPLATE_INVOKE(async_contract_guard, fixture);                                    \
    TEST_CASE_TEMPLATE_INVOKE(async_contract_concurrent, fixture)
