// The async API over a Redis backend on an io_context, against a real redis-server (behind the
// fault proxy where the test needs slow, cut or frozen replies): commands in flight together
// (pipelined, not one after the other), every handler answered exactly once by the fail mode
// when the connection breaks or the server freezes, and blocking calls that would wait for
// themselves refused on the executor's own thread.

#include "../support/doubles.hpp"
#include "../support/io_thread.hpp"
#include "../support/probes.hpp"
#include "../support/tcp_proxy.hpp"
#include "redis_fixture.hpp"

#include <callguard/async.hpp>
#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;
using clock_type = std::chrono::steady_clock;
namespace asio = boost::asio;

namespace {

callguard::redis_options options(const std::string& url, std::chrono::milliseconds timeout = 300ms) {
    auto o = test::quick_options(url, test::unique_prefix("async"));
    o.connect_timeout = o.command_timeout = timeout;
    return o;
}

/// Starts `n` async_acquire on the io thread at once; returns each outcome (in completion
/// order), how many handlers ran per call, and how long the whole batch took.
struct batch_result {
    std::vector<acquire_outcome> outcomes;
    std::vector<int> calls_per_handler;
    clock_type::duration took{};
};

batch_result acquire_batch(test::io_thread& io, redis_limiter& l, int n, const std::string& stem) {
    auto r = std::make_shared<batch_result>();
    r->calls_per_handler.assign(static_cast<std::size_t>(n), 0);
    auto mu = std::make_shared<std::mutex>();
    auto done = std::make_shared<std::promise<void>>();
    auto remaining = std::make_shared<std::atomic<int>>(n);
    auto t0 = std::make_shared<clock_type::time_point>();
    asio::post(io.context(), [&, r, mu, done, remaining, t0, n] {
        *t0 = clock_type::now();
        for (int i = 0; i < n; ++i)
            callguard::async_acquire(l, stem + std::to_string(i), [=](callguard::acquire_result a) {
                std::lock_guard lk(*mu);
                r->outcomes.push_back(a.outcome);
                if (++r->calls_per_handler[static_cast<std::size_t>(i)] == 1 && --*remaining == 0) {
                    r->took = clock_type::now() - *t0;
                    done->set_value();
                }
            });
    });
    REQUIRE(done->get_future().wait_for(20s) == std::future_status::ready);
    std::this_thread::sleep_for(100ms); // a second call of any handler would show now
    std::lock_guard lk(*mu);
    return *r;
}

long long ms(clock_type::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

} // namespace

TEST_CASE("async redis: 64 acquires from one thread travel together (20 ms added per reply)") {
    test::redis_server srv;
    test::tcp_proxy proxy{srv.port()};
    test::io_thread io;
    redis_limiter l(callguard::redis_backend(io.executor(), options(proxy.url(), 1000ms)), test::small_config(1000),
                    {callguard::null_sink(), {}});
    // Warm up: the connection, its handshake and the script load, before the clock starts.
    REQUIRE(acquire_batch(io, l, 1, "CA-warm").outcomes.front() == acquire_outcome::acquired);
    proxy.set_latency(10ms); // each way: 20 ms more per round trip
    const auto r = acquire_batch(io, l, 64, "CA-p");
    MESSAGE("64 pipelined acquires through +20 ms replies took " << ms(r.took) << " ms");
    CHECK(std::count(r.outcomes.begin(), r.outcomes.end(), acquire_outcome::acquired) == 64);
    CHECK(ms(r.took) < 60); // one at a time would take 64 x 20 ms
    CHECK(srv.integer({"ZCARD", "{" + l.backend().options().key_prefix + "}:active"}) == 65);
}

namespace {

/// EVALSHA calls the server has run so far (INFO commandstats).
long long evalsha_calls(const test::redis_server& srv) {
    const auto text = srv.command({"INFO", "commandstats"});
    const auto at = text.find("cmdstat_evalsha:calls=");
    return at == std::string::npos ? 0 : std::stoll(text.substr(at + 22));
}

/// Starts, on the io thread at once, `f(i, handler)` for i in [0, n); waits until each handler
/// ran, and a little longer (a second run of any would show); returns what each was given.
template <class T, class Start>
std::vector<std::vector<T>> all_at_once(test::io_thread& io, int n, Start start) {
    auto got = std::make_shared<std::vector<std::vector<T>>>(static_cast<std::size_t>(n));
    auto mu = std::make_shared<std::mutex>();
    auto done = std::make_shared<std::promise<void>>();
    auto remaining = std::make_shared<std::atomic<int>>(n);
    asio::post(io.context(), [=] {
        for (int i = 0; i < n; ++i)
            start(i, [=](T v) {
                std::lock_guard lk(*mu);
                auto& mine = (*got)[static_cast<std::size_t>(i)];
                mine.push_back(v);
                if (mine.size() == 1 && --*remaining == 0) done->set_value();
            });
    });
    REQUIRE(done->get_future().wait_for(20s) == std::future_status::ready);
    std::this_thread::sleep_for(100ms);
    std::lock_guard lk(*mu);
    return *got;
}

} // namespace

TEST_CASE("async redis: acquires and releases waiting together travel as one script call, each with its own answer") {
    test::redis_server srv;
    test::io_thread io;
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url())), test::small_config(40),
                    {callguard::null_sink(), {}});
    const auto active = "{" + l.backend().options().key_prefix + "}:active";
    REQUIRE(acquire_batch(io, l, 1, "CA-warm").outcomes.front() == acquire_outcome::acquired);
    const auto calls_before = evalsha_calls(srv);

    // 64 callers for 39 free slots: exactly 39 get one, whatever travelled with what.
    auto acquired = all_at_once<callguard::acquire_result>(io, 64, [&](int i, auto h) {
        callguard::async_acquire(l, "CA-b" + std::to_string(i), h);
    });
    int admitted = 0, rejected = 0;
    for (auto& a : acquired) {
        REQUIRE(a.size() == 1); // each handler once
        admitted += a[0].outcome == acquire_outcome::acquired;
        rejected += a[0].outcome == acquire_outcome::rejected;
        CHECK(a[0].active <= 40);
    }
    CHECK(admitted == 39);
    CHECK(rejected == 25);
    CHECK(srv.integer({"ZCARD", active}) == 40);
    const auto batched = l.backend().batched_calls();
    const auto calls = evalsha_calls(srv) - calls_before;
    MESSAGE("64 acquires: " << batched << " travelled with others, " << calls << " script calls");
    CHECK(batched > 0);
    CHECK(calls < 64);

    // Full: two callers for each of 16 new calls, in the same moment: all turned away.
    auto twice = all_at_once<callguard::acquire_result>(io, 32, [&](int i, auto h) {
        callguard::async_acquire(l, "CA-b" + std::to_string(64 + i / 2), h);
    });
    CHECK(l.status().active_calls == 40); // full: nothing taken
    for (int i = 0; i < 32; ++i) CHECK(twice[static_cast<std::size_t>(i)].at(0).outcome == acquire_outcome::rejected);

    // Release everything at once, each id twice: exactly the held ones free a slot, once.
    auto freed = all_at_once<bool>(io, 128, [&](int i, auto h) {
        callguard::async_release(l, "CA-b" + std::to_string(i / 2), h);
    });
    int frees = 0;
    for (auto& f : freed) frees += f.at(0);
    CHECK(frees == 39);
    CHECK(srv.integer({"ZCARD", active}) == 1);
    CHECK(l.counters().backend_errors == 0);

    // Room again: pairs of callers on one id each, all at once.
    auto pairs = all_at_once<callguard::acquire_result>(io, 32, [&](int i, auto h) {
        callguard::async_acquire(l, "CA-d" + std::to_string(i / 2), h);
    });
    for (int i = 0; i < 32; i += 2) {
        const auto a = pairs[static_cast<std::size_t>(i)].at(0).outcome, b = pairs[static_cast<std::size_t>(i) + 1].at(0).outcome;
        CHECK(((a == acquire_outcome::acquired && b == acquire_outcome::already_held) ||
               (b == acquire_outcome::acquired && a == acquire_outcome::already_held)));
    }
    CHECK(srv.integer({"ZCARD", active}) == 17);
}

