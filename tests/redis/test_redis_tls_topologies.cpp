// Sentinel and Cluster over TLS: sentinels asked over TLS (`rediss+sentinel://`), replication
// over TLS (`tls-replication yes`) and a failover followed; a cluster whose bus speaks TLS
// (`tls-cluster yes`), where a client on TLS is redirected to TLS ports and follows MOVED.

#include "../support/doubles.hpp"
#include "../support/redis_topologies.hpp"
#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <string>

using namespace std::chrono_literals;
using callguard::acquire_outcome;
using redis_limiter = callguard::capacity_limiter<callguard::redis_backend>;

namespace {

const test::tls_certs& certs() {
    static test::tls_certs c;
    return c;
}

callguard::redis_options tls_options(const std::string& url, const std::string& prefix) {
    auto o = test::quick_options(url, prefix);
    o.connect_timeout = o.command_timeout = 1000ms;
    o.probe_interval = 100ms;
    o.tls.ca_file = certs().pem("ca");
    return o;
}

} // namespace

TEST_CASE("tls sentinel: the master is found through TLS sentinels, and a failover is followed") {
    test::sentinel_group g(&certs());
    REQUIRE(g.ready());
    CHECK(g.url().rfind("rediss+sentinel://", 0) == 0);
    auto c = test::small_config(5);
    c.slot_ttl = std::chrono::seconds(600);
    test::capture_sink logs;
    redis_limiter l(callguard::redis_backend(tls_options(g.url(), "tls-sent")), c, {logs.sink(), {}});
    for (int i = 0; i < 3; ++i) REQUIRE(l.acquire("CA-t" + std::to_string(i)).outcome == acquire_outcome::acquired);
    CHECK(g.master().integer({"ZCARD", "{tls-sent}:active"}) == 3);
    // Replicated over TLS, acknowledged before the master dies.
    CHECK(g.master().integer({"WAIT", "1", "10000"}) == 1);
    CHECK(g.replica().integer({"ZCARD", "{tls-sent}:active"}) == 3);

    const int old_master = g.master_port();
    g.master().kill_hard();
    REQUIRE(test::eventually([&] { const int p = g.master_port(); return p != 0 && p != old_master; }, 30s));
    // The limiter follows: the held slots are there, the cap still holds on the new master.
    CHECK(test::eventually([&] { return l.acquire("CA-t0").outcome == acquire_outcome::already_held; }, 20s));
    CHECK(l.acquire("CA-t3").outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA-t4").outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA-over").outcome == acquire_outcome::rejected);
    CHECK(g.master().integer({"ZCARD", "{tls-sent}:active"}) == 5);
}

TEST_CASE("tls cluster: a seed that does not own the slot redirects, over TLS, to one that does") {
    test::cluster_group c(&certs());
    const auto prefix = test::unique_prefix("tls-cluster");
    const int slot = test::key_slot("{" + prefix + "}:active");
    const int owner = c.owner(slot);
    REQUIRE(owner >= 0);
    const int other = (owner + 1) % 3;
    redis_limiter l(callguard::redis_backend(tls_options(c.url_of(other), prefix)), test::small_config(2),
                    {callguard::null_sink(), {}});
    CHECK(l.acquire("CA-1", "biz1").outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA-2").outcome == acquire_outcome::acquired);
    CHECK(l.acquire("CA-3").outcome == acquire_outcome::rejected);
    CHECK(c.node(owner).integer({"ZCARD", "{" + prefix + "}:active"}) == 2);
    CHECK(c.node(owner).integer({"ZCARD", "{" + prefix + "}:tenant:biz1"}) == 1);
    CHECK(l.release("CA-1"));
    CHECK(l.status().active_calls == 1);
    CHECK(l.counters().backend_errors == 0);
    CHECK(l.counters().admitted_fail_open == 0);
}
