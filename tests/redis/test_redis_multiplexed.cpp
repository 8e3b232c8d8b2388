// The multiplexed connection mode against a real redis-server: callers share one socket, every
// caller gets its own reply, callers who come while two writes are unanswered go out together,
// a round that breaks fails every caller in it (and nothing later is mismatched), and a frozen
// server costs each waiting caller about one timeout.

#include "../support/doubles.hpp"
#include "../support/probes.hpp"
#include "../support/tcp_proxy.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <callguard/redis/detail/driver.hpp>
#include <doctest/doctest.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;
using clock_type = std::chrono::steady_clock;

namespace {

/// Runs `fn(thread_index)` on `n` threads started together.
template <class F>
void on_threads(int n, F fn) {
    std::atomic<int> ready{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < n; ++t)
        ts.emplace_back([&, t] {
            ++ready;
            while (ready.load() < n) std::this_thread::yield();
            fn(t);
        });
    for (auto& th : ts) th.join();
}

std::string id_of(int t, int i) { return "CA-m" + std::to_string(t) + "-" + std::to_string(i); }

/// Answers `w` on the driver's io_context after `delay` (none: as soon as someone drives),
/// setting `flag` first as the reply handler of a real command would set its result.
void answer_later(callguard::detail::blocking_driver& d, callguard::detail::blocking_driver::waiter& w,
                  std::atomic<bool>& flag, std::chrono::microseconds delay) {
    auto answer = [&d, &w, &flag] {
        flag.store(true, std::memory_order_relaxed);
        d.complete(w);
    };
    if (delay.count() == 0) return boost::asio::post(d.context(), answer);
    auto t = std::make_shared<boost::asio::steady_timer>(d.context(), delay);
    t->async_wait([t, answer](auto) { answer(); });
}

/// Drives `d` for about `how_long` from this thread (answers whoever's reply is due).
void drive_for(callguard::detail::blocking_driver& d, std::chrono::milliseconds how_long) {
    callguard::detail::blocking_driver::waiter w;
    std::atomic<bool> answered{false};
    answer_later(d, w, answered, how_long);
    d.wait(w);
}

} // namespace

// The blocking driver alone (no server): callers that wait on one io_context take turns running
// it; whoever's reply is in returns at once, and someone still waiting goes on driving.

TEST_CASE("blocking driver: callers answered in any order each return once answered, none left behind") {
    callguard::detail::blocking_driver d;
    constexpr int threads = 8, per_thread = 1500;
    std::atomic<int> early{0}, returned{0}, finished{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            std::minstd_rand rng(static_cast<unsigned>(t) + 1);
            for (int i = 0; i < per_thread; ++i) {
                callguard::detail::blocking_driver::waiter w;
                std::atomic<bool> answered{false};
                answer_later(d, w, answered, std::chrono::microseconds(rng() % 3 == 0 ? 0 : rng() % 200));
                d.wait(w);
                if (!answered.load(std::memory_order_relaxed)) ++early;
                ++returned;
            }
            ++finished;
        });
    // A caller left asleep with nobody driving would hang: after a minute this check fails and
    // the test drives for them, so that the failure is a failed check, not a stuck test.
    const auto give_up = clock_type::now() + 60s;
    while (finished.load() < threads && clock_type::now() < give_up) std::this_thread::sleep_for(5ms);
    CHECK(finished.load() == threads);
    while (finished.load() < threads) drive_for(d, 20ms);
    for (auto& th : ts) th.join();
    CHECK(early.load() == 0);
    CHECK(returned.load() == threads * per_thread);
}

TEST_CASE("blocking driver: a driver answered first returns at once and another waiter drives on") {
    callguard::detail::blocking_driver d;
    callguard::detail::blocking_driver::waiter first, second;
    std::atomic<bool> first_answered{false}, second_answered{false}, second_back{false};
    answer_later(d, first, first_answered, 40ms);
    answer_later(d, second, second_answered, 300ms);
    const auto start = clock_type::now();
    std::thread driver([&] { d.wait(first); }); // drives: nobody else waits yet
    std::this_thread::sleep_for(10ms);
    std::thread follower([&] {
        d.wait(second);
        second_back = true;
    });
    driver.join();
    const auto first_took = clock_type::now() - start;
    CHECK(first_answered.load());
    CHECK(first_took < 250ms); // did not stay to drive for the second
    for (int i = 0; i < 300 && !second_back.load(); ++i) std::this_thread::sleep_for(10ms);
    CHECK(second_back.load()); // the follower took over the driving and got its answer
    if (!second_back.load()) drive_for(d, 400ms); // keep the test from hanging
    follower.join();
    CHECK(second_answered.load());
    CHECK(clock_type::now() - start >= 300ms);
}

