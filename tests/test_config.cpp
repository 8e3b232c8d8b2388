// limiter_config::from_env: every variable of the configuration table, good and bad.

#include <callguard/config.hpp>
#include <doctest/doctest.h>

#include <map>
#include <string>

namespace {

callguard::env_lookup env(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
        if (auto it = vars.find(name); it != vars.end()) return it->second;
        return std::nullopt;
    };
}

/// The message of the config_error thrown for `vars`, or "" when nothing is thrown.
std::string error_for(std::map<std::string, std::string> vars) {
    try {
        callguard::limiter_config::from_env(env(std::move(vars)));
    } catch (const callguard::config_error& e) {
        return e.what();
    }
    return {};
}

} // namespace

TEST_CASE("from_env: defaults depend on PRODUCTION") {
    auto dev = callguard::limiter_config::from_env(env({}));
    CHECK(dev.max_active_calls == 50);
    CHECK(dev.slot_ttl == std::chrono::seconds(7200));
    CHECK(dev.behavior == callguard::over_capacity_behavior::reject);
    CHECK(dev.log_level == callguard::log_level::warning);
    CHECK(dev.fail_mode == callguard::fail_mode::open);
    CHECK(dev.tenant_limits.empty());
    CHECK(dev.max_remembered_calls == 100'000);
    CHECK(dev.reinstate_per_second == 500);
    CHECK(dev.reinstate_delay == std::chrono::milliseconds(2000));
    CHECK(callguard::limiter_config::from_env(env({{"PRODUCTION", "1"}})).max_active_calls == 15);
    CHECK(callguard::limiter_config::from_env(env({{"PRODUCTION", "true"}})).max_active_calls == 15);
    CHECK(callguard::limiter_config::from_env(env({{"PRODUCTION", "0"}})).max_active_calls == 50);
    CHECK(callguard::limiter_config::from_env(env({{"PRODUCTION", "1"}, {"MAX_ACTIVE_CALLS", "30"}}))
              .max_active_calls == 30);
}

TEST_CASE("from_env: reads every variable") {
    auto c = callguard::limiter_config::from_env(env({
        {"MAX_ACTIVE_CALLS", " 20 "},
        {"CALLS_OVER_CAPACITY_BEHAVIOR", "WhatsApp"},
        {"CALLS_CAPACITY_LOG_LEVEL", "debug"},
        {"CALLS_SLOT_TTL_SECONDS", "60"},
        {"CALLS_FAIL_MODE", "local"},
        {"CALLS_TENANT_LIMITS", "biz1=5, biz2 = 10"},
        {"CALLS_LOCAL_MAX_ACTIVE_CALLS", "4"},
        {"CALLS_MAX_REMEMBERED_CALLS", "0"},
        {"CALLS_REINSTATE_PER_SECOND", "50"},
        {"CALLS_REINSTATE_DELAY_MS", "0"},
    }));
    CHECK(c.reinstate_delay == std::chrono::milliseconds(0));
    CHECK(c.max_remembered_calls == 0);
    CHECK(c.reinstate_per_second == 50);
    CHECK(c.max_active_calls == 20);
    CHECK(c.behavior == callguard::over_capacity_behavior::whatsapp);
    CHECK(c.log_level == callguard::log_level::debug);
    CHECK(c.slot_ttl == std::chrono::seconds(60));
    CHECK(c.fail_mode == callguard::fail_mode::local);
    CHECK(c.tenant_limits == callguard::tenant_limit_map{{"biz1", 5}, {"biz2", 10}});
    CHECK(c.tenant_limit("biz1") == 5);
    CHECK(c.tenant_limit("other") == 0);
    CHECK(c.tenant_limit("") == 0);
    CHECK(c.local_max_active_calls == 4);
    for (auto [text, level] : {std::pair{"INFO", callguard::log_level::info},
                               std::pair{"WARNING", callguard::log_level::warning},
                               std::pair{"WARN", callguard::log_level::warning},
                               std::pair{"ERROR", callguard::log_level::error}})
        CHECK(callguard::limiter_config::from_env(env({{"CALLS_CAPACITY_LOG_LEVEL", text}})).log_level ==
              level);
    for (auto b : {"reject", "voicemail", "whatsapp", "queue"})
        CHECK(callguard::to_string(callguard::limiter_config::from_env(
                                       env({{"CALLS_OVER_CAPACITY_BEHAVIOR", b}}))
                                       .behavior) == b);
}

TEST_CASE("from_env: a bad value names the variable and the value") {
    struct bad {
        const char* var;
        const char* value;
    };
    for (auto [var, value] : {
             bad{"MAX_ACTIVE_CALLS", "0"},
             bad{"MAX_ACTIVE_CALLS", "-5"},
             bad{"MAX_ACTIVE_CALLS", "abc"},
             bad{"MAX_ACTIVE_CALLS", "15abc"},
             bad{"MAX_ACTIVE_CALLS", "1.5"},
             bad{"MAX_ACTIVE_CALLS", ""},
             bad{"MAX_ACTIVE_CALLS", "+7"},
             bad{"MAX_ACTIVE_CALLS", "99999999999999999999999"},
             bad{"MAX_ACTIVE_CALLS", "2000000000"},
             bad{"PRODUCTION", "maybe"},
             bad{"CALLS_OVER_CAPACITY_BEHAVIOR", "hangup"},
             bad{"CALLS_OVER_CAPACITY_BEHAVIOR", ""},
             bad{"CALLS_CAPACITY_LOG_LEVEL", "verbose"},
             bad{"CALLS_SLOT_TTL_SECONDS", "0"},
             bad{"CALLS_SLOT_TTL_SECONDS", "2h"},
             bad{"CALLS_SLOT_TTL_SECONDS", "99999999999"},
             bad{"CALLS_FAIL_MODE", "sometimes"},
             bad{"CALLS_TENANT_LIMITS", "biz1"},
             bad{"CALLS_TENANT_LIMITS", "biz1=0"},
             bad{"CALLS_TENANT_LIMITS", "biz1=x"},
             bad{"CALLS_TENANT_LIMITS", "=5"},
             bad{"CALLS_TENANT_LIMITS", "biz 1=5"},
             bad{"CALLS_TENANT_LIMITS", "biz1=5,biz1=6"},
             bad{"CALLS_TENANT_LIMITS", "biz1=5,,biz2=3"},
             bad{"CALLS_LOCAL_MAX_ACTIVE_CALLS", "-1"},
             bad{"CALLS_MAX_REMEMBERED_CALLS", "-1"},
             bad{"CALLS_MAX_REMEMBERED_CALLS", "99999999999"},
             bad{"CALLS_REINSTATE_PER_SECOND", "0"},
             bad{"CALLS_REINSTATE_PER_SECOND", "fast"},
             bad{"CALLS_REINSTATE_DELAY_MS", "-5"},
         }) {
        CAPTURE(var);
        CAPTURE(value);
        auto what = error_for({{var, value}});
        CHECK(what.find(var) != std::string::npos);
        CHECK(what.find(std::string("\"") + value) != std::string::npos);
    }
}

TEST_CASE("config_error carries the variable and value separately") {
    try {
        callguard::limiter_config::from_env(env({{"MAX_ACTIVE_CALLS", "lots"}}));
        FAIL("no exception");
    } catch (const callguard::config_error& e) {
        CHECK(e.variable() == "MAX_ACTIVE_CALLS");
        CHECK(e.value() == "lots");
    }
    // It is an std::invalid_argument too, for callers that only know the standard.
    CHECK_THROWS_AS(callguard::limiter_config::from_env(env({{"CALLS_FAIL_MODE", "x"}})),
                    std::invalid_argument);
}

TEST_CASE("error messages print control characters safely") {
    auto what = error_for({{"MAX_ACTIVE_CALLS", "1\n[CAPACITY] ACQUIRED fake"}});
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.find("\\x0a") != std::string::npos);
}

TEST_CASE("validate catches configs filled by hand") {
    callguard::limiter_config c;
    CHECK_NOTHROW(c.validate());
    c.tenant_limits = {{"ok", 0}};
    CHECK_THROWS_AS(c.validate(), callguard::config_error);
    c.tenant_limits = {{"bad name", 1}};
    CHECK_THROWS_AS(c.validate(), callguard::config_error);
    c.tenant_limits.clear();
    c.max_active_calls = -1;
    CHECK_THROWS_AS(c.validate(), callguard::config_error);
    c.max_active_calls = 5;
    c.max_remembered_calls = -1;
    CHECK_THROWS_AS(c.validate(), callguard::config_error);
    c.max_remembered_calls = 0;
    CHECK_NOTHROW(c.validate());
    c.reinstate_per_second = 0;
    CHECK_THROWS_AS(c.validate(), callguard::config_error);
}
