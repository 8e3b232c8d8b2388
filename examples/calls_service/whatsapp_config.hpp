#pragma once

// What the WhatsApp sender needs to post a message through Twilio's REST API, read with the
// library's environment layer. Needed only when a behaviour sends messages (`whatsapp`, or
// `queue` falling back to it); then every missing piece is a configuration error at start.

#include "https_client.hpp"

#include <callguard/env.hpp>
#include <callguard/errors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace calls {

/// "Hello, you called us while all our representatives were busy. Write to us here and we will
/// get back to you soon."
inline constexpr std::string_view default_whatsapp_body =
    "שלום, התקשרתם אלינו כשכל הנציגים היו עסוקים. כתבו לנו כאן ונחזור אליכם בהקדם.";

/// `+` and 8 to 15 digits (E.164). A leading `whatsapp:` is accepted and dropped.
inline std::string_view e164_number(std::string_view text) {
    if (text.starts_with("whatsapp:")) text.remove_prefix(9);
    if (text.size() < 9 || text.size() > 16 || text.front() != '+') return {};
    for (char c : text.substr(1))
        if (c < '0' || c > '9') return {};
    return text;
}

/// A Twilio SID: two letters (`prefix`) and 32 hexadecimal digits.
inline bool twilio_sid(std::string_view sid, std::string_view prefix) {
    if (sid.size() != 34 || !sid.starts_with(prefix)) return false;
    for (char c : sid.substr(2))
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
    return true;
}

struct whatsapp_config {
    std::string account_sid;           ///< TWILIO_ACCOUNT_SID
    std::string auth_token;            ///< TWILIO_AUTH_TOKEN (also what webhook signatures are checked with)
    std::string from;                  ///< CALLS_WHATSAPP_FROM, E.164 without `whatsapp:`
    std::string messaging_service_sid; ///< CALLS_WHATSAPP_MESSAGING_SERVICE_SID (instead of `from`)
    std::string content_sid;           ///< CALLS_WHATSAPP_CONTENT_SID: an approved template
    std::string content_variables;     ///< CALLS_WHATSAPP_CONTENT_VARIABLES: its variables, a JSON object
    std::string body{default_whatsapp_body}; ///< CALLS_WHATSAPP_BODY: free text, when there is no template
    std::string api_base_url = "https://api.twilio.com"; ///< TWILIO_API_BASE_URL
    http_endpoint api;                 ///< api_base_url, parsed
    std::chrono::seconds cooldown{86400}; ///< CALLS_WHATSAPP_COOLDOWN_SECONDS: one message per number per this (0: none)
    int max_attempts = 6;                 ///< CALLS_WHATSAPP_MAX_ATTEMPTS: tries before a retryable error is final
    std::chrono::milliseconds retry_base{2000}; ///< CALLS_WHATSAPP_RETRY_BASE_MS: the first retry's delay, doubled each time
    std::chrono::milliseconds retry_max{std::chrono::minutes(5)};
    std::chrono::seconds request_timeout{10}; ///< CALLS_WHATSAPP_TIMEOUT_SECONDS: one request, connect to answer

    /// The Messages resource of this account.
    std::string messages_path() const { return "/2010-04-01/Accounts/" + account_sid + "/Messages.json"; }