TEST_CASE("async redis: calls made while replies are handed out go out a few together, not one by one") {
    test::redis_server srv;
    test::io_thread io;
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url())), test::small_config(40),
                    {callguard::null_sink(), {}});
    // Warm: the connection and both scripts.
    REQUIRE(acquire_batch(io, l, 8, "CA-h").outcomes.size() == 8);
    REQUIRE(all_at_once<bool>(io, 1, [&](int, auto h) { callguard::async_release(l, "CA-warm", h); }).at(0).size() == 1);

    // One acquire's handler (run inline, while its reply is handed out) releases the 8 held
    // calls: the first 4 go out together as soon as they are queued (one write, one script
    // call), the other 4 together after them; none alone.
    struct seen {
        std::uint64_t writes = 0, batched = 0; // during the releases
        std::vector<bool> freed;
    };
    auto s = std::make_shared<seen>();
    auto done = std::make_shared<std::promise<void>>();
    asio::post(io.context(), [&l, s, done] {
        callguard::async_acquire(l, "CA-trigger", [&l, s, done](callguard::acquire_result) {
            const auto writes = l.backend().round_trips(), batched = l.backend().batched_calls();
            for (int i = 0; i < 8; ++i)
                callguard::async_release(l, "CA-h" + std::to_string(i), [&l, s, done, writes, batched](bool f) {
                    s->freed.push_back(f);
                    if (s->freed.size() < 8) return;
                    s->writes = l.backend().round_trips() - writes;
                    s->batched = l.backend().batched_calls() - batched;
                    done->set_value();
                });
        });
    });
    REQUIRE(done->get_future().wait_for(20s) == std::future_status::ready);
    CHECK(s->writes == 2);
    CHECK(s->batched == 8);
    CHECK(std::count(s->freed.begin(), s->freed.end(), true) == 8);
    CHECK(srv.integer({"ZCARD", "{" + l.backend().options().key_prefix + "}:active"}) == 1); // the trigger
}

