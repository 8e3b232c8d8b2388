#pragma once

// The waiting room every backend that keeps one must give the limiter, written once. A test
// file instantiates it with CALLGUARD_WAITING_ROOM_CONTRACT(its_fixture), over the same
// fixtures as the limiter contract (limiter_contract.hpp).

#include "../support/probes.hpp"
#include "limiter_contract.hpp"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace contract {

using callguard::acquire_outcome;
using callguard::wait_outcome;

inline std::string waiter(int i) { return "CA-w" + std::to_string(i); }

} // namespace contract

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: callers are admitted in the order they came", F,
                          waiting_room_order) {
    using namespace contract;
    F f;
    auto l = make_limiter(f, cap(2));
    REQUIRE(l->acquire("CA-h1"));
    REQUIRE(l->acquire("CA-h2"));
    for (int i = 1; i <= 3; ++i) {
        auto r = l->enqueue(waiter(i));
        CHECK(r.outcome == wait_outcome::queued);
        CHECK(r.position == i);
        CHECK(r.waiting == i);
        CHECK(r.in_line());
        CHECK_FALSE(r.admitted());
    }
    // Enqueue is idempotent: a call in line keeps its place.
    auto again = l->enqueue(waiter(2));
    CHECK(again.outcome == wait_outcome::waiting);
    CHECK(again.position == 2);
    CHECK(again.waiting == 3);
    CHECK(l->poll(waiter(1)).outcome == wait_outcome::waiting);
    CHECK(l->acquire("CA-new").outcome == acquire_outcome::rejected);

    // One slot frees: it belongs to the first in line, whoever asks first.
    REQUIRE(l->release("CA-h1"));
    auto newcomer = l->acquire("CA-new");
    CHECK(newcomer.outcome == acquire_outcome::rejected);
    CHECK(newcomer.waiters_ahead);
    auto second = l->poll(waiter(2));
    CHECK(second.outcome == wait_outcome::waiting);
    CHECK(second.position == 2);
    CHECK(l->poll(waiter(3)).outcome == wait_outcome::waiting);
    auto first = l->poll(waiter(1));
    CHECK(first.outcome == wait_outcome::dequeued);
    CHECK(first.admitted());
    CHECK(first.active == 2);
    CHECK(first.waiting == 2);
    CHECK(first.waited.count() >= 0);
    // A retried poll after admission holds the same slot.
    auto retried = l->poll(waiter(1));
    CHECK(retried.outcome == wait_outcome::already_held);
    CHECK(retried.admitted());
    CHECK(l->status().active_calls == 2);
    auto moved_up = l->poll(waiter(2));
    CHECK(moved_up.outcome == wait_outcome::waiting);
    CHECK(moved_up.position == 1);
    CHECK(l->queue_status().waiting == 2);

    // Two slots free, two waiters: both are first in line, in either order of asking.
    REQUIRE(l->release("CA-h2"));
    REQUIRE(l->release(waiter(1)));
    CHECK(l->poll(waiter(3)).outcome == wait_outcome::dequeued);
    CHECK(l->poll(waiter(2)).outcome == wait_outcome::dequeued);
    CHECK(l->queue_status().waiting == 0);
    CHECK(l->poll(waiter(2)).outcome == wait_outcome::already_held);

    // Nobody waits any more: acquire is what it always was.
    CHECK(l->acquire("CA-new").outcome == acquire_outcome::rejected);
    CHECK_FALSE(l->acquire("CA-new").waiters_ahead);
    REQUIRE(l->release(waiter(2)));
    CHECK(l->acquire("CA-new").outcome == acquire_outcome::acquired);
    CHECK(l->queue_counters().queued == 3);
    CHECK(l->queue_counters().dequeued == 3);
    CHECK(l->queue_wait_histogram().count == 3);
}

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: enqueue admits at once, refuses when full", F,
                          waiting_room_enqueue) {
    using namespace contract;
    F f;
    auto l = make_limiter(f, cap(1));
    auto now = l->enqueue("CA-first", {}, 2);
    CHECK(now.outcome == wait_outcome::acquired);
    CHECK(now.admitted());
    CHECK(now.active == 1);
    CHECK(l->enqueue("CA-first", {}, 2).outcome == wait_outcome::already_held);
    CHECK(l->enqueue(waiter(1), {}, 2).outcome == wait_outcome::queued);
    CHECK(l->enqueue(waiter(2), {}, 2).outcome == wait_outcome::queued);
    auto full = l->enqueue(waiter(3), {}, 2);
    CHECK(full.outcome == wait_outcome::full);
    CHECK_FALSE(full.in_line());
    CHECK(full.waiting == 2);
    CHECK(l->poll(waiter(3)).outcome == wait_outcome::not_waiting);
    // A call already in line is never "full".
    CHECK(l->enqueue(waiter(2), {}, 2).outcome == wait_outcome::waiting);
    CHECK(l->queue_counters().queue_full == 1);
    // A call that never joined, and bad input.
    CHECK(l->poll("CA-unknown").outcome == wait_outcome::not_waiting);
    CHECK_THROWS_AS(l->enqueue(""), std::invalid_argument);
    CHECK_THROWS_AS(l->enqueue("CA\n1"), std::invalid_argument);
    CHECK_THROWS_AS(l->enqueue("CA-x", "biz 1"), std::invalid_argument);
    CHECK_THROWS_AS(l->enqueue("CA-x", {}, 0), std::invalid_argument);
    CHECK_THROWS_AS(l->poll(std::string(257, 'C')), std::invalid_argument);
    CHECK_FALSE(l->leave_queue(""));
    CHECK(l->queue_status().waiting == 2);
    // Ids that look like Redis syntax or the waiting room's own record format are plain data.
    REQUIRE(l->release("CA-first"));
    REQUIRE(l->leave_queue(waiter(1)));
    REQUIRE(l->leave_queue(waiter(2)));
    REQUIRE(l->acquire("CA-h"));
    for (auto id : {"1|0|biz", "{calls}:waiting", "*", "%d"}) {
        CHECK(l->enqueue(id).outcome == wait_outcome::queued);
        CHECK(l->poll(id).outcome == wait_outcome::waiting);
    }
    CHECK(l->queue_status().waiting == 4);
    REQUIRE(l->release("CA-h"));
    CHECK(l->poll("1|0|biz").outcome == wait_outcome::dequeued);
}

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: a waiter held back by its own tenant blocks no one",
                          F, waiting_room_tenants) {
    using namespace contract;
    F f;
    auto cfg = cap(3);
    cfg.tenant_limits = {{"biz1", 1}, {"biz2", 5}};
    auto l = make_limiter(f, cfg);
    REQUIRE(l->acquire("CA-b1", "biz1"));
    REQUIRE(l->acquire("CA-x1"));
    REQUIRE(l->acquire("CA-x2"));
    CHECK(l->enqueue("CA-wbiz", "biz1").outcome == wait_outcome::queued);
    auto plain = l->enqueue("CA-wnone");
    CHECK(plain.outcome == wait_outcome::queued);
    CHECK(plain.position == 2);
    CHECK_FALSE(plain.tenant_limited);

    // A slot frees. biz1 is at its cap, so the first waiter that can take it is the second.
    REQUIRE(l->release("CA-x1"));
    auto n = l->acquire("CA-n1");
    CHECK(n.outcome == acquire_outcome::rejected);
    CHECK(n.waiters_ahead);
    auto held = l->poll("CA-wbiz");
    CHECK(held.outcome == wait_outcome::waiting);
    CHECK(held.tenant_limited);
    CHECK(held.position == 1);
    CHECK(l->poll("CA-wnone").outcome == wait_outcome::dequeued);

    // Another slot frees; the only waiter cannot take it, so a newcomer may.
    REQUIRE(l->release("CA-x2"));
    CHECK(l->acquire("CA-n1").outcome == acquire_outcome::acquired);
    // A newcomer of the blocked tenant is still refused by its tenant cap.
    REQUIRE(l->release("CA-n1"));
    auto same_tenant = l->acquire("CA-n2", "biz1");
    CHECK(same_tenant.outcome == acquire_outcome::rejected);
    CHECK(same_tenant.tenant_limited);
    REQUIRE(l->acquire("CA-n1"));

    // biz1's slot frees: now its waiter can take the next slot, ahead of any newcomer.
    REQUIRE(l->release("CA-b1"));
    auto other = l->acquire("CA-n3", "biz2");
    CHECK(other.outcome == acquire_outcome::rejected);
    CHECK(other.waiters_ahead);
    auto in = l->poll("CA-wbiz");
    CHECK(in.outcome == wait_outcome::dequeued);
    CHECK(l->status().active_calls == 3);

    // Two waiters of one tenant with room for one: only the first is first in line, and the
    // second does not hold back a later waiter of another tenant.
    REQUIRE(l->release("CA-wbiz"));
    REQUIRE(l->acquire("CA-fill"));
    CHECK(l->enqueue("CA-biz-a", "biz1").outcome == wait_outcome::queued);
    CHECK(l->enqueue("CA-biz-b", "biz1").outcome == wait_outcome::queued);
    CHECK(l->enqueue("CA-other", "biz2").outcome == wait_outcome::queued);
    REQUIRE(l->release("CA-wnone"));
    REQUIRE(l->release("CA-n1"));
    CHECK(l->poll("CA-biz-b").tenant_limited);
    CHECK(l->poll("CA-other").outcome == wait_outcome::dequeued);
    CHECK(l->poll("CA-biz-a").outcome == wait_outcome::dequeued);
    CHECK(l->poll("CA-biz-b").outcome == wait_outcome::waiting);
}

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: a waiter that stops polling leaves after its TTL",
                          F, waiting_room_ttl) {
    using namespace contract;
    using namespace std::chrono_literals;
    F f;
    auto cfg = cap(1);
    cfg.waiter_ttl = 2s;
    auto l = make_limiter(f, cfg);
    REQUIRE(l->acquire("CA-h"));
    REQUIRE(l->enqueue("CA-gone").outcome == wait_outcome::queued);
    REQUIRE(l->enqueue("CA-kept").outcome == wait_outcome::queued);
    std::this_thread::sleep_for(1000ms);
    CHECK(l->poll("CA-kept").position == 2);   // polling keeps it in line
    std::this_thread::sleep_for(1300ms);       // 2.3 s after CA-gone's last word: dropped
    CHECK(l->queue_status().waiting == 1);
    CHECK(l->poll("CA-gone").outcome == wait_outcome::not_waiting);
    auto kept = l->poll("CA-kept");
    CHECK(kept.outcome == wait_outcome::waiting);
    CHECK(kept.position == 1);
    CHECK(kept.waited >= 2000ms);
    // The dropped waiter no longer blocks anyone; the kept one is first.
    REQUIRE(l->release("CA-h"));
    CHECK(l->acquire("CA-new").waiters_ahead);
    auto in = l->poll("CA-kept");
    CHECK(in.outcome == wait_outcome::dequeued);
    CHECK(in.waited >= 2000ms);
    CHECK(l->queue_wait_histogram().count == 1);
}

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: leaving is idempotent and moves the line up", F,
                          waiting_room_leave) {
    using namespace contract;
    F f;
    test::capture_sink logs;
    test::event_log events;
    auto l = make_limiter(f, cap(1), {logs.sink(), events.observer()});
    REQUIRE(l->acquire("CA-h"));
    for (int i = 1; i <= 3; ++i) REQUIRE(l->enqueue(waiter(i)).outcome == wait_outcome::queued);
    auto left = l->leave_queue(waiter(2));
    CHECK(left.left);
    CHECK(left.position == 2);
    CHECK(left.waiting == 2);
    CHECK_FALSE(l->leave_queue(waiter(2)));
    CHECK(l->poll(waiter(3)).position == 2);
    auto timed_out = l->leave_queue(waiter(1), callguard::leave_reason::timeout);
    CHECK(timed_out.left);
    CHECK(timed_out.position == 1);
    CHECK(l->poll(waiter(3)).position == 1);
    CHECK(l->poll(waiter(1)).outcome == wait_outcome::not_waiting);
    CHECK(l->queue_counters().queue_left == 1);
    CHECK(l->queue_counters().queue_timeouts == 1);
    CHECK(logs.count_containing("[CAPACITY] QUEUE_LEFT call_id=CA-w2 position=2 waited_ms=") == 1);
    CHECK(logs.count_containing("[CAPACITY] QUEUE_TIMEOUT call_id=CA-w1 position=1 waited_ms=") == 1);
    CHECK(logs.count_containing("[CAPACITY] QUEUED call_id=CA-w3 position=3 waiting=3") == 1);
    CHECK(events.count(callguard::event_kind::queued) == 3);
    CHECK(events.count(callguard::event_kind::queue_left) == 1);
    CHECK(events.count(callguard::event_kind::queue_timeout) == 1);
    // Releasing leaves the line alone (and a waiter holds no slot to release).
    CHECK_FALSE(l->release(waiter(3)));
    CHECK(l->queue_status().waiting == 1);
    REQUIRE(l->release("CA-h"));
    CHECK(l->poll(waiter(3)).outcome == wait_outcome::dequeued);
    CHECK(logs.count_containing("[CAPACITY] DEQUEUED call_id=CA-w3 waited_ms=") == 1);
    CHECK(events.count(callguard::event_kind::dequeued) == 1);
}

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: two limiters on one storage share one line", F,
                          waiting_room_instances) {
    using namespace contract;
    F f;
    auto a = make_limiter(f, cap(1));
    auto b = make_limiter(f, cap(1));
    REQUIRE(a->acquire("CA-h"));
    CHECK(a->enqueue(waiter(1)).position == 1);
    CHECK(b->enqueue(waiter(2)).position == 2);
    CHECK(a->enqueue(waiter(3)).position == 3);
    CHECK(b->queue_status().waiting == 3);
    CHECK(b->poll(waiter(1)).position == 1); // every instance serves every waiter's polls
    REQUIRE(b->release("CA-h"));
    CHECK(a->acquire("CA-new").waiters_ahead);
    CHECK(a->poll(waiter(2)).outcome == wait_outcome::waiting);
    CHECK(b->poll(waiter(1)).outcome == wait_outcome::dequeued);
    CHECK(a->poll(waiter(1)).outcome == wait_outcome::already_held);
    CHECK(a->leave_queue(waiter(2)).left);
    REQUIRE(a->release(waiter(1)));
    CHECK(b->poll(waiter(3)).outcome == wait_outcome::dequeued);
}

