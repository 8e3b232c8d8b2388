#pragma once

// The service's own settings (the limiter's come from limiter_config::from_env), read with the
// library's public environment layer.

#include "whatsapp_config.hpp"

#include <callguard/config.hpp>
#include <callguard/env.hpp>
#include <callguard/validation.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>

namespace calls {

struct service_config {
    std::string host = "0.0.0.0";          ///< HOST
    std::uint16_t port = 5050;             ///< PORT (0: any free port, printed at start-up)
    std::string public_base_url;           ///< PUBLIC_BASE_URL, e.g. https://calls.example.com
    std::string auth_token;                ///< TWILIO_AUTH_TOKEN: when set, signatures are checked
    std::string db_path = "calls.db";      ///< CALLS_DB_PATH: the SQLite call log
    std::string db_url;                    ///< CALLS_DB_URL: PostgreSQL instead (holds a password: never log)
    std::size_t db_queue_limit = 10000;    ///< CALLS_DB_QUEUE_LIMIT: call log rows waiting for the database
    std::map<std::string, std::string, std::less<>> tenant_by_number; ///< CALLS_TENANT_BY_NUMBER
    std::chrono::seconds refresh_interval{60}; ///< CALLS_REFRESH_SECONDS: media streams refresh their slot
    std::chrono::seconds read_timeout{10};     ///< CALLS_HTTP_READ_TIMEOUT_SECONDS
    std::chrono::seconds media_idle_timeout{60}; ///< CALLS_MEDIA_IDLE_TIMEOUT_SECONDS
    std::size_t max_connections = 4096;    ///< CALLS_MAX_CONNECTIONS
    unsigned threads = std::max(4u, 2 * std::thread::hardware_concurrency()); ///< CALLS_HTTP_THREADS
    bool production = false;               ///< PRODUCTION
    bool allow_unsigned_webhooks = false;  ///< CALLS_ALLOW_UNSIGNED_WEBHOOKS: PRODUCTION=1 without TWILIO_AUTH_TOKEN, on purpose
    // The `queue` behaviour (the waiting room).
    std::chrono::seconds queue_max_wait{300}; ///< CALLS_QUEUE_MAX_WAIT_SECONDS: then the fallback
    std::int64_t queue_max_length = 100;      ///< CALLS_QUEUE_MAX_LENGTH: beyond it, the fallback at once
    callguard::over_capacity_behavior queue_fallback = callguard::over_capacity_behavior::reject; ///< CALLS_QUEUE_FALLBACK
    /// The WhatsApp sender's settings: read by `read_whatsapp` once the behaviour is known.
    whatsapp_config whatsapp;
    bool whatsapp_enabled = false; ///< a behaviour sends messages: the sender runs

