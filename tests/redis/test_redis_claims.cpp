// Claims on a real redis-server: one key per claim under the limiter's hash tag, expiring on the
// server's clock, one EVALSHA per claim, and the fail mode with Redis frozen.

#include "../support/doubles.hpp"
#include "../support/probes.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

using namespace std::chrono_literals;
using callguard::claim_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;

namespace {

std::unique_ptr<redis_limiter> make_claiming(const test::redis_server& srv, const std::string& prefix,
                                             callguard::fail_mode mode = callguard::fail_mode::open) {
    auto cfg = test::small_config(2);
    cfg.fail_mode = mode;
    return std::make_unique<redis_limiter>(callguard::redis_backend(test::quick_options(srv, prefix)), cfg,
                                           callguard::limiter_hooks{callguard::null_sink(), {}});
}

} // namespace

TEST_CASE("redis claims: one key under the hash tag with the claim's TTL, one EVALSHA each") {
    auto& srv = test::shared_redis();
    const auto prefix = test::unique_prefix("claims");
    auto l = make_claiming(srv, prefix);
    REQUIRE(l->claim_once("warm", 60s).claimed()); // the script is loaded
    const auto before = srv.command_calls("evalsha");
    REQUIRE(l->claim_once("whatsapp:to:+15550001", 90s).outcome == claim_outcome::claimed);
    const auto key = "{" + prefix + "}:claim:whatsapp:to:+15550001";
    CHECK(srv.command({"GET", key}) == "1");
    const auto pttl = srv.integer({"PTTL", key});
    CHECK(pttl > 89'000);
    CHECK(pttl <= 90'000);
    auto again = l->claim_once("whatsapp:to:+15550001", 90s);
    CHECK(again.outcome == claim_outcome::already_claimed);
    CHECK(again.remaining.count() <= pttl);
    CHECK(srv.integer({"PTTL", key}) <= pttl); // the losing claim did not extend it
    CHECK(srv.command_calls("evalsha") - before == 2);
    // The server's expiry frees it (a deleted key reads the same).
    srv.command({"PEXPIRE", key, "1"});
    CHECK(test::eventually([&] { return l->claim_once("whatsapp:to:+15550001", 90s).claimed(); }, 2s));
}

TEST_CASE("redis claims: Redis frozen, the fail mode answers within one timeout, then Redis decides again") {
    test::redis_server srv;
    const auto prefix = test::unique_prefix("claims-down");
    auto closed = make_claiming(srv, prefix, callguard::fail_mode::closed);
    auto local = make_claiming(srv, prefix, callguard::fail_mode::local);
    REQUIRE(closed->claim_once("k-before", 60s).claimed());
    srv.pause();
    const auto t0 = std::chrono::steady_clock::now();
    // The first call of each waits one timeout; its command may still run when Redis resumes
    // (a timed-out write may have happened), so these use keys of their own. Later calls are
    // answered by the open breaker and never reach Redis.
    CHECK(closed->claim_once("k-timed-out-1", 60s).outcome == claim_outcome::refused_fail_closed);
    CHECK(local->claim_once("k-timed-out-2", 60s).local_fallback);
    CHECK(closed->claim_once("k-during", 60s).outcome == claim_outcome::refused_fail_closed);
    auto l1 = local->claim_once("k-during", 60s);
    CHECK(l1.outcome == claim_outcome::claimed);
    CHECK(l1.local_fallback);
    CHECK(local->claim_once("k-during", 60s).outcome == claim_outcome::already_claimed);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    srv.resume();
    CHECK(test::eventually([&] { return closed->claim_once("k-before", 60s).outcome == claim_outcome::already_claimed; },
                           3s));
    // Redis never saw the local claim: the first instance to ask it now takes the key.
    CHECK(closed->claim_once("k-during", 60s).outcome == claim_outcome::claimed);
}
