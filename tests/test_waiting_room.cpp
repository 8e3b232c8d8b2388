// The waiting room's own logic: log lines, events, counters, metrics, the fail modes over a
// backend switched to failing, and the memory line on a clock moved by hand (waiter TTL to the
// millisecond, the walk's bound).

#include "support/doubles.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <string>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using callguard::event_kind;
using callguard::wait_outcome;

namespace {

using clocked_backend = callguard::basic_memory_backend<test::manual_clock>;

struct clocked_rig {
    test::manual_clock clock;
    test::capture_sink logs;
    test::event_log events;
    callguard::capacity_limiter<clocked_backend> limiter;

    explicit clocked_rig(callguard::limiter_config cfg)
        : limiter(clocked_backend(clock), std::move(cfg), {logs.sink(), events.observer()}) {}
};

struct failing_rig {
    test::capture_sink logs;
    test::event_log events;
    test::switchable_backend backend;
    callguard::capacity_limiter<test::switchable_backend> limiter;

    explicit failing_rig(callguard::limiter_config cfg)
        : limiter(backend, std::move(cfg), {logs.sink(), events.observer()}) {}
    void fail(bool on) { backend.ctl().failing = on; }
};

callguard::limiter_config with_mode(std::int64_t cap, callguard::fail_mode mode) {
    auto c = test::small_config(cap);
    c.fail_mode = mode;
    return c;
}

} // namespace

TEST_CASE("waiting room logs QUEUED, DEQUEUED with the wait, and REJECTED with the reason") {
    auto cfg = test::small_config(1);
    cfg.tenant_limits = {{"biz1", 3}};
    clocked_rig r(cfg);
    REQUIRE(r.limiter.acquire("CA1"));
    auto q = r.limiter.enqueue("CA2", "biz1");
    CHECK(q.outcome == wait_outcome::queued);
    r.limiter.enqueue("CA3");
    r.clock.advance(1500ms);
    r.limiter.poll("CA3");
    r.limiter.release("CA1");
    CHECK(r.limiter.acquire("CA4").waiters_ahead);
    auto in = r.limiter.poll("CA2");
    CHECK(in.outcome == wait_outcome::dequeued);
    CHECK(in.waited == 1500ms);
    CHECK(r.logs.count_containing("[CAPACITY] QUEUED call_id=CA2 position=1 waiting=1 tenant=biz1") == 1);
    CHECK(r.logs.count_containing("[CAPACITY] QUEUED call_id=CA3 position=2 waiting=2") == 1);
    CHECK(r.logs.count_containing("[CAPACITY] WAITING call_id=CA3 position=2 waiting=2 waited_ms=1500") == 1);
    CHECK(r.logs.count_containing(
              "[CAPACITY] REJECTED call_id=CA4 active_calls=0 max=1 reason=waiters_ahead") == 1);
    CHECK(r.logs.count_containing("[CAPACITY] DEQUEUED call_id=CA2 waited_ms=1500 active_calls=1/1") == 1);
    // A line at its length turns the next caller away.
    CHECK(r.limiter.enqueue("CA5", {}, 2).outcome == wait_outcome::queued);
    CHECK(r.limiter.enqueue("CA6", {}, 2).outcome == wait_outcome::full);
    CHECK(r.logs.count_containing("[CAPACITY] QUEUE_FULL call_id=CA6 waiting=2 max_length=2") == 1);

    auto ev = r.events.snapshot();
    CHECK(r.events.count(event_kind::queued) == 3);
    CHECK(r.events.count(event_kind::dequeued) == 1);
    CHECK(r.events.count(event_kind::queue_full) == 1);
    CHECK(r.events.count(event_kind::acquired) == 1); // CA1; a dequeue is its own kind
    bool saw_rejected_ahead = false;
    for (const auto& e : ev)
        if (e.kind == event_kind::rejected && e.call_id == "CA4") saw_rejected_ahead = true;
    CHECK(saw_rejected_ahead);
    // Counters: a dequeue takes a slot, so it counts as acquired too.
    CHECK(r.limiter.counters().acquired == 2);
    CHECK(r.limiter.counters().rejected == 1);
    auto h = r.limiter.queue_wait_histogram();
    CHECK(h.count == 1);
    CHECK(h.cumulative[0] == 0); // le=1
    CHECK(h.cumulative[1] == 1); // le=5
    CHECK(h.sum_seconds == doctest::Approx(1.5));
}

