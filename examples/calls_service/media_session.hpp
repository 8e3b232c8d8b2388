#pragma once

// One Twilio Media Streams connection, independent of the network: the messages go in, a verdict
// comes out. On `start` the call's slot is bound to an async_slot_guard (adopting the slot its
// webhook took); the guard releases on `stop`, and on every other way the session ends, because
// the session (and so the guard) is destroyed with the connection: a `finally` for the call.
//
// Nothing here waits for the limiter: the admission of `start` and the periodic refresh go
// through the async API, and their answers come back on the session's executor (the
// connection's strand). A `start` turned away closes the stream later, through `late_verdict`.

#include <callguard/async.hpp>
#include <callguard/validation.hpp>

#include <utility> // before Asio

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/bind_executor.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
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
    using guard_type = callguard::async_slot_guard<Limiter>;

    /// `ex` runs every completion for this session (the connection's strand); `late_verdict`
    /// hears a verdict decided after the message that caused it (a `start` turned away).
    media_session(Limiter& limiter, std::chrono::seconds refresh_interval, boost::asio::any_io_executor ex,
                  std::function<void(media_verdict)> late_verdict)
        : limiter_(limiter), refresh_interval_(refresh_interval), ex_(std::move(ex)),
          late_verdict_(std::move(late_verdict)) {}

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
            end();
            return {true, true, "stream stopped"};
        }
        if (event == "media" || event == "mark" || event == "dtmf") {
            if (call_sid_.empty()) return fail(event + " before start");
            maybe_refresh();
            return {};
        }
        return {}; // events added by Twilio later are not errors
    }

    /// A binary frame: Media Streams only sends text.
    media_verdict on_binary() { return fail("binary frames are not supported"); }

    const std::string& call_sid() const noexcept { return call_sid_; }
    /// The start's admission has been answered and a release is still due.
    bool release_pending() const noexcept { return guard_ && guard_->release_pending(); }

    /// Ends the session now (the destructor does the same): the slot goes back, and an
    /// admission still on its way is released when it arrives.
    void end() noexcept {
        ended_ = true;
        guard_.reset();
    }

private:
    media_verdict fail(std::string reason) {
        if (reason.size() > 120) reason.resize(120);
        return {true, false, std::move(reason)};
    }

    media_verdict on_start(const nlohmann::json& msg) {
        if (!call_sid_.empty()) return fail("duplicate start");
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
        call_sid_ = sid;
        tenant_ = tenant;
        last_refresh_ = std::chrono::steady_clock::now();
        // The guard arrives on this session's executor; if the session is gone by then, the
        // guard dies in the handler and gives the slot back.
        callguard::async_guard(limiter_, sid, tenant,
                               boost::asio::bind_executor(ex_, [alive = std::weak_ptr<int>(alive_), this](guard_type g) {
                                   if (!alive.lock() || ended_) return;
                                   guard_.emplace(std::move(g));
                                   if (!guard_->admitted() && late_verdict_) late_verdict_(fail("over capacity"));
                               }));
        return {};
    }

    void maybe_refresh() {
        auto now = std::chrono::steady_clock::now();
        if (now - last_refresh_ < refresh_interval_) return;
        last_refresh_ = now;
        // The slot is gone (Redis restarted empty, failed over before replicating it, or the call
        // was admitted while Redis was unreachable): put it back. A live call is a fact, not a
        // request, so it counts again even over the cap (new calls wait until enough end).
        // Checked on the session's executor: a call that ended meanwhile is not put back (its
        // release would then come after the reinstatement, and the slot would wait for its TTL).
        callguard::async_refresh(limiter_, call_sid_,
                                 boost::asio::bind_executor(ex_, [alive = std::weak_ptr<int>(alive_), this](bool held) {
                                     if (held || !alive.lock() || ended_) return;
                                     callguard::async_reinstate(limiter_, call_sid_, tenant_,
                                                                [](callguard::reinstate_result) {});
                                 }));
    }

    Limiter& limiter_;
    std::chrono::seconds refresh_interval_;
    boost::asio::any_io_executor ex_;
    std::function<void(media_verdict)> late_verdict_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0); // handlers check it is still there
    bool ended_ = false;
    std::optional<guard_type> guard_;
    std::string call_sid_, tenant_;
    std::chrono::steady_clock::time_point last_refresh_{};
};

} // namespace calls
