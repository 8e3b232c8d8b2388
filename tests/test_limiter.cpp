// The limiter's own logic over test doubles: log lines, events, counters, fail modes.

#include "support/doubles.hpp"
#include "support/probes.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

using callguard::acquire_outcome;
using callguard::event_kind;

namespace {

struct rig {
    test::capture_sink logs;
    test::event_log events;
    test::switchable_backend backend;
    callguard::capacity_limiter<test::switchable_backend> limiter;

    explicit rig(callguard::limiter_config cfg)
        : limiter(backend, std::move(cfg), {logs.sink(), events.observer()}) {}
};

} // namespace

TEST_CASE("limiter logs the seed's [CAPACITY] lines") {
    rig r(test::small_config(1));
    r.limiter.acquire("CA1234");
    r.limiter.acquire("CA5678");
    r.limiter.release("CA1234");
    auto lines = r.logs.snapshot();
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].text == "[CAPACITY] ACQUIRED call_id=CA1234 active_calls=1/1");
    CHECK(lines[0].level == callguard::log_level::info);
    CHECK(lines[1].text == "[CAPACITY] REJECTED call_id=CA5678 active_calls=1 max=1");
    CHECK(lines[1].level == callguard::log_level::warning);
    CHECK(lines[2].text == "[CAPACITY] RELEASED call_id=CA1234 active_calls=0/1");
}

TEST_CASE("limiter filters lines below its log level and never formats them") {
    auto cfg = test::small_config(1);
    cfg.log_level = callguard::log_level::warning;
    rig r(cfg);
    r.limiter.acquire("CA1");
    r.limiter.acquire("CA2");
    r.limiter.release("CA1");
    auto lines = r.logs.snapshot();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].text.rfind("[CAPACITY] REJECTED call_id=CA2", 0) == 0);
}

TEST_CASE("limiter names the tenant when its cap rejects") {
    auto cfg = test::small_config(10);
    cfg.tenant_limits = {{"biz1", 1}};
    rig r(cfg);
    r.limiter.acquire("CA1", "biz1");
    auto res = r.limiter.acquire("CA2", "biz1");
    CHECK(res.tenant_limited);
    CHECK(r.logs.count_containing(
              "[CAPACITY] REJECTED call_id=CA2 active_calls=1 max=10 tenant=biz1 tenant_max=1") == 1);
    auto ev = r.events.snapshot();
    REQUIRE(ev.size() == 2);
    CHECK(ev[1].kind == event_kind::rejected);
    CHECK(ev[1].tenant == "biz1");
    CHECK(ev[1].tenant_limited);
}

TEST_CASE("observer sees every decision, with copies safe to keep") {
    rig r(test::small_config(1));
    r.limiter.acquire("CA1");
    r.limiter.acquire("CA1");
    r.limiter.acquire("CA2");
    r.limiter.release("CA1");
    r.limiter.release("CA1");
    auto ev = r.events.snapshot();
    REQUIRE(ev.size() == 4);
    CHECK(ev[0].kind == event_kind::acquired);
    CHECK(ev[1].kind == event_kind::already_held);
    CHECK(ev[2].kind == event_kind::rejected);
    CHECK(ev[2].call_id == "CA2");
    CHECK(ev[3].kind == event_kind::released);
    auto c = r.limiter.counters();
    CHECK(c.acquired == 1);
    CHECK(c.already_held == 1);
    CHECK(c.rejected == 1);
    CHECK(c.released == 1);
}

