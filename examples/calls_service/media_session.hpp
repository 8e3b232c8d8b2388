#pragma once

// One Twilio Media Streams connection, independent of the network: the messages go in, a verdict
// comes out. On `start` the call's slot is bound to a slot_guard (adopting the slot its webhook
// took); the guard releases on `stop`, and on every other way the session ends, because the
// session (and so the guard) is destroyed with the connection: the seed's `finally`.

#include <callguard/slot_guard.hpp>
#include <callguard/validation.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace calls {

struct media_verdict {
    bool close = false;
    bool normal = true;  ///< a normal close (1000) or a policy/protocol one (1008)
    std::string reason;  ///< sent in the close frame (kept under 123 bytes)
};

template <class Limiter>
class media_session {
public:
    media_session(Limiter& limiter, std::chrono::seconds refresh_interval)
        : limiter_(limiter), refresh_interval_(refresh_interval) {}

    /// Handles one text frame.
    media_verdict on_text(std::string_view text) {
        nlohmann::json msg;
        try {
            msg = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception&) {
            return fail("invalid JSON");
        }
        if (!msg.is_object()) return fail("message is not a JSON object");
        auto ev = msg.find("event");
        if (ev == msg.end() || !ev->is_string()) return fail("message has no event");
        const auto& event = ev->get_ref<const std::string&>();

        if (event == "connected") return {};
        if (event == "start") return on_start(msg);
        if (event == "stop") {
            if (guard_) guard_->release();
            return {true, true, "stream stopped"};
        }
        if (event == "media" || event == "mark" || event == "dtmf") {
            if (!guard_) return fail(event + " before start");
            maybe_refresh();
            return {};
        }
        return {}; // events added by Twilio later are not errors
    }

    /// A binary frame: Media Streams only sends text.
    media_verdict on_binary() { return fail("binary frames are not supported"); }

    const std::string& call_sid() const noexcept { return call_sid_; }
    bool release_pending() const noexcept { return guard_ && guard_->release_pending(); }

    /// Ends the session now (the destructor does the same).
    void end() noexcept { guard_.reset(); }

private:
    media_verdict fail(std::string reason) {
        if (reason.size() > 120) reason.resize(120);
        return {true, false, std::move(reason)};
    }

    media_verdict on_start(const nlohmann::json& msg) {
        if (guard_) return fail("duplicate start");
        auto start = msg.find("start");
        if (start == msg.end() || !start->is_object()) return fail("start without a start object");
        std::string sid;
        if (auto s = start->find("callSid"); s != start->end() && s->is_string()) sid = s->get<std::string>();
        if (sid.empty())
            if (auto p = start->find("customParameters"); p != start->end() && p->is_object())
                if (auto s = p->find("callSid"); s != p->end() && s->is_string()) sid = s->get<std::string>();
        if (auto why = callguard::call_id_problem(sid); !why.empty()) return fail(std::string(why));
        std::string tenant;
        if (auto p = start->find("customParameters"); p != start->end() && p->is_object())
            if (auto t = p->find("tenant"); t != p->end() && t->is_string()) tenant = t->get<std::string>();
        if (auto why = callguard::tenant_problem(tenant); !why.empty()) return fail(std::string(why));
        guard_.emplace(limiter_.guard(sid, tenant));
        call_sid_ = sid;
        tenant_ = tenant;
        last_refresh_ = std::chrono::steady_clock::now();
        if (!guard_->admitted()) return fail("over capacity");
        return {};
    }

    void maybe_refresh() {
        auto now = std::chrono::steady_clock::now();
        if (now - last_refresh_ < refresh_interval_) return;
        last_refresh_ = now;
        // The slot is gone (Redis restarted empty, failed over before replicating it, or the call
        // was admitted while Redis was unreachable): put it back. A live call is a fact, not a
        // request, so it counts again even over the cap (new calls wait until enough end).
        if (!limiter_.refresh(call_sid_)) limiter_.reinstate(call_sid_, tenant_);
    }

    Limiter& limiter_;
    std::chrono::seconds refresh_interval_;
    std::optional<callguard::slot_guard> guard_;
    std::string call_sid_, tenant_;
    std::chrono::steady_clock::time_point last_refresh_{};
};

} // namespace calls
