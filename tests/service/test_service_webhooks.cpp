// The calls service's HTTP side, over real sockets against the real binary.

#include "service_harness.hpp"

using svc::service;
using namespace std::chrono_literals;

namespace {

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& params) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (auto& [k, v] : params) {
        if (!out.empty()) out += '&';
        for (const auto* s : {&k, &v}) {
            for (unsigned char c : *s) {
                if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
                else out += {'%', hex[c >> 4], hex[c & 15]};
            }
            if (s == &k) out += '=';
        }
    }
    return out;
}

} // namespace

TEST_CASE("service: admits up to MAX_ACTIVE_CALLS, then answers with the Hebrew rejection") {
    service s({{"MAX_ACTIVE_CALLS", "2"}});
    auto a = s.incoming_call("CA0001");
    CHECK(a.status == 200);
    CHECK(a.content_type == "text/xml; charset=utf-8");
    CHECK(a.body.rfind(R"(<?xml version="1.0" encoding="UTF-8"?>)", 0) == 0);
    CHECK(a.body.find(R"(<Connect><Stream url="ws://127.0.0.1:)" + std::to_string(s.port()) + R"(/ws/media">)") !=
          std::string::npos);
    CHECK(a.body.find(R"(<Parameter name="callSid" value="CA0001"/>)") != std::string::npos);
    CHECK(s.incoming_call("CA0002").body.find("<Connect>") != std::string::npos);
    auto r = s.incoming_call("CA0003");
    CHECK(r.status == 200);
    CHECK(r.content_type == "text/xml; charset=utf-8");
    CHECK(r.body.find(R"(<Say language="he-IL" voice="Google.he-IL-Wavenet-A">המערכת עמוסה כרגע.)") != std::string::npos);
    CHECK(r.body.find("<Hangup/>") != std::string::npos);
    CHECK(s.active() == 2);
    CHECK(s.health_field("at_capacity") == "true");
    CHECK(s.log().find("[CAPACITY] REJECTED call_id=CA0003 active_calls=2 max=2") != std::string::npos);
}

TEST_CASE("service: behind https the stream URL is wss, from X-Forwarded-Proto or PUBLIC_BASE_URL") {
    service s;
    auto r = s.post("/webhook/incoming_call", "CallSid=CA1", {{"X-Forwarded-Proto", "https"}});
    CHECK(r.body.find(R"(<Stream url="wss://127.0.0.1:)") != std::string::npos);
    service p({{"PUBLIC_BASE_URL", "https://calls.example.com/"}});
    CHECK(p.incoming_call("CA1").body.find(R"(<Stream url="wss://calls.example.com/ws/media">)") != std::string::npos);
}

TEST_CASE("service: a retried webhook takes no second slot, status callbacks release once") {
    service s({{"MAX_ACTIVE_CALLS", "1"}});
    for (int i = 0; i < 3; ++i) CHECK(s.incoming_call("CA-retry").body.find("<Connect>") != std::string::npos);
    CHECK(s.active() == 1);
    CHECK(s.call_status("CA-retry", "ringing").status == 204); // not terminal: nothing changes
    CHECK(s.call_status("CA-retry", "in-progress").status == 204);
    CHECK(s.active() == 1);
    CHECK(s.call_status("CA-retry", "completed").status == 204);
    CHECK(s.active() == 0);
    CHECK(s.call_status("CA-retry", "completed").status == 204); // idempotent
    CHECK(s.active() == 0);
    for (auto status : {"busy", "failed", "no-answer", "canceled"}) {
        std::string sid = std::string("CA-") + status;
        REQUIRE(s.incoming_call(sid).body.find("<Connect>") != std::string::npos);
        CHECK(s.call_status(sid, status).status == 204);
        CHECK(s.active() == 0);
    }
    CHECK(s.log().find("[CAPACITY] RELEASED") == std::string::npos); // default level WARNING
}

TEST_CASE("service: tenants from the Tenant field or the To number") {
    service s({{"MAX_ACTIVE_CALLS", "10"},
               {"CALLS_TENANT_LIMITS", "biz1=1"},
               {"CALLS_TENANT_BY_NUMBER", "+97231234567=biz1"}});
    CHECK(s.incoming_call("CA-t1").body.find(R"(<Parameter name="tenant" value="biz1"/>)") != std::string::npos);
    CHECK(s.incoming_call("CA-t2").body.find("<Say") != std::string::npos); // biz1's cap of 1
    CHECK(s.incoming_call("CA-t3", "&Tenant=biz2").body.find("<Connect>") != std::string::npos);
    CHECK(s.incoming_call("CA-t4", "&Tenant=bad%20tenant").status == 400);
    CHECK(s.active() == 2);
}

TEST_CASE("service: every behaviour's TwiML, and the call log rows") {
    SUBCASE("voicemail") {
        service s({{"MAX_ACTIVE_CALLS", "1"}, {"CALLS_OVER_CAPACITY_BEHAVIOR", "voicemail"}});
        s.incoming_call("CA1");
        auto r = s.incoming_call("CA2");
        CHECK(r.body.find(R"(<Record action="http://127.0.0.1:)" + std::to_string(s.port()) +
                          R"(/webhook/voicemail" method="POST" maxLength="120")") != std::string::npos);
        CHECK(s.post("/webhook/voicemail", "CallSid=CA2&RecordingUrl=x").body.find("<Hangup/>") != std::string::npos);
    }
    // whatsapp needs Twilio's REST credentials and a sender: test_service_whatsapp.cpp.
    SUBCASE("queue") {
        service s({{"MAX_ACTIVE_CALLS", "1"}, {"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"}});
        s.incoming_call("CA1");
        const auto base = "http://127.0.0.1:" + std::to_string(s.port());
        CHECK(s.incoming_call("CA2").body.find(R"(<Enqueue action=")" + base + R"(/webhook/queue_result" method="POST" waitUrl=")" +
                                               base + R"(/webhook/queue_wait" waitUrlMethod="POST">callguard</Enqueue>)") !=
              std::string::npos);
    }
    SUBCASE("call log: admitted, rejected_capacity, completed") {
        service s({{"MAX_ACTIVE_CALLS", "1"}});
        s.incoming_call("CA-a");
        s.incoming_call("CA-b");
        s.call_status("CA-a", "completed");
        s.call_status("CA-b", "completed"); // a rejected call stays rejected in the log
        s.incoming_call("CA-c");
        CHECK(s.terminate() == 0);
        auto q = "sqlite3 " + s.dir() + "/calls.db \"select group_concat(call_sid || ':' || status, ' ') from (select * from calls order by call_sid)\"";
        CHECK(svc::run("test \"$(" + q + ")\" = 'CA-a:completed CA-b:rejected_capacity CA-c:admitted'") == 0);
    }
}

TEST_CASE("service: malformed requests get a 4xx and take no slot") {
    service s({{"MAX_ACTIVE_CALLS", "5"}});
    auto status_of = [&](const std::string& target, const std::string& body) {
        return s.post(target, body).status;
    };
    CHECK(status_of("/webhook/incoming_call", "From=%2B1") == 400);             // no CallSid
    CHECK(status_of("/webhook/incoming_call", "CallSid=") == 400);              // empty
    CHECK(status_of("/webhook/incoming_call", "CallSid=" + std::string(300, 'A')) == 400);
    CHECK(status_of("/webhook/incoming_call", "CallSid=CA1%0A%5BCAPACITY%5D") == 400); // control char
    CHECK(status_of("/webhook/incoming_call", "CallSid=CA%zz") == 400);         // malformed escape
    CHECK(status_of("/webhook/incoming_call", "CallSid=CA%4") == 400);          // truncated escape
    CHECK(status_of("/webhook/incoming_call", std::string("\x00\xff\xfe garbage\x01", 13)) == 400);
    CHECK(status_of("/webhook/call_status", "CallStatus=completed") == 400);
    CHECK(s.request(svc::http::verb::post, "/webhook/incoming_call", "{\"CallSid\":\"CA1\"}", {},
                    "application/json").status == 415);
    CHECK(s.get("/webhook/incoming_call").status == 405);
    CHECK(s.post("/health/details", "x=1").status == 405);
    CHECK(s.get("/nope").status == 404);
    CHECK(s.post("/webhook/incoming_call", "CallSid=CA1&" + std::string(4 * 1024 * 1024, 'x')).status == 413);

    auto raw = s.raw("POST /webhook/incoming_call HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n\r\nCallSid=CA1");
    CHECK(raw.rfind("HTTP/1.1 413", 0) == 0);
    CHECK(s.raw("GARBAGE\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
    CHECK(s.raw(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)).rfind("HTTP/1.1 400", 0) == 0);
    CHECK(s.raw("GET / HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n").rfind("HTTP/1.1 431", 0) == 0);
    CHECK(s.raw("POST /webhook/incoming_call HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: 11\r\n\r\nCallSid=CA1").rfind("HTTP/1.1 400", 0) == 0); // no Host
    CHECK(s.active() == 0);
    CHECK(s.running());
}

TEST_CASE("service: a slow client cannot hold a connection past the read timeout") {
    service s({{"CALLS_HTTP_READ_TIMEOUT_SECONDS", "1"}});
    auto t0 = std::chrono::steady_clock::now();
    auto got = s.raw("POST /webhook/incoming_call HTTP/1.1\r\nHost: x\r\n", 5s); // never finishes
    CHECK(std::chrono::steady_clock::now() - t0 < 3s);
    CHECK(got.empty());
    CHECK(s.get("/health").status == 200);
}

TEST_CASE("service: /metrics is valid Prometheus text") {
    service s({{"MAX_ACTIVE_CALLS", "1"}});
    s.incoming_call("CA1");
    s.incoming_call("CA2");
    auto m = s.get("/metrics");
    CHECK(m.status == 200);
    CHECK(m.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(m.body.find("callguard_active_calls 1\n") != std::string::npos);
    CHECK(m.body.find("callguard_rejected_total 1\n") != std::string::npos);
    CHECK(m.body.find("callguard_backend_healthy 1\n") != std::string::npos);
    auto file = s.dir() + "/metrics.txt";
    std::ofstream(file) << m.body;
    REQUIRE_MESSAGE(!test::find_program("promtool").empty(), "promtool missing: run scripts/deps.sh");
    CHECK(svc::run("promtool check metrics < " + file + " > /dev/null 2>&1") == 0);
}

TEST_CASE("service: signatures checked against Twilio's own helper library") {
    const std::string token = "test-auth-token-4711";
    service s({{"TWILIO_AUTH_TOKEN", token}, {"MAX_ACTIVE_CALLS", "5"}});
    const std::string url = "http://127.0.0.1:" + std::to_string(s.port()) + "/webhook/incoming_call";
    std::vector<std::pair<std::string, std::string>> params{
        {"CallSid", "CA11111111111111111111111111111111"}, {"From", "+972 50-000 0001"},
        {"To", "+97231234567"}, {"CallerName", "שלום & <friends>"}, {"AccountSid", "AC1"}};
    auto body = form_encode(params);
    auto sig = svc::twilio_sign(token, url, params);
    CHECK(s.post("/webhook/incoming_call", body, {{"X-Twilio-Signature", sig}}).status == 200);
    CHECK(s.active() == 1);

    // Wrong, missing, for another URL, or for other parameters: 403 and no slot.
    auto other = params;
    other[0].second = "CA22222222222222222222222222222222";
    auto body2 = form_encode(other);
    CHECK(s.post("/webhook/incoming_call", body2, {{"X-Twilio-Signature", sig}}).status == 403);
    CHECK(s.post("/webhook/incoming_call", body2).status == 403);
    CHECK(s.post("/webhook/incoming_call", body2, {{"X-Twilio-Signature", "AAAA"}}).status == 403);
    CHECK(s.post("/webhook/incoming_call", body2,
                 {{"X-Twilio-Signature", svc::twilio_sign("wrong-token", url, other)}}).status == 403);
    CHECK(s.post("/webhook/incoming_call", body2,
                 {{"X-Twilio-Signature", svc::twilio_sign(token, url + "?x=1", other)}}).status == 403);
    CHECK(s.active() == 1);

    // The URL signed with the default port is accepted too, like Twilio's validators do.
    service p({{"TWILIO_AUTH_TOKEN", token}, {"PUBLIC_BASE_URL", "https://calls.example.com"}});
    auto sig443 = svc::twilio_sign(token, "https://calls.example.com:443/webhook/incoming_call", other);
    CHECK(p.post("/webhook/incoming_call", body2, {{"X-Twilio-Signature", sig443}}).status == 200);

    // Status callbacks are signed too.
    std::vector<std::pair<std::string, std::string>> done{{"CallSid", params[0].second}, {"CallStatus", "completed"}};
    auto status_url = "http://127.0.0.1:" + std::to_string(s.port()) + "/webhook/call_status";
    CHECK(s.post("/webhook/call_status", form_encode(done)).status == 403);
    CHECK(s.active() == 1);
    CHECK(s.post("/webhook/call_status", form_encode(done),
                 {{"X-Twilio-Signature", svc::twilio_sign(token, status_url, done)}}).status == 204);
    CHECK(s.active() == 0);
}

TEST_CASE("service: bad configuration is refused at start-up with the variable named") {
    for (auto [var, value] : {std::pair{"MAX_ACTIVE_CALLS", "zero"}, std::pair{"CALLS_FAIL_MODE", "maybe"},
                              std::pair{"REDIS_URL", "redis://h:notaport"}}) {
        std::string cmd = std::string("env ") + var + "='" + value + "' PORT=0 '" CALLS_SERVICE_BINARY "' 2>&1 | grep -q 'configuration error: " + var + "'";
        CAPTURE(var);
        CHECK(svc::run(cmd) == 0);
    }
}
