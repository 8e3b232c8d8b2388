// Faults between the limiter and Redis, made by a real TCP proxy on loopback (and by Redis
// itself): latency past the timeout, a black hole, replies cut in the middle, connections killed
// by the server, memory exhausted. Each case checks the answer came within the timeout, the
// fail mode decided, and the limiter recovered without leaking connections.

#include "../support/doubles.hpp"
#include "../support/probes.hpp"
#include "../support/tcp_proxy.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>


#include <thread>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;
using clock_type = std::chrono::steady_clock;

namespace {

struct proxied {
    test::redis_server server;
    test::tcp_proxy proxy{server.port()};
    test::capture_sink logs;
    std::string prefix = test::unique_prefix("fault");
    redis_limiter limiter;

    explicit proxied(std::int64_t cap = 3)
        : limiter(callguard::redis_backend(options()), test::small_config(cap), {logs.sink(), {}}) {}

    callguard::redis_options options() {
        auto o = callguard::redis_options::from_url(proxy.url());
        o.key_prefix = prefix;
        o.connect_timeout = o.command_timeout = 200ms;
        o.probe_interval = 300ms;
        o.on_warning = [](std::string_view) {};
        return o;
    }

    callguard::acquire_result timed_acquire(const std::string& id, clock_type::duration& took) {
        auto t0 = clock_type::now();
        auto r = limiter.acquire(id);
        took = clock_type::now() - t0;
        return r;
    }

    bool wait_healthy(std::chrono::milliseconds limit = 5s) {
        auto deadline = clock_type::now() + limit;
        while (clock_type::now() < deadline) {
            if (limiter.status().backend_healthy) return true;
            std::this_thread::sleep_for(50ms);
        }
        return false;
    }

    long long stored() { return server.integer({"ZCARD", "{" + prefix + "}:active"}); }
};

} // namespace

TEST_CASE("faults: latency beyond the timeout fails open within one timeout, then recovers") {
    proxied p;
    REQUIRE(p.limiter.acquire("CA-1").outcome == acquire_outcome::acquired);
    p.proxy.set_latency(400ms); // each way: far past the 200 ms timeout
    clock_type::duration took{};
    CHECK(p.timed_acquire("CA-2", took).outcome == acquire_outcome::admitted_fail_open);
    CHECK(took < 450ms);
    for (int i = 0; i < 20; ++i) {
        CHECK(p.timed_acquire("CA-x" + std::to_string(i), took).outcome == acquire_outcome::admitted_fail_open);
        CHECK(took < 350ms); // at most the one probe pays a timeout (200 ms); most pay nothing
    }
    p.proxy.set_latency(0ms);
    REQUIRE(p.wait_healthy());
    CHECK(p.limiter.acquire("CA-1").outcome == acquire_outcome::already_held);
    CHECK(p.limiter.acquire("CA-3").outcome == acquire_outcome::acquired);
    CHECK(p.limiter.backend().open_connections() <= 4);
}

TEST_CASE("faults: a black hole (connections accepted, nothing answered) costs one timeout") {
    proxied p;
    REQUIRE(p.limiter.acquire("CA-1").admitted());
    p.proxy.set_mode(test::tcp_proxy::mode::blackhole);
    p.proxy.drop_all(); // pooled connections die; new ones go into the hole
    clock_type::duration took{};
    CHECK(p.timed_acquire("CA-2", took).outcome == acquire_outcome::admitted_fail_open);
    CHECK(took < 700ms); // reused connection: reset at once; a fresh one: one 200 ms timeout
    CHECK(p.timed_acquire("CA-3", took).outcome == acquire_outcome::admitted_fail_open);
    CHECK(took < 150ms); // the breaker answers: no 200 ms timeout paid
    p.proxy.set_mode(test::tcp_proxy::mode::pass);
    REQUIRE(p.wait_healthy());
    CHECK(p.limiter.acquire("CA-4").outcome == acquire_outcome::acquired);
}

TEST_CASE("faults: replies cut in the middle never hand a caller someone else's reply") {
    proxied p(5);
    p.proxy.cut_replies_after(3); // every connection dies 3 bytes into the server's answer
    for (int i = 0; i < 5; ++i) {
        auto r = p.limiter.acquire("CA-cut-" + std::to_string(i));
        CHECK(r.outcome == acquire_outcome::admitted_fail_open);
        std::this_thread::sleep_for(320ms); // let the breaker probe again
    }
    p.proxy.cut_replies_after(std::size_t(1) << 40);
    p.proxy.drop_all();
    REQUIRE(p.wait_healthy());
    // Whatever ran on the server before the cuts, every answer now matches its own request.
    const auto before = p.stored();
    for (int i = 0; i < 5; ++i) {
        auto r = p.limiter.acquire("CA-cut-" + std::to_string(i));
        CHECK((r.outcome == acquire_outcome::acquired || r.outcome == acquire_outcome::already_held));
    }
    CHECK(p.stored() == 5);
    CHECK(before <= 5);
    for (int i = 0; i < 5; ++i) CHECK(p.limiter.release("CA-cut-" + std::to_string(i)));
    CHECK(p.stored() == 0);
}

