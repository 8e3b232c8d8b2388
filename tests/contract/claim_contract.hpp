#pragma once

// Claims ("at most once") every backend that keeps them must give the limiter, written once. A
// test file instantiates it with CALLGUARD_CLAIM_CONTRACT(its_fixture), over the same fixtures
// as the limiter contract (limiter_contract.hpp).

#include "../support/probes.hpp"
#include "limiter_contract.hpp"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

TEST_CASE_TEMPLATE_DEFINE("claim contract: the first claim wins until its TTL, on every instance", F,
                          claim_first_wins) {
    using namespace std::chrono_literals;
    using callguard::claim_outcome;
    F f;
    auto a = contract::make_limiter(f, contract::cap(2));
    auto b = contract::make_limiter(f, contract::cap(2)); // another instance, same storage
    auto first = a->claim_once("whatsapp:call:CA1", 60s);
    CHECK(first.outcome == claim_outcome::claimed);
    CHECK(first.claimed());
    CHECK(first.remaining == 60s);
    CHECK_FALSE(first.local_fallback);
    for (auto* l : {a.get(), b.get()}) {
        auto again = l->claim_once("whatsapp:call:CA1", 60s);
        CHECK(again.outcome == claim_outcome::already_claimed);
        CHECK_FALSE(again);
        CHECK(again.remaining > 50s);
        CHECK(again.remaining <= 60s);
    }
    // A second claim with another TTL neither takes nor extends it.
    auto longer = b->claim_once("whatsapp:call:CA1", 3600s);
    CHECK(longer.outcome == claim_outcome::already_claimed);
    CHECK(longer.remaining <= 60s);
    // Keys are independent, and share nothing with slots of the same name.
    CHECK(b->claim_once("whatsapp:call:CA2", 60s).outcome == claim_outcome::claimed);
    CHECK(a->claim_once("CA-slot", 60s).outcome == claim_outcome::claimed);
    CHECK(a->acquire("CA-slot").outcome == callguard::acquire_outcome::acquired);
    CHECK(a->claim_once("CA-slot", 60s).outcome == claim_outcome::already_claimed);
    CHECK(a->status().active_calls == 1);
    // Any printable bytes are plain data: no pattern, no second key.
    CHECK(a->claim_once("to:+972 50*?[x]{y}", 60s).outcome == claim_outcome::claimed);
    CHECK(b->claim_once("to:+972 50*?[x]{y}", 60s).outcome == claim_outcome::already_claimed);
    CHECK(b->claim_once("to:+972 50", 60s).outcome == claim_outcome::claimed);
}

TEST_CASE_TEMPLATE_DEFINE("claim contract: a claim ends at its expiry and can be taken again", F,
                          claim_expiry) {
    using namespace std::chrono_literals;
    using callguard::claim_outcome;
    F f;
    auto a = contract::make_limiter(f, contract::cap(2));
    auto b = contract::make_limiter(f, contract::cap(2));
    REQUIRE(a->claim_once("cooldown:+15550001", 800ms).outcome == claim_outcome::claimed);
    CHECK(b->claim_once("cooldown:+15550001", 800ms).outcome == claim_outcome::already_claimed);
    // Still held a while later (not only at the first look), then free.
    CHECK(test::holds_for([&] { return b->claim_once("cooldown:+15550001", 800ms).outcome ==
                                       claim_outcome::already_claimed; },
                          200ms));
    CHECK(test::eventually([&] { return b->claim_once("cooldown:+15550001", 60s).claimed(); }, 3s));
    CHECK(a->claim_once("cooldown:+15550001", 60s).outcome == claim_outcome::already_claimed);
}

TEST_CASE_TEMPLATE_DEFINE("claim contract: bad keys and TTLs are refused and claim nothing", F,
                          claim_bad_input) {
    using namespace std::chrono_literals;
    F f;
    auto l = contract::make_limiter(f, contract::cap(2));
    CHECK_THROWS_AS(l->claim_once("", 1s), std::invalid_argument);
    CHECK_THROWS_AS(l->claim_once(std::string(513, 'k'), 1s), std::invalid_argument);
    CHECK_THROWS_AS(l->claim_once("bad\nkey", 1s), std::invalid_argument);
    CHECK_THROWS_AS(l->claim_once("k", 0ms), std::invalid_argument);
    CHECK_THROWS_AS(l->claim_once("k", std::chrono::hours(24 * 367)), std::invalid_argument);
    CHECK(l->claim_once(std::string(512, 'k'), 1s).claimed());
    CHECK(l->claim_once("k", 1s).claimed());
}

TEST_CASE_TEMPLATE_DEFINE("claim contract: threads of two instances racing for each key, one winner each", F,
                          claim_threads) {
    using namespace std::chrono_literals;
    F f;
    auto a = contract::make_limiter(f, contract::cap(2));
    auto b = contract::make_limiter(f, contract::cap(2));
    constexpr int keys = 40, threads = 6;
    std::vector<std::atomic<int>> winners(keys);
    std::atomic<int> errors{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            auto& l = t % 2 ? *a : *b;
            while (!go.load()) std::this_thread::yield();
            for (int k = 0; k < keys; ++k) {
                try {
                    // Each thread walks the keys from another starting point.
                    const int key = (k + t * 7) % keys;
                    auto r = l.claim_once("race:" + std::to_string(key), 60s);
                    if (r.outcome == callguard::claim_outcome::claimed) ++winners[static_cast<std::size_t>(key)];
                    else if (r.outcome != callguard::claim_outcome::already_claimed) ++errors;
                } catch (...) {
                    ++errors;
                }
            }
        });
    go = true;
    for (auto& t : pool) t.join();
    CHECK(errors == 0);
    for (int k = 0; k < keys; ++k) {
        CAPTURE(k);
        CHECK(winners[static_cast<std::size_t>(k)] == 1);
    }
}

#define CALLGUARD_CLAIM_CONTRACT(fixture)                                                        \
    TEST_CASE_TEMPLATE_INVOKE(claim_first_wins, fixture);                                        \
    TEST_CASE_TEMPLATE_INVOKE(claim_expiry, fixture);                                            \
    TEST_CASE_TEMPLATE_INVOKE(claim_bad_input, fixture);                                         \
    TEST_CASE_TEMPLATE_INVOKE(claim_threads, fixture)
