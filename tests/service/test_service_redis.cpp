// Two service instances sharing one real redis-server: one cap across the fleet, and a Redis
// outage that callers never notice beyond a degraded health status.

#include "../support/redis_server.hpp"
#include "service_harness.hpp"

#include <atomic>
#include <future>

using svc::service;
using namespace std::chrono_literals;

TEST_CASE("fleet: a burst over two instances sharing Redis admits exactly the cap") {
    test::redis_server redis;
    std::map<std::string, std::string> env{{"REDIS_URL", redis.url()}, {"MAX_ACTIVE_CALLS", "7"},
                                           {"CALLS_REDIS_KEY_PREFIX", "fleet"}};
    service a(env), b(env);
    std::atomic<int> admitted{0}, rejected{0}, other{0};
    std::vector<std::future<void>> calls;
    for (int i = 0; i < 40; ++i)
        calls.push_back(std::async(std::launch::async, [&, i] {
            const service& s = (i % 2) ? a : b;
            auto r = s.incoming_call("CA-burst-" + std::to_string(i));
            if (r.status != 200) ++other;
            else if (r.body.find("<Connect>") != std::string::npos) ++admitted;
            else if (r.body.find("<Say") != std::string::npos) ++rejected;
            else ++other;
        }));
    for (auto& c : calls) c.get();
    CHECK(admitted == 7);
    CHECK(rejected == 33);
    CHECK(other == 0);
    CHECK(a.active() == 7);
    CHECK(b.active() == 7);
    CHECK(redis.integer({"ZCARD", "{fleet}:active"}) == 7);

    // The webhook went to a, the stream to b, the status callback to a: one slot, one release.
    // Take one admitted call (whichever it was) and retry its webhook on a: already held.
    auto members = redis.command({"ZRANGE", "{fleet}:active", "0", "0"});
    REQUIRE(a.incoming_call(members).body.find("<Connect>") != std::string::npos);
    svc::media_client m(b);
    m.start(members);
    m.media(1);
    REQUIRE(b.wait_adopted(1)); // b has taken the stream's start: the slot is adopted, not taken
    CHECK(a.active() == 7);
    m.stop(members);
    CHECK(a.wait_active(6));
    CHECK(a.call_status(members, "completed").status == 204);
    CHECK(b.active() == 6);
}

TEST_CASE("fleet: Redis killed, calls still answered and health degraded, back, health ok") {
    test::redis_server redis;
    service s({{"REDIS_URL", redis.url()}, {"MAX_ACTIVE_CALLS", "2"}, {"CALLS_REDIS_TIMEOUT_MS", "200"}});
    CHECK(s.health_field("status") == "ok");
    CHECK(s.health_field("backend") == "redis");
    redis.kill_hard();
    for (int i = 0; i < 5; ++i) { // over the cap, yet admitted: fail-open
        auto t0 = std::chrono::steady_clock::now();
        auto r = s.incoming_call("CA-down-" + std::to_string(i));
        CHECK(r.status == 200);
        CHECK(r.body.find("<Connect>") != std::string::npos);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(600));
    }
    CHECK(s.health_field("status") == "degraded");
    CHECK(s.get("/metrics").body.find("callguard_backend_healthy 0\n") != std::string::npos);
    CHECK(s.log().find("[CAPACITY] BACKEND_DOWN backend=redis") != std::string::npos);
    redis.restart();
    bool ok = false;
    for (int i = 0; i < 100 && !ok; ++i) {
        ok = s.health_field("status") == "ok";
        if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(ok);
    CHECK(s.log().find("[CAPACITY] BACKEND_UP backend=redis") != std::string::npos);
    // The 5 calls admitted during the outage are still in progress (no status callback came):
    // they count again, over the cap of 2, so a new call is turned away.
    CHECK(s.wait_active(5, std::chrono::seconds(5)));
    CHECK(s.incoming_call("CA-up").body.find("<Say") != std::string::npos);
    for (int i = 0; i < 4; ++i) CHECK(s.call_status("CA-down-" + std::to_string(i), "completed").status == 204);
    CHECK(s.wait_active(1));
    CHECK(s.incoming_call("CA-up").body.find("<Connect>") != std::string::npos);
    // The restarted server came back empty: the service says the old slots were lost.
    CHECK(s.health_field("backend_resets") == "1");
    CHECK(s.log().find("[CAPACITY] BACKEND_DATA_LOST backend=redis resets=1") != std::string::npos);
}

TEST_CASE("fleet: a live stream puts its slot back after Redis lost it") {
    test::redis_server redis;
    service s({{"REDIS_URL", redis.url()}, {"CALLS_REFRESH_SECONDS", "1"}, {"CALLS_REDIS_KEY_PREFIX", "heal"}});
    REQUIRE(s.incoming_call("CA-long").body.find("<Connect>") != std::string::npos);
    svc::media_client m(s);
    m.start("CA-long");
    m.media(1);
    // The stream holds the slot before Redis loses it: a start still in flight would take the
    // slot again after the FLUSHALL, and the count would never drop.
    REQUIRE(s.wait_adopted(1));
    REQUIRE(redis.integer({"ZCARD", "{heal}:active"}) == 1);
    redis.command({"FLUSHALL"}); // like a restart without persistence
    CHECK(test::eventually([&] { return s.active() == 0; }, 10s));
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    m.media(2); // the next refresh finds the slot gone and takes it again
    CHECK(s.wait_active(1));
    CHECK(redis.integer({"ZCARD", "{heal}:active"}) == 1);
    m.stop("CA-long");
    CHECK(s.wait_active(0));
}

TEST_CASE("fleet: an instance killed with SIGKILL gives its slots back after the TTL, SIGTERM at once") {
    test::redis_server redis;
    std::map<std::string, std::string> env{{"REDIS_URL", redis.url()}, {"CALLS_SLOT_TTL_SECONDS", "2"},
                                           {"CALLS_REDIS_KEY_PREFIX", "crash"}, {"MAX_ACTIVE_CALLS", "4"}};
    service survivor(env);
    {
        service doomed(env);
        for (auto sid : {"CA-k1", "CA-k2"}) REQUIRE(doomed.incoming_call(sid).body.find("<Connect>") != std::string::npos);
        svc::media_client m1(doomed), m2(doomed);
        m1.start("CA-k1");
        m2.start("CA-k2");
        REQUIRE(doomed.wait_adopted(2)); // both streams' guards hold their slots
        REQUIRE(survivor.active() == 2);
        doomed.kill_hard(); // no goodbye: its guards never run
        // Still held a while later (not just at the first look), until the TTL below.
        CHECK(test::holds_for([&] { return survivor.active() == 2; }, 500ms));
        std::this_thread::sleep_for(std::chrono::milliseconds(2100));
        CHECK(survivor.wait_active(0)); // the TTL safety net
    }
    {
        // A TTL far past the wait below: only the release on the way out can free this slot.
        auto long_ttl = env;
        long_ttl["CALLS_SLOT_TTL_SECONDS"] = "600";
        service stopping(long_ttl);
        REQUIRE(stopping.incoming_call("CA-t1").body.find("<Connect>") != std::string::npos);
        svc::media_client m(stopping);
        m.start("CA-t1");
        REQUIRE(stopping.wait_adopted(1)); // the stream's guard holds the slot
        REQUIRE(survivor.active() == 1);
        CHECK(stopping.terminate() == 0);
        CHECK(test::eventually([&] { return survivor.active() == 0; }, 10s)); // released on the way out, not after the TTL
    }
}