TEST_CASE("async redis: a call never passes one queued before it on the same id (release, then acquire again)") {
    test::redis_server srv;
    test::io_thread io;
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url())), test::small_config(1000),
                    {callguard::null_sink(), {}});
    const auto active = "{" + l.backend().options().key_prefix + "}:active";
    // Both scripts loaded first: a script's first call waits for SCRIPT LOAD, and may be passed.
    REQUIRE(acquire_batch(io, l, 1, "CA-warm").outcomes.front() == acquire_outcome::acquired);
    REQUIRE(l.release("CA-warm0"));
    for (int round = 0; round < 10; ++round) {
        const auto x = "CA-x" + std::to_string(round), y = "CA-y" + std::to_string(round);
        REQUIRE(acquire_batch(io, l, 1, x).outcomes.front() == acquire_outcome::acquired); // holds x + "0"
        // One thread, in this order: a lone call (it goes out at once), an acquire of y, then x
        // released and acquired again, then an acquire of z. z travels with y; x's second
        // acquire may not, as that would put it before the release.
        struct seen {
            std::mutex mu;
            std::vector<std::string> order;
            bool freed = false;
            acquire_outcome again{};
        };
        auto got = std::make_shared<seen>();
        auto done = std::make_shared<std::promise<void>>();
        auto left = std::make_shared<std::atomic<int>>(5);
        auto note = [got, done, left](std::string what) {
            {
                std::lock_guard lk(got->mu);
                got->order.push_back(std::move(what));
            }
            if (--*left == 0) done->set_value();
        };
        const auto held = x + "0";
        asio::post(io.context(), [&, note, got] {
            callguard::async_acquire(l, "CA-lone" + std::to_string(round), [note](callguard::acquire_result) { note("lone"); });
            callguard::async_acquire(l, y, [note](callguard::acquire_result) { note("y"); });
            callguard::async_release(l, held, [note, got](bool freed) {
                got->freed = freed;
                note("release");
            });
            callguard::async_acquire(l, held, [note, got](callguard::acquire_result a) {
                got->again = a.outcome;
                note("again");
            });
            callguard::async_acquire(l, "CA-z" + std::to_string(round), [note](callguard::acquire_result) { note("z"); });
        });
        REQUIRE(done->get_future().wait_for(20s) == std::future_status::ready);
        std::lock_guard lk(got->mu);
        CHECK(got->order.size() == 5);
        CHECK(got->freed);
        CHECK(got->again == acquire_outcome::acquired); // not already_held: the release ran first
        CHECK(srv.command({"ZSCORE", active, held}) != "(nil)");
    }
    CHECK(l.backend().batched_calls() > 0);
}

