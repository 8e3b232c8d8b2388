// WhatsApp invitations for callers turned away, sent by the real calls_service to a stand-in for
// Twilio's Messages resource on loopback (tests/service/twilio_standin.hpp): what is posted, the
// retries and final states, a restart, HTTPS verified against a test CA, forged webhooks,
// withheld numbers, and configuration errors at start. (Two instances on one Redis:
// test_service_fleet_overcapacity.cpp.)

#include "signed_requests.hpp"
#include "sqlite_rows.hpp"
#include "test_ca.hpp"
#include "twilio_standin.hpp"

#include <callguard/twilio/twiml.hpp>

#include <algorithm>

using namespace std::chrono_literals;
using svc::service;
using svc::twilio_standin;

namespace {

const std::string account = "AC0123456789abcdef0123456789abcdef";
const std::string token = "test-auth-token-0123";
const std::string content = "HX0123456789abcdef0123456789abcdef";
const std::string sender_number = "+14155238886";

std::map<std::string, std::string> whatsapp_env(const twilio_standin& api, std::map<std::string, std::string> extra = {}) {
    std::map<std::string, std::string> env{{"CALLS_OVER_CAPACITY_BEHAVIOR", "whatsapp"},
                                           {"MAX_ACTIVE_CALLS", "1"},
                                           {"TWILIO_ACCOUNT_SID", account},
                                           {"TWILIO_AUTH_TOKEN", token},
                                           {"CALLS_WHATSAPP_FROM", "whatsapp:" + sender_number},
                                           {"CALLS_WHATSAPP_CONTENT_SID", content},
                                           {"CALLS_WHATSAPP_CONTENT_VARIABLES", R"({"1": "callguard"})"},
                                           {"TWILIO_API_BASE_URL", api.base_url()},
                                           {"CALLS_WHATSAPP_RETRY_BASE_MS", "100"},
                                           {"CALLS_WHATSAPP_TIMEOUT_SECONDS", "1"}};
    for (auto& [k, v] : extra) env[k] = v;
    return env;
}

/// The incoming-call webhook as Twilio sends it, signed with `tok`.
svc::response call(const service& s, const std::string& sid, const std::string& from, const std::string& tok = token) {
    return svc::post_signed(s, "/webhook/incoming_call",
                            {{"AccountSid", account}, {"CallSid", sid}, {"From", from}, {"To", "+97231234567"},
                             {"CallStatus", "ringing"}, {"Direction", "inbound"}},
                            tok);
}

bool admitted(const svc::response& r) { return r.status == 200 && r.body.find("<Connect>") != std::string::npos; }
bool told_message_coming(const svc::response& r) {
    return r.status == 200 && r.body.find(std::string(callguard::twilio::default_whatsapp_message)) != std::string::npos;
}
bool told_busy(const svc::response& r) {
    return r.status == 200 && r.body.find(std::string(callguard::twilio::default_reject_message)) != std::string::npos;
}

/// `status|message_sid|error_code|attempts` of a call's outbox row ("" when there is none).
std::string outbox(const std::string& db, const std::string& sid) {
    auto rows = svc::sqlite_rows(db, "SELECT status, IFNULL(message_sid, '-'), IFNULL(error_code, '-'), attempts "
                                     "FROM whatsapp_outbox WHERE call_sid = '" + sid + "'");
    return rows.empty() ? std::string() : rows[0];
}
std::string outbox(const service& s, const std::string& sid) { return outbox(s.dir() + "/calls.db", sid); }

/// Runs calls_service with `env` (and a free port, a temporary call log) until it exits or 5 s
/// pass; returns its exit code (-1: still running, then killed) and what it printed.
std::pair<int, std::string> run_to_exit(std::map<std::string, std::string> env) {
    char tmpl[] = "/tmp/callguard-cfg-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    env["PORT"] = std::to_string(test::free_port());
    env["HOST"] = "127.0.0.1";
    env.try_emplace("CALLS_DB_PATH", dir + "/calls.db");
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const int out = ::open((dir + "/out.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(out, 1);
        ::dup2(out, 2);
        for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
        ::execl(CALLS_SERVICE_BINARY, "calls_service", static_cast<char*>(nullptr));
        std::_Exit(127);
    }
    int code = -1;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        std::this_thread::sleep_for(20ms);
    }
    if (code == -1) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    std::ifstream in(dir + "/out.log");
    std::stringstream text;
    text << in.rdbuf();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    return {code, text.str()};
}

} // namespace

