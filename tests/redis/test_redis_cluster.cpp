// Redis Cluster, for real: three masters made with `redis-cli --cluster create`. The limiter's
// keys share one hash tag, so its scripts go to the one node owning that slot; a resharding of
// that slot (`redis-cli --cluster reshard`) under load is followed without a single call being
// decided by the fail mode.

#include "../support/doubles.hpp"
#include "../support/redis_topologies.hpp"
#include "cluster_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;

TEST_CASE("cluster: keys of one limiter live on the node owning their hash slot, tenants too") {
    auto& c = test::shared_cluster();
    const auto prefix = test::unique_prefix("where");
    redis_limiter l(callguard::redis_backend(c.url(), prefix), test::small_config(5), {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-1", "biz1").outcome == acquire_outcome::acquired);
    REQUIRE(l.acquire("CA-2").outcome == acquire_outcome::acquired);
    const int slot = test::key_slot("{" + prefix + "}:active");
    const int owner = c.owner(slot);
    REQUIRE(owner >= 0);
    CHECK(test::key_slot("{" + prefix + "}:tenant:biz1") == slot);
    CHECK(c.node(owner).integer({"ZCARD", "{" + prefix + "}:active"}) == 2);
    CHECK(c.node(owner).integer({"ZCARD", "{" + prefix + "}:tenant:biz1"}) == 1);
    CHECK(l.status().active_calls == 2);
    CHECK(l.counters().backend_errors == 0);
}

TEST_CASE("cluster: resharding the limiter's slot under load is followed, no call fails open") {
    auto& c = test::shared_cluster();
    // A prefix whose slot is the lowest of node 0's, so a one-slot reshard moves exactly it.
    const int from = 0, to = 1;
    const int first = c.first_slot_of(from);
    REQUIRE(first >= 0);
    std::string prefix;
    for (int i = 0; prefix.empty() && i < 2'000'000; ++i) {
        auto p = "reshard-" + std::to_string(i);
        if (test::key_slot("{" + p + "}") == first) prefix = p;
    }
    REQUIRE_FALSE(prefix.empty());
    constexpr std::int64_t cap = 12;
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(c.url(), prefix), test::small_config(cap), {logs.sink(), {}});
    for (int i = 0; i < 6; ++i) REQUIRE(l.acquire("CA-held-" + std::to_string(i)).outcome == acquire_outcome::acquired);
    CHECK(c.node(from).integer({"ZCARD", "{" + prefix + "}:active"}) == 6);

    std::atomic<bool> stop{false};
    std::atomic<long> ops{0}, wrong{0};
    std::vector<std::thread> load;
    for (int t = 0; t < 4; ++t)
        load.emplace_back([&, t] {
            for (long i = 0; !stop.load(); ++i) {
                const auto id = "CA-load-" + std::to_string(t) + "-" + std::to_string(i);
                auto r = l.acquire(id);
                if (r.outcome == acquire_outcome::admitted_fail_open || r.outcome == acquire_outcome::rejected_fail_closed)
                    ++wrong;
                if (r.outcome == acquire_outcome::acquired) l.release(id);
                ++ops;
            }
        });
    std::this_thread::sleep_for(300ms);
    const long before = ops.load();
    CHECK(c.reshard(from, to, 1) == 0);
    std::this_thread::sleep_for(500ms);
    stop = true;
    for (auto& th : load) th.join();

    CHECK(c.owner(first) == to);
    std::printf("\ncluster reshard of slot %d (node %d -> %d) under load: %ld operations, "
                "%ld during and after the move, %ld decided by the fail mode\n",
                first, from, to, ops.load(), ops.load() - before, wrong.load());
    std::fflush(stdout);
    CHECK(wrong.load() == 0);
    CHECK(l.counters().backend_errors == 0);
    CHECK(logs.count_containing("BACKEND_DOWN") == 0);
    // The held slots moved with the slot, and the cap still holds on the new owner.
    CHECK(c.node(to).integer({"ZCARD", "{" + prefix + "}:active"}) == 6);
    for (int i = 0; i < 6; ++i)
        CHECK(l.acquire("CA-held-" + std::to_string(i)).outcome == acquire_outcome::already_held);
    for (auto i = 6; i < cap; ++i)
        CHECK(l.acquire("CA-more-" + std::to_string(i)).outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA-over").outcome == acquire_outcome::rejected);
    // And back, for the tests that share this cluster.
    c.reshard(to, from, 1);
}