TEST_CASE("multiplexed: 16 threads share one socket, each gets its own replies, fewer round trips") {
    test::redis_server srv;
    const auto prefix = test::unique_prefix("mux");
    redis_limiter l(callguard::redis_backend(test::quick_options(srv.url(), prefix)), test::small_config(100000),
                    {callguard::null_sink(), {}});
    constexpr int threads = 16, per_thread = 150;
    std::atomic<int> wrong{0};
    on_threads(threads, [&](int t) {
        for (int i = 0; i < per_thread; ++i) {
            const auto id = id_of(t, i);
            // Each answer is checkable: a reply handed to the wrong caller would show here.
            if (l.acquire(id).outcome != acquire_outcome::acquired) ++wrong;
            if (l.acquire(id).outcome != acquire_outcome::already_held) ++wrong;
            if (!l.release(id)) ++wrong;
            if (l.release(id)) ++wrong;
            if (i == per_thread / 2 && !l.acquire(id)) ++wrong; // keep one per thread
        }
    });
    CHECK(wrong.load() == 0);
    CHECK(l.status().active_calls == threads);
    CHECK(srv.integer({"ZCARD", "{" + prefix + "}:active"}) == threads);
    CHECK(l.backend().open_connections() == 1);
    const auto ops = static_cast<std::uint64_t>(threads) * per_thread * 4;
    const auto rounds = l.backend().round_trips();
    MESSAGE("operations: " << ops << ", round trips: " << rounds);
    CHECK(rounds > 0);
    CHECK(rounds < ops); // concurrent callers travelled together
}