TEST_CASE("whatsapp: a caller turned away gets one message, posted as Twilio documents it, and the row ends sent") {
    twilio_standin api(account, token);
    service s(whatsapp_env(api));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    auto r = call(s, "CA-wa1", "+972500000002");
    CHECK(told_message_coming(r));
    CHECK(r.body.find("<Hangup/>") != std::string::npos);
    CHECK(test::eventually([&] { return outbox(s, "CA-wa1").rfind("sent|SM", 0) == 0; }, 10s));
    const auto seen = api.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].target == "/2010-04-01/Accounts/" + account + "/Messages.json");
    CHECK(seen[0].authorized);
    CHECK(seen[0].status == 201);
    CHECK(seen[0].fields == std::map<std::string, std::string>{{"To", "whatsapp:+972500000002"},
                                                               {"From", "whatsapp:" + sender_number},
                                                               {"ContentSid", content},
                                                               {"ContentVariables", R"({"1":"callguard"})"}});
    CHECK(outbox(s, "CA-wa1") == "sent|" + seen[0].message_sid + "|-|1");
    CHECK(s.metric("whatsapp_sent_total") == 1);
    CHECK(s.metric("whatsapp_failed_total") == 0);
    // The sender's metrics (a labelled counter among them) keep /metrics valid for Prometheus.
    const auto file = s.dir() + "/metrics.txt";
    std::ofstream(file) << s.get("/metrics").body;
    REQUIRE_MESSAGE(!test::find_program("promtool").empty(), "promtool missing: run scripts/deps.sh");
    CHECK(svc::run("promtool check metrics < " + file) == 0);
    CHECK(s.log().find("[SERVICE] whatsapp: sent call_id=CA-wa1 to=+972*******02 message_sid=" + seen[0].message_sid) !=
          std::string::npos);
    // The call is logged as turned away; the admitted one holds its slot.
    CHECK(svc::sqlite_rows(s.dir() + "/calls.db", "SELECT status FROM calls WHERE call_sid = 'CA-wa1'") ==
          std::vector<std::string>{"rejected_capacity"});
    CHECK(s.active() == 1);
}

TEST_CASE("whatsapp: without a template the text goes as Body, from a Messaging Service when one is set") {
    twilio_standin api(account, token);
    service s(whatsapp_env(api, {{"CALLS_WHATSAPP_CONTENT_SID", ""},
                                 {"CALLS_WHATSAPP_CONTENT_VARIABLES", ""},
                                 {"CALLS_WHATSAPP_FROM", ""},
                                 {"CALLS_WHATSAPP_MESSAGING_SERVICE_SID", "MG0123456789abcdef0123456789abcdef"},
                                 {"CALLS_WHATSAPP_BODY", "Write to us here & we'll answer"}}));
    CHECK(s.log().find("no CALLS_WHATSAPP_CONTENT_SID") != std::string::npos);
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    REQUIRE(told_message_coming(call(s, "CA-body", "+972500000003")));
    CHECK(test::eventually([&] { return api.accepted_to("+972500000003") == 1; }, 10s));
    CHECK(api.requests().at(0).fields ==
          std::map<std::string, std::string>{{"To", "whatsapp:+972500000003"},
                                             {"MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"},
                                             {"Body", "Write to us here & we'll answer"}});
}

