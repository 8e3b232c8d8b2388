#pragma once

// The HTTP endpoints as plain functions of a request: Twilio's webhooks (the call, its status,
// the waiting room's waitUrl and action, the voicemail's recording), health, metrics. No sockets
// here, so every rule (signatures, validation, TwiML) is testable and fuzzable. Each endpoint
// makes its limiter calls in one place (the queue's timeout adds one leave_queue).
// Nothing here blocks an I/O thread on the limiter's backend: acquire, release and status go
// through the async API; what has no async form (the waiting room, WhatsApp claims, the
// metrics' waiting-room figures) runs on a pool of its own, with copies of what it needs of the
// request.

#include "call_log.hpp"
#include "service_config.hpp"
#include "twilio_signature.hpp"
#include "whatsapp_sender.hpp"

#include <callguard/async.hpp>
#include <callguard/callguard.hpp>
#include <callguard/twilio/form.hpp>
#include <callguard/twilio/twiml.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility> // before Asio

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <functional>

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

/// The caller's number when a message can go to it: E.164, and not one of the numbers Twilio
/// shows for a withheld caller ("anonymous", "+266696687", ...). Empty otherwise.
inline std::string_view reachable_caller(std::string_view from) {
    static constexpr std::array<std::string_view, 5> withheld{"+266696687", "+86282452253", "+7378742833",
                                                              "+2562533", "+8656696"};
    for (auto w : withheld)
        if (from == w) return {};
    if (from.starts_with("whatsapp:")) return {}; // not a phone call's caller
    return e164_number(from);
}

/// The value of `name` in a target's query string (`/path?a=1&b=2`), undecoded; empty if absent.
inline std::string_view query_value(std::string_view target, std::string_view name) {
    const auto q = target.find('?');
    if (q == std::string_view::npos) return {};
    auto rest = target.substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const auto item = rest.substr(0, amp);
        if (item.size() > name.size() && item.starts_with(name) && item[name.size()] == '=')
            return item.substr(name.size() + 1);
        if (amp == std::string_view::npos) break;
        rest.remove_prefix(amp + 1);
    }
    return {};
}

/// How long a call's WhatsApp claim is kept: far longer than any webhook retry, or the wait in
/// line before a fallback.
inline constexpr std::chrono::hours whatsapp_call_claim_ttl{24};

/// Answers one request, exactly once, from any thread.
using responder = std::function<void(reply)>;

