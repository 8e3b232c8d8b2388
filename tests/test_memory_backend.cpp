// The memory backend on a clock moved by hand: expiry, purging and the tenant counts.

#include "support/doubles.hpp"

#include <callguard/backends/memory.hpp>
#include <doctest/doctest.h>

using namespace std::chrono_literals;
using callguard::slot_request;
using callguard::slot_state;

namespace {

slot_request req(std::string_view id, std::int64_t max, std::string_view tenant = {},
                 std::int64_t tenant_max = 0) {
    return {id, tenant, max, tenant_max, 10s};
}

} // namespace

TEST_CASE("memory backend: expired slots stop counting exactly at their expiry") {
    test::manual_clock clock;
    callguard::basic_memory_backend<test::manual_clock> b(clock);
    CHECK(b.try_acquire(req("a", 2)).state == slot_state::acquired);
    clock.advance(5s);
    CHECK(b.try_acquire(req("b", 2)).state == slot_state::acquired);
    CHECK(b.try_acquire(req("c", 2)).state == slot_state::rejected);
    clock.advance(5s - 1ns);
    CHECK(b.active_count() == 2);
    CHECK(b.try_acquire(req("c", 2)).state == slot_state::rejected);
    clock.advance(1ns); // a's expiry: it no longer counts
    CHECK(b.try_acquire(req("c", 2)).state == slot_state::acquired);
    CHECK(b.active_count() == 2);
    CHECK_FALSE(b.release("a").released);
}

TEST_CASE("memory backend: an expired holder that comes back is admitted afresh") {
    test::manual_clock clock;
    callguard::basic_memory_backend<test::manual_clock> b(clock);
    REQUIRE(b.try_acquire(req("a", 1)).state == slot_state::acquired);
    clock.advance(11s);
    auto r = b.try_acquire(req("a", 1));
    CHECK(r.state == slot_state::acquired);
    CHECK(r.active == 1);
}

TEST_CASE("memory backend: already_held and refresh push the expiry, never pull it") {
    test::manual_clock clock;
    callguard::basic_memory_backend<test::manual_clock> b(clock);
    REQUIRE(b.try_acquire(req("a", 1)).state == slot_state::acquired);
    clock.advance(9s);
    CHECK(b.try_acquire(req("a", 1)).state == slot_state::already_held); // now expires at 19 s
    clock.advance(9s);
    CHECK(b.active_count() == 1);
    CHECK(b.refresh("a", 10s)); // 28 s
    CHECK(b.refresh("a", 1s)); // a shorter TTL keeps the later expiry
    clock.advance(9s);
    CHECK(b.active_count() == 1);
    clock.advance(2s);
    CHECK(b.active_count() == 0);
    CHECK_FALSE(b.refresh("a", 10s));
}

TEST_CASE("memory backend: purge_expired removes only what expired and keeps tenants right") {
    test::manual_clock clock;
    callguard::basic_memory_backend<test::manual_clock> b(clock, 4);
    for (int i = 0; i < 10; ++i)
        REQUIRE(b.try_acquire(req("old" + std::to_string(i), 100, "t", 10)).state ==
                slot_state::acquired);
    CHECK(b.try_acquire(req("t-over", 100, "t", 10)).state == slot_state::rejected_tenant);
    clock.advance(6s);
    for (int i = 0; i < 5; ++i)
        REQUIRE(b.try_acquire(req("new" + std::to_string(i), 100)).state == slot_state::acquired);
    clock.advance(5s);
    CHECK(b.cleanup_expired() == 10);
    CHECK(b.active_count() == 5);
    CHECK(b.cleanup_expired() == 0);
    // The tenant's count went down with its expired slots.
    CHECK(b.try_acquire(req("t-new", 100, "t", 10)).state == slot_state::acquired);
}

TEST_CASE("memory backend: a rejection purges expired slots first, then admits") {
    test::manual_clock clock;
    callguard::basic_memory_backend<test::manual_clock> b(clock, 8);
    for (int i = 0; i < 50; ++i) REQUIRE(b.try_acquire(req("s" + std::to_string(i), 50)).state == slot_state::acquired);
    clock.advance(10s);
    auto r = b.try_acquire(req("fresh", 50));
    CHECK(r.state == slot_state::acquired);
    CHECK(r.active == 1);
}

TEST_CASE("memory backend: tenant rejections give the reserved global slot back") {
    callguard::memory_backend b;
    REQUIRE(b.try_acquire(req("a", 2, "t", 1)).state == slot_state::acquired);
    CHECK(b.try_acquire(req("b", 2, "t", 1)).state == slot_state::rejected_tenant);
    CHECK(b.active_count() == 1);
    CHECK(b.try_acquire(req("c", 2)).state == slot_state::acquired);
    CHECK(b.try_acquire(req("d", 2)).state == slot_state::rejected);
}

TEST_CASE("memory backend: copies share slots, node reuse keeps ids intact") {
    callguard::memory_backend a;
    auto b = a;
    for (int round = 0; round < 100; ++round) {
        auto id = std::string(static_cast<std::size_t>(1 + round % 40), static_cast<char>('a' + round % 26));
        REQUIRE(a.try_acquire(req(id, 5)).state == slot_state::acquired);
        CHECK(b.try_acquire(req(id, 5)).state == slot_state::already_held);
        CHECK(b.release(id).released);
        CHECK_FALSE(a.release(id).released);
    }
    CHECK(a.active_count() == 0);
}

TEST_CASE("memory claims: expiry to the tick on a hand-moved clock, expired keys forgotten") {
    using namespace std::chrono_literals;
    test::manual_clock clock;
    callguard::basic_memory_backend<test::manual_clock> b(clock);
    auto first = b.claim("k1", 1000ms);
    CHECK(first.claimed);
    CHECK(first.remaining == 1000ms);
    clock.advance(999ms);
    auto held = b.claim("k1", 5000ms);
    CHECK_FALSE(held.claimed);
    CHECK(held.remaining == 1ms);
    clock.advance(1ms);
    CHECK(b.claim("k1", 5000ms).claimed); // free at its expiry, taken again for 5 s
    clock.advance(4999ms);
    CHECK_FALSE(b.claim("k1", 10ms).claimed);
    // Copies share the claims, as they share slots.
    auto copy = b;
    CHECK_FALSE(copy.claim("k1", 10ms).claimed);
    CHECK(copy.claim("k2", 10ms).claimed);
    CHECK_FALSE(b.claim("k2", 10ms).claimed);

    // The table under it forgets expired keys at the next claim: its size stays bounded.
    callguard::detail::claim_table t;
    for (int i = 0; i < 100; ++i) CHECK(t.claim("n" + std::to_string(i), 0, 10).claimed);
    CHECK(t.size() == 100);
    CHECK(t.claim("n5", 5, 10).claimed == false);
    CHECK(t.claim("again", 10, 10).claimed); // every key of the batch expired at 10
    CHECK(t.size() == 1);
    CHECK(t.claim("again", 19, 10).remaining == 1);
}