TEST_CASE("async redis: in calls that travel together, an expired slot turned away by its tenant's cap is not counted twice") {
    test::redis_server srv;
    test::io_thread io;
    for (int round = 0; round < 12; ++round) {
        auto o = options(srv.url());
        const auto base = "{" + o.key_prefix + "}";
        // CA-x expired a minute ago (unpurged); CA-z is live, of tenant T (cap 1).
        srv.command({"EVAL",
                     "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000;"
                     "redis.call('ZADD', KEYS[1], now - 60000, 'CA-x', now + 600000, 'CA-z');"
                     "redis.call('ZADD', KEYS[2], now + 600000, 'CA-z'); redis.call('HSET', KEYS[3], 'CA-z', 'T');"
                     "for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, 600000) end; return 1",
                     "3", base + ":active", base + ":tenant:T", base + ":owners"});
        auto cfg = test::small_config(4);
        cfg.tenant_limits = {{"T", 1}};
        redis_limiter l(callguard::redis_backend(io.executor(), o), cfg, {callguard::null_sink(), {}});
        // A lone call goes out at once (CA-z and it: 2 live); the rest queue behind it and travel
        // together: CA-x of T (full: turned away), then three calls for the last two slots.
        const std::vector<std::pair<std::string, std::string>> calls{
            {"CA-lone", ""}, {"CA-x", "T"}, {"CA-a", ""}, {"CA-b", ""}, {"CA-c", ""}};
        auto r = all_at_once<callguard::acquire_result>(io, static_cast<int>(calls.size()), [&](int i, auto h) {
            const auto& c = calls[static_cast<std::size_t>(i)];
            callguard::async_acquire(l, c.first, c.second, h);
        });
        CHECK(r[0].at(0).outcome == acquire_outcome::acquired);
        CHECK(r[1].at(0).outcome == acquire_outcome::rejected);
        CHECK(r[1].at(0).tenant_limited);
        CHECK(r[2].at(0).outcome == acquire_outcome::acquired);
        CHECK(r[3].at(0).outcome == acquire_outcome::acquired);
        CHECK(r[4].at(0).outcome == acquire_outcome::rejected); // the cap is 4: z, lone, a, b
        CHECK(l.status().active_calls == 4);
    }
}

TEST_CASE("async redis: calls that travelled together and were refused as a whole (NOSCRIPT) each handle the answer") {
    test::redis_server srv;
    test::io_thread io;
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url())), test::small_config(1000),
                    {callguard::null_sink(), {}});
    REQUIRE(acquire_batch(io, l, 1, "CA-warm").outcomes.front() == acquire_outcome::acquired);
    for (int round = 0; round < 3; ++round) {
        CHECK(srv.command({"SCRIPT", "FLUSH"}) == "OK"); // the server forgets the scripts
        const auto stem = "CA-n" + std::to_string(round) + "-";
        const auto r = acquire_batch(io, l, 48, stem);
        CHECK(std::count(r.outcomes.begin(), r.outcomes.end(), acquire_outcome::acquired) == 48);
        for (int c : r.calls_per_handler) CHECK(c == 1);
        CHECK(srv.command({"SCRIPT", "FLUSH"}) == "OK");
        auto freed = all_at_once<bool>(io, 48, [&](int i, auto h) {
            callguard::async_release(l, stem + std::to_string(i), h);
        });
        for (auto& f : freed) CHECK(f.at(0));
    }
    CHECK(l.counters().backend_errors == 0);
    CHECK(l.status().backend_healthy);
    CHECK(srv.integer({"ZCARD", "{" + l.backend().options().key_prefix + "}:active"}) == 1);
    CHECK(l.backend().batched_calls() > 0);
}

