#pragma once

// The behaviour every backend must give the limiter, written once. A test file instantiates it
// for one fixture with TEST_CASE_TEMPLATE_INVOKE(limiter_contract, its_fixture).
//
// A fixture provides:
//   using backend_type = ...;              // models callguard::capacity_backend
//   backend_type make_backend();           // each call: a backend over the SAME storage
// A fresh fixture object starts from empty storage.

#include "../support/doubles.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace contract {

template <class Fixture>
using limiter_for = callguard::capacity_limiter<typename Fixture::backend_type>;

template <class Fixture>
std::unique_ptr<limiter_for<Fixture>> make_limiter(Fixture& f, callguard::limiter_config cfg,
                                                   callguard::limiter_hooks hooks = {}) {
    if (!hooks.sink) hooks.sink = callguard::null_sink();
    return std::make_unique<limiter_for<Fixture>>(f.make_backend(), std::move(cfg), std::move(hooks));
}

inline callguard::limiter_config cap(std::int64_t n) {
    auto c = test::small_config(n);
    return c;
}

} // namespace contract

TEST_CASE_TEMPLATE_DEFINE("limiter contract: admits up to the cap, then rejects", F, limiter_contract) {
    F f;
    auto l = contract::make_limiter(f, contract::cap(3));
    for (int i = 0; i < 3; ++i) {
        auto r = l->acquire("CA" + std::to_string(i));
        CHECK(r.outcome == callguard::acquire_outcome::acquired);
        CHECK(r.active == i + 1);
        CHECK(r.max == 3);
        CHECK(r.admitted());
    }
    auto r = l->acquire("CA-over");
    CHECK(r.outcome == callguard::acquire_outcome::rejected);
    CHECK_FALSE(r);
    CHECK_FALSE(r.tenant_limited);
    CHECK(r.active == 3);
    CHECK(l->status().active_calls == 3);
    CHECK(l->status().at_capacity);

    SUBCASE("a release makes room for exactly one more") {
        CHECK(l->release("CA1"));
        CHECK(l->acquire("CA-next").outcome == callguard::acquire_outcome::acquired);
        CHECK(l->acquire("CA-next2").outcome == callguard::acquire_outcome::rejected);
    }
    SUBCASE("a rejected call holds nothing and releasing it frees nothing") {
        CHECK_FALSE(l->release("CA-over"));
        CHECK(l->status().active_calls == 3);
    }
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: a retried acquire is already_held, even when full", F,
                          limiter_contract_retry) {
    F f;
    auto l = contract::make_limiter(f, contract::cap(2));
    REQUIRE(l->acquire("CA-a").outcome == callguard::acquire_outcome::acquired);
    REQUIRE(l->acquire("CA-b").outcome == callguard::acquire_outcome::acquired);
    for (int i = 0; i < 3; ++i) {
        auto r = l->acquire("CA-a");
        CHECK(r.outcome == callguard::acquire_outcome::already_held);
        CHECK(r.admitted());
        CHECK(r.active == 2);
    }
    CHECK(l->status().active_calls == 2);
    CHECK(l->counters().already_held == 3);
    // One release frees the one slot, however often it was acquired.
    CHECK(l->release("CA-a"));
    CHECK_FALSE(l->release("CA-a"));
    CHECK(l->status().active_calls == 1);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: release is idempotent and knows what it freed", F,
                          limiter_contract_release) {
    F f;
    auto l = contract::make_limiter(f, contract::cap(5));
    CHECK_FALSE(l->release("CA-never-acquired"));
    REQUIRE(l->acquire("CA1"));
    CHECK(l->release("CA1"));
    CHECK_FALSE(l->release("CA1"));
    CHECK_FALSE(l->release(""));                                     // malformed: frees nothing
    CHECK_FALSE(l->release(std::string(300, 'x')));                  // malformed: frees nothing
    CHECK(l->status().active_calls == 0);
    CHECK(l->counters().released == 1);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: refresh extends only held slots", F,
                          limiter_contract_refresh) {
    F f;
    auto l = contract::make_limiter(f, contract::cap(5));
    CHECK_FALSE(l->refresh("CA-unknown"));
    REQUIRE(l->acquire("CA1"));
    CHECK(l->refresh("CA1"));
    l->release("CA1");
    CHECK_FALSE(l->refresh("CA1")); // never re-creates a released slot
    CHECK(l->status().active_calls == 0);
    CHECK_THROWS_AS(l->refresh(""), std::invalid_argument);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: a slot nobody releases expires after its TTL", F,
                          limiter_contract_ttl) {
    using namespace std::chrono_literals;
    F f;
    auto cfg = contract::cap(2);
    cfg.slot_ttl = 1s;
    auto l = contract::make_limiter(f, cfg);
    REQUIRE(l->acquire("CA-crashed-1"));
    REQUIRE(l->acquire("CA-kept"));
    CHECK(l->acquire("CA-waiting").outcome == callguard::acquire_outcome::rejected);
    std::this_thread::sleep_for(600ms);
    CHECK(l->refresh("CA-kept"));                // a heartbeat keeps this one alive
    std::this_thread::sleep_for(600ms);          // 1.2 s after the acquire: CA-crashed-1 expired
    CHECK(l->acquire("CA-kept").outcome == callguard::acquire_outcome::already_held);
    CHECK(l->acquire("CA-waiting").outcome == callguard::acquire_outcome::acquired);
    CHECK_FALSE(l->release("CA-crashed-1"));     // expired: nothing left to free
    CHECK(l->status().active_calls == 2);
    std::this_thread::sleep_for(1100ms);
    // Both expired. A backend may already have dropped them on its own (Redis expires the
    // whole key of an idle limiter), so cleanup finds at most those two.
    CHECK(l->status().active_calls == 0);
    CHECK(l->cleanup_expired() <= 2);
    CHECK(l->cleanup_expired() == 0);
    CHECK(l->status().active_calls == 0);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: tenant caps hold under the global cap", F,
                          limiter_contract_tenants) {
    F f;
    auto cfg = contract::cap(4);
    cfg.tenant_limits = {{"biz1", 2}, {"biz2", 10}};
    auto l = contract::make_limiter(f, cfg);
    CHECK(l->acquire("CA-1a", "biz1").outcome == callguard::acquire_outcome::acquired);
    CHECK(l->acquire("CA-1b", "biz1").outcome == callguard::acquire_outcome::acquired);
    auto r = l->acquire("CA-1c", "biz1");
    CHECK(r.outcome == callguard::acquire_outcome::rejected);
    CHECK(r.tenant_limited);
    // A retried call of a full tenant is still already_held.
    CHECK(l->acquire("CA-1a", "biz1").outcome == callguard::acquire_outcome::already_held);
    // Other tenants, and calls without one, still get the global room.
    CHECK(l->acquire("CA-2a", "biz2").outcome == callguard::acquire_outcome::acquired);
    CHECK(l->acquire("CA-none").outcome == callguard::acquire_outcome::acquired);
    // The global cap (4) binds even though biz2's own cap is 10.
    auto g = l->acquire("CA-2b", "biz2");
    CHECK(g.outcome == callguard::acquire_outcome::rejected);
    CHECK_FALSE(g.tenant_limited);
    // Releasing a biz1 call gives biz1 its room back (and the global room too).
    CHECK(l->release("CA-1a"));
    CHECK(l->acquire("CA-1c", "biz1").outcome == callguard::acquire_outcome::acquired);
    CHECK(l->status().active_calls == 4);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: two limiters on one storage share one cap", F,
                          limiter_contract_instances) {
    F f;
    auto a = contract::make_limiter(f, contract::cap(3));
    auto b = contract::make_limiter(f, contract::cap(3));
    CHECK(a->acquire("CA-1").outcome == callguard::acquire_outcome::acquired);
    CHECK(b->acquire("CA-2").outcome == callguard::acquire_outcome::acquired);
    CHECK(a->acquire("CA-3").outcome == callguard::acquire_outcome::acquired);
    CHECK(b->acquire("CA-4").outcome == callguard::acquire_outcome::rejected);
    // The webhook hit instance a, the status callback hits instance b: it still releases.
    CHECK(b->acquire("CA-1").outcome == callguard::acquire_outcome::already_held);
    CHECK(b->release("CA-1"));
    CHECK(a->status().active_calls == 2);
    CHECK(b->acquire("CA-4").outcome == callguard::acquire_outcome::acquired);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: bad input is refused and takes nothing", F,
                          limiter_contract_bad_input) {
    F f;
    auto l = contract::make_limiter(f, contract::cap(5));
    CHECK_THROWS_AS(l->acquire(""), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire(std::string(257, 'C')), std::invalid_argument);
    CHECK_NOTHROW(l->acquire(std::string(256, 'C')));
    CHECK_THROWS_AS(l->acquire("CA\n123"), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire(std::string("CA\0x", 4)), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire("CA\x7f"), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire("CA1", "biz 1"), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire("CA1", "biz/1"), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire("CA1", "{calls}"), std::invalid_argument);
    CHECK_THROWS_AS(l->acquire("CA1", std::string(65, 'a')), std::invalid_argument);
    CHECK_THROWS_AS(l->guard(""), std::invalid_argument);
    CHECK(l->status().active_calls == 1); // only the valid 256-byte id
    // Ids that look like Redis syntax or Lua patterns are plain data.
    for (auto id : {"*", "{calls}:active", "%s %d", "' OR 1=1 --", "CA 1", "CA\xd7\x90"}) {
        CHECK(l->acquire(id).outcome == callguard::acquire_outcome::acquired);
        CHECK(l->release(id));
    }
    CHECK(l->status().active_calls == 1);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: a guard releases on every path", F,
                          limiter_contract_guard) {
    F f;
    auto l = contract::make_limiter(f, contract::cap(1));
    {
        auto g = l->guard("CA-scope");
        CHECK(g.admitted());
        CHECK(g.release_pending());
        CHECK(l->status().active_calls == 1);
        auto rejected = l->guard("CA-other");
        CHECK_FALSE(rejected.admitted());
        CHECK_FALSE(rejected.release_pending());
    } // g released here; the rejected guard released nothing
    CHECK(l->status().active_calls == 0);

    try {
        auto g = l->guard("CA-throw");
        REQUIRE(g);
        throw std::runtime_error("handler failed");
    } catch (const std::runtime_error&) {
    }
    CHECK(l->status().active_calls == 0);

    // The media socket adopts the slot its webhook took: already_held, released by the guard.
    REQUIRE(l->acquire("CA-webhook"));
    {
        auto adopted = l->guard("CA-webhook");
        CHECK(adopted.result().outcome == callguard::acquire_outcome::already_held);
        CHECK(adopted.release_pending());
        CHECK(adopted.release());
        CHECK_FALSE(adopted.release());
        CHECK_FALSE(adopted.release_pending());
    }
    CHECK(l->status().active_calls == 0);

    // Moving transfers ownership: exactly one release.
    auto a = l->guard("CA-move");
    callguard::slot_guard b = std::move(a);
    CHECK_FALSE(a.release_pending());
    CHECK(b.release_pending());
    callguard::slot_guard c;
    c = std::move(b);
    CHECK(l->status().active_calls == 1);
    c = callguard::slot_guard{}; // assigning over a guard releases its slot
    CHECK(l->status().active_calls == 0);
    CHECK(l->counters().released == 4);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: many threads never exceed the cap", F,
                          limiter_contract_threads) {
    F f;
    constexpr std::int64_t limit = 5;
    auto l = contract::make_limiter(f, contract::cap(limit));
    std::atomic<std::int64_t> holding{0}, peak{0}, admitted{0}, rejected{0};
    constexpr int threads = 8, rounds = 300;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < rounds; ++i) {
                const auto id = "CA-t" + std::to_string(t) + "-" + std::to_string(i);
                auto r = l->acquire(id);
                if (r.outcome == callguard::acquire_outcome::acquired) {
                    auto now = holding.fetch_add(1) + 1;
                    auto p = peak.load();
                    while (now > p && !peak.compare_exchange_weak(p, now)) {
                    }
                    ++admitted;
                    holding.fetch_sub(1); // stop counting before the slot is given back
                    l->release(id);
                } else {
                    ++rejected;
                }
            }
        });
    }
    for (auto& th : pool) th.join();
    CHECK(peak.load() <= limit);
    CHECK(admitted.load() + rejected.load() == threads * rounds);
    CHECK(admitted.load() > 0);
    CHECK(l->status().active_calls == 0);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: reinstate puts a call in progress back, even over the cap", F,
                          limiter_contract_reinstate) {
    using callguard::acquire_outcome;
    using callguard::reinstate_outcome;
    F f;
    auto l = contract::make_limiter(f, contract::cap(2));
    REQUIRE(l->acquire("CA-a").outcome == acquire_outcome::acquired);
    REQUIRE(l->acquire("CA-b").outcome == acquire_outcome::acquired);
    auto r = l->reinstate("CA-live");
    CHECK(r.outcome == reinstate_outcome::reinstated);
    CHECK(r.active == 3);
    CHECK(r.max == 2);
    auto st = l->status();
    CHECK(st.active_calls == 3); // the truth, above the cap
    CHECK(st.max_calls == 2);
    CHECK(st.capacity_available == 0);
    CHECK(st.at_capacity);
    // Idempotent, and counted once.
    CHECK(l->reinstate("CA-live").outcome == reinstate_outcome::already_held);
    CHECK(l->reinstate("CA-a").outcome == reinstate_outcome::already_held);
    CHECK(l->status().active_calls == 3);
    CHECK(l->counters().reinstated == 1);
    // New calls wait until the count is below the cap, not merely at it.
    CHECK(l->acquire("CA-new").outcome == acquire_outcome::rejected);
    CHECK(l->acquire("CA-live").outcome == acquire_outcome::already_held);
    CHECK(l->release("CA-a"));
    CHECK(l->acquire("CA-new").outcome == acquire_outcome::rejected);
    CHECK(l->refresh("CA-live"));
    CHECK(l->release("CA-live"));
    CHECK_FALSE(l->release("CA-live"));
    CHECK(l->acquire("CA-new").outcome == acquire_outcome::acquired);
    CHECK(l->status().active_calls == 2);

    SUBCASE("tenant counts include reinstated calls") {
        auto cfg = contract::cap(10);
        cfg.tenant_limits = {{"biz1", 1}};
        auto t = contract::make_limiter(f, cfg);
        REQUIRE(t->acquire("CA-t1", "biz1").outcome == acquire_outcome::acquired);
        CHECK(t->reinstate("CA-t2", "biz1").outcome == reinstate_outcome::reinstated);
        auto rej = t->acquire("CA-t3", "biz1");
        CHECK(rej.outcome == acquire_outcome::rejected);
        CHECK(rej.tenant_limited);
        CHECK(t->release("CA-t1"));
        CHECK(t->acquire("CA-t3", "biz1").outcome == acquire_outcome::rejected); // 1 of 1 still
        CHECK(t->release("CA-t2"));
        CHECK(t->acquire("CA-t3", "biz1").outcome == acquire_outcome::acquired);
    }
    SUBCASE("bad input is refused and takes nothing") {
        CHECK_THROWS_AS(l->reinstate(""), std::invalid_argument);
        CHECK_THROWS_AS(l->reinstate(std::string(257, 'C')), std::invalid_argument);
        CHECK_THROWS_AS(l->reinstate("CA-x", "bad tenant"), std::invalid_argument);
        CHECK(l->status().active_calls == 2);
    }
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: a reinstated slot expires after its TTL like any other", F,
                          limiter_contract_reinstate_ttl) {
    using namespace std::chrono_literals;
    F f;
    auto cfg = contract::cap(1);
    cfg.slot_ttl = 1s;
    auto l = contract::make_limiter(f, cfg);
    REQUIRE(l->acquire("CA-held"));
    REQUIRE(l->reinstate("CA-back").outcome == callguard::reinstate_outcome::reinstated);
    CHECK(l->status().active_calls == 2);
    std::this_thread::sleep_for(1200ms);
    CHECK(l->status().active_calls == 0);
    CHECK(l->acquire("CA-next").outcome == callguard::acquire_outcome::acquired);
}

