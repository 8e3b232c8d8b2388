// The circuit breaker's state machine on a clock moved by hand.

#include "support/doubles.hpp"

#include <callguard/detail/circuit_breaker.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using breaker = callguard::detail::basic_circuit_breaker<test::manual_clock>;

TEST_CASE("circuit breaker: closed, every call goes through") {
    test::manual_clock clock;
    breaker b(1000ms, clock);
    CHECK_FALSE(b.is_open());
    for (int i = 0; i < 5; ++i) CHECK(b.allow());
    CHECK(b.last_error().empty());
    CHECK(b.probe_interval() == 1000ms);
}

TEST_CASE("circuit breaker: a failure opens it, one probe per interval, a success closes it") {
    test::manual_clock clock;
    breaker b(1000ms, clock);
    b.record_failure("connection refused");
    CHECK(b.is_open());
    CHECK(b.last_error() == "connection refused");
    CHECK_FALSE(b.allow()); // within the interval: decided without the network

    clock.advance(999ms);
    CHECK_FALSE(b.allow());
    clock.advance(1ms); // the probe is due: exactly one caller gets it
    CHECK(b.allow());
    CHECK_FALSE(b.allow());
    CHECK(b.is_open()); // still open until the probe succeeds

    SUBCASE("the probe succeeds: closed, everyone goes through") {
        b.record_success();
        CHECK_FALSE(b.is_open());
        CHECK(b.allow());
        CHECK(b.allow());
    }
    SUBCASE("the probe fails: the next one is a whole interval after that failure") {
        clock.advance(300ms);
        b.record_failure("timed out");
        CHECK(b.last_error() == "timed out");
        clock.advance(999ms);
        CHECK_FALSE(b.allow());
        clock.advance(1ms);
        CHECK(b.allow());
    }
    SUBCASE("a caller long past the interval still gets one probe, not a burst") {
        clock.advance(10s);
        CHECK(b.allow());
        CHECK_FALSE(b.allow());
        clock.advance(1000ms); // the probe taken above scheduled the next one
        CHECK(b.allow());
    }
}

TEST_CASE("circuit breaker: many threads at a due probe, exactly one goes through") {
    test::manual_clock clock;
    breaker b(50ms, clock);
    b.record_failure("down");
    clock.advance(50ms);
    std::atomic<int> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; ++i)
                if (b.allow()) allowed.fetch_add(1);
        });
    for (auto& t : threads) t.join();
    CHECK(allowed.load() == 1);
}
