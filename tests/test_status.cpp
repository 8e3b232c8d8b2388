#include <callguard/callguard.hpp>
#include <doctest/doctest.h>

TEST_CASE("to_json has the contract's keys in the contract's shape") {
    callguard::capacity_status s{8, 15, 7, false, true, "memory"};
    CHECK(callguard::to_json(s) ==
          R"({"status":"ok","active_calls":8,"max_calls":15,"capacity_available":7,)"
          R"("at_capacity":false,"backend":"memory","backend_healthy":true,"backend_resets":0})");
    s.backend_healthy = false;
    s.backend = "re\"dis\n";
    auto j = callguard::to_json(s);
    CHECK(j.rfind(R"({"status":"degraded",)", 0) == 0);
    CHECK(j.find(R"("backend":"re\"dis\n")") != std::string::npos);
}

TEST_CASE("status of a limiter: available never negative, at_capacity at the cap") {
    auto cfg = callguard::limiter_config{};
    cfg.max_active_calls = 2;
    callguard::capacity_limiter<callguard::memory_backend> l({}, cfg, {callguard::null_sink(), {}});
    auto s = l.status();
    CHECK(s.active_calls == 0);
    CHECK(s.capacity_available == 2);
    CHECK_FALSE(s.at_capacity);
    CHECK(s.backend == "memory");
    l.acquire("a");
    l.acquire("b");
    s = l.status();
    CHECK(s.capacity_available == 0);
    CHECK(s.at_capacity);
}

TEST_CASE("prometheus text: HELP and TYPE for every family, counters end in _total") {
    auto text = callguard::to_prometheus({3, 15, 12, false, true, "memory"}, {5, 1, 2, 2, 0, 0, 0});
    std::size_t help = 0, type = 0;
    for (std::size_t pos = 0; (pos = text.find("# HELP ", pos)) != std::string::npos; ++pos) ++help;
    for (std::size_t pos = 0; (pos = text.find("# TYPE ", pos)) != std::string::npos; ++pos) ++type;
    CHECK(help == 16);
    CHECK(type == 16);
    for (std::size_t pos = 0; (pos = text.find(" counter\n", pos)) != std::string::npos; ++pos) {
        auto line_start = text.rfind('\n', pos);
        auto name = text.substr(line_start + 8, pos - line_start - 8);
        CHECK(name.size() > 6);
        CHECK(name.substr(name.size() - 6) == "_total");
    }
    CHECK(text.find("callguard_acquired_total 5\n") != std::string::npos);
    CHECK(text.back() == '\n');
}