TEST_CASE("multiplexed: callers who come while two writes wait for replies go out together, as one script call") {
    test::redis_server srv;
    const auto prefix = test::unique_prefix("mux");
    auto o = test::quick_options(srv.url(), prefix);
    o.command_timeout = 5s; // the server is frozen on purpose below
    redis_limiter l(callguard::redis_backend(std::move(o)), test::small_config(100), {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-warm").outcome == acquire_outcome::acquired); // connected, script loaded
    REQUIRE(l.release("CA-warm"));
    const auto writes_before = l.backend().round_trips();
    const auto scripts_before = srv.command_calls("evalsha");

    // Frozen, the server reads nothing: the first two callers' writes stay unanswered, and the
    // eight after them wait (queued one by one, each from its own thread) for a reply.
    srv.pause();
    constexpr int callers = 10;
    std::atomic<int> calling{0}, acquired{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < callers; ++t) {
        ts.emplace_back([&, t] {
            ++calling;
            if (l.acquire(id_of(t, 0)).outcome == acquire_outcome::acquired) ++acquired;
        });
        // One at a time, so that each comes alone and would have had a write of its own.
        std::this_thread::sleep_for(30ms);
    }
    // Every caller on its way in (a slow machine may start threads late), then time to queue.
    for (int i = 0; i < 500 && calling.load() < callers; ++i) std::this_thread::sleep_for(10ms);
    CHECK(calling.load() == callers);
    std::this_thread::sleep_for(200ms);
    CHECK(l.backend().round_trips() - writes_before == 2);
    srv.resume();
    for (auto& th : ts) th.join();

    CHECK(acquired.load() == callers);
    CHECK(srv.integer({"ZCARD", "{" + prefix + "}:active"}) == callers);
    // The first reply let the eight go: three writes, three script calls, for ten acquires.
    CHECK(l.backend().round_trips() - writes_before == 3);
    CHECK(srv.command_calls("evalsha") - scripts_before == 3);
    for (int t = 0; t < callers; ++t) CHECK(l.release(id_of(t, 0)));
    CHECK(l.status().active_calls == 0);
}

TEST_CASE("multiplexed: a frozen server costs every waiting caller about one timeout") {
    test::redis_server srv;
    redis_limiter l(callguard::redis_backend(test::quick_options(srv.url(), test::unique_prefix("mux"))),
                    test::small_config(100), {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-warm").outcome == acquire_outcome::acquired);
    srv.pause();
    std::atomic<int> admitted_open{0};
    std::atomic<long long> slowest_ms{0};
    on_threads(12, [&](int t) {
        auto t0 = clock_type::now();
        auto r = l.acquire(id_of(t, 0));
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
        if (r.outcome == acquire_outcome::admitted_fail_open) ++admitted_open;
        for (auto cur = slowest_ms.load(); ms > cur && !slowest_ms.compare_exchange_weak(cur, ms);) {
        }
    });
    srv.resume();
    CHECK(admitted_open.load() == 12);
    MESSAGE("slowest caller while frozen: " << slowest_ms.load() << " ms (timeout 200 ms)");
    CHECK(slowest_ms.load() < 700);
    // Back: the old slot is still there, and the socket is re-made.
    CHECK(test::eventually([&] { return l.acquire("CA-warm").outcome == acquire_outcome::already_held; }, 5s));
}

TEST_CASE("multiplexed: rounds cut mid-reply fail their callers, and no reply is mismatched later") {
    test::redis_server srv;
    test::tcp_proxy proxy{srv.port()};
    const auto prefix = test::unique_prefix("muxcut");
    redis_limiter l(callguard::redis_backend(test::quick_options(proxy.url(), prefix)),
                    test::small_config(1000), {callguard::null_sink(), {}});
    proxy.cut_replies_after(5); // every connection dies a few bytes into the server's answers
    std::atomic<int> not_fail_open{0};
    on_threads(8, [&](int t) {
        for (int i = 0; i < 3; ++i) {
            if (l.acquire(id_of(t, i)).outcome != acquire_outcome::admitted_fail_open) ++not_fail_open;
            std::this_thread::sleep_for(100ms);
        }
    });
    CHECK(not_fail_open.load() == 0);
    proxy.cut_replies_after(std::size_t(1) << 40);
    proxy.drop_all();
    REQUIRE(test::eventually([&] { return l.status().backend_healthy; }, 5s));
    // Whatever the cut rounds did on the server, every answer now matches its own request.
    std::atomic<int> wrong{0};
    on_threads(8, [&](int t) {
        for (int i = 0; i < 3; ++i) {
            auto r = l.acquire(id_of(t, i));
            if (!(r.outcome == acquire_outcome::acquired || r.outcome == acquire_outcome::already_held)) ++wrong;
            if (l.acquire(id_of(t, i)).outcome != acquire_outcome::already_held) ++wrong;
        }
    });
    CHECK(wrong.load() == 0);
    CHECK(srv.integer({"ZCARD", "{" + prefix + "}:active"}) == 24);
    on_threads(8, [&](int t) {
        for (int i = 0; i < 3; ++i)
            if (!l.release(id_of(t, i))) ++wrong;
    });
    CHECK(wrong.load() == 0);
    CHECK(srv.integer({"ZCARD", "{" + prefix + "}:active"}) == 0);
}

TEST_CASE("multiplexed: two sockets split the callers, and the cap still holds across them") {
    test::redis_server srv;
    auto o = test::quick_options(srv.url(), test::unique_prefix("mux2"));
    o.multiplexed_connections = 2;
    o.command_timeout = o.connect_timeout = 2000ms;
    redis_limiter l(callguard::redis_backend(o), test::small_config(7), {callguard::null_sink(), {}});
    std::atomic<int> held{0}, peak{0}, over{0};
    on_threads(8, [&](int t) {
        for (int i = 0; i < 100; ++i) {
            const auto id = id_of(t, i);
            if (l.acquire(id).outcome == acquire_outcome::acquired) {
                int now = ++held;
                if (now > 7) ++over;
                for (int cur = peak.load(); now > cur && !peak.compare_exchange_weak(cur, now);) {
                }
                --held;
                l.release(id);
            }
        }
    });
    CHECK(over.load() == 0);
    CHECK(peak.load() >= 1);
    CHECK(l.backend().open_connections() == 2);
    CHECK(l.status().active_calls == 0);
}
