// Five calls against a cap of 3: admitted, retried, rejected, released, admitted again.
// Prints the limiter's own [CAPACITY] lines (log level INFO) and the status JSON.
#include <callguard/callguard.hpp>
#include <callguard/twilio/twiml.hpp>

#include <fmt/core.h>

int main() {
    callguard::limiter_config cfg = callguard::limiter_config::from_env();
    cfg.max_active_calls = 3;
    cfg.log_level = callguard::log_level::info;
    callguard::capacity_limiter<callguard::memory_backend> limiter{callguard::memory_backend{}, cfg};

    for (auto id : {"CA0001", "CA0002", "CA0003"}) limiter.acquire(id);
    auto retried = limiter.acquire("CA0002"); // Twilio retried the webhook: no second slot
    fmt::print("retry of CA0002: {}\n", callguard::to_string(retried.outcome));

    if (auto r = limiter.acquire("CA0004"); !r) // over capacity: the caller hears the message
        fmt::print("CA0004 gets:\n{}\n", callguard::twilio::reject_twiml());

    {
        auto call = limiter.guard("CA0005"); // rejected too: nothing to release
        fmt::print("CA0005 admitted: {}\n", call.admitted());
    }
    limiter.release("CA0001"); // the status callback says completed
    limiter.release("CA0001"); // ...and says it again: nothing happens
    {
        auto call = limiter.guard("CA0006"); // the WebSocket handler's RAII guard
        fmt::print("CA0006 admitted: {}\n", call.admitted());
        fmt::print("{}\n", callguard::to_json(limiter.status()));
    } // released here, however the handler ends
    fmt::print("{}\n", callguard::to_json(limiter.status()));
}