template <class Limiter>
class webhooks {
public:
    /// `blocking` runs what has no async form, off the I/O threads; `sender` (may be null: no
    /// behaviour sends messages) only feeds the metrics.
    webhooks(Limiter& limiter, const service_config& config, callguard::twilio::twiml_options twiml,
             call_log& log, boost::asio::thread_pool& blocking, const whatsapp_sender* sender = nullptr)
        : limiter_(limiter), config_(config), twiml_(std::move(twiml)), log_(log), blocking_(blocking),
          sender_(sender) {}

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
            return off_thread(std::move(respond), [this] { return metrics(); });
        }
        if (path == "/webhook/incoming_call")
            return post_form(r, respond, [&](form& f) { incoming_call(r, f, std::move(respond)); });
        if (path == "/webhook/call_status")
            return post_form(r, respond, [&](form& f) { call_status(f, std::move(respond)); });
        if (path == "/webhook/voicemail") return post_form(r, respond, [&](form& f) { respond(voicemail_done(f)); });
        if (path == "/webhook/recording_status")
            return post_form(r, respond, [&](form& f) { respond(recording_status(f)); });
        if (path == "/webhook/queue_wait")
            return post_form(r, respond, [&](form& f) { queue_wait(r, f, std::move(respond)); });
        if (path == "/webhook/queue_result")
            return post_form(r, respond, [&](form& f) { queue_result(r, f, std::move(respond)); });
        respond({404, "text/plain; charset=utf-8", "not found\n"});
    }

    /// The URL Twilio signed: PUBLIC_BASE_URL + target, else scheme + Host + target.
    std::string public_url(const request_view& r, std::string_view target) const {
        if (!config_.public_base_url.empty()) return config_.public_base_url + std::string(target);
        std::string scheme = r.forwarded_proto == "https" ? "https" : "http";
        return scheme + "://" + std::string(r.host) + std::string(target);
    }

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

    /// A Twilio webhook: POST, a form body, a valid signature; then `handler(form)`, which answers
    /// (and may take the form).
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

    /// Runs `work`, which blocks on the limiter's backend, on the blocking pool; its reply answers.
    /// `work` owns what it reads: the request is gone by then.
    template <class F>
    void off_thread(responder respond, F work) {
        boost::asio::post(blocking_, [respond = std::move(respond), work = std::move(work)]() mutable {
            reply answer;
            try {
                answer = work();
            } catch (const std::exception& e) {
                std::fprintf(stderr, "[SERVICE] request failed: %s\n", e.what());
                answer = {500, "text/plain; charset=utf-8", "internal error\n"};
            }
            respond(std::move(answer));
        });
    }

    static reply bad_request(std::string why) {
        return {400, "text/plain; charset=utf-8", std::move(why) + "\n"};
    }

    static reply twiml(std::string body) { return {200, std::string(twiml_type), std::move(body)}; }

    /// The call's SID, validated; an error reply otherwise.
    static std::optional<reply> bad_sid(const form& f) {
        auto sid = f.get("CallSid");
        if (!sid) return bad_request("CallSid is missing");
        if (auto why = callguard::call_id_problem(*sid); !why.empty()) return bad_request(std::string(why));
        return std::nullopt;
    }

    /// The call's tenant: the `Tenant` field, else the one mapped from the dialled number `To`;
    /// nullopt (after `error`) for a malformed one.
    std::optional<std::string> tenant_of(const form& f, std::optional<reply>& error) const {
        if (auto t = f.get("Tenant"); t && !t->empty()) {
            if (auto why = callguard::tenant_problem(*t); !why.empty()) {
                error = bad_request(std::string(why));
                return std::nullopt;
            }
            return std::string(*t);
        }
        if (auto to = f.get("To"))
            if (auto it = config_.tenant_by_number.find(*to); it != config_.tenant_by_number.end()) return it->second;
        return std::string();
    }

    /// Where this request's public URLs start (PUBLIC_BASE_URL, else scheme://Host): what an
    /// answer given after the request is gone needs of it.
    std::string base_url(const request_view& r) const { return public_url(r, ""); }

    /// The waiting room's URLs carry the caller's tenant (Twilio does not send our `Tenant`).
    static std::string queue_url(const std::string& base, std::string_view path, std::string_view tenant) {
        std::string url = base + std::string(path);
        if (!tenant.empty()) url += "?tenant=" + std::string(tenant); // [A-Za-z0-9_.:-]: nothing to escape
        return url;
    }

    /// The tenant of a waitUrl or action request, from its query string.
    static std::optional<std::string> queue_tenant(const request_view& r, std::optional<reply>& error) {
        const auto t = query_value(r.target, "tenant");
        if (auto why = callguard::tenant_problem(t); !why.empty()) {
            error = bad_request(std::string(why));
            return std::nullopt;
        }
        return std::string(t);
    }

    /// The admitted TwiML: the media stream on wss behind https, else ws.
    static reply admitted(const std::string& base, std::string_view sid, std::string_view tenant) {
        std::vector<callguard::twilio::stream_parameter> params{{"callSid", sid}};
        if (!tenant.empty()) params.push_back({"tenant", tenant});
        return twiml(callguard::twilio::admit_twiml(websocket_url(base + "/ws/media"), params));
    }

    reply enqueue(const std::string& base, std::string_view tenant) const {
        return twiml(callguard::twilio::enqueue_twiml(queue_url(base, "/webhook/queue_wait", tenant),
                                                      queue_url(base, "/webhook/queue_result", tenant), twiml_));
    }

    void incoming_call(const request_view& r, form& f, responder respond) {
        if (auto bad = bad_sid(f)) return respond(std::move(*bad));
        std::optional<reply> error;
        auto tenant = tenant_of(f, error);
        if (!tenant) return respond(std::move(*error));
        std::string sid(*f.get("CallSid"));
        const auto behavior = limiter_.config().behavior;
        if (behavior == callguard::over_capacity_behavior::queue)
            return off_thread(std::move(respond),
                              [this, base = base_url(r), f = std::move(f), sid = std::move(sid), tenant = std::move(*tenant)] {
                                  auto w = limiter_.enqueue(sid, tenant, config_.queue_max_length);
                                  if (w.admitted()) return admitted(base, sid, tenant);
                                  if (w.in_line()) return enqueue(base, tenant);
                                  // The line is full, or closed by the fail mode.
                                  return over_capacity(base, f, sid, config_.queue_fallback);
                              });
        callguard::async_acquire(
            limiter_, sid, *tenant,
            [this, base = base_url(r), f = std::move(f), sid, tenant = *tenant, behavior,
             respond = std::move(respond)](callguard::acquire_result result) mutable {
                if (result.admitted()) return respond(admitted(base, sid, tenant));
                if (behavior == callguard::over_capacity_behavior::whatsapp) // claims block: the pool answers
                    return off_thread(std::move(respond), [this, base = std::move(base), f = std::move(f),
                                                           sid = std::move(sid), behavior] {
                        return over_capacity(base, f, sid, behavior);
                    });
                respond(over_capacity(base, f, sid, behavior));
            });
    }

    /// The answer for a call that gets no slot, by behaviour (never `queue`: the waiting room
    /// answers for itself). Blocks for `whatsapp` (its claims): call that off the I/O threads.
    reply over_capacity(const std::string& base, const form& f, std::string_view sid,
                        callguard::over_capacity_behavior behavior) {
        namespace tw = callguard::twilio;
        switch (behavior) {
        case callguard::over_capacity_behavior::voicemail:
            return twiml(tw::voicemail_twiml(base + "/webhook/voicemail", twiml_, base + "/webhook/recording_status"));
        case callguard::over_capacity_behavior::whatsapp: return whatsapp_offer(f, sid);
        case callguard::over_capacity_behavior::reject:
        case callguard::over_capacity_behavior::queue: break;
        }
        return twiml(tw::reject_twiml(twiml_));
    }

    enum class skip_reason : std::size_t { no_number, duplicate, cooldown, unavailable, count_ };
    static constexpr std::array<std::string_view, 4> skip_names{"no_number", "duplicate", "cooldown", "unavailable"};

    /// A WhatsApp invitation for a caller turned away: one per call and one per number per
    /// cooldown across the fleet (claims on the limiter's backend), then an outbox row for the
    /// sender. The caller is told a message is coming only when one is.
    reply whatsapp_offer(const form& f, std::string_view sid) {
        namespace tw = callguard::twilio;
        const auto from = f.get("From").value_or("");
        const auto number = reachable_caller(from);
        auto not_sent = [&](skip_reason why, const std::string& detail) {
            skipped_[static_cast<std::size_t>(why)].fetch_add(1);
            std::fprintf(stderr, "[SERVICE] whatsapp: not sent call_id=%s reason=%s: %s\n", std::string(sid).c_str(),
                         std::string(skip_names[static_cast<std::size_t>(why)]).c_str(), detail.c_str());
        };
        if (number.empty()) {
            not_sent(skip_reason::no_number, "the caller's number is withheld or not a phone number");
            return twiml(tw::reject_twiml(twiml_));
        }
        const auto per_call = limiter_.claim_once("whatsapp:call:" + std::string(sid), whatsapp_call_claim_ttl);
        if (per_call.outcome == callguard::claim_outcome::already_claimed) {
            not_sent(skip_reason::duplicate, "this call's message is already on its way");
            return twiml(tw::whatsapp_twiml(twiml_)); // a retried webhook: the message is coming
        }
        if (!per_call) {
            not_sent(skip_reason::unavailable, "the backend cannot say whether this call was messaged");
            return twiml(tw::reject_twiml(twiml_));
        }
        if (config_.whatsapp.cooldown.count() > 0) {
            const auto per_number = limiter_.claim_once("whatsapp:to:" + std::string(number), config_.whatsapp.cooldown);
            if (!per_number) {
                if (per_number.outcome == callguard::claim_outcome::already_claimed)
                    not_sent(skip_reason::cooldown,
                             "to=" + masked_number(number) + " had one within CALLS_WHATSAPP_COOLDOWN_SECONDS (free again in " +
                                 std::to_string(per_number.remaining.count() / 1000) + " s)");
                else
                    not_sent(skip_reason::unavailable, "the backend cannot say whether this number was messaged");
                return twiml(tw::reject_twiml(twiml_));
            }
        }
        call_row row;
        row.what = call_row::kind::whatsapp_outbox;
        row.call_sid = std::string(sid);
        row.number = std::string(number);
        log_.push(std::move(row));
        return twiml(tw::whatsapp_twiml(twiml_));
    }

    /// Twilio's `waitUrl`, requested again and again while the caller holds: admitted -> leave
    /// (the action then connects the call); waited past CALLS_QUEUE_MAX_WAIT_SECONDS -> taken
    /// out of the line and leave (the action then gives the fallback); otherwise the caller's
    /// place and a pause. A caller that lost its place (dropped after its waiter TTL) joins the
    /// line again at the back. The waiting room blocks: it runs on the pool.
    void queue_wait(const request_view& r, form& f, responder respond) {
        if (auto bad = bad_sid(f)) return respond(std::move(*bad));
        std::optional<reply> error;
        auto tenant = queue_tenant(r, error);
        if (!tenant) return respond(std::move(*error));
        off_thread(std::move(respond),
                   [this, f = std::move(f), tenant = std::move(*tenant)] { return wait_in_line(f, tenant); });
    }

    reply wait_in_line(const form& f, const std::string& tenant) {
        namespace tw = callguard::twilio;
        const auto sid = *f.get("CallSid");
        auto w = limiter_.poll(sid, tenant);
        if (w.outcome == callguard::wait_outcome::not_waiting) w = limiter_.enqueue(sid, tenant, config_.queue_max_length);
        if (!w.in_line()) return twiml(tw::leave_queue_twiml()); // admitted, or the line refused it
        // Twilio's own count covers a caller who joined our line again.
        auto waited = std::chrono::duration_cast<std::chrono::seconds>(w.waited);
        if (auto t = f.get("QueueTime")) {
            std::int64_t twilio_waited = 0;
            if (auto v = parse_seconds(*t)) twilio_waited = *v;
            waited = std::max(waited, std::chrono::seconds(twilio_waited));
        }
        if (waited >= config_.queue_max_wait) {
            limiter_.leave_queue(sid, callguard::leave_reason::timeout);
            return twiml(tw::leave_queue_twiml());
        }
        return twiml(tw::queue_wait_twiml(w.position, w.waiting, twiml_));
    }

    /// The `<Enqueue>`'s action, once the caller left Twilio's queue. `leave`: admitted ->
    /// connect; still in line (the waitUrl let it out while the backend was unreachable and
    /// failing open, and the backend is back) -> back into the queue; else (let go after the
    /// longest wait, lost, or the backend unreachable and failing closed) -> the fallback.
    /// `hangup`, `bridged`, `redirected` (and their variants) take the caller out of the line;
    /// a caller still on the line (`queue-full`, `error`, `system-error`, anything else) gets
    /// the fallback. Runs on the pool, as `queue_wait`.
    void queue_result(const request_view& r, form& f, responder respond) {
        if (auto bad = bad_sid(f)) return respond(std::move(*bad));
        if (!f.get("QueueResult")) return respond(bad_request("QueueResult is missing"));
        std::optional<reply> error;
        auto tenant = queue_tenant(r, error);
        if (!tenant) return respond(std::move(*error));
        off_thread(std::move(respond), [this, base = base_url(r), f = std::move(f), tenant = std::move(*tenant)] {
            return left_line(base, f, tenant);
        });
    }

    reply left_line(const std::string& base, const form& f, const std::string& tenant) {
        namespace tw = callguard::twilio;
        const auto sid = *f.get("CallSid");
        const auto result = *f.get("QueueResult");
        if (result == "leave") {
            auto p = limiter_.poll(sid, tenant);
            if (p.admitted()) return admitted(base, sid, tenant);
            if (p.outcome == callguard::wait_outcome::waiting) return enqueue(base, tenant);
            return over_capacity(base, f, sid, config_.queue_fallback);
        }
        limiter_.leave_queue(sid, callguard::leave_reason::left);
        // Gone, or taken elsewhere (a <Dial><Queue>, a REST redirect): nothing for us to say.
        for (std::string_view done : {"hangup", "bridged", "bridging-in-progress", "redirected", "redirected-from-bridged"})
            if (result == done) return twiml(tw::empty_twiml());
        return over_capacity(base, f, sid, config_.queue_fallback);
    }

    /// Whole seconds in [0, 1e9], as Twilio sends durations; nullopt otherwise.
    static std::optional<std::int64_t> parse_seconds(std::string_view s) {
        if (s.empty() || s.size() > 9) return std::nullopt;
        std::int64_t v = 0;
        for (char c : s) {
            if (c < '0' || c > '9') return std::nullopt;
            v = v * 10 + (c - '0');
        }
        return v;
    }

    /// A voicemail row from a recording's fields (the Record action's or its status callback's);
    /// nullopt (after `error`) for malformed ones.
    static std::optional<call_row> recording_row(const form& f, std::optional<reply>& error) {
        call_row row;
        row.call_sid = std::string(*f.get("CallSid"));
        row.status = "voicemail";
        auto text = [&](const char* name, std::string& field, std::size_t limit) {
            auto v = f.get(name).value_or("");
            const bool control = std::any_of(v.begin(), v.end(), [](char ch) {
                const auto c = static_cast<unsigned char>(ch);
                return c < 0x20 || c == 0x7f;
            });
            if (v.size() > limit || control) {
                error = bad_request(std::string(name) + " is too long or has control characters");
                return false;
            }
            field = std::string(v);
            return true;
        };
        if (!text("RecordingUrl", row.recording_url, 2048) || !text("RecordingSid", row.recording_sid, 64) ||
            !text("RecordingStatus", row.recording_status, 32))
            return std::nullopt;
        if (auto d = f.get("RecordingDuration"); d && !d->empty()) {
            row.recording_duration = parse_seconds(*d);
            if (!row.recording_duration) {
                error = bad_request("RecordingDuration is not a number of seconds");
                return std::nullopt;
            }
        }
        return row;
    }

    void call_status(const form& f, responder respond) {
        if (auto bad = bad_sid(f)) return respond(std::move(*bad));
        const auto sid = *f.get("CallSid");
        auto status = f.get("CallStatus").value_or("");
        if (!is_terminal_call_status(status)) return respond({204, "", ""});
        call_row row;
        row.call_sid = std::string(sid);
        row.status = "completed";
        log_.push(std::move(row));
        // Idempotent: a repeated callback frees nothing more. Answered once the slot is back.
        callguard::async_release(limiter_, sid, [respond = std::move(respond)](bool) { respond({204, "", ""}); });
    }

    /// The Record verb's action: the recording's URL and length go to the call log, then hang up.
    reply voicemail_done(const form& f) {
        if (auto bad = bad_sid(f)) return *bad;
        std::optional<reply> error;
        auto row = recording_row(f, error);
        if (!row) return *error;
        if (!row->recording_url.empty()) log_.push(std::move(*row)); // nothing recorded: nothing to keep
        return twiml(callguard::twilio::hangup_twiml());
    }

    /// The recording status callback: the recording's SID and status (and URL, length) once stored.
    reply recording_status(const form& f) {
        if (auto bad = bad_sid(f)) return *bad;
        std::optional<reply> error;
        auto row = recording_row(f, error);
        if (!row) return *error;
        log_.push(std::move(*row));
        return {204, "", ""};
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
        if (sender_) {
            metric("callguard_whatsapp_sent_total", "counter", "WhatsApp messages Twilio accepted.", sender_->sent());
            metric("callguard_whatsapp_failed_total", "counter",
                   "WhatsApp messages Twilio refused for good or that failed after their last attempt.",
                   sender_->failed());
            metric("callguard_whatsapp_retries_total", "counter",
                   "WhatsApp send attempts that will be tried again (429, 5xx, no answer).", sender_->retried());
            text += "# HELP callguard_whatsapp_skipped_total Callers turned away who got no WhatsApp message, by reason.\n"
                    "# TYPE callguard_whatsapp_skipped_total counter\n";
            for (std::size_t i = 0; i < skip_names.size(); ++i)
                text += "callguard_whatsapp_skipped_total{reason=\"" + std::string(skip_names[i]) + "\"} " +
                        std::to_string(skipped_[i].load()) + "\n";
        }
        return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(text)};
    }

    Limiter& limiter_;
    const service_config& config_;
    callguard::twilio::twiml_options twiml_;
    call_log& log_;
    boost::asio::thread_pool& blocking_;
    const whatsapp_sender* sender_;
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(skip_reason::count_)> skipped_{};
};

} // namespace calls
