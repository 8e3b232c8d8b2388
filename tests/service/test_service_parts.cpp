// The WhatsApp sender's parts on their own: its settings, the form it posts, how it reads
// Twilio's answers, the HTTP client's bounds (refused, silent, stopped), and the webhooks' small
// parsers. The whole path runs against the real binary in test_service_whatsapp.cpp.

#include <utility> // before Boost: asio 1.74 uses std::exchange without including it

#include "../support/probes.hpp"

#include "https_client.hpp"
#include "webhooks.hpp"
#include "whatsapp_config.hpp"
#include "whatsapp_sender.hpp"

#include <doctest/doctest.h>

#include <boost/asio.hpp>

#include <map>
#include <thread>

using namespace std::chrono_literals;

namespace {

callguard::env_lookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

std::string config_error_of(std::map<std::string, std::string> vars, const std::string& required_by) {
    try {
        calls::whatsapp_config::from_env(env_of(std::move(vars)), required_by);
    } catch (const callguard::config_error& e) {
        return e.what();
    }
    return {};
}

const std::map<std::string, std::string> complete{{"TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"},
                                                  {"TWILIO_AUTH_TOKEN", "tok"},
                                                  {"CALLS_WHATSAPP_FROM", "whatsapp:+14155238886"}};

} // namespace