TEST_CASE("faults: CLIENT KILL of our connections is absorbed without a fail-open") {
    test::redis_server srv;
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(test::quick_options(srv, "kill")), test::small_config(3),
                    {logs.sink(), {}});
    REQUIRE(l.acquire("CA-1").outcome == acquire_outcome::acquired);
    for (int round = 0; round < 3; ++round) {
        srv.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
        auto id = "CA-k" + std::to_string(round);
        CHECK(l.acquire(id).outcome == acquire_outcome::acquired); // a fresh connection, retried once
        CHECK(l.release(id));
    }
    CHECK(logs.count_containing("BACKEND_DOWN") == 0);
    CHECK(l.counters().admitted_fail_open == 0);
}

TEST_CASE("faults: maxmemory with noeviction (OOM errors) fails open and recovers") {
    test::redis_server srv({"--maxmemory-policy", "noeviction"});
    auto o = test::quick_options(srv, "oom");
    redis_limiter l(callguard::redis_backend(o), test::small_config(100000), {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-before").outcome == acquire_outcome::acquired);
    // Put the server over its limit: every write is refused with -OOM from now on.
    std::string blob(64 * 1024, 'x');
    for (int i = 0; i < 32; ++i) srv.command({"SET", "filler:" + std::to_string(i), blob});
    REQUIRE(srv.command({"CONFIG", "SET", "maxmemory", "1mb"}) == "OK");
    REQUIRE(srv.command({"SET", "probe", "x"}).rfind("ERROR: OOM", 0) == 0);
    auto r = l.acquire("CA-oom");
    CHECK(r.outcome == acquire_outcome::admitted_fail_open);
    CHECK_FALSE(l.status().backend_healthy);
    REQUIRE(srv.command({"CONFIG", "SET", "maxmemory", "0"}) == "OK"); // the operator raises it
    bool healthy = false;
    for (int i = 0; i < 100 && !healthy; ++i) {
        std::this_thread::sleep_for(50ms);
        healthy = l.status().backend_healthy;
    }
    CHECK(healthy);
    CHECK(l.acquire("CA-oom").outcome == acquire_outcome::acquired);
}

TEST_CASE("faults: a password set while running turns into a degraded status, not a crash") {
    test::redis_server srv;
    auto o = test::quick_options(srv, "auth");
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(o), test::small_config(3), {logs.sink(), {}});
    REQUIRE(l.acquire("CA-1").outcome == acquire_outcome::acquired);
    // Our connections are dropped, then a password appears: reconnecting needs it.
    srv.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
    REQUIRE(srv.command({"CONFIG", "SET", "requirepass", "now-secret"}) == "OK");
    CHECK(l.acquire("CA-2").outcome == acquire_outcome::admitted_fail_open);
    CHECK_FALSE(l.status().backend_healthy);
    CHECK(logs.count_containing("BACKEND_DOWN") == 1);
    std::string all;
    for (const auto& line : logs.snapshot()) all += line.text + "\n";
    CAPTURE(all);
    CHECK(logs.count_containing("NOAUTH") == 1);
}

TEST_CASE("faults: repeated outages leak no file descriptors or connections") {
    proxied p;
    REQUIRE(p.limiter.acquire("CA-warm").admitted());
    const auto fds_before = test::open_fds();
    for (int round = 0; round < 5; ++round) {
        p.proxy.drop_all();
        p.proxy.set_mode(test::tcp_proxy::mode::stall);
        p.limiter.acquire("CA-r" + std::to_string(round));
        p.proxy.set_mode(test::tcp_proxy::mode::pass);
        p.proxy.drop_all();
        REQUIRE(p.wait_healthy());
        p.limiter.release("CA-r" + std::to_string(round));
    }
    CHECK(p.limiter.backend().open_connections() <= 4);
    // The proxy closes the connections it cut on its own thread: wait (bounded) for it.
    CHECK(test::eventually([&] { return test::open_fds() <= fds_before + 4; }, 5s));
}