    /// Reads the variables. With `required_by` set (the setting that sends messages, e.g.
    /// "CALLS_OVER_CAPACITY_BEHAVIOR=whatsapp"), a missing credential or sender is a
    /// `config_error` naming the missing variable; every value set is checked either way.
    static whatsapp_config from_env(const callguard::env_lookup& lookup, const std::string& required_by) {
        using callguard::config_error;
        const callguard::env_reader env(lookup);
        whatsapp_config c;
        const bool required = !required_by.empty();
        auto missing = [&](const char* name, const std::string& what) {
            throw config_error(name, "", "is required by " + required_by + " (" + what + ")");
        };
        if (auto v = env.text("TWILIO_ACCOUNT_SID")) {
            if (!twilio_sid(*v, "AC")) throw config_error("TWILIO_ACCOUNT_SID", *v, "expected AC and 32 hexadecimal digits");
            c.account_sid = *v;
        } else if (required) {
            missing("TWILIO_ACCOUNT_SID", "the account that sends the messages");
        }
        if (auto v = env.get("TWILIO_AUTH_TOKEN"); v && !v->empty()) c.auth_token = *v;
        else if (required) missing("TWILIO_AUTH_TOKEN", "the REST API's password; webhooks are then signature-checked");
        if (auto v = env.text("CALLS_WHATSAPP_FROM")) {
            auto number = e164_number(*v);
            if (number.empty())
                throw config_error("CALLS_WHATSAPP_FROM", *v,
                                   "expected the WhatsApp sender's number in E.164, e.g. +14155238886 or "
                                   "whatsapp:+14155238886");
            c.from = std::string(number);
        }
        if (auto v = env.text("CALLS_WHATSAPP_MESSAGING_SERVICE_SID")) {
            if (!twilio_sid(*v, "MG"))
                throw config_error("CALLS_WHATSAPP_MESSAGING_SERVICE_SID", *v, "expected MG and 32 hexadecimal digits");
            c.messaging_service_sid = *v;
        }
        if (required && c.from.empty() && c.messaging_service_sid.empty())
            missing("CALLS_WHATSAPP_FROM", "the WhatsApp sender; or set CALLS_WHATSAPP_MESSAGING_SERVICE_SID");
        if (auto v = env.text("CALLS_WHATSAPP_CONTENT_SID")) {
            if (!twilio_sid(*v, "HX")) throw config_error("CALLS_WHATSAPP_CONTENT_SID", *v, "expected HX and 32 hexadecimal digits");
            c.content_sid = *v;
        }
        if (auto v = env.text("CALLS_WHATSAPP_CONTENT_VARIABLES")) {
            if (c.content_sid.empty())
                throw config_error("CALLS_WHATSAPP_CONTENT_VARIABLES", *v, "needs CALLS_WHATSAPP_CONTENT_SID (the template they fill)");
            auto j = nlohmann::json::parse(*v, nullptr, false);
            bool ok = j.is_object();
            if (ok)
                for (const auto& [k, value] : j.items()) ok = ok && value.is_string();
            if (!ok)
                throw config_error("CALLS_WHATSAPP_CONTENT_VARIABLES", *v,
                                   "expected a JSON object of strings, e.g. {\"1\":\"Dana\"}");
            c.content_variables = j.dump();
        }
        if (auto v = env.get("CALLS_WHATSAPP_BODY")) {
            if (!env.text("CALLS_WHATSAPP_BODY")) throw config_error("CALLS_WHATSAPP_BODY", *v, "must not be empty");
            c.body = *v;
        }
        if (auto v = env.text("TWILIO_API_BASE_URL")) c.api_base_url = *v;
        c.api = http_endpoint::parse("TWILIO_API_BASE_URL", c.api_base_url);
        if (auto v = env.get("CALLS_WHATSAPP_COOLDOWN_SECONDS"))
            c.cooldown = std::chrono::seconds(
                callguard::parse_integer("CALLS_WHATSAPP_COOLDOWN_SECONDS", *v, 0, callguard::max_ttl_seconds));
        if (auto v = env.get("CALLS_WHATSAPP_MAX_ATTEMPTS"))
            c.max_attempts = static_cast<int>(callguard::parse_positive("CALLS_WHATSAPP_MAX_ATTEMPTS", *v, 100));
        if (auto v = env.get("CALLS_WHATSAPP_RETRY_BASE_MS"))
            c.retry_base = std::chrono::milliseconds(callguard::parse_positive("CALLS_WHATSAPP_RETRY_BASE_MS", *v, 3'600'000));
        c.retry_max = std::max(c.retry_max, c.retry_base);
        if (auto v = env.get("CALLS_WHATSAPP_TIMEOUT_SECONDS"))
            c.request_timeout = std::chrono::seconds(callguard::parse_positive("CALLS_WHATSAPP_TIMEOUT_SECONDS", *v, 120));
        return c;
    }

    /// The form Twilio's Messages resource takes for one message to `to` (E.164).
    std::string message_form(std::string_view to) const {
        std::string out;
        auto field = [&](std::string_view name, std::string_view value) {
            if (!out.empty()) out += '&';
            out += name;
            out += '=';
            append_form_encoded(out, value);
        };
        field("To", "whatsapp:" + std::string(to));
        if (!messaging_service_sid.empty()) field("MessagingServiceSid", messaging_service_sid);
        else field("From", "whatsapp:" + from);
        if (!content_sid.empty()) {
            field("ContentSid", content_sid);
            if (!content_variables.empty()) field("ContentVariables", content_variables);
        } else {
            field("Body", body);
        }
        return out;
    }

    /// application/x-www-form-urlencoded: unreserved bytes as they are, the rest %XX.
    static void append_form_encoded(std::string& out, std::string_view s) {
        static constexpr char hex[] = "0123456789ABCDEF";
        for (unsigned char c : s) {
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                c == '.' || c == '~') {
                out += static_cast<char>(c);
            } else {
                out += '%';
                out += hex[c >> 4];
                out += hex[c & 15];
            }
        }
    }
};

} // namespace calls