TEST_CASE("a throwing observer or sink never changes a decision") {
    callguard::limiter_hooks hooks;
    hooks.sink = [](callguard::log_level, std::string_view) { throw std::runtime_error("disk full"); };
    hooks.observer = [](const callguard::capacity_event&) { throw std::runtime_error("db locked"); };
    callguard::capacity_limiter<callguard::memory_backend> l({}, test::small_config(1), hooks);
    CHECK(l.acquire("CA1").outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA2").outcome == acquire_outcome::rejected);
    CHECK(l.release("CA1"));
    { auto g = l.guard("CA3"); CHECK(g.admitted()); }
    CHECK(l.status().active_calls == 0);
}

TEST_CASE("a backend's data reset is logged once, counted in the status and sent to the observer") {
    rig r(test::small_config(3));
    CHECK(r.limiter.acquire("CA1").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.status().backend_resets == 0);
    r.backend.ctl().resets = 1;
    CHECK(r.limiter.acquire("CA2").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.acquire("CA3").outcome == acquire_outcome::acquired);
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_DATA_LOST backend=switchable resets=1") == 1);
    CHECK(r.events.count(event_kind::backend_data_lost) == 1);
    auto st = r.limiter.status();
    CHECK(st.backend_resets == 1);
    CHECK(callguard::to_json(st).find("\"backend_resets\":1") != std::string::npos);
    CHECK(r.limiter.metrics_text().find("callguard_backend_resets_total 1") != std::string::npos);
    r.backend.ctl().resets = 2;
    r.limiter.release("CA1");
    CHECK(r.logs.count_containing("BACKEND_DATA_LOST") == 2);
}

TEST_CASE("fail_mode open admits while the backend is down, and logs the outage once") {
    rig r(test::small_config(2));
    r.backend.ctl().failing = true;
    for (int i = 0; i < 5; ++i) {
        auto res = r.limiter.acquire("CA" + std::to_string(i));
        CHECK(res.outcome == acquire_outcome::admitted_fail_open);
        CHECK(res.admitted());
    }
    CHECK_FALSE(r.limiter.release("CA1"));
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_DOWN backend=switchable fail_mode=open") == 1);
    CHECK(r.logs.count_containing("[CAPACITY] FAIL_OPEN call_id=CA3") == 1);
    CHECK(r.events.count(event_kind::backend_down) == 1);
    CHECK(r.events.count(event_kind::admitted_fail_open) == 5);

    auto st = r.limiter.status();
    CHECK_FALSE(st.backend_healthy);
    CHECK(callguard::to_json(st).find("\"status\":\"degraded\"") != std::string::npos);
    CHECK(r.limiter.counters().admitted_fail_open == 5);
    CHECK(r.limiter.counters().backend_errors >= 6);

    r.backend.ctl().failing = false;
    CHECK(r.limiter.acquire("CA-back").outcome == acquire_outcome::acquired);
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_UP backend=switchable") == 1);
    CHECK(r.events.count(event_kind::backend_up) == 1);
    CHECK(r.limiter.status().backend_healthy);
    // A second outage is a second transition.
    r.backend.ctl().failing = true;
    r.limiter.acquire("CA-x");
    CHECK(r.logs.count_containing("BACKEND_DOWN") == 2);
}

TEST_CASE("fail_mode closed rejects while the backend is down") {
    auto cfg = test::small_config(2);
    cfg.fail_mode = callguard::fail_mode::closed;
    rig r(cfg);
    r.backend.ctl().failing = true;
    auto res = r.limiter.acquire("CA1");
    CHECK(res.outcome == acquire_outcome::rejected_fail_closed);
    CHECK_FALSE(res);
    CHECK(r.limiter.counters().rejected_fail_closed == 1);
    CHECK(r.events.count(event_kind::rejected_fail_closed) == 1);
    auto g = r.limiter.guard("CA2");
    CHECK_FALSE(g.admitted());
}

TEST_CASE("fail_mode local enforces an in-process cap while the backend is down") {
    auto cfg = test::small_config(10);
    cfg.fail_mode = callguard::fail_mode::local;
    cfg.local_max_active_calls = 2;
    rig r(cfg);
    r.backend.ctl().failing = true;
    CHECK(r.limiter.acquire("CA1").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.acquire("CA1").outcome == acquire_outcome::already_held);
    CHECK(r.limiter.acquire("CA2").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.acquire("CA3").outcome == acquire_outcome::rejected);
    CHECK(r.logs.count_containing("fallback=local") >= 3);
    CHECK(r.limiter.status().active_calls == 2);
    // Releases reach the local cap even while the backend is still down.
    CHECK(r.limiter.release("CA1"));
    CHECK(r.limiter.acquire("CA3").outcome == acquire_outcome::acquired);
    auto ev = r.events.snapshot();
    CHECK(std::all_of(ev.begin(), ev.end(), [](const auto& e) {
        return e.kind == event_kind::backend_down || e.local_fallback;
    }));
}

TEST_CASE("a guard's release while the backend is down does not throw") {
    rig r(test::small_config(2));
    auto g = r.limiter.guard("CA1");
    REQUIRE(g.admitted());
    r.backend.ctl().failing = true;
    CHECK_NOTHROW(g.release());
    r.backend.ctl().failing = false;
    // The memory double lost nothing: the slot is still there until the TTL or a real release.
    CHECK(r.limiter.status().active_calls == 1);
    CHECK(r.limiter.release("CA1"));
}

TEST_CASE("invalid input never reaches the backend") {
    rig r(test::small_config(2));
    CHECK_THROWS_AS(r.limiter.acquire(""), std::invalid_argument);
    CHECK_THROWS_AS(r.limiter.acquire("CA1", "bad tenant"), std::invalid_argument);
    CHECK_FALSE(r.limiter.release("bad\nid"));
    CHECK(r.backend.ctl().acquires == 0);
    CHECK(r.backend.ctl().releases == 0);
}

TEST_CASE("the limiter refuses a config it cannot honour") {
    auto cfg = test::small_config(0);
    CHECK_THROWS_AS(callguard::capacity_limiter<callguard::memory_backend>({}, cfg),
                    callguard::config_error);
    cfg.max_active_calls = 1;
    cfg.slot_ttl = std::chrono::seconds(0);
    CHECK_THROWS_AS(callguard::capacity_limiter<callguard::memory_backend>({}, cfg),
                    callguard::config_error);
}

TEST_CASE("metrics text carries every counter and the live gauges") {
    rig r(test::small_config(1));
    r.limiter.acquire("CA1");
    r.limiter.acquire("CA2");
    auto text = r.limiter.metrics_text();
    CHECK(text.find("# TYPE callguard_active_calls gauge\ncallguard_active_calls 1\n") != std::string::npos);
    CHECK(text.find("callguard_max_calls 1\n") != std::string::npos);
    CHECK(text.find("# TYPE callguard_rejected_total counter\ncallguard_rejected_total 1\n") != std::string::npos);
    CHECK(text.find("callguard_acquired_total 1\n") != std::string::npos);
    CHECK(text.find("callguard_backend_healthy 1\n") != std::string::npos);
}

// ---- putting slots back: calls in progress are counted, even over the cap --------------------

TEST_CASE("reinstate counts a call in progress over the cap, and new calls wait until enough end") {
    test::capture_sink logs;
    test::event_log events;
    callguard::capacity_limiter<callguard::memory_backend> l({}, test::small_config(2),
                                                             {logs.sink(), events.observer()});
    REQUIRE(l.acquire("CA1").outcome == acquire_outcome::acquired);
    REQUIRE(l.acquire("CA2").outcome == acquire_outcome::acquired);
    auto r = l.reinstate("CA3");
    CHECK(r.outcome == callguard::reinstate_outcome::reinstated);
    CHECK(r.held());
    CHECK(r.active == 3);
    CHECK(r.max == 2);
    CHECK(logs.count_containing("[CAPACITY] REINSTATED call_id=CA3 active_calls=3/2") == 1);
    CHECK(events.count(event_kind::reinstated) == 1);
    auto st = l.status();
    CHECK(st.active_calls == 3);
    CHECK(st.capacity_available == 0);
    CHECK(st.at_capacity);
    CHECK(callguard::to_json(st).find("\"active_calls\":3,\"max_calls\":2,\"capacity_available\":0,"
                                      "\"at_capacity\":true") != std::string::npos);
    CHECK(l.metrics_text().find("callguard_reinstated_total 1\n") != std::string::npos);
    CHECK(l.counters().reinstated == 1);
    // Idempotent: the slot is there now.
    CHECK(l.reinstate("CA3").outcome == callguard::reinstate_outcome::already_held);
    CHECK(l.counters().reinstated == 1);
    CHECK(l.acquire("CA4").outcome == acquire_outcome::rejected);
    CHECK(l.release("CA1"));
    CHECK(l.acquire("CA4").outcome == acquire_outcome::rejected); // 2 of 2: still full
    CHECK(l.release("CA3"));
    CHECK(l.acquire("CA4").outcome == acquire_outcome::acquired);
    CHECK_THROWS_AS(l.reinstate(""), std::invalid_argument);
    CHECK_THROWS_AS(l.reinstate("CA5", "bad tenant"), std::invalid_argument);
}

TEST_CASE("calls admitted fail-open are put back by the limiter's own thread once the backend answers") {
    auto cfg = test::small_config(2);
    rig r(cfg);
    const long threads_before = test::thread_count();
    r.backend.ctl().failing = true;
    for (int i = 0; i < 5; ++i)
        REQUIRE(r.limiter.acquire("CA-open-" + std::to_string(i)).outcome == acquire_outcome::admitted_fail_open);
    CHECK(r.limiter.reinstate_pending() == 5);
    CHECK(r.limiter.release("CA-open-1") == false); // ended during the outage: forgotten
    CHECK(r.limiter.reinstate_pending() == 4);
    r.backend.ctl().failing = false;
    CHECK(test::eventually([&] { return r.limiter.status().active_calls == 4; }, std::chrono::seconds(3)));
    CHECK(r.limiter.reinstate_pending() == 0);
    auto st = r.limiter.status();
    CHECK(st.active_calls == 4); // over the cap of 2: the truth about the calls that exist
    CHECK(st.at_capacity);
    CHECK(r.limiter.acquire("CA-new").outcome == acquire_outcome::rejected);
    // Never the released one, and never on the test's (the callers') thread.
    for (const auto& c : r.backend.ctl().reinstate_calls()) {
        CHECK(c.call_id != "CA-open-1");
        CHECK(c.thread != std::this_thread::get_id());
    }
    CHECK(r.backend.ctl().reinstate_calls().size() >= 4);
    CHECK(r.logs.count_containing("[CAPACITY] REINSTATED call_id=CA-open-") == 4);
    CHECK(r.limiter.counters().reinstated == 4);
    CHECK(test::thread_count() == threads_before + 1); // one thread, started when a call waited
    // Ending three calls makes room for one.
    for (int i : {0, 2, 3}) CHECK(r.limiter.release("CA-open-" + std::to_string(i)));
    CHECK(r.limiter.acquire("CA-new").outcome == acquire_outcome::acquired);
}

TEST_CASE("a reinstated slot lives only as long as the call's own slot would have") {
    auto cfg = test::small_config(5);
    cfg.slot_ttl = std::chrono::seconds(100);
    rig r(cfg);
    r.backend.ctl().failing = true;
    REQUIRE(r.limiter.acquire("CA-ttl").outcome == acquire_outcome::admitted_fail_open);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    r.backend.ctl().failing = false;
    REQUIRE(test::eventually([&] { return r.limiter.reinstate_pending() == 0; }, std::chrono::seconds(3)));
    auto calls = r.backend.ctl().reinstate_calls();
    REQUIRE(!calls.empty());
    CHECK(calls.back().ttl <= std::chrono::milliseconds(99'700));
    CHECK(calls.back().ttl > std::chrono::milliseconds(90'000));
}

TEST_CASE("a limiter with nothing to put back starts no thread") {
    const long before = test::thread_count();
    {
        rig r(test::small_config(2));
        r.limiter.acquire("CA1");
        r.limiter.acquire("CA2");
        r.limiter.acquire("CA3");
        r.limiter.refresh("CA1");
        r.limiter.release("CA1");
        r.limiter.status();
        CHECK(r.limiter.remembered_calls() == 1); // CA2: this backend can lose its slots
        CHECK(test::thread_count() == before);
        r.backend.ctl().failing = true;
        r.limiter.release("CA2");  // a failed release waits for nothing
        r.limiter.status();
        CHECK(test::thread_count() == before);
    }
    callguard::capacity_limiter<callguard::memory_backend> l({}, test::small_config(2));
    l.acquire("CA1");
    CHECK(l.remembered_calls() == 0); // an in-process backend loses nothing: nothing kept
    CHECK(test::thread_count() == before);
}

TEST_CASE("after a data loss the calls this limiter knows to be live are put back") {
    rig r(test::small_config(3));
    for (auto id : {"CA1", "CA2", "CA3"}) REQUIRE(r.limiter.acquire(id).outcome == acquire_outcome::acquired);
    {
        auto adopted = r.limiter.guard("CA1"); // the media stream adopts the webhook's slot
        CHECK(adopted.result().outcome == acquire_outcome::already_held);
        adopted.release();                     // and the call ends
    }
    r.backend.ctl().lose_data();
    CHECK(r.limiter.status().active_calls == 0); // the backend lost them; the first success sees the loss
    CHECK(test::eventually([&] { return r.limiter.status().active_calls == 2; }, std::chrono::seconds(3)));
    CHECK(r.logs.count_containing("[CAPACITY] BACKEND_DATA_LOST backend=switchable resets=1: the slots held "
                                  "before are gone; the calls in progress known here are being put back") == 1);
    CHECK(r.logs.count_containing("[CAPACITY] REINSTATED call_id=CA2") == 1);
    CHECK(r.logs.count_containing("[CAPACITY] REINSTATED call_id=CA3") == 1);
    CHECK(r.logs.count_containing("REINSTATED call_id=CA1") == 0);
    CHECK(r.limiter.acquire("CA4").outcome == acquire_outcome::acquired);
    CHECK(r.limiter.acquire("CA5").outcome == acquire_outcome::rejected);
}

TEST_CASE("fail_mode local: calls admitted by the in-process cap are put back too") {
    auto cfg = test::small_config(2);
    cfg.fail_mode = callguard::fail_mode::local;
    cfg.local_max_active_calls = 3;
    rig r(cfg);
    r.backend.ctl().failing = true;
    for (int i = 0; i < 3; ++i) CHECK(r.limiter.acquire("CA-l" + std::to_string(i)).outcome == acquire_outcome::acquired);
    CHECK(r.limiter.acquire("CA-l3").outcome == acquire_outcome::rejected); // local cap: not remembered
    CHECK(r.limiter.reinstate_pending() == 3);
    r.backend.ctl().failing = false;
    CHECK(test::eventually([&] { return r.limiter.status().active_calls == 3; }, std::chrono::seconds(3)));
    CHECK(r.logs.count_containing("[CAPACITY] REINSTATED call_id=CA-l") == 3);
    CHECK(r.limiter.acquire("CA-l3").outcome == acquire_outcome::rejected); // 3 of 2
}

TEST_CASE("the limiter remembers at most max_remembered_calls, and says so once") {
    auto cfg = test::small_config(10);
    cfg.max_remembered_calls = 3;
    rig r(cfg);
    r.backend.ctl().failing = true;
    for (int i = 0; i < 6; ++i) CHECK(r.limiter.acquire("CA-m" + std::to_string(i)).admitted());
    CHECK(r.limiter.remembered_calls() == 3);
    CHECK(r.limiter.counters().not_remembered == 3);
    CHECK(r.logs.count_containing("[CAPACITY] REMEMBER_FULL call_id=CA-m3 max_remembered_calls=3") == 1);
    CHECK(r.limiter.metrics_text().find("callguard_not_remembered_total 3\n") != std::string::npos);
    CHECK(r.limiter.metrics_text().find("callguard_reinstate_pending 3\n") != std::string::npos);
    r.backend.ctl().failing = false;
    CHECK(test::eventually([&] { return r.limiter.status().active_calls == 3; }, std::chrono::seconds(3)));

    cfg.max_remembered_calls = 0; // remember nothing: nothing put back, no thread
    const long before = test::thread_count();
    rig none(cfg);
    none.backend.ctl().failing = true;
    CHECK(none.limiter.acquire("CA-x").admitted());
    CHECK(none.limiter.counters().not_remembered == 1);
    none.backend.ctl().failing = false;
    CHECK(none.limiter.status().active_calls == 0);
    CHECK(test::thread_count() == before);
}

TEST_CASE("slots go back at most reinstate_per_second, in batches, not all at once") {
    auto cfg = test::small_config(5);
    cfg.reinstate_per_second = 200; // 10 per 50 ms tick
    rig r(cfg);
    r.backend.ctl().failing = true;
    for (int i = 0; i < 100; ++i) REQUIRE(r.limiter.acquire("CA-r" + std::to_string(i)).admitted());
    r.backend.ctl().failing = false;
    r.limiter.status(); // the backend answers: the thread starts putting slots back
    REQUIRE(test::eventually([&] { return r.limiter.reinstate_pending() == 0; }, std::chrono::seconds(5)));
    const auto calls = r.backend.ctl().reinstate_calls();
    REQUIRE(calls.size() >= 100);
    const auto took = calls.back().at - calls.front().at;
    CHECK(took >= std::chrono::milliseconds(400)); // 100 at 200/s: about 450 ms
    CHECK(took < std::chrono::seconds(3));
    // No 100 ms window saw more than 3 ticks' worth.
    std::size_t worst = 0;
    for (std::size_t i = 0; i < calls.size(); ++i) {
        std::size_t j = i;
        while (j < calls.size() && calls[j].at - calls[i].at < std::chrono::milliseconds(100)) ++j;
        worst = std::max(worst, j - i);
    }
    CHECK(worst <= 30);
    CHECK(r.limiter.status().active_calls == 100);
}

TEST_CASE("destroying a limiter while its thread waits on a dead backend is prompt and clean") {
    const auto t0 = std::chrono::steady_clock::now();
    {
        rig r(test::small_config(2));
        r.backend.ctl().failing = true;
        for (int i = 0; i < 10; ++i) r.limiter.acquire("CA-d" + std::to_string(i));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
}

TEST_CASE("the limiter waits reinstate_delay after the backend is back before putting slots back") {
    auto cfg = test::small_config(5);
    cfg.reinstate_delay = std::chrono::milliseconds(600);
    rig r(cfg);
    r.backend.ctl().failing = true;
    REQUIRE(r.limiter.acquire("CA-wait").outcome == acquire_outcome::admitted_fail_open);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    r.backend.ctl().failing = false;
    const auto back = std::chrono::steady_clock::now();
    // The limiter's thread finds the backend back by itself (a count), then waits.
    REQUIRE(test::eventually([&] { return r.limiter.reinstate_pending() == 0; }, std::chrono::seconds(3)));
    auto calls = r.backend.ctl().reinstate_calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].at - back >= std::chrono::milliseconds(600));
    CHECK(calls[0].at - back < std::chrono::milliseconds(1500));
    CHECK(r.backend.ctl().counts >= 1);
    // A live call refreshing meanwhile puts its own slot back at once.
    r.backend.ctl().failing = true;
    REQUIRE(r.limiter.acquire("CA-self").outcome == acquire_outcome::admitted_fail_open);
    r.backend.ctl().failing = false;
    CHECK_FALSE(r.limiter.refresh("CA-self"));
    CHECK(r.limiter.reinstate("CA-self").outcome == callguard::reinstate_outcome::reinstated);
    CHECK(r.limiter.reinstate_pending() == 0);
}
