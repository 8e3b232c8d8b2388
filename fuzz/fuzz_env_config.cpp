// Environment configuration: NAME=VALUE lines in, either a config whose every field is in
// range, or a config_error naming one of our variables with a printable message. Nothing else.
#ifdef CALLGUARD_FUZZ_REDIS // set by CMake when callguard::redis exists
#include <callguard/backends/redis.hpp>
#endif
#include <callguard/config.hpp>
#include <callguard/twilio/twiml.hpp>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::set<std::string> names{
        "MAX_ACTIVE_CALLS", "PRODUCTION", "CALLS_OVER_CAPACITY_BEHAVIOR", "CALLS_CAPACITY_LOG_LEVEL",
        "CALLS_SLOT_TTL_SECONDS", "CALLS_FAIL_MODE", "CALLS_TENANT_LIMITS", "CALLS_LOCAL_MAX_ACTIVE_CALLS",
        "CALLS_REJECT_MESSAGE", "CALLS_WHATSAPP_MESSAGE", "CALLS_VOICEMAIL_PROMPT", "CALLS_QUEUE_MESSAGE",
        "CALLS_TTS_LANGUAGE", "CALLS_TTS_VOICE", "CALLS_REJECT_BUSY_SIGNAL", "CALLS_VOICEMAIL_MAX_SECONDS",
        "CALLS_QUEUE_NAME", "CALLS_QUEUE_WAIT_URL", "REDIS_URL", "CALLS_REDIS_KEY_PREFIX", "CALLS_REDIS_TIMEOUT_MS",
        "CALLS_REDIS_CONNECTION_MODE"};
    std::map<std::string, std::string> env;
    std::string text(reinterpret_cast<const char*>(data), size);
    for (std::size_t pos = 0; pos <= text.size();) {
        auto nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        auto line = text.substr(pos, nl - pos);
        if (auto eq = line.find('='); eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
        pos = nl + 1;
    }
    callguard::env_lookup lookup = [&](const char* n) -> std::optional<std::string> {
        if (auto it = env.find(n); it != env.end()) return it->second;
        return std::nullopt;
    };
    auto check_error = [&](const callguard::config_error& e) {
        if (!names.count(e.variable())) std::abort();
        for (char c : std::string_view(e.what()))
            if (static_cast<unsigned char>(c) < 0x20) std::abort(); // never breaks a log line
    };
    try {
        auto c = callguard::limiter_config::from_env(lookup);
        c.validate();
        if (c.max_active_calls < 1 || c.max_active_calls > callguard::max_cap_value) std::abort();
        if (c.slot_ttl.count() < 1 || c.slot_ttl.count() > callguard::max_ttl_seconds) std::abort();
        for (auto& [t, n] : c.tenant_limits)
            if (t.empty() || n < 1 || !callguard::tenant_problem(t).empty()) std::abort();
    } catch (const callguard::config_error& e) {
        check_error(e);
    }
    try {
        callguard::twilio::twiml_options::from_env(lookup);
    } catch (const callguard::config_error& e) {
        check_error(e);
    }
#ifdef CALLGUARD_FUZZ_REDIS
    try {
        auto o = callguard::redis_options::from_env(lookup);
        o.validate();
    } catch (const callguard::config_error& e) {
        check_error(e);
    }
#endif
    return 0;
}
