// A program outside the tree using the Redis backend: with no server listening, the limiter
// still answers at once (fail-open) and reports itself degraded.
#include <callguard/backends/redis.hpp>
#include <callguard/callguard.hpp>

#include <chrono>
#include <cstdio>

int main() {
    auto options = callguard::redis_options::from_url("redis://127.0.0.1:1/0");
    options.on_warning = [](std::string_view) {};
    callguard::capacity_limiter<callguard::redis_backend> limiter{
        callguard::redis_backend{options}, callguard::limiter_config{},
        {callguard::null_sink(), {}}};
    auto t0 = std::chrono::steady_clock::now();
    auto r = limiter.acquire("CA1");
    auto took = std::chrono::steady_clock::now() - t0;
    if (r.outcome != callguard::acquire_outcome::admitted_fail_open || took > std::chrono::seconds(1) ||
        limiter.status().backend_healthy) {
        std::fprintf(stderr, "consumer_redis: unexpected result\n");
        return 1;
    }
    std::printf("consumer_redis: fail-open without a server works\n");
    return 0;
}