TEST_CASE("async redis: a connection cut with commands in flight answers every handler once, by the fail mode") {
    test::redis_server srv;
    test::tcp_proxy proxy{srv.port()};
    test::io_thread io;
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(io.executor(), options(proxy.url(), 2000ms)), test::small_config(1000),
                    {logs.sink(), {}});
    REQUIRE(acquire_batch(io, l, 1, "CA-warm").outcomes.front() == acquire_outcome::acquired);
    proxy.set_latency(200ms); // the commands stay in flight long enough to be cut
    std::thread cutter([&] {
        std::this_thread::sleep_for(100ms);
        proxy.cut_replies_after(0);
        proxy.drop_all();
    });
    const auto r = acquire_batch(io, l, 48, "CA-cut");
    cutter.join();
    for (int c : r.calls_per_handler) CHECK(c == 1);
    // The cut broke a connection that had answered before: the commands are sent once more, and
    // that connection is cut as well, so every caller gets the fail mode's answer.
    CHECK(std::count(r.outcomes.begin(), r.outcomes.end(), acquire_outcome::admitted_fail_open) == 48);
    CHECK(logs.count_containing("BACKEND_DOWN") == 1);
    // Back: the proxy passes again, the backend recovers.
    proxy.cut_replies_after(std::size_t(1) << 40);
    proxy.set_latency(0ms);
    CHECK(test::eventually([&] { return acquire_batch(io, l, 1, "CA-back").outcomes.front() == acquire_outcome::acquired; },
                           5s));
}

TEST_CASE("async redis: a frozen server: every handler answers within one timeout") {
    test::redis_server srv;
    test::io_thread io;
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url(), 300ms)), test::small_config(1000),
                    {callguard::null_sink(), {}});
    REQUIRE(acquire_batch(io, l, 1, "CA-warm").outcomes.front() == acquire_outcome::acquired);
    srv.pause();
    const auto r = acquire_batch(io, l, 32, "CA-frozen");
    srv.resume();
    MESSAGE("32 acquires against a frozen server answered in " << ms(r.took) << " ms (timeout 300 ms)");
    for (int c : r.calls_per_handler) CHECK(c == 1);
    CHECK(std::count(r.outcomes.begin(), r.outcomes.end(), acquire_outcome::admitted_fail_open) == 32);
    CHECK(ms(r.took) < 900);
    CHECK(test::eventually([&] { return l.acquire("CA-warm0").outcome == acquire_outcome::already_held; }, 5s));
}

TEST_CASE("async redis: a blocking call on the executor's own thread is refused, not a deadlock") {
    test::redis_server srv;
    test::io_thread io;
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url())), test::small_config(10),
                    {logs.sink(), {}});
    std::promise<acquire_outcome> on_io;
    asio::post(io.context(), [&] { on_io.set_value(l.acquire("CA-blocking").outcome); });
    auto f = on_io.get_future();
    REQUIRE(f.wait_for(5s) == std::future_status::ready);
    CHECK(f.get() == acquire_outcome::admitted_fail_open);
    CHECK(logs.count_containing("would wait for itself") == 1);
    // From another thread, blocking calls wait for the executor and work.
    CHECK(l.acquire("CA-elsewhere").outcome == acquire_outcome::acquired);
    CHECK(l.release("CA-elsewhere"));
}

TEST_CASE("async redis: blocking and async callers share one backend on one connection") {
    test::redis_server srv;
    test::io_thread io(2);
    redis_limiter l(callguard::redis_backend(io.executor(), options(srv.url(), 2000ms)), test::small_config(30),
                    {callguard::null_sink(), {}});
    std::atomic<int> held{0}, over{0};
    auto track = [&](bool admitted) {
        if (!admitted) return;
        if (++held > 30) ++over;
    };
    std::vector<std::thread> blocking;
    for (int t = 0; t < 4; ++t)
        blocking.emplace_back([&, t] {
            for (int i = 0; i < 100; ++i) {
                const auto id = "CA-b" + std::to_string(t) + "-" + std::to_string(i);
                const bool ok = l.acquire(id).outcome == acquire_outcome::acquired;
                track(ok);
                if (ok) {
                    --held;
                    l.release(id);
                }
            }
        });
    auto async_side = io.run([&]() -> asio::awaitable<int> {
        int admitted = 0;
        for (int i = 0; i < 200; ++i) {
            const auto id = "CA-a" + std::to_string(i);
            const callguard::acquire_result r = co_await callguard::async_acquire(l, id, asio::use_awaitable);
            const bool ok = r.outcome == acquire_outcome::acquired;
            track(ok);
            if (ok) {
                ++admitted;
                --held;
                co_await callguard::async_release(l, id, asio::use_awaitable);
            }
        }
        co_return admitted;
    });
    for (auto& t : blocking) t.join();
    CHECK(over.load() == 0);
    CHECK(async_side > 0);
    CHECK(l.status().active_calls == 0);
    CHECK(l.backend().open_connections() == 1);
}
