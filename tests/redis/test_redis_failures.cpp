// Real failures of a real redis-server: killed, frozen, restarted, wrong password, wrong db,
// an eviction policy that could reset the cap. The limiter must keep answering, quickly.

#include "../support/doubles.hpp"
#include "../support/probes.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <thread>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;
using clock_type = std::chrono::steady_clock;

namespace {

struct rig {
    test::redis_server server;
    test::capture_sink logs;
    std::string prefix = test::unique_prefix("fail");
    redis_limiter limiter;

    explicit rig(callguard::fail_mode mode = callguard::fail_mode::open, std::int64_t cap = 3,
                 callguard::redis_connection_mode conn = callguard::redis_connection_mode::multiplexed)
        : limiter(callguard::redis_backend(options(server, prefix, conn)), config(mode, cap),
                  {logs.sink(), {}}) {}

    static callguard::redis_options options(const test::redis_server& s, const std::string& prefix,
                                            callguard::redis_connection_mode conn) {
        auto o = test::quick_options(s, prefix);
        o.connection_mode = conn;
        return o;
    }

    static callguard::limiter_config config(callguard::fail_mode mode, std::int64_t cap) {
        auto c = test::small_config(cap);
        c.fail_mode = mode;
        return c;
    }
};

template <class F>
clock_type::duration timed(F&& f) {
    auto t0 = clock_type::now();
    f();
    return clock_type::now() - t0;
}

/// Waits (bounded) until the limiter's backend answers again.
template <class L>
bool wait_healthy(L& l, std::chrono::milliseconds limit = 5s) {
    auto deadline = clock_type::now() + limit;
    while (clock_type::now() < deadline) {
        if (l.status().backend_healthy) return true;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

} // namespace

TEST_CASE("redis killed: fail-open at once, degraded status, one log line per transition") {
    rig r;
    REQUIRE(r.limiter.acquire("CA-before").outcome == acquire_outcome::acquired);
    r.server.kill_hard();
    for (int i = 0; i < 20; ++i) {
        callguard::acquire_result res;
        auto took = timed([&] { res = r.limiter.acquire("CA-down-" + std::to_string(i)); });
        CHECK(res.outcome == acquire_outcome::admitted_fail_open);
        CHECK(took < 400ms); // refused connections fail fast; never more than one timeout
    }
    auto st = r.limiter.status();
    CHECK_FALSE(st.backend_healthy);
    CHECK(callguard::to_json(st).find("\"status\":\"degraded\"") != std::string::npos);
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_DOWN backend=redis") == 1);
    CHECK(r.limiter.counters().admitted_fail_open == 20);

    // Back (empty, like a restarted server without persistence): healthy again, logged once.
    r.server.restart();
    REQUIRE(wait_healthy(r.limiter));
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_UP backend=redis") == 1);
    // The old slot was lost with the dataset, and the limiter says so: once, in the log, the
    // status JSON and the backend's count. The 21 calls still in progress (CA-before and the
    // 20 admitted fail-open) are put back, over the cap of 3, so a new call waits.
    REQUIRE(test::eventually([&] { return r.limiter.reinstate_pending() == 0; }, 5s));
    auto after = r.limiter.status();
    CHECK(after.active_calls == 21);
    CHECK(after.at_capacity);
    CHECK(r.limiter.acquire("CA-after").outcome == acquire_outcome::rejected);
    CHECK(after.backend_resets == 1);
    CHECK(callguard::to_json(after).find("\"backend_resets\":1") != std::string::npos);
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_DATA_LOST backend=redis resets=1") == 1);
    CHECK(r.limiter.backend().data_resets() == 1);
}

TEST_CASE("redis: a flushed dataset is reported at the next reconnect, dropped connections are not") {
    rig r;
    REQUIRE(r.limiter.acquire("CA-held").outcome == acquire_outcome::acquired);
    // Connections dropped, data kept: no reset.
    r.server.command({"CLIENT", "KILL", "TYPE", "normal"});
    CHECK(r.limiter.acquire("CA-second").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.status().backend_resets == 0);
    // Data gone, then connections dropped (a restart does both): one reset, logged once.
    r.server.command({"FLUSHALL"});
    r.server.command({"CLIENT", "KILL", "TYPE", "normal"});
    CHECK(r.limiter.acquire("CA-third").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.status().backend_resets == 1);
    CHECK(r.logs.count_containing("BACKEND_DATA_LOST") == 1);
    // The two calls whose slots were flushed are put back by the limiter's own thread.
    CHECK(test::eventually([&] { return r.limiter.status().active_calls == 3; }, 3s));
    // A second backend that never saw the old marker has nothing to report.
    callguard::redis_backend fresh(test::quick_options(r.server, r.prefix));
    CHECK(fresh.active_count() == 3);
    CHECK(fresh.data_resets() == 0);
}

TEST_CASE("redis frozen (SIGSTOP): the first call waits one timeout, the next ones none") {
    rig r;
    REQUIRE(r.limiter.acquire("CA-1").admitted());
    r.server.pause();
    auto first = timed([&] {
        CHECK(r.limiter.acquire("CA-2").outcome == acquire_outcome::admitted_fail_open);
    });
    CHECK(first >= 150ms);  // it really waited for the frozen server...
    CHECK(first < 700ms);   // ...but only about one 200 ms timeout
    for (int i = 0; i < 50; ++i) {
        auto next = timed([&] {
            CHECK(r.limiter.acquire("CA-n" + std::to_string(i)).outcome ==
                  acquire_outcome::admitted_fail_open);
        });
        CHECK(next < 150ms); // the breaker answers without the network (no 200 ms timeout)
    }
    CHECK_FALSE(r.limiter.status().backend_healthy);
    r.server.resume();
    REQUIRE(wait_healthy(r.limiter));
    CHECK(r.limiter.acquire("CA-1").outcome == acquire_outcome::already_held);
}

TEST_CASE("redis down: releases are kept and replayed when it answers again") {
    rig r(callguard::fail_mode::open, 2);
    REQUIRE(r.limiter.acquire("CA-a").outcome == acquire_outcome::acquired);
    REQUIRE(r.limiter.acquire("CA-b").outcome == acquire_outcome::acquired);
    r.server.pause();
    CHECK_FALSE(r.limiter.release("CA-a")); // could not reach Redis: kept for replay
    CHECK_FALSE(r.limiter.release("CA-b"));
    CHECK_FALSE(r.limiter.release("CA-a")); // deduplicated
    CHECK(r.limiter.backend().pending_releases() == 2);
    r.server.resume();
    REQUIRE(wait_healthy(r.limiter));
    // The next successful call replays them: both slots are free without waiting for the TTL.
    CHECK(r.limiter.acquire("CA-c").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.backend().pending_releases() == 0);
    CHECK(r.server.integer({"ZCARD", "{" + r.prefix + "}:active"}) == 1);
    CHECK(r.limiter.acquire("CA-d").outcome == acquire_outcome::acquired);
}

TEST_CASE("redis down with fail_mode closed and local") {
    SUBCASE("closed rejects") {
        rig r(callguard::fail_mode::closed);
        r.server.kill_hard();
        CHECK(r.limiter.acquire("CA-x").outcome == acquire_outcome::rejected_fail_closed);
    }
    SUBCASE("local enforces the in-process cap") {
        rig r(callguard::fail_mode::local, 2);
        r.server.kill_hard();
        CHECK(r.limiter.acquire("CA-1").outcome == acquire_outcome::acquired);
        CHECK(r.limiter.acquire("CA-2").outcome == acquire_outcome::acquired);
        CHECK(r.limiter.acquire("CA-3").outcome == acquire_outcome::rejected);
        CHECK(r.limiter.release("CA-1"));
        CHECK(r.limiter.acquire("CA-3").outcome == acquire_outcome::acquired);
    }
}

TEST_CASE("redis: a wrong password or db index is a clear, logged error and a degraded status") {
    test::redis_server srv({"--requirepass", "right-pass"});
    auto run = [&](const std::string& url, const char* expect) {
        auto o = callguard::redis_options::from_url(url);
        o.on_warning = [](std::string_view) {};
        test::capture_sink logs;
        redis_limiter l(callguard::redis_backend(o), test::small_config(2), {logs.sink(), {}});
        CHECK(l.acquire("CA-auth").outcome == acquire_outcome::admitted_fail_open);
        CHECK_FALSE(l.status().backend_healthy);
        CAPTURE(url);
        CHECK(logs.count_containing(expect) == 1);
    };
    const auto port = std::to_string(srv.port());
    run("redis://:wrong-pass@127.0.0.1:" + port, "AUTH refused");
    run("redis://127.0.0.1:" + port, "NOAUTH");
    run("redis://:right-pass@127.0.0.1:" + port + "/99999", "SELECT 99999 refused");

    auto o = callguard::redis_options::from_url("redis://:right-pass@127.0.0.1:" + port + "/1");
    redis_limiter ok(callguard::redis_backend(o), test::small_config(2), {callguard::null_sink(), {}});
    CHECK(ok.acquire("CA-auth").outcome == acquire_outcome::acquired);
    CHECK(ok.status().backend_healthy);
}

TEST_CASE("redis: an eviction policy that could drop our keys is warned about once") {
    test::redis_server srv({"--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"});
    std::vector<std::string> warnings;
    auto o = callguard::redis_options::from_url(srv.url());
    o.on_warning = [&](std::string_view w) { warnings.emplace_back(w); };
    redis_limiter l(callguard::redis_backend(o), test::small_config(2), {callguard::null_sink(), {}});
    l.acquire("CA-1");
    l.acquire("CA-2");
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("allkeys-lru") != std::string::npos);
}

TEST_CASE("redis: connections are pooled, bounded and re-made after a restart") {
    rig r(callguard::fail_mode::open, 3, callguard::redis_connection_mode::pooled);
    std::vector<std::thread> pool;
    for (int t = 0; t < 8; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < 50; ++i) {
                auto id = "CA-p" + std::to_string(t) + "-" + std::to_string(i);
                if (r.limiter.acquire(id)) r.limiter.release(id);
            }
        });
    for (auto& th : pool) th.join();
    CHECK(r.limiter.backend().open_connections() <= 4);
    r.server.kill_hard();
    r.limiter.acquire("CA-down");
    CHECK(r.limiter.backend().open_connections() == 0); // dead connections are not kept
    r.server.restart();
    REQUIRE(wait_healthy(r.limiter));
    CHECK(r.limiter.backend().open_connections() >= 1);
    CHECK(r.limiter.backend().open_connections() <= 4);
}