TEST_CASE("whatsapp settings: required ones named when missing, every value checked") {
    const std::string by = "CALLS_OVER_CAPACITY_BEHAVIOR=whatsapp";
    CHECK(config_error_of(complete, by).empty());
    CHECK(config_error_of({}, "").empty()); // nothing sends messages: nothing required
    for (const char* name : {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CALLS_WHATSAPP_FROM"}) {
        auto vars = complete;
        vars.erase(name);
        CHECK(config_error_of(vars, by).rfind(std::string(name) + "=\"\": is required by " + by, 0) == 0);
    }
    auto with = [&](const char* name, const char* value) {
        auto vars = complete;
        vars[name] = value;
        return config_error_of(vars, by);
    };
    CHECK(with("CALLS_WHATSAPP_FROM", "0501234567").find("E.164") != std::string::npos);
    CHECK(with("CALLS_WHATSAPP_FROM", "+1415523888612345").find("E.164") != std::string::npos); // 16 digits
    CHECK(with("CALLS_WHATSAPP_MESSAGING_SERVICE_SID", "MG123").find("MG and 32") != std::string::npos);
    CHECK(with("CALLS_WHATSAPP_CONTENT_SID", "HXnothex0000000000000000000000000x").find("HX and 32") != std::string::npos);
    CHECK(with("CALLS_WHATSAPP_CONTENT_VARIABLES", R"({"1":"x"})").find("needs CALLS_WHATSAPP_CONTENT_SID") !=
          std::string::npos);
    CHECK(with("CALLS_WHATSAPP_BODY", "   ").find("must not be empty") != std::string::npos);
    CHECK(with("CALLS_WHATSAPP_COOLDOWN_SECONDS", "-1").find("CALLS_WHATSAPP_COOLDOWN_SECONDS") != std::string::npos);
    CHECK(with("CALLS_WHATSAPP_MAX_ATTEMPTS", "0").find("CALLS_WHATSAPP_MAX_ATTEMPTS") != std::string::npos);
    CHECK(with("TWILIO_API_BASE_URL", "https://user@api.twilio.com").find("no user name") != std::string::npos);
    CHECK(with("TWILIO_API_BASE_URL", "https://api.twilio.com/?x=1").find("no query") != std::string::npos);
    CHECK(with("TWILIO_API_BASE_URL", "http://127.0.0.1:99999").find("1 to 65535") != std::string::npos);

    auto vars = complete;
    vars["CALLS_WHATSAPP_CONTENT_SID"] = "HX0123456789abcdef0123456789abcdef";
    vars["CALLS_WHATSAPP_CONTENT_VARIABLES"] = R"( { "1" : "דנה", "2": "a&b=c" } )";
    vars["TWILIO_API_BASE_URL"] = "http://127.0.0.1:8080/twilio/";
    auto c = calls::whatsapp_config::from_env(env_of(vars), by);
    CHECK(c.from == "+14155238886");
    CHECK(c.content_variables == R"({"1":"דנה","2":"a&b=c"})"); // normalised JSON
    CHECK(c.cooldown == 86400s);
    CHECK(c.api.tls == false);
    CHECK(c.api.host == "127.0.0.1");
    CHECK(c.api.port == "8080");
    CHECK(c.api.base_path == "/twilio");
    CHECK(c.api.host_header() == "127.0.0.1:8080");
    CHECK(c.messages_path() == "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json");
    // Every byte but the unreserved ones escaped; the template wins over the text.
    CHECK(c.message_form("+972501234567") ==
          "To=whatsapp%3A%2B972501234567&From=whatsapp%3A%2B14155238886&ContentSid=HX0123456789abcdef0123456789abcdef"
          "&ContentVariables=%7B%221%22%3A%22%D7%93%D7%A0%D7%94%22%2C%222%22%3A%22a%26b%3Dc%22%7D");
    auto plain = calls::whatsapp_config::from_env(env_of(complete), by);
    CHECK(plain.api.tls);
    CHECK(plain.api.port == "443");
    CHECK(plain.api.host_header() == "api.twilio.com");
    CHECK(plain.message_form("+1555").find("&Body=%D7%A9%D7%9C%D7%95%D7%9D") != std::string::npos);
}

TEST_CASE("whatsapp sender: Twilio's answers read as sent, worth retrying, or final") {
    using v = calls::send_outcome::verdict;
    auto sent = calls::classify_twilio_answer({201, R"({"sid":"SM123","status":"queued"})", {}});
    CHECK(sent.what == v::sent);
    CHECK(sent.message_sid == "SM123");
    auto busy = calls::classify_twilio_answer({429, R"({"code":20429,"message":"Too Many Requests","status":429})", 3s});
    CHECK(busy.what == v::retry);
    CHECK(busy.error_code == 20429);
    CHECK(busy.error == "HTTP 429: Too Many Requests");
    CHECK(busy.retry_after == 3s);
    auto down = calls::classify_twilio_answer({503, "<html>bad gateway</html>", {}});
    CHECK(down.what == v::retry);
    CHECK_FALSE(down.error_code);
    CHECK(down.error == "HTTP 503");
    auto invalid = calls::classify_twilio_answer({400, R"({"code":21211,"message":"Invalid 'To' Phone Number"})", {}});
    CHECK(invalid.what == v::failed);
    CHECK(invalid.error_code == 21211);
    auto auth = calls::classify_twilio_answer({401, R"({"code":20003,"message":"Authenticate"})", {}});
    CHECK(auth.what == v::failed);
    CHECK(auth.error_code == 20003);
    CHECK(calls::masked_number("+972501234567") == "+972*******67");
    CHECK(calls::masked_number("+123") == "****");
}

TEST_CASE("webhooks' small parsers: reachable caller numbers, query values") {
    CHECK(calls::reachable_caller("+972501234567") == "+972501234567");
    for (auto bad : {"anonymous", "+266696687", "+86282452253", "+7378742833", "client:alice", "", "+1234567",
                     "whatsapp:+972501234567", "+97250123456a", "972501234567"})
        CHECK(calls::reachable_caller(bad).empty());
    CHECK(calls::query_value("/webhook/queue_wait?tenant=biz1", "tenant") == "biz1");
    CHECK(calls::query_value("/webhook/queue_wait?x=1&tenant=biz.2&y", "tenant") == "biz.2");
    CHECK(calls::query_value("/webhook/queue_wait?tenants=biz1", "tenant").empty());
    CHECK(calls::query_value("/webhook/queue_wait", "tenant").empty());
}

TEST_CASE("https client: refused, silent and stopped requests end within their bounds, saying why") {
    namespace net = boost::asio;
    // Refused: nothing listens.
    calls::https_client refused(calls::http_endpoint::parse("url", "http://127.0.0.1:" + std::to_string(test::free_port())));
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH_AS(refused.post_form("/x", {}, "a=1", 2s), doctest::Contains("cannot connect to 127.0.0.1:"),
                         calls::http_transport_error);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);

    // Silent: the server accepts and reads, never answers.
    net::io_context ioc;
    net::ip::tcp::acceptor acceptor(ioc, {net::ip::make_address("127.0.0.1"), 0});
    std::vector<net::ip::tcp::socket> held;
    std::thread server([&] {
        for (int i = 0; i < 2; ++i) {
            boost::system::error_code ec;
            held.push_back(acceptor.accept(ec));
        }
    });
    calls::https_client silent(
        calls::http_endpoint::parse("url", "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port())));
    t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH_AS(silent.post_form("/x", {}, "a=1", 500ms), doctest::Contains("no answer from 127.0.0.1:"),
                         calls::http_transport_error);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 450ms);
    CHECK(took < 1500ms);
    // Stopped: a shutdown does not wait for the timeout.
    std::stop_source stop;
    std::thread stopper([&] {
        std::this_thread::sleep_for(200ms);
        stop.request_stop();
    });
    t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH_AS(silent.post_form("/x", {}, "a=1", 10s, stop.get_token()), doctest::Contains("shutting down"),
                         calls::http_transport_error);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    stopper.join();
    server.join();
}