    /// Throws `callguard::config_error` naming the variable and the value.
    static service_config from_env(const callguard::env_lookup& lookup) {
        using callguard::config_error;
        const callguard::env_reader env(lookup);
        service_config c;
        if (auto v = env.get("HOST"); v && !v->empty()) c.host = *v;
        if (auto v = env.get("PORT"))
            c.port = static_cast<std::uint16_t>(callguard::parse_integer("PORT", *v, 0, 65535));
        if (auto v = env.get("PUBLIC_BASE_URL"); v && !v->empty()) {
            std::string u = *v;
            while (!u.empty() && u.back() == '/') u.pop_back();
            if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0)
                throw config_error("PUBLIC_BASE_URL", *v, "expected http://host or https://host");
            c.public_base_url = u;
        }
        if (auto v = env.get("TWILIO_AUTH_TOKEN")) c.auth_token = *v;
        if (auto v = env.get("CALLS_DB_PATH"); v && !v->empty()) c.db_path = *v;
        if (auto v = env.get("CALLS_DB_URL")) c.db_url = *v; // checked by the store (libpq's parser)
        if (auto v = env.get("CALLS_DB_QUEUE_LIMIT"))
            c.db_queue_limit = static_cast<std::size_t>(callguard::parse_positive("CALLS_DB_QUEUE_LIMIT", *v, 10'000'000));
        if (auto v = env.get("CALLS_TENANT_BY_NUMBER")) {
            for (auto [number, tenant] : callguard::parse_key_values("CALLS_TENANT_BY_NUMBER", *v, "+number=tenant")) {
                if (!callguard::tenant_problem(tenant).empty())
                    throw config_error("CALLS_TENANT_BY_NUMBER", *v,
                                       "each item needs a number and a tenant from [A-Za-z0-9_.:-]");
                c.tenant_by_number.emplace(std::string(number), std::string(tenant));
            }
        }
        auto seconds = [&](const char* name, std::chrono::seconds& field) {
            if (auto v = env.get(name)) field = std::chrono::seconds(callguard::parse_positive(name, *v, 86400));
        };
        seconds("CALLS_REFRESH_SECONDS", c.refresh_interval);
        seconds("CALLS_HTTP_READ_TIMEOUT_SECONDS", c.read_timeout);
        seconds("CALLS_MEDIA_IDLE_TIMEOUT_SECONDS", c.media_idle_timeout);
        if (auto v = env.get("CALLS_MAX_CONNECTIONS"))
            c.max_connections = static_cast<std::size_t>(callguard::parse_positive("CALLS_MAX_CONNECTIONS", *v, 1'000'000));
        if (auto v = env.get("CALLS_HTTP_THREADS"))
            c.threads = static_cast<unsigned>(callguard::parse_positive("CALLS_HTTP_THREADS", *v, 256));
        if (auto v = env.get("PRODUCTION")) c.production = callguard::parse_flag("PRODUCTION", *v);
        if (auto v = env.get("CALLS_ALLOW_UNSIGNED_WEBHOOKS"))
            c.allow_unsigned_webhooks = callguard::parse_flag("CALLS_ALLOW_UNSIGNED_WEBHOOKS", *v);
        // Anyone who can reach an unsigned webhook can hold slots (and, with WhatsApp, have
        // messages sent): in production that takes a decision, not an omission.
        if (c.production && c.auth_token.empty() && !c.allow_unsigned_webhooks)
            throw config_error("TWILIO_AUTH_TOKEN", "",
                               "is required with PRODUCTION=1: without it webhooks are not signature-checked and "
                               "anyone who can reach them holds slots; set CALLS_ALLOW_UNSIGNED_WEBHOOKS=1 to run "
                               "unsigned on purpose");
        if (auto v = env.get("CALLS_QUEUE_MAX_WAIT_SECONDS"))
            c.queue_max_wait = std::chrono::seconds(callguard::parse_positive("CALLS_QUEUE_MAX_WAIT_SECONDS", *v, 86400));
        if (auto v = env.get("CALLS_QUEUE_MAX_LENGTH"))
            c.queue_max_length = callguard::parse_positive("CALLS_QUEUE_MAX_LENGTH", *v, 100000);
        if (auto v = env.get("CALLS_QUEUE_FALLBACK")) {
            c.queue_fallback = callguard::parse_behavior("CALLS_QUEUE_FALLBACK", *v);
            if (c.queue_fallback == callguard::over_capacity_behavior::queue)
                throw config_error("CALLS_QUEUE_FALLBACK", *v, "expected one of reject, voicemail, whatsapp");
        }
        return c;
    }

    /// Reads the WhatsApp sender's settings; required (a missing one is a `config_error`
    /// naming it) when `behavior` sends messages, directly or as the queue's fallback.
    void read_whatsapp(const callguard::env_lookup& lookup, callguard::over_capacity_behavior behavior) {
        using b = callguard::over_capacity_behavior;
        std::string required_by;
        if (behavior == b::whatsapp) required_by = "CALLS_OVER_CAPACITY_BEHAVIOR=whatsapp";
        else if (behavior == b::queue && queue_fallback == b::whatsapp) required_by = "CALLS_QUEUE_FALLBACK=whatsapp";
        whatsapp = whatsapp_config::from_env(lookup, required_by);
        whatsapp_enabled = !required_by.empty();
    }
};

} // namespace calls
