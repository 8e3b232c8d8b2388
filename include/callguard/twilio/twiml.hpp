#pragma once

// TwiML for the two answers a guarded call can get: admitted (stream the media to us) or
// over capacity (one of the configured behaviours), and for the waiting room's turns (enqueue,
// the position while waiting, leave). Every value is escaped; the output is always a
// well-formed UTF-8 document with the XML declaration first, as Twilio requires.

#include "../config.hpp"
#include "detail/twiml_writer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace callguard::twilio {

/// The rejection message of the original design: "The system is busy right now. Please try again in a few
/// minutes or send us a WhatsApp message."
inline constexpr std::string_view default_reject_message =
    "המערכת עמוסה כרגע. אנא נסו שוב בעוד מספר דקות או שלחו לנו הודעה בוואטסאפ.";
/// "The system is busy right now. We are sending you a WhatsApp message so we can continue
/// there."
inline constexpr std::string_view default_whatsapp_message =
    "המערכת עמוסה כרגע. אנחנו שולחים לכם הודעת וואטסאפ כדי שנמשיך לדבר שם.";
/// "The system is busy right now. Please leave a message after the tone and we will call back."
inline constexpr std::string_view default_voicemail_prompt =
    "המערכת עמוסה כרגע. אנא השאירו הודעה לאחר הצליל ונחזור אליכם.";
/// "All our representatives are busy. Please stay on the line."
inline constexpr std::string_view default_queue_message =
    "כל הנציגים עסוקים כרגע. אנא הישארו על הקו.";
/// "You are number {position} in line. Thank you for your patience." (`{position}` and
/// `{waiting}` are replaced; see `queue_position_text`.)
inline constexpr std::string_view default_queue_position_message =
    "אתם במקום {position} בתור. תודה על הסבלנות.";

/// How the over-capacity answers sound and where they point. Defaults speak Hebrew with a
/// voice that can (`<Say language="he-IL">` is silent with a voice that cannot).
struct twiml_options {
    std::string reject_message{default_reject_message};
    std::string whatsapp_message{default_whatsapp_message};
    std::string voicemail_prompt{default_voicemail_prompt};
    std::string queue_message{default_queue_message};
    std::string language = "he-IL";
    std::string voice = "Google.he-IL-Wavenet-A";
    /// `<Reject reason="busy"/>`: free and silent, instead of an answered, spoken rejection.
    bool reject_with_busy_signal = false;
    std::chrono::seconds voicemail_max_length{120};
    std::string queue_name = "callguard";
    std::string queue_wait_url; ///< optional `waitUrl` of `queue_twiml` (absolute)
    /// Said on each `waitUrl` request while a caller waits (`queue_wait_twiml`).
    std::string queue_position_message{default_queue_position_message};
    /// The `<Pause>` after it: the time between two `waitUrl` requests, give or take the speech.
    /// Keep it well under the waiting room's `waiter_ttl`.
    std::chrono::seconds queue_pause{5};

    /// Reads CALLS_REJECT_MESSAGE, CALLS_WHATSAPP_MESSAGE, CALLS_VOICEMAIL_PROMPT,
    /// CALLS_QUEUE_MESSAGE, CALLS_QUEUE_POSITION_MESSAGE, CALLS_QUEUE_PAUSE_SECONDS,
    /// CALLS_TTS_LANGUAGE, CALLS_TTS_VOICE, CALLS_REJECT_BUSY_SIGNAL,
    /// CALLS_VOICEMAIL_MAX_SECONDS, CALLS_QUEUE_NAME, CALLS_QUEUE_WAIT_URL.
    static twiml_options from_env(const env_lookup& lookup);
    static twiml_options from_env() { return from_env(process_env()); }
};

/// One `<Parameter name=".." value=".."/>` of a `<Stream>` (Twilio hands them back in the
/// Media Streams `start.customParameters`).
struct stream_parameter {
    std::string_view name;
    std::string_view value;
};

/// `<Connect><Stream url="wss://..."><Parameter .../></Stream></Connect>`.
/// `stream_url` must be an absolute ws:// or wss:// URL without a query string (Twilio drops
/// it; pass values as parameters instead). Throws `std::invalid_argument` otherwise.
inline std::string admit_twiml(std::string_view stream_url, std::span<const stream_parameter> params) {
    if (!detail::starts_with_scheme(stream_url, {"ws://", "wss://"}))
        throw std::invalid_argument("stream url must start with ws:// or wss://");
    if (stream_url.find('?') != std::string_view::npos)
        throw std::invalid_argument("stream url must not have a query string; use parameters");
    std::string body = "<Connect><Stream";
    detail::append_attr(body, "url", stream_url);
    body += '>';
    for (const auto& p : params) {
        if (p.name.empty()) throw std::invalid_argument("stream parameter name is empty");
        body += "<Parameter";
        detail::append_attr(body, "name", p.name);
        detail::append_attr(body, "value", p.value);
        body += "/>";
    }
    body += "</Stream></Connect>";
    return detail::document(body);
}