TEST_CASE_TEMPLATE_DEFINE("waiting room contract: 20 waiters admitted strictly in order under threads",
                          F, waiting_room_threads) {
    using namespace contract;
    using namespace std::chrono_literals;
    F f;
    auto l = make_limiter(f, cap(1));
    auto other = make_limiter(f, cap(1)); // a second instance serves half the polls
    constexpr int waiters = 20, pollers = 4, newcomers = 2;
    REQUIRE(l->acquire("CA-holder"));
    for (int i = 0; i < waiters; ++i) REQUIRE(l->enqueue(waiter(i)).position == i + 1);

    std::vector<int> order(waiters, -1);
    std::atomic<int> admitted{0}, violations{0}, errors{0}, newcomer_acquired{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < pollers; ++t)
        pool.emplace_back([&, t] {
            auto& me = t % 2 ? *other : *l;
            std::vector<bool> done(waiters, false);
            while (!stop.load()) {
                for (int i = t; i < waiters; i += pollers) {
                    if (done[i]) continue;
                    auto r = me.poll(waiter(i));
                    if (r.outcome == wait_outcome::dequeued) {
                        order[static_cast<std::size_t>(admitted.fetch_add(1))] = i;
                        done[i] = true;
                        if (!me.release(waiter(i))) errors.fetch_add(1); // frees the next slot
                    } else if (r.outcome != wait_outcome::waiting) {
                        errors.fetch_add(1);
                    }
                }
                std::this_thread::sleep_for(1ms);
            }
        });
    for (int t = 0; t < newcomers; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; !stop.load(); ++i) {
                auto id = "CA-new-" + std::to_string(t) + "-" + std::to_string(i);
                auto r = l->acquire(id);
                if (r.outcome == acquire_outcome::acquired) {
                    // The last waiter counts itself before it releases, so holding a slot while
                    // the count is short means a newcomer went ahead of a waiter.
                    if (admitted.load() < waiters) violations.fetch_add(1);
                    newcomer_acquired.fetch_add(1);
                    l->release(id);
                }
                std::this_thread::sleep_for(1ms);
            }
        });
    REQUIRE(l->release("CA-holder"));
    CHECK(test::eventually([&] { return admitted.load() == waiters; }, 30s));
    std::this_thread::sleep_for(50ms); // let newcomers in once the line is empty
    stop.store(true);
    for (auto& th : pool) th.join();
    for (int i = 0; i < waiters; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
    CHECK(violations.load() == 0);
    CHECK(errors.load() == 0);
    CHECK(newcomer_acquired.load() > 0);
    CHECK(l->queue_status().waiting == 0);
    CHECK(l->status().active_calls == 0);
}

/// Runs the whole waiting-room contract over one fixture type.
#define CALLGUARD_WAITING_ROOM_CONTRACT(fixture)                                                 \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_order, fixture);                                      \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_enqueue, fixture);                                    \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_tenants, fixture);                                    \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_ttl, fixture);                                        \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_leave, fixture);                                      \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_instances, fixture);                                  \
    TEST_CASE_TEMPLATE_INVOKE(waiting_room_threads, fixture)
