#pragma once

// TwiML for the two answers a guarded call can get: admitted (stream the media to us) or
// over capacity (one of the configured behaviours). Every value is escaped; the output is
// always a well-formed UTF-8 document with the XML declaration first, as Twilio requires.

#include "../config.hpp"
#include "detail/twiml_writer.hpp"

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
    std::string queue_wait_url; ///< optional `waitUrl` of `<Enqueue>` (absolute)

    /// Reads CALLS_REJECT_MESSAGE, CALLS_WHATSAPP_MESSAGE, CALLS_VOICEMAIL_PROMPT,
    /// CALLS_QUEUE_MESSAGE, CALLS_TTS_LANGUAGE, CALLS_TTS_VOICE, CALLS_REJECT_BUSY_SIGNAL,
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
/// required by Twilio's rules; throws `std::invalid_argument` otherwise).
inline std::string voicemail_twiml(std::string_view action_url, const twiml_options& o = {}) {
    if (!detail::starts_with_scheme(action_url, {"http://", "https://"}))
        throw std::invalid_argument("voicemail action url must be an absolute http(s) URL");
    std::string body;
    detail::append_say(body, o.voicemail_prompt, o.language, o.voice);
    body += "<Record";
    detail::append_attr(body, "action", action_url);
    detail::append_attr(body, "method", "POST");
    detail::append_attr(body, "maxLength", std::to_string(o.voicemail_max_length.count()));
    detail::append_attr(body, "playBeep", "true");
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
