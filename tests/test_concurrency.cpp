// Heavier multi-thread checks of the memory backend (also run under ThreadSanitizer).

#include "support/doubles.hpp"
#include "support/probes.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

struct peak_tracker {
    std::atomic<std::int64_t> holding{0}, peak{0};
    void enter() {
        auto now = holding.fetch_add(1) + 1;
        auto p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
    }
    void leave() { holding.fetch_sub(1); }
};

} // namespace

TEST_CASE("threads racing for the same call ids take one slot per id") {
    callguard::capacity_limiter<callguard::memory_backend> l({}, test::small_config(1000),
                                                             {callguard::null_sink(), {}});
    std::atomic<int> acquired{0}, held{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 8; ++t)
        pool.emplace_back([&] {
            for (int i = 0; i < 200; ++i) {
                auto r = l.acquire("CA-shared-" + std::to_string(i));
                if (r.outcome == callguard::acquire_outcome::acquired) ++acquired;
                if (r.outcome == callguard::acquire_outcome::already_held) ++held;
            }
        });
    for (auto& th : pool) th.join();
    CHECK(acquired == 200);
    CHECK(held == 7 * 200);
    CHECK(l.status().active_calls == 200);
}

TEST_CASE("a tight cap under many threads, with tenants and expiry, never over-admits") {
    using namespace std::chrono_literals;
    auto cfg = test::small_config(4);
    cfg.tenant_limits = {{"a", 2}, {"b", 3}};
    callguard::capacity_limiter<callguard::memory_backend> l({}, cfg, {callguard::null_sink(), {}});
    peak_tracker global, ta, tb;
    std::vector<std::thread> pool;
    for (int t = 0; t < 8; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                auto id = "CA-" + std::to_string(t) + "-" + std::to_string(i);
                std::string_view tenant = (i % 3 == 0) ? "a" : (i % 3 == 1) ? "b" : "";
                auto g = l.guard(id, tenant);
                if (g.result().outcome != callguard::acquire_outcome::acquired) continue;
                auto& tt = tenant == "a" ? ta : tb;
                global.enter();
                if (!tenant.empty()) tt.enter();
                if (i % 97 == 0) l.refresh(id);
                if (!tenant.empty()) tt.leave();
                global.leave();
            } // each guard releases here
        });
    for (auto& th : pool) th.join();
    CHECK(global.peak.load() <= 4);
    CHECK(ta.peak.load() <= 2);
    CHECK(tb.peak.load() <= 3);
    CHECK(global.peak.load() >= 1);
    CHECK(l.status().active_calls == 0);
}

TEST_CASE("status and cleanup run safely beside acquires") {
    callguard::capacity_limiter<callguard::memory_backend> l({}, test::small_config(50),
                                                             {callguard::null_sink(), {}});
    std::atomic<bool> stop{false};
    std::thread watcher([&] {
        while (!stop) {
            auto s = l.status();
            CHECK(s.active_calls <= 50);
            l.cleanup_expired();
        }
    });
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < 3000; ++i) {
                auto id = "CA" + std::to_string(t * 100000 + i);
                if (l.acquire(id)) l.release(id);
            }
        });
    for (auto& th : pool) th.join();
    stop = true;
    watcher.join();
    CHECK(l.status().active_calls == 0);
}

TEST_CASE("slots put back while threads release, refresh and reinstate: exactly the live calls end up held") {
    test::switchable_backend backend;
    auto cfg = test::small_config(5);
    cfg.reinstate_per_second = 20'000; // fast, so the put-backs race the releases below
    callguard::capacity_limiter<test::switchable_backend> l(backend, cfg, {callguard::null_sink(), {}});
    backend.ctl().failing = true;
    constexpr int threads = 6, per_thread = 150;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i)
                l.acquire("CA-c" + std::to_string(t) + "-" + std::to_string(i)); // fail-open
        });
    for (auto& th : pool) th.join();
    pool.clear();
    REQUIRE(l.reinstate_pending() == threads * per_thread);
    backend.ctl().failing = false;
    // While the limiter's thread puts slots back, callers end every third call, refresh others
    // and reinstate some themselves.
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                const auto id = "CA-c" + std::to_string(t) + "-" + std::to_string(i);
                if (i % 3 == 0) l.release(id);
                else if (i % 3 == 1) l.refresh(id);
                else if (i % 7 == 0) l.reinstate(id);
                if (i % 10 == 0) l.status();
            }
        });
    for (auto& th : pool) th.join();
    REQUIRE(test::eventually([&] { return l.reinstate_pending() == 0; }, std::chrono::seconds(10)));
    const auto live = threads * (per_thread - (per_thread + 2) / 3);
    CHECK(l.status().active_calls == live);
    auto storage = backend.ctl().storage();
    for (int t = 0; t < threads; ++t)
        for (int i = 0; i < per_thread; i += 3)
            CHECK_FALSE(storage.refresh("CA-c" + std::to_string(t) + "-" + std::to_string(i), std::chrono::seconds(1)));
    CHECK(l.remembered_calls() == static_cast<std::size_t>(live));
}

TEST_CASE("limiters destroyed while their thread puts slots back, or waits on a dead backend, stop cleanly") {
    long threads_before = 0;
    auto slowest = std::chrono::steady_clock::duration::zero();
    for (int round = -1; round < 20; ++round) {
        // Round -1 warms up: a sanitizer's runtime may start a thread of its own the first time.
        if (round == 0) threads_before = test::thread_count();
        test::switchable_backend backend;
        auto cfg = test::small_config(5);
        cfg.reinstate_per_second = 1000;
        auto l = std::make_unique<callguard::capacity_limiter<test::switchable_backend>>(
            backend, cfg, callguard::limiter_hooks{callguard::null_sink(), {}});
        backend.ctl().failing = true;
        for (int i = 0; i < 50; ++i) l->acquire("CA-d" + std::to_string(i));
        if (round % 2 != 0) backend.ctl().failing = false; // half of them mid-reinstatement
        std::thread releaser([&] {
            for (int i = 0; i < 50; i += 2) l->release("CA-d" + std::to_string(i));
        });
        std::this_thread::sleep_for(std::chrono::milliseconds((round + 5) % 5));
        releaser.join();
        const auto t0 = std::chrono::steady_clock::now();
        l.reset();
        slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    }
    CHECK(slowest < std::chrono::milliseconds(500)); // never waits out a retry or a tick
    CHECK(test::thread_count() == threads_before);  // every thread joined
}