TEST_CASE("whatsapp: 429 and 500 are retried with backoff, 21211 and 63016 are final at once, the last attempt fails") {
    twilio_standin api(account, token);
    api.script("+972500000011", {twilio_standin::too_many(), twilio_standin::server_error(), twilio_standin::created()});
    api.script("+972500000012", {twilio_standin::invalid_to()});
    api.script("+972500000013", {twilio_standin::outside_window()});
    api.script("+972500000014",
               {twilio_standin::server_error(), twilio_standin::server_error(), twilio_standin::server_error()});
    service s(whatsapp_env(api, {{"CALLS_WHATSAPP_MAX_ATTEMPTS", "3"}}));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    for (int i = 1; i <= 4; ++i)
        REQUIRE(told_message_coming(call(s, "CA-r" + std::to_string(i), "+97250000001" + std::to_string(i))));
    CHECK(test::eventually(
        [&] {
            return outbox(s, "CA-r1").rfind("sent|SM", 0) == 0 && outbox(s, "CA-r4").rfind("failed", 0) == 0 &&
                   !outbox(s, "CA-r2").empty() && !outbox(s, "CA-r3").empty();
        },
        15s));
    const auto r1 = api.requests_to("+972500000011");
    REQUIRE(r1.size() == 3);
    CHECK(outbox(s, "CA-r1") == "sent|" + r1[2].message_sid + "|-|3");
    // Backoff: 100 ms doubled per attempt, half of it random.
    CHECK(r1[1].at - r1[0].at >= 50ms);
    CHECK(r1[2].at - r1[1].at >= 100ms);
    CHECK(outbox(s, "CA-r2") == "failed|-|21211|1");
    CHECK(outbox(s, "CA-r3") == "failed|-|63016|1");
    CHECK(outbox(s, "CA-r4") == "failed|-|20500|3");
    CHECK(svc::sqlite_rows(s.dir() + "/calls.db", "SELECT error_message FROM whatsapp_outbox WHERE call_sid IN "
                                                 "('CA-r2', 'CA-r4') ORDER BY call_sid") ==
          std::vector<std::string>{"HTTP 400: Invalid 'To' Phone Number",
                                   "HTTP 500: Internal Server Error (gave up after 3 attempts)"});
    // Permanent refusals are never retried.
    CHECK(test::holds_for([&] { return api.requests_to("+972500000012").size() == 1 &&
                                       api.requests_to("+972500000013").size() == 1 &&
                                       api.requests_to("+972500000014").size() == 3; },
                          600ms));
    CHECK(s.metric("whatsapp_sent_total") == 1);
    CHECK(s.metric("whatsapp_failed_total") == 3);
    CHECK(s.metric("whatsapp_retries_total") == 4);
    CHECK(s.log().find("[SERVICE] whatsapp: failed call_id=CA-r2 to=+972*******12 attempt=1 code=21211") !=
          std::string::npos);
}

TEST_CASE("whatsapp: a request Twilio never answers is given up at the timeout and sent again, and Retry-After is honoured") {
    twilio_standin api(account, token);
    api.script("+972500000021", {twilio_standin::stall_for(4s), twilio_standin::created()});
    auto slow_down = twilio_standin::too_many();
    slow_down.retry_after = 1;
    api.script("+972500000022", {slow_down, twilio_standin::created()});
    service s(whatsapp_env(api));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(told_message_coming(call(s, "CA-stall", "+972500000021")));
    REQUIRE(told_message_coming(call(s, "CA-later", "+972500000022")));
    // Both webhooks answered at once: the sender works on its own thread.
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    CHECK(test::eventually([&] { return outbox(s, "CA-stall").rfind("sent|SM", 0) == 0; }, 15s));
    CHECK(outbox(s, "CA-stall").substr(outbox(s, "CA-stall").size() - 2) == "|2");
    const auto stalled = api.requests_to("+972500000021");
    REQUIRE(stalled.size() == 2);
    CHECK(stalled[0].status == 0); // no answer came
    CHECK(s.log().find("[SERVICE] whatsapp: retry call_id=CA-stall") != std::string::npos);
    CHECK(test::eventually([&] { return outbox(s, "CA-later").rfind("sent|SM", 0) == 0; }, 15s));
    const auto later = api.requests_to("+972500000022");
    REQUIRE(later.size() == 2);
    CHECK(later[1].at - later[0].at >= 1s); // the server asked for a second
}