TEST_CASE("waiting room events carry position, line length and wait") {
    test::manual_clock clock;
    callguard::capacity_event last{};
    std::int64_t queued_position = 0, dequeued_waited = 0;
    callguard::capacity_limiter<clocked_backend> l(
        clocked_backend(clock), test::small_config(1),
        {callguard::null_sink(), [&](const callguard::capacity_event& e) {
             if (e.kind == event_kind::queued) queued_position = e.position;
             if (e.kind == event_kind::dequeued) dequeued_waited = e.waited.count();
             last = e;
         }});
    REQUIRE(l.acquire("CA-h"));
    l.enqueue("CA-a");
    l.enqueue("CA-b");
    CHECK(queued_position == 2);
    CHECK(last.waiting == 2);
    clock.advance(2500ms);
    l.release("CA-h");
    CHECK(l.poll("CA-a").outcome == wait_outcome::dequeued);
    CHECK(dequeued_waited == 2500);
    CHECK(last.kind == event_kind::dequeued);
    CHECK(last.waiting == 1);
}

TEST_CASE("memory waiting room: a waiter is dropped exactly when its TTL passes, polls push it") {
    auto cfg = test::small_config(1);
    cfg.waiter_ttl = 10s;
    clocked_rig r(cfg);
    REQUIRE(r.limiter.acquire("CA-h"));
    REQUIRE(r.limiter.enqueue("CA-a").outcome == wait_outcome::queued);
    REQUIRE(r.limiter.enqueue("CA-b").outcome == wait_outcome::queued);
    r.clock.advance(6s);
    CHECK(r.limiter.poll("CA-b").outcome == wait_outcome::waiting); // deadline now 16 s
    r.clock.advance(3999ms);
    CHECK(r.limiter.queue_status().waiting == 2); // CA-a: 1 ms left
    r.clock.advance(1ms);
    CHECK(r.limiter.queue_status().waiting == 1); // CA-a: gone at 10 s
    CHECK(r.limiter.poll("CA-a").outcome == wait_outcome::not_waiting);
    auto b = r.limiter.poll("CA-b");
    CHECK(b.position == 1);
    CHECK(b.waited == 10s);
    CHECK(r.limiter.queue_status().longest_wait == 10s);
    r.clock.advance(10s); // CA-b's deadline was pushed to 20 s by the last poll
    CHECK(r.limiter.queue_status().waiting == 0);
    // With nobody in line, a new call takes the freed slot.
    r.limiter.release("CA-h");
    CHECK(r.limiter.acquire("CA-new").outcome == acquire_outcome::acquired);
}

TEST_CASE("memory waiting room: an expired slot frees room for the first in line") {
    auto cfg = test::small_config(1);
    cfg.slot_ttl = 5s;
    cfg.waiter_ttl = 60s;
    clocked_rig r(cfg);
    REQUIRE(r.limiter.acquire("CA-crashed"));
    REQUIRE(r.limiter.enqueue("CA-w").outcome == wait_outcome::queued);
    CHECK(r.limiter.poll("CA-w").outcome == wait_outcome::waiting);
    r.clock.advance(5s);
    CHECK(r.limiter.acquire("CA-new").waiters_ahead);
    CHECK(r.limiter.poll("CA-w").outcome == wait_outcome::dequeued);
}