TEST_CASE_TEMPLATE_DEFINE("limiter contract: many threads reinstating one call count it once", F,
                          limiter_contract_reinstate_threads) {
    F f;
    auto a = contract::make_limiter(f, contract::cap(3));
    auto b = contract::make_limiter(f, contract::cap(3));
    std::atomic<int> reinstated{0}, held{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 8; ++t)
        pool.emplace_back([&, t] {
            auto& l = (t % 2) ? *a : *b;
            for (int i = 0; i < 20; ++i) {
                auto r = l.reinstate("CA-shared-" + std::to_string(i));
                if (r.outcome == callguard::reinstate_outcome::reinstated) ++reinstated;
                else if (r.outcome == callguard::reinstate_outcome::already_held) ++held;
            }
        });
    for (auto& th : pool) th.join();
    CHECK(reinstated.load() == 20);
    CHECK(held.load() == 8 * 20 - 20);
    CHECK(a->status().active_calls == 20);
    CHECK(a->acquire("CA-new").outcome == callguard::acquire_outcome::rejected);
}

/// Runs the whole contract over one fixture type.
#define CALLGUARD_LIMITER_CONTRACT(fixture)                                                      \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract, fixture);                                        \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_retry, fixture);                                  \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_release, fixture);                                \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_refresh, fixture);                                \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_ttl, fixture);                                    \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_tenants, fixture);                                \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_instances, fixture);                              \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_bad_input, fixture);                              \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_guard, fixture);                                  \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_threads, fixture);                                \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_reinstate, fixture);                              \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_reinstate_ttl, fixture);                          \
    TEST_CASE_TEMPLATE_INVOKE(limiter_contract_reinstate_threads, fixture)
