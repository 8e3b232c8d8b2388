// Six processes of four threads each hammer one cap of 5 on a real Redis. Every admitted caller
// counts itself in shared memory while it holds its slot; the peak must never pass the cap.

#include "redis_fixture.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

namespace {

struct shared_counts {
    std::atomic<long> holding;
    std::atomic<long> peak;
    std::atomic<long> admitted;
    std::atomic<long> rejected;
    std::atomic<long> errors;
};
static_assert(std::atomic<long>::is_always_lock_free); // works across processes in shared memory

void note_peak(shared_counts& s, long now) {
    long p = s.peak.load();
    while (now > p && !s.peak.compare_exchange_weak(p, now)) {
    }
}

} // namespace

TEST_CASE("6 processes x 4 threads never hold more than the cap of 5 at once") {
    auto& srv = test::shared_redis();
    const auto prefix = test::unique_prefix("hammer");
    void* mem = ::mmap(nullptr, sizeof(shared_counts), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* counts = new (mem) shared_counts{};

    constexpr int processes = 6, threads = 4, rounds = 60;
    std::vector<pid_t> children;
    for (int p = 0; p < processes; ++p) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // A fresh backend in the child: nothing of the parent's connections is shared.
            auto cfg = callguard::limiter_config{};
            cfg.max_active_calls = 5;
            auto o = callguard::redis_options::from_url(srv.url());
            o.key_prefix = prefix;
            o.command_timeout = std::chrono::milliseconds(2000);
            o.connect_timeout = std::chrono::milliseconds(2000);
            callguard::capacity_limiter<callguard::redis_backend> l(
                callguard::redis_backend(o), cfg, {callguard::null_sink(), {}});
            std::vector<std::thread> pool;
            for (int t = 0; t < threads; ++t)
                pool.emplace_back([&, p, t] {
                    for (int i = 0; i < rounds; ++i) {
                        auto id = "CA-" + std::to_string(p) + "-" + std::to_string(t) + "-" + std::to_string(i);
                        auto r = l.acquire(id);
                        if (r.outcome == callguard::acquire_outcome::acquired) {
                            note_peak(*counts, counts->holding.fetch_add(1) + 1);
                            counts->admitted.fetch_add(1);
                            std::this_thread::sleep_for(std::chrono::microseconds(200));
                            counts->holding.fetch_sub(1); // stop counting before giving it back
                            if (!l.release(id)) counts->errors.fetch_add(1);
                        } else if (r.outcome == callguard::acquire_outcome::rejected) {
                            counts->rejected.fetch_add(1);
                        } else {
                            counts->errors.fetch_add(1); // fail-open would void the proof
                        }
                    }
                });
            for (auto& th : pool) th.join();
            std::_Exit(0);
        }
        children.push_back(pid);
    }
    for (auto pid : children) {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    CHECK(counts->errors.load() == 0);
    CHECK(counts->peak.load() <= 5);
    CHECK(counts->peak.load() >= 2); // the processes really overlapped
    CHECK(counts->admitted.load() + counts->rejected.load() == processes * threads * rounds);
    CHECK(counts->admitted.load() > 0);
    CHECK(counts->rejected.load() > 0);
    CHECK(srv.integer({"ZCARD", "{" + prefix + "}:active"}) == 0);
    ::munmap(mem, sizeof(shared_counts));
}