inline std::string admit_twiml(std::string_view stream_url,
                               std::initializer_list<stream_parameter> params = {}) {
    return admit_twiml(stream_url, std::span<const stream_parameter>(params.begin(), params.size()));
}

/// The polite rejection: the message spoken in Hebrew, then `<Hangup/>`; or, with
/// `reject_with_busy_signal`, a silent unbilled `<Reject reason="busy"/>`.
inline std::string reject_twiml(const twiml_options& o = {}) {
    if (o.reject_with_busy_signal) return detail::document("<Reject reason=\"busy\"/>");
    std::string body;
    detail::append_say(body, o.reject_message, o.language, o.voice);
    body += "<Hangup/>";
    return detail::document(body);
}

/// The prompt, then `<Record>` posting the recording to `action_url` (absolute http(s) URL,
/// required by Twilio's rules; throws `std::invalid_argument` otherwise). With
/// `recording_status_url` (absolute too), Twilio also posts the recording's SID, status, URL and
/// duration there once the recording is stored (`recordingStatusCallback`).
inline std::string voicemail_twiml(std::string_view action_url, const twiml_options& o = {},
                                   std::string_view recording_status_url = {}) {
    if (!detail::starts_with_scheme(action_url, {"http://", "https://"}))
        throw std::invalid_argument("voicemail action url must be an absolute http(s) URL");
    if (!recording_status_url.empty() && !detail::starts_with_scheme(recording_status_url, {"http://", "https://"}))
        throw std::invalid_argument("recording status callback url must be an absolute http(s) URL");
    std::string body;
    detail::append_say(body, o.voicemail_prompt, o.language, o.voice);
    body += "<Record";
    detail::append_attr(body, "action", action_url);
    detail::append_attr(body, "method", "POST");
    detail::append_attr(body, "maxLength", std::to_string(o.voicemail_max_length.count()));
    detail::append_attr(body, "playBeep", "true");
    if (!recording_status_url.empty()) {
        detail::append_attr(body, "recordingStatusCallback", recording_status_url);
        detail::append_attr(body, "recordingStatusCallbackMethod", "POST");
    }
    body += "/><Hangup/>";
    return detail::document(body);
}

/// Tells the caller a WhatsApp invitation is on its way (the application sends it), then hangs up.
inline std::string whatsapp_twiml(const twiml_options& o = {}) {
    std::string body;
    detail::append_say(body, o.whatsapp_message, o.language, o.voice);
    body += "<Hangup/>";
    return detail::document(body);
}

/// A short message, then `<Enqueue>` into `queue_name` (with `waitUrl` when set).
inline std::string queue_twiml(const twiml_options& o = {}) {
    std::string body;
    if (!o.queue_message.empty()) detail::append_say(body, o.queue_message, o.language, o.voice);
    body += "<Enqueue";
    if (!o.queue_wait_url.empty()) detail::append_attr(body, "waitUrl", o.queue_wait_url);
    body += '>';
    callguard::detail::append_xml_escaped(body, o.queue_name);
    body += "</Enqueue>";
    return detail::document(body);
}

/// The waiting room's answer for Twilio's `<Enqueue>`: the queue message, then the caller goes
/// into `queue_name`. Twilio requests `wait_url` (POST) for what to play while the caller
/// waits, again each time that ends, and `action_url` (POST, with `QueueResult`) once the
/// caller leaves the queue. Both must be absolute http(s) URLs (`std::invalid_argument`
/// otherwise).
inline std::string enqueue_twiml(std::string_view wait_url, std::string_view action_url,
                                 const twiml_options& o = {}) {
    if (!detail::starts_with_scheme(wait_url, {"http://", "https://"}))
        throw std::invalid_argument("queue wait url must be an absolute http(s) URL");
    if (!detail::starts_with_scheme(action_url, {"http://", "https://"}))
        throw std::invalid_argument("queue action url must be an absolute http(s) URL");
    std::string body;
    if (!o.queue_message.empty()) detail::append_say(body, o.queue_message, o.language, o.voice);
    body += "<Enqueue";
    detail::append_attr(body, "action", action_url);
    detail::append_attr(body, "method", "POST");
    detail::append_attr(body, "waitUrl", wait_url);
    detail::append_attr(body, "waitUrlMethod", "POST");
    body += '>';
    callguard::detail::append_xml_escaped(body, o.queue_name);
    body += "</Enqueue>";
    return detail::document(body);
}

