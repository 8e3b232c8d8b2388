// Heavier multi-thread checks of the memory backend (also run under ThreadSanitizer).

#include "support/doubles.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <atomic>
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
