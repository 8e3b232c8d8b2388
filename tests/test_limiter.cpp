// The limiter's own logic over test doubles: log lines, events, counters, fail modes.

#include "support/doubles.hpp"

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

TEST_CASE("claims while the backend is down follow the fail mode, and are never sent to it twice") {
    using callguard::claim_outcome;
    using namespace std::chrono_literals;
    SUBCASE("open: go ahead unchecked") {
        auto cfg = test::small_config(1);
        cfg.fail_mode = callguard::fail_mode::open;
        rig r(cfg);
        r.backend.ctl().failing = true;
        auto c = r.limiter.claim_once("whatsapp:call:CA1", 60s);
        CHECK(c.outcome == claim_outcome::claimed_fail_open);
        CHECK(c.claimed());
        CHECK(r.logs.count_containing("[CAPACITY] CLAIM_FAIL_OPEN key=whatsapp:call:CA1 backend=switchable") == 1);
        CHECK(r.logs.count_containing("[CAPACITY] BACKEND_DOWN") == 1);
        r.backend.ctl().failing = false;
        CHECK(r.limiter.claim_once("whatsapp:call:CA1", 60s).outcome == claim_outcome::claimed); // unrecorded
        CHECK(r.logs.count_containing("[CAPACITY] BACKEND_UP") == 1);
    }
    SUBCASE("closed: refuse") {
        auto cfg = test::small_config(1);
        cfg.fail_mode = callguard::fail_mode::closed;
        rig r(cfg);
        r.backend.ctl().failing = true;
        auto c = r.limiter.claim_once("whatsapp:call:CA1", 60s);
        CHECK(c.outcome == claim_outcome::refused_fail_closed);
        CHECK_FALSE(c);
        CHECK(r.logs.count_containing("[CAPACITY] CLAIM_FAIL_CLOSED key=whatsapp:call:CA1") == 1);
    }
    SUBCASE("local: exact within this process, then the backend decides again") {
        auto cfg = test::small_config(1);
        cfg.fail_mode = callguard::fail_mode::local;
        rig r(cfg);
        r.backend.ctl().failing = true;
        auto first = r.limiter.claim_once("whatsapp:to:+15550001", 60s);
        CHECK(first.outcome == claim_outcome::claimed);
        CHECK(first.local_fallback);
        auto second = r.limiter.claim_once("whatsapp:to:+15550001", 60s);
        CHECK(second.outcome == claim_outcome::already_claimed);
        CHECK(second.local_fallback);
        CHECK(r.logs.count_containing("[CAPACITY] CLAIMED key=whatsapp:to:+15550001 ttl_ms=60000 fallback=local") == 1);
        r.backend.ctl().failing = false;
        auto back = r.limiter.claim_once("whatsapp:to:+15550001", 60s);
        CHECK(back.outcome == claim_outcome::claimed); // the shared store never saw the local claim
        CHECK_FALSE(back.local_fallback);
    }
    SUBCASE("bad input never reaches the backend") {
        rig r(test::small_config(1));
        CHECK_THROWS_AS(r.limiter.claim_once("", 1s), std::invalid_argument);
        CHECK_THROWS_AS(r.limiter.claim_once("k", -1ms), std::invalid_argument);
        CHECK(r.backend.ctl().claims == 0);
        CHECK(r.limiter.claim_once("k", 1s).claimed());
        CHECK(r.backend.ctl().claims == 1);
    }
}
