// REDIS_URL and the other Redis settings: every form we accept, every malformed part named.

#include <callguard/backends/redis.hpp>
#include <doctest/doctest.h>

#include <map>
#include <string>

using callguard::redis_options;

namespace {

std::string error_for(std::string_view url) {
    try {
        redis_options::from_url(url);
    } catch (const callguard::config_error& e) {
        CHECK(e.variable() == "url"); // from_env() reports it as REDIS_URL
        return e.what();
    }
    return {};
}

} // namespace

TEST_CASE("redis URLs: the accepted forms") {
    auto a = redis_options::from_url("redis://127.0.0.1:6379/0");
    CHECK(a.host == "127.0.0.1");
    CHECK(a.port == 6379);
    CHECK(a.db == 0);
    CHECK(a.password.empty());

    auto b = redis_options::from_url("redis://cache.internal");
    CHECK(b.host == "cache.internal");
    CHECK(b.port == 6379);

    auto c = redis_options::from_url("redis://app:p%40ss%3Aw0rd@10.0.0.5:6380/3");
    CHECK(c.user == "app");
    CHECK(c.password == "p@ss:w0rd");
    CHECK(c.host == "10.0.0.5");
    CHECK(c.port == 6380);
    CHECK(c.db == 3);

    auto d = redis_options::from_url("redis://:secret@localhost/");
    CHECK(d.user.empty());
    CHECK(d.password == "secret");
    CHECK(d.db == 0);

    auto e = redis_options::from_url("redis://[::1]:7000/2");
    CHECK(e.host == "::1");
    CHECK(e.port == 7000);
    CHECK(e.db == 2);

    auto u = redis_options::from_url("unix:///run/redis/redis%20server.sock?db=5");
    CHECK(u.unix_socket == "/run/redis/redis server.sock");
    CHECK(u.db == 5);
    CHECK(redis_options::from_url("REDIS://h:1").port == 1);
}

TEST_CASE("redis URLs: each malformed part is named, and passwords never shown") {
    struct bad {
        const char* url;
        const char* says;
    };
    for (auto [url, says] : {
             bad{"", "expected redis://"},
             bad{"127.0.0.1:6379", "expected redis://"},
             bad{"http://h:6379", "unknown scheme"},
             bad{"rediss://h:0", "port must be 1-65535"},
             bad{"rediss+unix:///s.sock", "unknown scheme"},
             bad{"redis://", "host is empty"},
             bad{"redis://:6379", "host is empty"},
             bad{"redis://h:", "port is empty"},
             bad{"redis://h:0", "port must be 1-65535"},
             bad{"redis://h:70000", "port must be 1-65535"},
             bad{"redis://h:12ab", "port must be 1-65535"},
             bad{"redis://h/x", "db must be"},
             bad{"redis://h/-1", "db must be"},
             bad{"redis://h/1/2", "db must be"},
             bad{"redis://h?timeout=5", "unknown URL parameter 'timeout'"},
             bad{"redis://h?db=1", "unknown URL parameter 'db'"},
             bad{"redis://h#frag", "fragments"},
             bad{"redis://user@h", "userinfo"},
             bad{"redis://u:p%zz@h", "malformed percent-escape in the password"},
             bad{"redis://u%4:p@h", "malformed percent-escape in the user"},
             bad{"redis://ho st", "host contains"},
             bad{"redis://[::1", "unterminated"},
             bad{"unix://relative.sock", "absolute"},
             bad{"unix:///s.sock?db=x", "db must be"},
             bad{"unix:///s.sock?foo=1", "unknown URL parameter 'foo'"},
         }) {
        CAPTURE(url);
        auto what = error_for(url);
        CHECK(what.find(says) != std::string::npos);
    }
    auto what = error_for("redis://admin:hunter2@h:99999");
    CHECK(what.find("hunter2") == std::string::npos);
    CHECK(what.find("admin:***@h:99999") != std::string::npos);
}

TEST_CASE("redis options from the environment") {
    std::map<std::string, std::string> vars{{"REDIS_URL", "redis://h:1234/2"},
                                            {"CALLS_REDIS_KEY_PREFIX", "shop-a"},
                                            {"CALLS_REDIS_TIMEOUT_MS", "500"}};
    auto lookup = [&](const char* n) -> std::optional<std::string> {
        if (auto it = vars.find(n); it != vars.end()) return it->second;
        return std::nullopt;
    };
    auto o = redis_options::from_env(lookup);
    CHECK(o.port == 1234);
    CHECK(o.db == 2);
    CHECK(o.key_prefix == "shop-a");
    CHECK(o.command_timeout == std::chrono::milliseconds(500));
    CHECK(o.connect_timeout == std::chrono::milliseconds(500));

    vars["CALLS_REDIS_TIMEOUT_MS"] = "0";
    CHECK_THROWS_AS(redis_options::from_env(lookup), callguard::config_error);
    vars["CALLS_REDIS_TIMEOUT_MS"] = "250";
    for (auto bad_prefix : {"{calls}", "has space", "", "a/b"}) {
        vars["CALLS_REDIS_KEY_PREFIX"] = bad_prefix;
        CHECK_THROWS_AS(redis_options::from_env(lookup), callguard::config_error);
    }
    vars.erase("CALLS_REDIS_KEY_PREFIX");
    vars["REDIS_URL"] = "redis://:hunter2@h:0";
    try {
        redis_options::from_env(lookup);
        FAIL("no exception");
    } catch (const callguard::config_error& e) { // the URL's error, under the variable's name
        CHECK(e.variable() == "REDIS_URL");
        CHECK(std::string(e.what()).find("port must be") != std::string::npos);
        CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    }
    vars.erase("REDIS_URL");
    CHECK_THROWS_AS(redis_options::from_env(lookup), callguard::config_error);
}