/// `text` with each `{position}` and `{waiting}` replaced by the numbers (other braces are kept).
inline std::string queue_position_text(std::string_view text, std::int64_t position, std::int64_t waiting) {
    std::string out;
    out.reserve(text.size() + 8);
    while (!text.empty()) {
        if (text.starts_with("{position}")) {
            out += std::to_string(position);
            text.remove_prefix(10);
        } else if (text.starts_with("{waiting}")) {
            out += std::to_string(waiting);
            text.remove_prefix(9);
        } else {
            out += text.front();
            text.remove_prefix(1);
        }
    }
    return out;
}

/// One round of waiting music for a `waitUrl` request: the caller's place in line (from
/// `queue_position_message`; the plain `queue_message` when the position is unknown, 0), then
/// a `<Pause>` of `queue_pause`. When it ends Twilio requests the `waitUrl` again.
inline std::string queue_wait_twiml(std::int64_t position, std::int64_t waiting, const twiml_options& o = {}) {
    std::string body;
    const auto text = position > 0 ? queue_position_text(o.queue_position_message, position, waiting)
                                   : o.queue_message;
    if (!text.empty()) detail::append_say(body, text, o.language, o.voice);
    body += "<Pause";
    detail::append_attr(body, "length", std::to_string(std::max<std::int64_t>(o.queue_pause.count(), 1)));
    body += "/>";
    return detail::document(body);
}

/// `<Leave/>`: takes the caller out of the queue; Twilio then requests the `<Enqueue>`'s
/// `action` with `QueueResult=leave`.
inline std::string leave_queue_twiml() { return detail::document("<Leave/>"); }

/// `<Hangup/>`.
inline std::string hangup_twiml() { return detail::document("<Hangup/>"); }

/// An empty `<Response/>`: nothing more to do (a status callback's or a hung-up call's answer).
inline std::string empty_twiml() { return detail::document(""); }

/// The answer for a call over capacity, by behaviour. `voicemail_action_url` is needed only
/// for `voicemail`.
inline std::string over_capacity_twiml(over_capacity_behavior b, const twiml_options& o = {},
                                       std::string_view voicemail_action_url = {}) {
    switch (b) {
    case over_capacity_behavior::voicemail: return voicemail_twiml(voicemail_action_url, o);
    case over_capacity_behavior::whatsapp: return whatsapp_twiml(o);
    case over_capacity_behavior::queue: return queue_twiml(o);
    case over_capacity_behavior::reject: break;
    }
    return reject_twiml(o);
}

inline twiml_options twiml_options::from_env(const env_lookup& lookup) {
    const env_reader env(lookup);
    twiml_options o;
    auto text = [&](const char* name, std::string& field) {
        if (auto v = env.get(name)) {
            if (callguard::detail::trim(*v).empty())
                throw config_error(name, *v, "must not be empty");
            field = *v;
        }
    };
    text("CALLS_REJECT_MESSAGE", o.reject_message);
    text("CALLS_WHATSAPP_MESSAGE", o.whatsapp_message);
    text("CALLS_VOICEMAIL_PROMPT", o.voicemail_prompt);
    text("CALLS_TTS_LANGUAGE", o.language);
    text("CALLS_TTS_VOICE", o.voice);
    text("CALLS_QUEUE_NAME", o.queue_name);
    if (auto v = env.get("CALLS_QUEUE_MESSAGE")) o.queue_message = *v; // empty: no message
    if (auto v = env.get("CALLS_QUEUE_POSITION_MESSAGE")) o.queue_position_message = *v; // empty: silence
    if (auto v = env.get("CALLS_QUEUE_PAUSE_SECONDS"))
        o.queue_pause = std::chrono::seconds(parse_positive("CALLS_QUEUE_PAUSE_SECONDS", *v, 60));
    if (auto v = env.get("CALLS_QUEUE_WAIT_URL")) {
        if (!v->empty() && !detail::starts_with_scheme(*v, {"http://", "https://"}))
            throw config_error("CALLS_QUEUE_WAIT_URL", *v,
                               "expected an absolute http(s) URL");
        o.queue_wait_url = *v;
    }
    if (auto v = env.get("CALLS_REJECT_BUSY_SIGNAL"))
        o.reject_with_busy_signal = parse_flag("CALLS_REJECT_BUSY_SIGNAL", *v);
    if (auto v = env.get("CALLS_VOICEMAIL_MAX_SECONDS"))
        o.voicemail_max_length =
            std::chrono::seconds(parse_positive("CALLS_VOICEMAIL_MAX_SECONDS", *v, 14400));
    return o;
}

} // namespace callguard::twilio
