// Putting back the slots of calls in progress over a real redis-server: the reinstate script
// (no cap check, one EVALSHA, releases remembered for a while), and the limiter putting back the
// calls it admitted during an outage or that a restarted server lost, at a bounded rate.

#include "../support/doubles.hpp"
#include "../support/probes.hpp"
#include "../support/tcp_proxy.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using callguard::reinstate_outcome;
using callguard::reinstate_state;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;
using clock_type = std::chrono::steady_clock;

namespace {

callguard::slot_request request(std::string_view id, std::int64_t cap, std::string_view tenant = {},
                                std::int64_t tenant_cap = 0) {
    return {id, tenant, cap, tenant_cap, std::chrono::milliseconds(60'000)};
}

} // namespace

TEST_CASE("redis reinstate: no cap check, one EVALSHA, tenant sets and owners kept") {
    test::redis_server srv;
    auto o = test::quick_options(srv, "re");
    callguard::redis_backend b(o);
    REQUIRE(b.try_acquire(request("CA1", 1, "biz1", 1)).state == callguard::slot_state::acquired);
    const auto before = srv.command_calls("evalsha");
    auto r = b.reinstate(request("CA2", 1, "biz1", 1));
    CHECK(r.state == reinstate_state::reinstated);
    CHECK(r.active == 2);
    CHECK(srv.command_calls("evalsha") == before + 1);
    CHECK(srv.integer({"ZCARD", "{re}:active"}) == 2);
    CHECK(srv.integer({"ZCARD", "{re}:tenant:biz1"}) == 2);
    CHECK(srv.command({"HGET", "{re}:owners", "CA2"}) == "biz1");
    CHECK(b.reinstate(request("CA2", 1, "biz1", 1)).state == reinstate_state::already_held);
    CHECK(b.try_acquire(request("CA3", 5, "biz1", 1)).state == callguard::slot_state::rejected_tenant);
    CHECK(b.try_acquire(request("CA3", 2)).state == callguard::slot_state::rejected);
    // The release finds the tenant set through the owners hash, as for an acquired slot.
    CHECK(b.release("CA2").released);
    CHECK(srv.integer({"ZCARD", "{re}:tenant:biz1"}) == 1);
    CHECK(srv.command({"HGET", "{re}:owners", "CA2"}) == "(nil)");
}

TEST_CASE("redis reinstate: a call released lately is not brought back, an acquire starts afresh") {
    test::redis_server srv;
    auto o = test::quick_options(srv, "mem");
    o.release_memory = 700ms;
    callguard::redis_backend b(o);
    REQUIRE(b.try_acquire(request("CA-end", 5)).state == callguard::slot_state::acquired);
    REQUIRE(b.release("CA-end").released);
    CHECK(srv.integer({"HEXISTS", "{mem}:released:current", "CA-end"}) == 1);
    auto r = b.reinstate(request("CA-end", 5));
    CHECK(r.state == reinstate_state::released);
    CHECK(r.active == 0);
    // A release of a call that held nothing (it was admitted during an outage) is remembered too.
    CHECK_FALSE(b.release("CA-never-held").released);
    CHECK(b.reinstate(request("CA-never-held", 5)).state == reinstate_state::released);
    CHECK(srv.integer({"ZCARD", "{mem}:active"}) == 0);
    // A new admission of the same id forgets the release.
    CHECK(b.try_acquire(request("CA-end", 5)).state == callguard::slot_state::acquired);
    CHECK(srv.integer({"HEXISTS", "{mem}:released:current", "CA-end"}) == 0);
    CHECK(b.release("CA-end").released);
    // The memory is bounded in time (the release memory to twice that): the keys expire on
    // their own.
    std::this_thread::sleep_for(1500ms);
    CHECK(b.reinstate(request("CA-never-held", 5)).state == reinstate_state::reinstated);
    CHECK(test::eventually([&] {
        return srv.integer({"EXISTS", "{mem}:released:current", "{mem}:released:previous"}) == 0;
    }, 3s));

    auto off = test::quick_options(srv, "nomem");
    off.release_memory = 0ms;
    callguard::redis_backend none(off);
    REQUIRE(none.try_acquire(request("CA-x", 5)).state == callguard::slot_state::acquired);
    REQUIRE(none.release("CA-x").released);
    CHECK(srv.integer({"EXISTS", "{nomem}:released:current", "{nomem}:released:previous"}) == 0);
    CHECK(none.reinstate(request("CA-x", 5)).state == reinstate_state::reinstated);
    off.release_memory = -1ms;
    CHECK_THROWS_AS(callguard::redis_backend{off}, callguard::config_error);
}

TEST_CASE("redis release memory: two generations, a release remembered for the memory to twice that") {
    test::redis_server srv;
    auto o = test::quick_options(srv, "gen");
    o.release_memory = 1000ms;
    callguard::redis_backend b(o);
    REQUIRE_FALSE(b.release("CA-1").released); // starts a generation that lives 2 s
    REQUIRE_FALSE(b.release("CA-3").released);
    CHECK(srv.integer({"HEXISTS", "{gen}:released:current", "CA-1"}) == 1);
    const auto ttl = srv.integer({"PTTL", "{gen}:released:current"});
    CHECK(ttl > 1000);
    CHECK(ttl <= 2000);
    // Less than the memory left: the next release starts a new generation, the old one is kept.
    std::this_thread::sleep_for(1100ms);
    REQUIRE_FALSE(b.release("CA-2").released);
    CHECK(srv.integer({"HEXISTS", "{gen}:released:previous", "CA-1"}) == 1);
    CHECK(srv.integer({"HEXISTS", "{gen}:released:current", "CA-1"}) == 0);
    CHECK(srv.integer({"HEXISTS", "{gen}:released:current", "CA-2"}) == 1);
    CHECK(srv.integer({"PTTL", "{gen}:released:previous"}) < 1000);
    CHECK(b.reinstate(request("CA-1", 5)).state == reinstate_state::released);
    CHECK(b.reinstate(request("CA-2", 5)).state == reinstate_state::released);
    // An admission forgets a release in either generation.
    REQUIRE(b.try_acquire(request("CA-3", 5)).state == callguard::slot_state::acquired);
    CHECK(srv.integer({"HEXISTS", "{gen}:released:previous", "CA-3"}) == 0);
    // The old generation goes whole at its expiry; the new one lives on.
    CHECK(test::eventually([&] { return srv.integer({"EXISTS", "{gen}:released:previous"}) == 0; }, 3s));
    CHECK(b.reinstate(request("CA-1", 5)).state == reinstate_state::reinstated);
    CHECK(b.reinstate(request("CA-2", 5)).state == reinstate_state::released);
}

TEST_CASE("redis release memory: limiters that remember for different times never shorten each other's memory") {
    test::redis_server srv;
    auto long_o = test::quick_options(srv, "mix");
    long_o.release_memory = 2000ms;
    auto short_o = long_o;
    short_o.release_memory = 200ms;
    callguard::redis_backend long_b(long_o), short_b(short_o);
    REQUIRE_FALSE(long_b.release("CA-long").released); // a generation that lives 4 s
    std::this_thread::sleep_for(2100ms);                // less than 2 s left: the long one would rotate
    REQUIRE_FALSE(short_b.release("CA-short-1").released); // 1.9 s left: goes in the same generation
    REQUIRE_FALSE(long_b.release("CA-long-2").released);   // rotates: CA-long's generation is previous
    CHECK(srv.integer({"HEXISTS", "{mix}:released:previous", "CA-long"}) == 1);
    const auto previous_left = srv.integer({"PTTL", "{mix}:released:previous"});
    CHECK(previous_left > 1000);
    // The short limiter's next releases find less than 200 ms left only once the new generation is
    // near its end; a previous generation still alive is never replaced: the current one grows.
    srv.command({"PEXPIRE", "{mix}:released:current", "100"});
    REQUIRE_FALSE(short_b.release("CA-short-2").released);
    CHECK(srv.integer({"HEXISTS", "{mix}:released:previous", "CA-long"}) == 1);
    CHECK(srv.integer({"PTTL", "{mix}:released:previous"}) <= previous_left);
    CHECK(srv.integer({"HEXISTS", "{mix}:released:current", "CA-long-2"}) == 1);
    CHECK(srv.integer({"HEXISTS", "{mix}:released:current", "CA-short-2"}) == 1);
    CHECK(srv.integer({"PTTL", "{mix}:released:current"}) > 300);
    CHECK(long_b.reinstate(request("CA-long", 5)).state == reinstate_state::released);
    CHECK(long_b.reinstate(request("CA-short-1", 5)).state == reinstate_state::released);
    // A generation that lost its expiry (PERSIST by hand) gets one again with the next release.
    srv.command({"PERSIST", "{mix}:released:current"});
    REQUIRE_FALSE(long_b.release("CA-long-3").released);
    CHECK(srv.integer({"PTTL", "{mix}:released:current"}) > 3000);
}

TEST_CASE("redis acquire: a released id while callers wait keeps the line's order and its release until admitted") {
    test::redis_server srv;
    callguard::redis_backend b(test::quick_options(srv, "both"));
    REQUIRE(b.try_acquire(request("CA-a", 1)).state == callguard::slot_state::acquired);
    callguard::wait_request w{"CA-w", {}, 1, 0, std::chrono::milliseconds(60'000),
                              std::chrono::milliseconds(60'000), true, 0};
    REQUIRE(b.wait_turn(w).state == callguard::wait_state::queued);
    REQUIRE(b.release("CA-a").released);
    // The freed slot goes to the waiter; the turned-away acquire leaves the release remembered.
    CHECK(b.try_acquire(request("CA-a", 1)).state == callguard::slot_state::rejected_queue);
    CHECK(srv.integer({"HEXISTS", "{both}:released:current", "CA-a"}) == 1);
    CHECK(b.reinstate(request("CA-a", 1)).state == reinstate_state::released);
    CHECK(b.wait_turn(w).state == callguard::wait_state::admitted);
    REQUIRE(b.release("CA-w").released);
    CHECK(b.try_acquire(request("CA-a", 1)).state == callguard::slot_state::acquired);
    CHECK(srv.integer({"HEXISTS", "{both}:released:current", "CA-a"}) == 0);
    CHECK(srv.integer({"HEXISTS", "{both}:released:current", "CA-w"}) == 1);
}

TEST_CASE("redis reinstate: a stored expired call comes back afresh, and a waiting-room admission forgets a release") {
    test::redis_server srv;
    auto o = test::quick_options(srv, "old");
    callguard::redis_backend b(o);
    // 150 slots that expired a minute ago, the newest of them CA-old of tenant bizA: one script
    // purges 100 of them, oldest first, so CA-old is still stored when it is put back.
    srv.command({"EVAL",
                 "local t = redis.call('TIME'); local past = tonumber(t[1]) * 1000 - 60000;"
                 "for i = 1, 149 do redis.call('ZADD', KEYS[1], past - 1000 + i, 'CA-dead-' .. i) end;"
                 "redis.call('ZADD', KEYS[1], past, 'CA-old'); redis.call('ZADD', KEYS[2], past, 'CA-old');"
                 "redis.call('HSET', KEYS[3], 'CA-old', 'bizA');"
                 "for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, 600000) end; return 1",
                 "3", "{old}:active", "{old}:tenant:bizA", "{old}:owners"});
    auto r = b.reinstate(request("CA-old", 1, "bizB"));
    CHECK(r.state == reinstate_state::reinstated);
    CHECK(r.active == 1); // the expired ones never count
    CHECK(srv.integer({"ZCARD", "{old}:active"}) == 50); // 100 purged, 49 expired left + CA-old
    CHECK(srv.integer({"ZCARD", "{old}:tenant:bizA"}) == 0);
    CHECK(srv.integer({"ZCARD", "{old}:tenant:bizB"}) == 1);
    CHECK(srv.command({"HGET", "{old}:owners", "CA-old"}) == "bizB");
    CHECK(b.reinstate(request("CA-old", 1, "bizB")).state == reinstate_state::already_held);
    CHECK(srv.integer({"ZCARD", "{old}:active"}) == 1); // that one purged the other 49
    CHECK(b.cleanup_expired() == 0);
    CHECK(b.active_count() == 1);

    // A call released lately, then admitted through the waiting room, can be put back again.
    REQUIRE(b.release("CA-old").released);
    REQUIRE(b.reinstate(request("CA-old", 1)).state == reinstate_state::released);
    callguard::wait_request w{"CA-old", {}, 1, 0, std::chrono::milliseconds(60'000),
                              std::chrono::milliseconds(60'000), true, 0};
    CHECK(b.wait_turn(w).state == callguard::wait_state::acquired);
    CHECK(srv.integer({"HEXISTS", "{old}:released:current", "CA-old"}) == 0);
    REQUIRE(srv.integer({"ZREM", "{old}:active", "CA-old"}) == 1); // the slot is lost behind its back
    CHECK(b.reinstate(request("CA-old", 1)).state == reinstate_state::reinstated);
    CHECK(b.active_count() == 1);
}

TEST_CASE("redis: 1000 calls admitted during an outage go back at the configured rate, not at once") {
    test::redis_server srv;
    test::capture_sink logs;
    auto cfg = test::small_config(5);
    cfg.log_level = callguard::log_level::warning;
    REQUIRE(cfg.reinstate_per_second == 500); // the default
    redis_limiter l(callguard::redis_backend(test::quick_options(srv, "thousand")), cfg, {logs.sink(), {}});
    REQUIRE(l.acquire("CA-before").outcome == acquire_outcome::acquired);
    srv.kill_hard();
    constexpr int calls = 1000;
    for (int i = 0; i < calls; ++i)
        REQUIRE(l.acquire("CA-out-" + std::to_string(i)).outcome == acquire_outcome::admitted_fail_open);
    for (int i = 0; i < calls; i += 10) l.release("CA-out-" + std::to_string(i)); // 100 ended meanwhile
    CHECK(l.reinstate_pending() == calls - calls / 10);
    srv.restart();

    // Sample the server's script count every 100 ms while the slots go back.
    std::vector<std::pair<clock_type::time_point, long long>> samples;
    const auto t0 = clock_type::now();
    while (clock_type::now() - t0 < 10s) {
        samples.emplace_back(clock_type::now(), srv.command_calls("evalsha"));
        if (l.reinstate_pending() == 0) break;
        std::this_thread::sleep_for(100ms);
    }
    samples.emplace_back(clock_type::now(), srv.command_calls("evalsha"));
    REQUIRE(l.reinstate_pending() == 0);
    // The most scripts seen in one sample, scaled to 100 ms (a sample may oversleep): in the
    // first busy sample, and in every later one.
    long long first = -1, worst = 0;
    for (std::size_t i = 1; i < samples.size(); ++i) {
        const auto ms = std::max<long long>(
            100, std::chrono::duration_cast<std::chrono::milliseconds>(samples[i].first - samples[i - 1].first).count());
        const auto per_100ms = (samples[i].second - samples[i - 1].second) * 100 / ms;
        if (first < 0 && per_100ms > 0) first = per_100ms;
        else worst = std::max(worst, per_100ms);
    }
    const auto first_busy = std::find_if(samples.begin(), samples.end(), [](auto& s) { return s.second > 0; });
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(samples.back().first - first_busy->first);
    std::printf("\nreinstatement of %d calls after a restart: %lld ms; scripts per 100 ms: %lld in the first "
                "sample, at most %lld after\n",
                calls - calls / 10, static_cast<long long>(took.count()), first, worst);
    std::fflush(stdout);
    // 500/s is 50 per 100 ms, in batches of 25 every 50 ms; the first busy sample also carries
    // the 100 releases made during the outage, replayed (64 per successful call) as Redis answers.
    CHECK(first <= 100 + calls / 10);
    CHECK(worst <= 100);
    CHECK(took >= 1400ms);        // 900 at 500/s: about 1.8 s
    // Every live call counted, over the cap (the 900 and CA-before, whose slot the restart
    // lost); none of the ended ones came back.
    constexpr int live = calls - calls / 10 + 1;
    CHECK(srv.integer({"ZCARD", "{thousand}:active"}) == live);
    CHECK(srv.command({"ZSCORE", "{thousand}:active", "CA-before"}) != "(nil)");
    CHECK(srv.command({"ZSCORE", "{thousand}:active", "CA-out-0"}) == "(nil)");
    CHECK(srv.command({"ZSCORE", "{thousand}:active", "CA-out-1"}) != "(nil)");
    auto st = l.status();
    CHECK(st.active_calls == live);
    CHECK(st.at_capacity);
    CHECK(st.capacity_available == 0);
    CHECK(callguard::to_json(st).find("\"active_calls\":901,\"max_calls\":5") != std::string::npos);
    CHECK(l.acquire("CA-new").outcome == acquire_outcome::rejected);
    CHECK(logs.count_containing("[CAPACITY] REINSTATED call_id=CA-out-1 active_calls=") == 1);
    CHECK(l.counters().reinstated == live);
    CHECK(logs.count_containing("[CAPACITY] BACKEND_DATA_LOST backend=redis resets=1") == 1);
}

TEST_CASE("redis: after a restart that lost every slot, the calls this limiter holds are put back") {
    test::redis_server srv;
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(test::quick_options(srv, "lost")), test::small_config(3),
                    {logs.sink(), {}});
    for (auto id : {"CA1", "CA2", "CA3"}) REQUIRE(l.acquire(id).outcome == acquire_outcome::acquired);
    REQUIRE(l.release("CA3"));
    srv.kill_hard();
    srv.restart(); // empty, and no call was made in between: nothing was admitted without it
    REQUIRE(test::eventually([&] { return l.status().backend_healthy; }, 5s));
    CHECK(test::eventually([&] { return srv.integer({"ZCARD", "{lost}:active"}) == 2; }, 3s));
    CHECK(logs.count_containing("[CAPACITY] BACKEND_DATA_LOST backend=redis resets=1") == 1);
    CHECK(logs.count_containing("[CAPACITY] REINSTATED call_id=CA1 active_calls=") == 1);
    CHECK(logs.count_containing("[CAPACITY] REINSTATED call_id=CA2 active_calls=") == 1);
    CHECK(srv.command({"ZSCORE", "{lost}:active", "CA3"}) == "(nil)");
    CHECK(l.status().active_calls == 2);
    CHECK(l.acquire("CA4").outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA5").outcome == acquire_outcome::rejected);
}

TEST_CASE("redis: a call ended through another instance during the outage is not brought back") {
    test::redis_server srv;
    // Instance a reaches Redis through a proxy, so the test decides when it sees Redis again.
    test::tcp_proxy proxy(srv.port());
    auto cfg = test::small_config(5);
    test::capture_sink logs_a;
    redis_limiter a(callguard::redis_backend(test::quick_options(proxy.url(), "cross")), cfg, {logs_a.sink(), {}});
    redis_limiter b(callguard::redis_backend(test::quick_options(srv, "cross")), cfg);
    REQUIRE(a.acquire("CA-warm").outcome == acquire_outcome::acquired);
    REQUIRE(a.release("CA-warm"));
    srv.kill_hard();
    // Both calls are admitted on a during the outage; both end through b (the status callback
    // went to the other instance), whose releases fail and wait for replay.
    REQUIRE(a.acquire("CA-early").outcome == acquire_outcome::admitted_fail_open);
    REQUIRE(a.acquire("CA-late").outcome == acquire_outcome::admitted_fail_open);
    REQUIRE(a.acquire("CA-live").outcome == acquire_outcome::admitted_fail_open);
    b.release("CA-early");
    b.release("CA-late");
    CHECK(b.backend().pending_releases() == 2);
    proxy.set_mode(test::tcp_proxy::mode::blackhole);
    srv.restart();

    SUBCASE("the replayed release comes first: the reinstatement is refused") {
        REQUIRE(test::eventually([&] { return b.status().backend_healthy && b.backend().pending_releases() == 0; }, 5s));
        proxy.set_mode(test::tcp_proxy::mode::pass);
        proxy.drop_all();
        REQUIRE(test::eventually([&] { return a.reinstate_pending() == 0; }, 5s));
        CHECK(logs_a.count_containing("[CAPACITY] REINSTATE_SKIPPED call_id=CA-early reason=released") == 1);
        CHECK(logs_a.count_containing("[CAPACITY] REINSTATE_SKIPPED call_id=CA-late reason=released") == 1);
    }
    SUBCASE("the reinstatement comes first: the replayed release removes the slot") {
        proxy.set_mode(test::tcp_proxy::mode::pass);
        proxy.drop_all();
        REQUIRE(test::eventually([&] { return a.reinstate_pending() == 0; }, 5s));
        CHECK(srv.integer({"ZCARD", "{cross}:active"}) == 3);
        REQUIRE(test::eventually([&] { return b.status().backend_healthy && b.backend().pending_releases() == 0; }, 5s));
    }
    CHECK(srv.integer({"ZCARD", "{cross}:active"}) == 1);
    CHECK(srv.command({"ZSCORE", "{cross}:active", "CA-live"}) != "(nil)");
    CHECK(a.status().active_calls == 1);
}

TEST_CASE("redis: a frozen server: calls admitted meanwhile are put back when it resumes") {
    test::redis_server srv;
    auto cfg = test::small_config(2);
    redis_limiter l(callguard::redis_backend(test::quick_options(srv, "frozen")), cfg);
    REQUIRE(l.acquire("CA-held").outcome == acquire_outcome::acquired);
    srv.pause();
    for (int i = 0; i < 4; ++i) REQUIRE(l.acquire("CA-f" + std::to_string(i)).admitted());
    // Calls that start and end during the freeze are never put back.
    for (int i = 0; i < 5; ++i) {
        CHECK(l.acquire("CA-g" + std::to_string(i)).outcome == acquire_outcome::admitted_fail_open);
        l.release("CA-g" + std::to_string(i));
    }
    std::this_thread::sleep_for(600ms); // the limiter's thread probes the frozen server meanwhile
    srv.resume();
    CHECK(test::eventually([&] { return l.reinstate_pending() == 0 && l.status().active_calls == 5; }, 5s));
    CHECK(srv.integer({"ZCARD", "{frozen}:active"}) == 5); // CA-held survived, 4 put back
    CHECK(l.acquire("CA-new").outcome == acquire_outcome::rejected);
}