TEST_CASE("redis options filled by hand: errors name the field") {
    auto field_of = [](const redis_options& o) {
        try {
            o.validate();
        } catch (const callguard::config_error& e) {
            return e.variable();
        }
        return std::string();
    };
    redis_options o;
    CHECK(field_of(o).empty());
    o.key_prefix = "{x}";
    CHECK(field_of(o) == "key_prefix");
    o = {};
    o.command_timeout = std::chrono::milliseconds(0);
    CHECK(field_of(o) == "command_timeout");
    o = {};
    o.port = 0;
    CHECK(field_of(o) == "host");
    o = {};
    o.pool_size = 0;
    CHECK(field_of(o) == "pool_size");
    CHECK(callguard::masked_url("redis://u:pw@h/0\n") == "redis://u:***@h/0\\x0a"); // safe to log
}

TEST_CASE("constructing a backend validates but never connects") {
    using namespace std::chrono;
    auto t0 = steady_clock::now();
    // Nothing listens on port 1: construction does no I/O at all, so it cannot notice.
    callguard::redis_backend b("redis://127.0.0.1:1/0");
    CHECK(steady_clock::now() - t0 < milliseconds(50));
    CHECK(b.open_connections() == 0);
    CHECK(b.healthy());
    CHECK_THROWS_AS(callguard::redis_backend("redis://h:1", "{bad}"), callguard::config_error);
    CHECK_THROWS_AS(callguard::redis_backend("nope://h"), callguard::config_error);
}

TEST_CASE("redis URLs: rediss turns TLS on, for every topology") {
    auto a = redis_options::from_url("rediss://:pw@cache.example.com:6380/1");
    CHECK(a.tls.enabled);
    CHECK(a.tls.verify);
    CHECK(a.host == "cache.example.com");
    CHECK(a.port == 6380);
    CHECK(a.db == 1);
    CHECK_FALSE(redis_options::from_url("redis://h").tls.enabled);
    auto s = redis_options::from_url("rediss+sentinel://h1:26379,h2/m");
    CHECK(s.tls.enabled);
    CHECK(s.topology == callguard::redis_topology::sentinel);
    auto c = redis_options::from_url("REDISS+CLUSTER://n1:7000");
    CHECK(c.tls.enabled);
    CHECK(c.topology == callguard::redis_topology::cluster);
    CHECK_NOTHROW(a.validate());
}

TEST_CASE("redis URLs: Sentinel and Cluster forms") {
    auto s = redis_options::from_url(
        "redis+sentinel://app:data%40pw@10.0.0.1:26379,10.0.0.2,[::1]:26380/calls-master/2?sentinel_password=s%26p");
    CHECK(s.topology == callguard::redis_topology::sentinel);
    REQUIRE(s.seeds.size() == 3);
    CHECK(s.seeds[0] == callguard::redis_endpoint{"10.0.0.1", 26379});
    CHECK(s.seeds[1] == callguard::redis_endpoint{"10.0.0.2", 26379}); // the sentinel port by default
    CHECK(s.seeds[2] == callguard::redis_endpoint{"::1", 26380});
    CHECK(s.sentinel_master == "calls-master");
    CHECK(s.db == 2);
    CHECK(s.user == "app");
    CHECK(s.password == "data@pw");
    CHECK(s.sentinel_password == "s&p");
    CHECK_NOTHROW(s.validate());

    auto c = redis_options::from_url("redis+cluster://:pw@node1:7000,node2:7001,node3");
    CHECK(c.topology == callguard::redis_topology::cluster);
    REQUIRE(c.seeds.size() == 3);
    CHECK(c.seeds[2] == callguard::redis_endpoint{"node3", 6379});
    CHECK(c.password == "pw");
    CHECK_NOTHROW(c.validate());
    CHECK(redis_options::from_url("redis://h").topology == callguard::redis_topology::standalone);
}

TEST_CASE("redis URLs: Sentinel and Cluster mistakes are named, their passwords never shown") {
    CHECK(error_for("redis+sentinel://h:26379").find("master name is missing") != std::string::npos);
    CHECK(error_for("redis+sentinel://h:26379/").find("master name is missing") != std::string::npos);
    CHECK(error_for("redis+sentinel://h:26379/bad name").find("master name may only contain") != std::string::npos);
    CHECK(error_for("redis+sentinel://h:26379/m/x").find("db must be") != std::string::npos);
    CHECK(error_for("redis+sentinel://h:26379,/m").find("host is empty") != std::string::npos);
    CHECK(error_for("redis+sentinel://h:0/m").find("port must be") != std::string::npos);
    CHECK(error_for("redis+cluster://a:7000,b:7001/0").find("no databases") != std::string::npos);
    CHECK(error_for("redis://h?sentinel_password=x").find("unknown URL parameter") != std::string::npos);
    CHECK(error_for("redis+cluster://h?sentinel_password=x").find("unknown URL parameter") != std::string::npos);
    CHECK(error_for("redis+other://h").find("unknown scheme") != std::string::npos);
    // Neither password appears in the message; the rest does.
    const auto e = error_for("redis+sentinel://:data-secret@h:26379/m/zz?sentinel_password=sent-secret&x=1");
    CHECK(e.find("data-secret") == std::string::npos);
    CHECK(e.find("sent-secret") == std::string::npos);
    CHECK(e.find("sentinel_password=***") != std::string::npos);
    CHECK(e.find("db must be") != std::string::npos);
}
