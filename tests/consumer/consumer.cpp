// A program outside the tree that uses callguard as a user would.
#include <callguard/callguard.hpp>
#include <callguard/twilio/twiml.hpp>

#include <cstdio>
#include <stdexcept>

#define EXPECT(cond)                                                                             \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            std::fprintf(stderr, "consumer: failed: %s (line %d)\n", #cond, __LINE__);           \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

int main() {
    auto cfg = callguard::limiter_config::from_env([](const char*) { return std::nullopt; });
    EXPECT(cfg.max_active_calls == 50);
    cfg.max_active_calls = 2;
    cfg.tenant_limits = {{"biz1", 1}};
    int events = 0;
    callguard::capacity_limiter<callguard::memory_backend> limiter{
        callguard::memory_backend{}, cfg,
        {callguard::null_sink(), [&](const callguard::capacity_event&) { ++events; }}};

    EXPECT(limiter.acquire("CA1", "biz1").outcome == callguard::acquire_outcome::acquired);
    EXPECT(limiter.acquire("CA1").outcome == callguard::acquire_outcome::already_held);
    EXPECT(limiter.acquire("CA2", "biz1").tenant_limited);
    {
        auto g = limiter.guard("CA3");
        EXPECT(g.admitted());
        EXPECT(!limiter.acquire("CA4"));
    }
    EXPECT(limiter.refresh("CA1"));
    EXPECT(limiter.release("CA1"));
    EXPECT(!limiter.release("CA1"));
    EXPECT(limiter.cleanup_expired() == 0);
    auto s = limiter.status();
    EXPECT(s.active_calls == 0 && s.capacity_available == 2);
    EXPECT(callguard::to_json(s).find("\"status\":\"ok\"") != std::string::npos);
    EXPECT(limiter.metrics_text().find("callguard_released_total 2") != std::string::npos);
    EXPECT(events == 7);
    bool threw = false;
    try {
        limiter.acquire("");
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    EXPECT(threw);
    EXPECT(callguard::twilio::reject_twiml().find("he-IL") != std::string::npos);
    std::printf("consumer: callguard %d.%d.%d works\n", CALLGUARD_VERSION_MAJOR,
                CALLGUARD_VERSION_MINOR, CALLGUARD_VERSION_PATCH);
    return 0;
}
