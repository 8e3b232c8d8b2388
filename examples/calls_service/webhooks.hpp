#pragma once

// The HTTP endpoints as plain functions of a request: Twilio's two webhooks, health, metrics.
// No sockets here, so every rule (signatures, validation, TwiML) is testable and fuzzable.
// Nothing here blocks on the limiter's backend: an endpoint that needs it starts an async call
// and answers when it completes; the few blocking limiter calls left (the metrics' waiting-room
// figures) run on a pool of their own, never on a caller's thread.

#include "call_log.hpp"
#include "service_config.hpp"
#include "twilio_signature.hpp"

#include <callguard/async.hpp>
#include <callguard/callguard.hpp>
#include <callguard/twilio/form.hpp>
#include <callguard/twilio/twiml.hpp>

#include <utility> // before Asio

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace calls {

/// What the handlers need of a request (views into the server's parsed request).
struct request_view {
    std::string_view method;
    std::string_view target; ///< path and query, as received
    std::string_view host;
    std::string_view forwarded_proto;
    std::string_view signature;
    std::string_view content_type;
    std::string_view body;
};

struct reply {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};

inline constexpr std::string_view twiml_type = "text/xml; charset=utf-8";

using callguard::twilio::form;

/// The WebSocket form of an http(s) URL: wss:// for https://, ws:// for http://.
inline std::string websocket_url(std::string_view http_url) {
    if (http_url.rfind("https://", 0) == 0) return "wss://" + std::string(http_url.substr(8));
    return "ws://" + std::string(http_url.substr(http_url.find("://") + 3));
}

inline bool is_terminal_call_status(std::string_view s) {
    return s == "completed" || s == "busy" || s == "failed" || s == "no-answer" || s == "canceled";
}

/// Answers one request, exactly once, from any thread.
using responder = std::function<void(reply)>;

template <class Limiter>
class webhooks {
public:
    /// `blocking` runs what still has to block (off the I/O threads).
    webhooks(Limiter& limiter, const service_config& config, callguard::twilio::twiml_options twiml,
             call_log& log, boost::asio::thread_pool& blocking)
        : limiter_(limiter), config_(config), twiml_(std::move(twiml)), log_(log), blocking_(blocking) {}

    /// Answers `r` through `respond`: at once, or once the limiter has answered. `r` is read
    /// only during this call.
    void handle(const request_view& r, responder respond) {
        const auto path = r.target.substr(0, r.target.find('?'));
        if (path == "/health") {
            if (auto no = not_get(r)) return respond(std::move(*no));
            return respond({200, "application/json", R"({"status":"alive"})"});
        }
        if (path == "/health/details") {
            if (auto no = not_get(r)) return respond(std::move(*no));
            callguard::async_status(limiter_, [respond = std::move(respond)](callguard::capacity_status s) {
                respond({200, "application/json", callguard::to_json(s)});
            });
            return;
        }
        if (path == "/metrics") {
            if (auto no = not_get(r)) return respond(std::move(*no));
            boost::asio::post(blocking_, [this, respond = std::move(respond)] { respond(metrics()); });
            return;
        }
        if (path == "/webhook/incoming_call")
            return post_form(r, respond, [&](const form& f) { incoming_call(r, f, std::move(respond)); });
        if (path == "/webhook/call_status")
            return post_form(r, respond, [&](const form& f) { call_status(f, std::move(respond)); });
        if (path == "/webhook/voicemail") return post_form(r, respond, [&](const form&) { respond(voicemail_done()); });
        respond({404, "text/plain; charset=utf-8", "not found\n"});
    }

    /// The URL Twilio signed: PUBLIC_BASE_URL + target, else scheme + Host + target.
    std::string public_url(const request_view& r, std::string_view target) const {
        if (!config_.public_base_url.empty()) return config_.public_base_url + std::string(target);
        std::string scheme = r.forwarded_proto == "https" ? "https" : "http";
        return scheme + "://" + std::string(r.host) + std::string(target);
    }

    /// The media stream URL for the admitted TwiML: wss behind https, else ws.
    std::string stream_url(const request_view& r) const { return websocket_url(public_url(r, "/ws/media")); }

    /// Checks X-Twilio-Signature when TWILIO_AUTH_TOKEN is set.
    bool signature_ok(const request_view& r, const std::vector<form::field>& params) const {
        if (config_.auth_token.empty()) return true;
        return valid_twilio_signature(config_.auth_token, r.signature, public_url(r, r.target), params);
    }

    /// The Media Streams handshake is signed over the stream URL Twilio was given (ws/wss);
    /// the http(s) form of the same URL is accepted too.
    bool handshake_signature_ok(const request_view& r) const {
        if (config_.auth_token.empty()) return true;
        auto url = public_url(r, r.target);
        return valid_twilio_signature(config_.auth_token, r.signature, websocket_url(url), {}) ||
               valid_twilio_signature(config_.auth_token, r.signature, url, {});
    }

private:
    static std::optional<reply> not_get(const request_view& r) {
        if (r.method != "GET" && r.method != "HEAD") return reply{405, "text/plain; charset=utf-8", "use GET\n"};
        return std::nullopt;
    }

    /// A Twilio webhook: POST, a form body, a valid signature; then `handler(form)`, which answers.
    template <class F>
    void post_form(const request_view& r, const responder& respond, F&& handler) {
        if (r.method != "POST") return respond({405, "text/plain; charset=utf-8", "use POST\n"});
        if (!callguard::twilio::is_form_content_type(r.content_type))
            return respond({415, "text/plain; charset=utf-8", "expected application/x-www-form-urlencoded\n"});
        if (config_.public_base_url.empty() && (r.host.empty() || r.host.find_first_of("/ \t") != std::string_view::npos))
            return respond({400, "text/plain; charset=utf-8", "missing or invalid Host header\n"});
        form body;
        try {
            body = form::parse(r.body);
        } catch (const callguard::twilio::form_error& e) {
            return respond({400, "text/plain; charset=utf-8", std::string("malformed form body: ") + e.what() + "\n"});
        }
        if (!signature_ok(r, body.fields())) return respond({403, "text/plain; charset=utf-8", "invalid Twilio signature\n"});
        handler(body);
    }

    static reply bad_request(std::string why) {
        return {400, "text/plain; charset=utf-8", std::move(why) + "\n"};
    }

    void incoming_call(const request_view& r, const form& f, responder respond) {
        auto sid = f.get("CallSid");
        if (!sid) return respond(bad_request("CallSid is missing"));
        if (auto why = callguard::call_id_problem(*sid); !why.empty()) return respond(bad_request(std::string(why)));
        std::string tenant;
        if (auto t = f.get("Tenant"); t && !t->empty()) {
            if (auto why = callguard::tenant_problem(*t); !why.empty()) return respond(bad_request(std::string(why)));
            tenant = std::string(*t);
        } else if (auto to = f.get("To")) {
            if (auto it = config_.tenant_by_number.find(*to); it != config_.tenant_by_number.end())
                tenant = it->second;
        }
        // What the answer needs of the request, taken now: the request is gone when it comes.
        call_answer a{std::string(*sid), tenant, stream_url(r), public_url(r, "/webhook/voicemail"),
                      std::string(f.get("From").value_or(""))};
        callguard::async_acquire(limiter_, *sid, tenant,
                                 [this, a = std::move(a), respond = std::move(respond)](callguard::acquire_result result) {
                                     respond(answer(a, result));
                                 });
    }

    /// What an incoming call's answer needs once the limiter has decided.
    struct call_answer {
        std::string sid, tenant, stream_url, voicemail_url, caller;
    };

    reply answer(const call_answer& a, const callguard::acquire_result& result) {
        if (result.admitted()) {
            std::vector<callguard::twilio::stream_parameter> params{{"callSid", a.sid}};
            if (!a.tenant.empty()) params.push_back({"tenant", a.tenant});
            return {200, std::string(twiml_type), callguard::twilio::admit_twiml(a.stream_url, params)};
        }
        const auto behavior = limiter_.config().behavior;
        if (behavior == callguard::over_capacity_behavior::whatsapp) {
            call_row row;
            row.what = call_row::kind::whatsapp_outbox;
            row.call_sid = a.sid;
            row.number = a.caller;
            log_.push(std::move(row));
        }
        return {200, std::string(twiml_type),
                callguard::twilio::over_capacity_twiml(behavior, twiml_, a.voicemail_url)};
    }

    void call_status(const form& f, responder respond) {
        auto sid = f.get("CallSid");
        if (!sid) return respond(bad_request("CallSid is missing"));
        if (auto why = callguard::call_id_problem(*sid); !why.empty()) return respond(bad_request(std::string(why)));
        auto status = f.get("CallStatus").value_or("");
        if (!is_terminal_call_status(status)) return respond({204, "", ""});
        call_row row;
        row.call_sid = std::string(*sid);
        row.status = "completed";
        log_.push(std::move(row));
        // Idempotent: a repeated callback frees nothing more. Answered once the slot is back.
        callguard::async_release(limiter_, *sid, [respond = std::move(respond)](bool) { respond({204, "", ""}); });
    }

    reply voicemail_done() {
        return {200, std::string(twiml_type),
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>"};
    }

    reply metrics() {
        auto text = limiter_.metrics_text();
        auto metric = [&](const char* name, const char* type, const char* help, std::uint64_t value) {
            text += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
                    std::to_string(value) + "\n";
        };
        metric("callguard_call_log_dropped_total", "counter",
               "Call log rows dropped because the queue was full (CALLS_DB_QUEUE_LIMIT).", log_.dropped());
        metric("callguard_call_log_failed_total", "counter", "Call log rows the database refused for good.",
               log_.failed());
        metric("callguard_call_log_written_total", "counter", "Call log rows written to the database.",
               log_.written());
        metric("callguard_call_log_queued", "gauge", "Call log rows waiting for the database.", log_.queued());
        metric("callguard_call_log_database_up", "gauge",
               "1 when the call log's last attempt to reach its database worked, 0 while it retries.",
               log_.database_up() ? 1 : 0);
        return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(text)};
    }

    Limiter& limiter_;
    const service_config& config_;
    callguard::twilio::twiml_options twiml_;
    call_log& log_;
    boost::asio::thread_pool& blocking_;
};

} // namespace calls
