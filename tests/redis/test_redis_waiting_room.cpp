// The waiting room on a real redis-server: its keys and their expiry, one EVALSHA per
// operation, what acquire costs while nobody waits, the walk's bound in Lua, a waiter whose
// process died, and the fail mode with Redis gone.

#include "../support/doubles.hpp"
#include "../support/probes.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <thread>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using callguard::wait_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;

namespace {

std::unique_ptr<redis_limiter> make_waiting(const std::string& prefix, std::int64_t cap,
                                            std::chrono::seconds waiter_ttl = 30s) {
    auto cfg = test::small_config(cap);
    cfg.waiter_ttl = waiter_ttl;
    cfg.tenant_limits = {{"biz1", 2}};
    return std::make_unique<redis_limiter>(
        callguard::redis_backend(test::quick_options(test::shared_redis(), prefix)), cfg,
        callguard::limiter_hooks{callguard::null_sink(), {}});
}

long long stat_calls(std::string_view cmd) { return test::shared_redis().command_calls(cmd); }

long long server_ms() {
    auto time = test::shared_redis().command({"TIME"});
    const auto space = time.find(' ');
    return std::stoll(time.substr(0, space)) * 1000 + std::stoll(time.substr(space + 1)) / 1000;
}

} // namespace

TEST_CASE("redis: the waiting room's keys share the hash tag, tickets order the line") {
    auto& srv = test::shared_redis();
    const auto prefix = test::unique_prefix("line-model");
    const auto base = "{" + prefix + "}";
    auto l = make_waiting(prefix, 1, 30s);
    REQUIRE(l->acquire("CA-h"));
    CHECK(srv.integer({"EXISTS", base + ":waiting"}) == 0); // nobody waits: no key
    REQUIRE(l->enqueue("CA-w1", "biz1").outcome == wait_outcome::queued);
    REQUIRE(l->enqueue("CA-w2").outcome == wait_outcome::queued);
    REQUIRE(l->enqueue("CA-w3").outcome == wait_outcome::queued);
    CHECK(srv.command({"ZRANGE", base + ":waiting", "0", "-1", "WITHSCORES"}) ==
          "CA-w1 1 CA-w2 2 CA-w3 3");
    const auto now = server_ms();
    const auto info = srv.command({"HGET", base + ":waiting:info", "CA-w1"});
    const auto joined = std::stoll(info.substr(0, info.find('|')));
    CHECK(joined <= now);
    CHECK(joined > now - 5000);
    CHECK(info.substr(info.find('|')) == "|2|biz1");
    CHECK(srv.command({"HGET", base + ":waiting:info", "CA-w2"}).substr(13) == "|0|");
    const auto deadline = std::stoll(srv.command({"ZSCORE", base + ":waiting:deadlines", "CA-w2"}));
    CHECK(deadline > now + 25'000);
    CHECK(deadline <= now + 31'000);
    for (auto key : {":waiting", ":waiting:deadlines", ":waiting:info"}) {
        CHECK(srv.integer({"PTTL", base + key}) > 30'000);
        CHECK(srv.integer({"PTTL", base + key}) <= 60'000);
    }
    // The last ticket + 1: a caller who joins after the last one left is still behind the rest.
    REQUIRE(l->leave_queue("CA-w3"));
    REQUIRE(l->enqueue("CA-w4").position == 3);
    CHECK(srv.command({"ZRANGE", base + ":waiting", "0", "-1"}) == "CA-w1 CA-w2 CA-w4");
    // Everyone gone: the keys are gone too.
    for (auto id : {"CA-w1", "CA-w2", "CA-w4"}) REQUIRE(l->leave_queue(id));
    for (auto key : {":waiting", ":waiting:deadlines", ":waiting:info"})
        CHECK(srv.integer({"EXISTS", base + key}) == 0);
}

TEST_CASE("redis: every waiting-room operation is one EVALSHA, acquire adds one EXISTS when nobody waits") {
    auto l = make_waiting(test::unique_prefix("line-rtt"), 1);
    REQUIRE(l->acquire("CA-h"));
    l->enqueue("CA-warm");
    l->poll("CA-warm");
    l->leave_queue("CA-warm");
    l->queue_status(); // every script loaded
    auto before = stat_calls("evalsha");
    REQUIRE(l->enqueue("CA-w").outcome == wait_outcome::queued);
    REQUIRE(l->poll("CA-w").outcome == wait_outcome::waiting);
    REQUIRE(l->queue_status().waiting == 1);
    REQUIRE(l->leave_queue("CA-w"));
    CHECK(stat_calls("evalsha") - before == 4);

    // Nobody waits: acquire and release do what they did, plus one EXISTS in acquire.
    REQUIRE(l->release("CA-h"));
    before = stat_calls("evalsha");
    const auto exists = stat_calls("exists"), hmget = stat_calls("hmget"), zrank = stat_calls("zrank");
    for (int i = 0; i < 10; ++i) {
        auto id = "CA-plain-" + std::to_string(i);
        REQUIRE(l->acquire(id).outcome == acquire_outcome::acquired);
        REQUIRE(l->release(id));
    }
    CHECK(stat_calls("evalsha") - before == 20);
    CHECK(stat_calls("exists") - exists == 10);
    CHECK(stat_calls("hmget") == hmget); // no walk
    CHECK(stat_calls("zrank") == zrank);
}

TEST_CASE("redis: the walk looks past at most 1000 waiters held back by their tenant") {
    const auto prefix = test::unique_prefix("line-bound");
    auto cfg = test::small_config(2);
    cfg.tenant_limits = {{"biz1", 1}};
    cfg.log_level = callguard::log_level::off;
    redis_limiter l(callguard::redis_backend(test::quick_options(test::shared_redis(), prefix)), cfg,
                    {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-b1", "biz1"));
    REQUIRE(l.acquire("CA-x"));
    for (std::int64_t i = 0; i < callguard::max_skipped_waiters; ++i)
        REQUIRE(l.enqueue("CA-biz-" + std::to_string(i), "biz1", 5000).outcome == wait_outcome::queued);
    REQUIRE(l.enqueue("CA-last", {}, 5000).position == callguard::max_skipped_waiters + 1);
    REQUIRE(l.release("CA-x"));
    CHECK(l.poll("CA-last").outcome == wait_outcome::waiting);
    CHECK(l.acquire("CA-new").outcome == acquire_outcome::rejected);
    REQUIRE(l.leave_queue("CA-biz-0"));
    CHECK(l.poll("CA-last").outcome == wait_outcome::dequeued);
    CHECK(l.queue_status().waiting == callguard::max_skipped_waiters - 1);
}

TEST_CASE("redis: a waiter whose process died leaves the line after its TTL") {
    const auto prefix = test::unique_prefix("line-crash");
    auto l = make_waiting(prefix, 1, 1s);
    REQUIRE(l->acquire("CA-h"));
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        auto mine = make_waiting(prefix, 1, 1s);
        bool ok = mine->enqueue("CA-crashed").outcome == wait_outcome::queued;
        std::_Exit(ok ? 0 : 1); // never polls again, never leaves
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    REQUIRE(l->enqueue("CA-alive").position == 2);
    REQUIRE(l->release("CA-h"));
    CHECK(l->poll("CA-alive").outcome == wait_outcome::waiting); // the dead one is still first
    std::this_thread::sleep_for(600ms);
    CHECK(l->poll("CA-alive").outcome == wait_outcome::waiting); // polling keeps it in line
    std::this_thread::sleep_for(500ms);
    CHECK(l->poll("CA-alive").outcome == wait_outcome::dequeued);
    CHECK(l->poll("CA-crashed").outcome == wait_outcome::not_waiting);
}

TEST_CASE("redis: with Redis gone the fail mode answers the waiting room, then the line resumes") {
    test::redis_server srv;
    const auto prefix = test::unique_prefix("line-down");
    auto cfg = test::small_config(1);
    cfg.fail_mode = callguard::fail_mode::closed;
    redis_limiter l(callguard::redis_backend(test::quick_options(srv, prefix)), cfg,
                    {callguard::null_sink(), {}});
    REQUIRE(l.acquire("CA-h"));
    REQUIRE(l.enqueue("CA-w").outcome == wait_outcome::queued);
    srv.pause();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(l.poll("CA-w").outcome == wait_outcome::waiting_fail_closed);
    CHECK(l.enqueue("CA-new").outcome == wait_outcome::rejected_fail_closed);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s); // one timeout, then the breaker answers
    CHECK_FALSE(l.queue_status().backend_healthy);
    srv.resume();
    CHECK(test::eventually([&] { return l.poll("CA-w").outcome == wait_outcome::waiting; }, 3s));
    REQUIRE(l.release("CA-h"));
    CHECK(l.poll("CA-w").outcome == wait_outcome::dequeued);
}