TEST_CASE("memory waiting room: the walk looks past at most max_skipped_waiters blocked waiters") {
    auto cfg = test::small_config(2);
    cfg.tenant_limits = {{"biz1", 1}};
    callguard::capacity_limiter<clocked_backend> l(clocked_backend(test::manual_clock{}), cfg,
                                                  {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-b1", "biz1"));
    REQUIRE(l.acquire("CA-x"));
    const auto blocked = callguard::max_skipped_waiters;
    for (std::int64_t i = 0; i < blocked; ++i)
        REQUIRE(l.enqueue("CA-biz-" + std::to_string(i), "biz1", 5000).outcome == wait_outcome::queued);
    REQUIRE(l.enqueue("CA-last", {}, 5000).position == blocked + 1);
    REQUIRE(l.release("CA-x"));
    // 1000 waiters of a tenant at its cap stand ahead: the walk stops there, CA-last waits.
    CHECK(l.poll("CA-last").outcome == wait_outcome::waiting);
    CHECK(l.acquire("CA-new").outcome == acquire_outcome::rejected);
    // One of them leaves: 999 skipped, CA-last is reached and takes the slot.
    REQUIRE(l.leave_queue("CA-biz-0"));
    CHECK(l.poll("CA-last").outcome == wait_outcome::dequeued);
}

TEST_CASE("fail open: enqueue and poll admit without a slot while the backend is down") {
    failing_rig r(with_mode(1, callguard::fail_mode::open));
    REQUIRE(r.limiter.acquire("CA-h"));
    REQUIRE(r.limiter.enqueue("CA-w").outcome == wait_outcome::queued);
    r.fail(true);
    auto e = r.limiter.enqueue("CA-new");
    CHECK(e.outcome == wait_outcome::admitted_fail_open);
    CHECK(e.admitted());
    auto p = r.limiter.poll("CA-w");
    CHECK(p.outcome == wait_outcome::admitted_fail_open);
    CHECK(r.limiter.counters().admitted_fail_open == 2);
    CHECK(r.logs.count_containing("[CAPACITY] FAIL_OPEN call_id=CA-w backend=switchable") == 1);
    CHECK_FALSE(r.limiter.leave_queue("CA-w")); // noexcept, nothing thrown, nothing left
    auto s = r.limiter.queue_status();
    CHECK_FALSE(s.backend_healthy);
    CHECK(s.waiting == 1); // the last known line
    r.fail(false);
    CHECK(r.limiter.queue_status().backend_healthy);
    CHECK(r.limiter.leave_queue("CA-w"));
}

TEST_CASE("fail closed: enqueue refuses, callers already in line keep waiting") {
    failing_rig r(with_mode(1, callguard::fail_mode::closed));
    REQUIRE(r.limiter.acquire("CA-h"));
    REQUIRE(r.limiter.enqueue("CA-w").outcome == wait_outcome::queued);
    r.fail(true);
    auto e = r.limiter.enqueue("CA-new");
    CHECK(e.outcome == wait_outcome::rejected_fail_closed);
    CHECK_FALSE(e.admitted());
    CHECK_FALSE(e.in_line());
    auto p = r.limiter.poll("CA-w");
    CHECK(p.outcome == wait_outcome::waiting_fail_closed);
    CHECK(p.in_line());
    CHECK(p.position == 0); // unknown while the backend is down
    CHECK(r.limiter.counters().rejected_fail_closed == 1);
    CHECK(r.events.count(event_kind::rejected_fail_closed) == 1);
    // Back up: the waiter kept its place.
    r.fail(false);
    r.limiter.release("CA-h");
    CHECK(r.limiter.poll("CA-w").outcome == wait_outcome::dequeued);
}

TEST_CASE("fail local: the in-process line takes over, and hands waiters back to the shared one") {
    auto cfg = with_mode(2, callguard::fail_mode::local);
    cfg.local_max_active_calls = 1;
    failing_rig r(cfg);
    REQUIRE(r.limiter.acquire("CA-h1"));
    REQUIRE(r.limiter.acquire("CA-h2"));
    REQUIRE(r.limiter.enqueue("CA-shared").outcome == wait_outcome::queued);
    r.fail(true);
    // Outage: the local cap (1) decides, in a local line.
    auto first = r.limiter.enqueue("CA-l1");
    CHECK(first.outcome == wait_outcome::acquired);
    auto second = r.limiter.enqueue("CA-l2", "biz");
    CHECK(second.outcome == wait_outcome::queued);
    CHECK(second.position == 1);
    // A caller of the shared line rejoins the local one when it polls.
    auto shared = r.limiter.poll("CA-shared");
    CHECK(shared.outcome == wait_outcome::waiting);
    CHECK(shared.position == 2);
    CHECK(r.logs.count_containing("fallback=local") >= 3);
    CHECK(r.limiter.release("CA-l1")); // the local slot
    CHECK(r.limiter.poll("CA-l2").outcome == wait_outcome::dequeued);
    // Back up: CA-shared is still in the shared line, in its place; the local copy is dropped.
    r.fail(false);
    auto back = r.limiter.poll("CA-shared");
    CHECK(back.outcome == wait_outcome::waiting);
    CHECK(back.position == 1);
    // A caller that joined only the local line moves to the shared one.
    r.fail(true);
    CHECK(r.limiter.enqueue("CA-l3").outcome == wait_outcome::queued);
    r.fail(false);
    auto moved = r.limiter.poll("CA-l3");
    CHECK(moved.outcome == wait_outcome::waiting);
    CHECK(moved.position == 2);
    CHECK(r.limiter.queue_status().waiting == 2);
    REQUIRE(r.limiter.release("CA-h1"));
    CHECK(r.limiter.poll("CA-l3").outcome == wait_outcome::waiting);
    CHECK(r.limiter.poll("CA-shared").outcome == wait_outcome::dequeued);
}

TEST_CASE("metrics: the waiting room's gauges, counters and histogram") {
    clocked_rig r(test::small_config(1));
    REQUIRE(r.limiter.acquire("CA-h"));
    r.limiter.enqueue("CA-a");
    r.limiter.enqueue("CA-b");
    r.clock.advance(7s);
    r.limiter.release("CA-h");
    REQUIRE(r.limiter.poll("CA-a").outcome == wait_outcome::dequeued);
    auto text = r.limiter.metrics_text();
    CHECK(text.find("# TYPE callguard_waiting_calls gauge\ncallguard_waiting_calls 1\n") != std::string::npos);
    CHECK(text.find("callguard_queue_longest_wait_seconds 7\n") != std::string::npos);
    CHECK(text.find("callguard_queued_total 2\n") != std::string::npos);
    CHECK(text.find("callguard_dequeued_total 1\n") != std::string::npos);
    CHECK(text.find("# TYPE callguard_queue_wait_seconds histogram\n") != std::string::npos);
    CHECK(text.find("callguard_queue_wait_seconds_bucket{le=\"5\"} 0\n") != std::string::npos);
    CHECK(text.find("callguard_queue_wait_seconds_bucket{le=\"10\"} 1\n") != std::string::npos);
    CHECK(text.find("callguard_queue_wait_seconds_bucket{le=\"+Inf\"} 1\n") != std::string::npos);
    CHECK(text.find("callguard_queue_wait_seconds_sum 7\n") != std::string::npos);
    CHECK(text.find("callguard_queue_wait_seconds_count 1\n") != std::string::npos);
    for (std::size_t pos = 0; (pos = text.find(" counter\n", pos)) != std::string::npos; ++pos) {
        auto line_start = text.rfind('\n', pos);
        auto name = text.substr(line_start + 8, pos - line_start - 8);
        CHECK(name.substr(name.size() - 6) == "_total");
    }
    CHECK(callguard::to_json(r.limiter.queue_status()) ==
          R"({"waiting_calls":1,"longest_wait_ms":7000,"backend_healthy":true})");
}

TEST_CASE("config: CALLS_QUEUE_WAITER_TTL_SECONDS sets waiter_ttl, validated") {
    auto env = [](std::string value) {
        return [value](const char* name) -> std::optional<std::string> {
            if (std::string_view(name) == "CALLS_QUEUE_WAITER_TTL_SECONDS") return value;
            return std::nullopt;
        };
    };
    CHECK(callguard::limiter_config{}.waiter_ttl == 60s);
    CHECK(callguard::limiter_config::from_env(env("45")).waiter_ttl == 45s);
    CHECK_THROWS_AS(callguard::limiter_config::from_env(env("0")), callguard::config_error);
    CHECK_THROWS_AS(callguard::limiter_config::from_env(env("soon")), callguard::config_error);
    callguard::limiter_config c;
    c.waiter_ttl = 0s;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("waiter_ttl"), callguard::config_error);
}
