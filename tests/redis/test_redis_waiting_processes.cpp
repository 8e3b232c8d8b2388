// Twenty callers wait on one Redis cap of 1 while four processes poll for them and two more
// processes keep trying to take the slot for new calls. Each freed slot must go to the next
// waiter in arrival order, and no new call may get in while anyone waits; the order of
// admissions is recorded in shared memory.

#include "redis_fixture.hpp"
#include "../support/probes.hpp"

#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

namespace {

constexpr int waiters = 20;

struct shared_line {
    std::atomic<int> admitted;
    std::atomic<int> order[waiters];
    std::atomic<int> violations;
    std::atomic<int> errors;
    std::atomic<int> newcomers_in;
    std::atomic<bool> stop;
};
static_assert(std::atomic<int>::is_always_lock_free); // works across processes in shared memory

std::string waiter(int i) { return "CA-pw" + std::to_string(i); }

callguard::capacity_limiter<callguard::redis_backend> child_limiter(const std::string& url,
                                                                    const std::string& prefix) {
    auto cfg = callguard::limiter_config{};
    cfg.max_active_calls = 1;
    auto o = callguard::redis_options::from_url(url);
    o.key_prefix = prefix;
    o.command_timeout = std::chrono::milliseconds(2000);
    o.connect_timeout = std::chrono::milliseconds(2000);
    return callguard::capacity_limiter<callguard::redis_backend>(callguard::redis_backend(o), cfg,
                                                                 {callguard::null_sink(), {}});
}

} // namespace

TEST_CASE("20 waiters on one Redis are admitted in arrival order by 4 polling processes, newcomers in 2 more wait their turn") {
    using namespace std::chrono_literals;
    auto& srv = test::shared_redis();
    const auto prefix = test::unique_prefix("line-procs");
    void* mem = ::mmap(nullptr, sizeof(shared_line), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* line = new (mem) shared_line{};
    for (auto& o : line->order) o.store(-1);

    {
        auto l = child_limiter(srv.url(), prefix);
        REQUIRE(l.acquire("CA-holder"));
        for (int i = 0; i < waiters; ++i) REQUIRE(l.enqueue(waiter(i)).position == i + 1);
    }

    constexpr int pollers = 4, newcomers = 2;
    std::vector<pid_t> children;
    for (int p = 0; p < pollers + newcomers; ++p) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            auto l = child_limiter(srv.url(), prefix); // nothing shared with the parent
            if (p < pollers) {
                std::vector<bool> done(waiters, false);
                while (!line->stop.load()) {
                    for (int i = p; i < waiters; i += pollers) {
                        if (done[i]) continue;
                        auto r = l.poll(waiter(i));
                        if (r.outcome == callguard::wait_outcome::dequeued) {
                            line->order[line->admitted.fetch_add(1)].store(i);
                            done[i] = true;
                            if (!l.release(waiter(i))) line->errors.fetch_add(1);
                        } else if (r.outcome != callguard::wait_outcome::waiting) {
                            line->errors.fetch_add(1);
                        }
                    }
                    std::this_thread::sleep_for(2ms);
                }
            } else {
                for (int i = 0; !line->stop.load(); ++i) {
                    auto id = "CA-pn-" + std::to_string(p) + "-" + std::to_string(i);
                    auto r = l.acquire(id);
                    if (r.outcome == callguard::acquire_outcome::acquired) {
                        // The last waiter counts itself before it releases: a newcomer holding
                        // the slot while the count is short went ahead of a waiter.
                        if (line->admitted.load() < waiters) line->violations.fetch_add(1);
                        line->newcomers_in.fetch_add(1);
                        l.release(id);
                    } else if (r.outcome != callguard::acquire_outcome::rejected) {
                        line->errors.fetch_add(1);
                    }
                    std::this_thread::sleep_for(1ms);
                }
            }
            std::_Exit(0);
        }
        children.push_back(pid);
    }
    std::this_thread::sleep_for(100ms); // every process is asking before the slot frees
    {
        auto l = child_limiter(srv.url(), prefix);
        REQUIRE(l.release("CA-holder"));
    }
    CHECK(test::eventually([&] { return line->admitted.load() == waiters; }, 30s));
    CHECK(test::eventually([&] { return line->newcomers_in.load() > 0; }, 5s)); // line empty: in
    line->stop.store(true);
    for (auto pid : children) {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    for (int i = 0; i < waiters; ++i) CHECK(line->order[i].load() == i);
    CHECK(line->violations.load() == 0);
    CHECK(line->errors.load() == 0);
    CHECK(srv.integer({"EXISTS", "{" + prefix + "}:waiting"}) == 0);
    CHECK(srv.integer({"ZCARD", "{" + prefix + "}:active"}) == 0);
    ::munmap(mem, sizeof(shared_line));
}
