// The seed's `finally`, in C++: a WebSocket-like handler whose slot is released by a
// slot_guard on every path out of it: a normal end, an early return, an exception.
#include <callguard/callguard.hpp>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

using limiter_t = callguard::capacity_limiter<callguard::memory_backend>;

// Handles one call's media "socket": the frames it receives, until it ends.
void handle_media(limiter_t& limiter, const std::string& call_sid, const std::vector<std::string>& frames) {
    auto call = limiter.guard(call_sid); // adopts the slot the webhook took (already_held)
    if (!call.admitted()) return;        // nothing held, nothing to release
    for (const auto& frame : frames) {
        if (frame == "stop") return;                                   // early return: released
        if (frame == "garbage") throw std::runtime_error("bad frame"); // exception: released
    }
} // socket closed: released

int main() {
    callguard::limiter_config cfg;
    cfg.max_active_calls = 3;
    cfg.log_level = callguard::log_level::info;
    limiter_t limiter{callguard::memory_backend{}, cfg};

    struct call {
        std::string sid;
        std::vector<std::string> frames;
    };
    const std::vector<call> calls{{"CA-normal", {"start", "media", "media"}},
                                  {"CA-stop", {"start", "media", "stop", "media"}},
                                  {"CA-throws", {"start", "garbage"}}};
    for (const auto& c : calls) {
        limiter.acquire(c.sid); // the webhook
        try {
            handle_media(limiter, c.sid, c.frames);
        } catch (const std::exception& e) {
            std::printf("handler for %s failed: %s\n", c.sid.c_str(), e.what());
        }
    }
    const auto active = limiter.status().active_calls;
    std::printf("active calls after every handler ended: %lld\n", static_cast<long long>(active));
    return active == 0 ? 0 : 1;
}