TEST_CASE("whatsapp: rows left pending when an instance dies are sent after the restart, once") {
    char tmpl[] = "/tmp/callguard-restart-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl, db = dir + "/calls.db";
    const auto unreachable = "http://127.0.0.1:" + std::to_string(test::free_port()); // nothing listens there
    twilio_standin api(account, token);
    {
        service first(whatsapp_env(api, {{"CALLS_DB_PATH", db}, {"TWILIO_API_BASE_URL", unreachable},
                                         {"CALLS_WHATSAPP_MAX_ATTEMPTS", "50"}}));
        REQUIRE(admitted(call(first, "CA-held", "+972500000001")));
        REQUIRE(told_message_coming(call(first, "CA-pending", "+972500000031")));
        // Connection refused, again and again: the row stays pending, its attempts counted.
        CHECK(test::eventually([&] {
            auto o = outbox(db, "CA-pending");
            return o.rfind("pending|-|-|", 0) == 0 && std::stoi(o.substr(12)) >= 2;
        }, 10s));
        CHECK(first.log().find("Connection refused") != std::string::npos);
        first.kill_hard();
    }
    service second(whatsapp_env(api, {{"CALLS_DB_PATH", db}}));
    CHECK(test::eventually([&] { return outbox(db, "CA-pending").rfind("sent|SM", 0) == 0; }, 10s));
    CHECK(test::holds_for([&] { return api.requests_to("+972500000031").size() == 1; }, 500ms));
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

TEST_CASE("whatsapp: a forged or missing signature is refused and sends nothing") {
    twilio_standin api(account, token);
    service s(whatsapp_env(api));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    CHECK(call(s, "CA-forged", "+972500000041", "not-the-token").status == 403);
    CHECK(call(s, "CA-unsigned", "+972500000042", "").status == 403);
    // Signed for another URL (a replay to another endpoint) is forged too.
    auto body = svc::form_body({{"CallSid", "CA-replayed"}, {"From", "+972500000043"}});
    auto sig = calls::twilio_signature(token, "http://127.0.0.1:" + std::to_string(s.port()) + "/webhook/call_status",
                                       {{"CallSid", "CA-replayed"}, {"From", "+972500000043"}});
    CHECK(s.post("/webhook/incoming_call", body, {{"X-Twilio-Signature", sig}}).status == 403);
    CHECK(test::holds_for([&] { return api.requests().empty(); }, 1500ms));
    CHECK(svc::sqlite_rows(s.dir() + "/calls.db", "SELECT count(*) FROM whatsapp_outbox") ==
          std::vector<std::string>{"0"});
    CHECK(s.active() == 1);
}

TEST_CASE("whatsapp: withheld and unusable caller numbers get the busy message, no message, the reason logged") {
    twilio_standin api(account, token);
    service s(whatsapp_env(api));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    int i = 0;
    for (auto from : {"anonymous", "+266696687", "client:alice", "", "+1234", "sip:bob@example.com"}) {
        CAPTURE(from);
        CHECK(told_busy(call(s, "CA-anon" + std::to_string(i++), from)));
    }
    CHECK(test::holds_for([&] { return api.requests().empty(); }, 1s));
    CHECK(s.get("/metrics").body.find("callguard_whatsapp_skipped_total{reason=\"no_number\"} 6") != std::string::npos);
    CHECK(s.log().find("[SERVICE] whatsapp: not sent call_id=CA-anon0 reason=no_number") != std::string::npos);
}

TEST_CASE("whatsapp: one invitation per caller number per cooldown, five calls in a row or not") {
    twilio_standin api(account, token);
    service s(whatsapp_env(api, {{"CALLS_WHATSAPP_COOLDOWN_SECONDS", "2"}}));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    REQUIRE(told_message_coming(call(s, "CA-c0", "+972500000051")));
    for (int i = 1; i <= 4; ++i) CHECK(told_busy(call(s, "CA-c" + std::to_string(i), "+972500000051")));
    CHECK(told_message_coming(call(s, "CA-other", "+972500000052"))); // another number is not held back
    CHECK(test::eventually([&] { return api.accepted_to("+972500000051") == 1 && api.accepted_to("+972500000052") == 1; },
                           10s));
    CHECK(s.get("/metrics").body.find("callguard_whatsapp_skipped_total{reason=\"cooldown\"} 4") != std::string::npos);
    CHECK(s.log().find("reason=cooldown: to=+972*******51 had one within CALLS_WHATSAPP_COOLDOWN_SECONDS") !=
          std::string::npos);
    // After the cooldown the number may be invited again.
    std::this_thread::sleep_for(2100ms);
    CHECK(told_message_coming(call(s, "CA-c5", "+972500000051")));
    CHECK(test::eventually([&] { return api.accepted_to("+972500000051") == 2; }, 10s));
}

TEST_CASE("whatsapp over HTTPS: verified against a test CA from SSL_CERT_FILE, an untrusted certificate refused") {
    svc::test_ca ca;
    twilio_standin api(account, token, twilio_standin::tls_files{ca.server_cert(), ca.server_key()});
    service s(whatsapp_env(api, {{"TWILIO_API_BASE_URL", api.base_url("localhost")}, {"SSL_CERT_FILE", ca.ca_file()}}));
    REQUIRE(admitted(call(s, "CA-held", "+972500000001")));
    REQUIRE(told_message_coming(call(s, "CA-tls", "+972500000061")));
    CHECK(test::eventually([&] { return outbox(s, "CA-tls").rfind("sent|SM", 0) == 0; }, 10s));
    CHECK(api.requests_to("+972500000061").size() == 1);

    twilio_standin impostor(account, token, twilio_standin::tls_files{ca.untrusted_cert(), ca.untrusted_key()});
    service t(whatsapp_env(impostor, {{"TWILIO_API_BASE_URL", impostor.base_url("localhost")},
                                      {"SSL_CERT_FILE", ca.ca_file()},
                                      {"CALLS_WHATSAPP_MAX_ATTEMPTS", "2"}}));
    REQUIRE(admitted(call(t, "CA-held", "+972500000001")));
    REQUIRE(told_message_coming(call(t, "CA-mitm", "+972500000062")));
    CHECK(test::eventually([&] { return outbox(t, "CA-mitm") == "failed|-|-|2"; }, 10s));
    CHECK(impostor.requests().empty()); // not one byte of the request (nor the credentials) went out
    CHECK(impostor.broken_connections() >= 2);
    CHECK(svc::sqlite_rows(t.dir() + "/calls.db", "SELECT error_message FROM whatsapp_outbox")[0].find(
              "TLS handshake with localhost:" + std::to_string(impostor.port()) + ": TLS: certificate verify failed") !=
          std::string::npos);
}

TEST_CASE("whatsapp: a behaviour that sends messages without its settings stops at start, naming the variable") {
    twilio_standin api(account, token);
    struct bad_case {
        std::map<std::string, std::string> change;
        std::string says;
    };
    for (const auto& c : std::vector<bad_case>{
             {{{"TWILIO_ACCOUNT_SID", ""}}, "TWILIO_ACCOUNT_SID=\"\": is required by CALLS_OVER_CAPACITY_BEHAVIOR=whatsapp"},
             {{{"TWILIO_AUTH_TOKEN", ""}}, "TWILIO_AUTH_TOKEN=\"\": is required by CALLS_OVER_CAPACITY_BEHAVIOR=whatsapp"},
             {{{"CALLS_WHATSAPP_FROM", ""}}, "CALLS_WHATSAPP_FROM=\"\": is required by"},
             {{{"CALLS_WHATSAPP_FROM", "+97250-123"}}, "CALLS_WHATSAPP_FROM=\"+97250-123\": expected the WhatsApp sender's number in E.164"},
             {{{"TWILIO_ACCOUNT_SID", "AC/../../x"}}, "TWILIO_ACCOUNT_SID=\"AC/../../x\": expected AC and 32 hexadecimal digits"},
             {{{"CALLS_WHATSAPP_CONTENT_VARIABLES", "{1: x}"}}, "CALLS_WHATSAPP_CONTENT_VARIABLES=\"{1: x}\": expected a JSON object"},
             {{{"TWILIO_API_BASE_URL", "ftp://api.twilio.com"}}, "TWILIO_API_BASE_URL=\"ftp://api.twilio.com\": expected https://"},
             {{{"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"}, {"CALLS_QUEUE_FALLBACK", "whatsapp"}, {"TWILIO_ACCOUNT_SID", ""}},
              "TWILIO_ACCOUNT_SID=\"\": is required by CALLS_QUEUE_FALLBACK=whatsapp"},
             {{{"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"}, {"CALLS_QUEUE_FALLBACK", "queue"}},
              "CALLS_QUEUE_FALLBACK=\"queue\": expected one of reject, voicemail, whatsapp"},
             {{{"CALLS_OVER_CAPACITY_BEHAVIOR", "reject"}, {"PRODUCTION", "1"}, {"TWILIO_AUTH_TOKEN", ""}},
              "TWILIO_AUTH_TOKEN=\"\": is required with PRODUCTION=1"},
         }) {
        auto env = whatsapp_env(api);
        for (auto& [k, v] : c.change) env[k] = v;
        auto [code, out] = run_to_exit(env);
        CAPTURE(out);
        CHECK(code == 2);
        CHECK(out.find("[SERVICE] configuration error: " + c.says) != std::string::npos);
    }
    // Production without signatures on purpose, and a behaviour that sends nothing: both start.
    service unsigned_on_purpose({{"PRODUCTION", "1"}, {"CALLS_ALLOW_UNSIGNED_WEBHOOKS", "1"}});
    CHECK(unsigned_on_purpose.log().find("signature_check=off") != std::string::npos);
    service quiet({{"CALLS_OVER_CAPACITY_BEHAVIOR", "reject"}, {"TWILIO_ACCOUNT_SID", ""}});
    CHECK(quiet.get("/metrics").body.find("callguard_whatsapp_sent_total") == std::string::npos);
}
