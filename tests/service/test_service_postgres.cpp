// The calls service with its call log in PostgreSQL (CALLS_DB_URL): the real binary, a real
// PostgreSQL server of its own (tests/support/postgres_server.hpp), real HTTP.

#include "service_harness.hpp"
#include "signed_requests.hpp"
#include "twilio_standin.hpp"

#include "../support/postgres_server.hpp"
#include "../support/probes.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>

using svc::service;
using namespace std::chrono_literals;

namespace {

/// A metric's value from /metrics (-1 when absent).
double metric(const service& s, const std::string& name) {
    auto body = s.get("/metrics").body;
    auto pos = body.find("\n" + name + " ");
    if (pos == std::string::npos) return -1;
    return std::stod(body.substr(pos + name.size() + 2));
}

struct exit_result {
    int code = -1;
    std::string output;
};

/// Starts the binary once with `env` (plus PORT=0) and expects it to exit by itself (a start-up
/// error); kills it after `limit` otherwise.
exit_result run_to_exit(const std::map<std::string, std::string>& env, std::chrono::milliseconds limit = 15s) {
    char tmpl[] = "/tmp/callguard-out-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
        ::setenv("PORT", "0", 1);
        ::setenv("HOST", "127.0.0.1", 1);
        ::execl(CALLS_SERVICE_BINARY, "calls_service", static_cast<char*>(nullptr));
        std::_Exit(127);
    }
    exit_result r;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        std::this_thread::sleep_for(20ms);
    }
    if (r.code == -1) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    std::ifstream in(tmpl);
    std::stringstream ss;
    ss << in.rdbuf();
    r.output = ss.str();
    ::close(fd);
    ::unlink(tmpl);
    return r;
}

/// Latencies of webhook requests, in milliseconds.
struct latencies {
    std::vector<double> ms;
    void add(std::chrono::steady_clock::duration d) {
        ms.push_back(std::chrono::duration<double, std::milli>(d).count());
    }
    double percentile(double p) {
        REQUIRE(!ms.empty());
        std::sort(ms.begin(), ms.end());
        auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(ms.size() - 1));
        return ms[i];
    }
};

/// Calls (incoming_call, then completed) at a steady pace for `duration`; their SIDs start with `prefix`.
int call_for(const service& s, const std::string& prefix, std::chrono::milliseconds duration, latencies& lat) {
    const auto end = std::chrono::steady_clock::now() + duration;
    int n = 0;
    while (std::chrono::steady_clock::now() < end) {
        const auto sid = prefix + std::to_string(n++);
        auto t0 = std::chrono::steady_clock::now();
        auto r = s.incoming_call(sid);
        lat.add(std::chrono::steady_clock::now() - t0);
        REQUIRE(r.status == 200);
        REQUIRE(r.body.find("<Connect>") != std::string::npos);
        t0 = std::chrono::steady_clock::now();
        REQUIRE(s.call_status(sid, "completed").status == 204);
        lat.add(std::chrono::steady_clock::now() - t0);
        std::this_thread::sleep_for(15ms);
    }
    return n;
}

/// How many `calls` rows match ("no table" while the service has not created it yet).
std::string count_like(const test::postgres_server& pg, const std::string& pattern, const std::string& status = {}) {
    try {
        return pg.scalar("calls", "SELECT count(*) FROM calls WHERE call_sid LIKE '" + pattern + "'" +
                                      (status.empty() ? "" : " AND status = '" + status + "'"));
    } catch (const std::exception&) {
        return "no table";
    }
}

std::size_t occurrences(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
}

} // namespace

TEST_CASE("postgres: two instances write one call log and share one outbox, the rows match the calls made") {
    test::redis_server redis;
    test::postgres_server pg;
    pg.create_database("calls");
    const std::string account = "AC0123456789abcdef0123456789abcdef", token = "pg-token-0123";
    svc::twilio_standin api(account, token);
    // Every caller has the same number: no cooldown, so that each rejected call is messaged.
    const std::map<std::string, std::string> env{{"REDIS_URL", redis.url()},
                                                 {"CALLS_DB_URL", pg.url("calls")},
                                                 {"MAX_ACTIVE_CALLS", "3"},
                                                 {"CALLS_OVER_CAPACITY_BEHAVIOR", "whatsapp"},
                                                 {"TWILIO_ACCOUNT_SID", account},
                                                 {"TWILIO_AUTH_TOKEN", token},
                                                 {"CALLS_WHATSAPP_FROM", "+14155238886"},
                                                 {"CALLS_WHATSAPP_COOLDOWN_SECONDS", "0"},
                                                 {"TWILIO_API_BASE_URL", api.base_url()}};
    service a(env), b(env);
    auto incoming_call = [&](const service& s, const std::string& sid, const std::string& tenant) {
        svc::params p{{"CallSid", sid}, {"From", "+972500000001"}, {"To", "+97231234567"}};
        if (!tenant.empty()) p.emplace_back("Tenant", tenant);
        return svc::post_signed(s, "/webhook/incoming_call", p, token);
    };
    auto call_status = [&](const service& s, const std::string& sid) {
        return svc::post_signed(s, "/webhook/call_status", {{"CallSid", sid}, {"CallStatus", "completed"}}, token);
    };
    const std::array<const service*, 2> instances{&a, &b};
    CHECK(a.log().find("[SERVICE] call log: PostgreSQL postgresql://callguard:***@127.0.0.1:") != std::string::npos);

    // Four callers at once, each call's webhook on a random instance and its status callback on
    // the other (or the same): some are admitted, some rejected by the shared cap.
    std::mutex mu;
    std::map<std::string, std::string> expected; // call_sid -> status it must end with
    std::set<std::string> rejected;
    std::vector<std::thread> callers;
    for (int t = 0; t < 4; ++t)
        callers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1);
            for (int i = 0; i < 15; ++i) {
                const auto sid = "CA-" + std::to_string(t) + "-" + std::to_string(i);
                const auto& in = *instances[rng() % 2];
                const auto& out = *instances[rng() % 2];
                const std::string tenant = (i % 3 == 0) ? "biz1" : "";
                auto r = incoming_call(in, sid, tenant);
                REQUIRE(r.status == 200);
                const bool admitted = r.body.find("<Connect>") != std::string::npos;
                if (!admitted && i % 5 == 0) incoming_call(out, sid, tenant); // Twilio retries the webhook
                std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
                REQUIRE(call_status(out, sid).status == 204);
                std::lock_guard lk(mu);
                expected[sid] = admitted ? "completed" : "rejected_capacity";
                if (!admitted) rejected.insert(sid);
            }
        });
    for (auto& c : callers) c.join();
    REQUIRE(expected.size() == 60);
    CHECK(!rejected.empty());
    CHECK(rejected.size() < 60);

    std::vector<std::string> want;
    for (auto& [sid, status] : expected) want.push_back(sid + "|" + status + "|" + (std::stoi(sid.substr(sid.rfind('-') + 1)) % 3 == 0 ? "biz1" : "NULL"));
    auto rows = [&] { return pg.query("calls", "SELECT call_sid, status, coalesce(tenant, 'NULL') FROM calls ORDER BY call_sid"); };
    CHECK(test::eventually([&] { return rows() == want; }, 10s));
    if (rows() != want) {
        std::string got;
        for (auto& r : rows()) got += r + "\n";
        FAIL_CHECK("rows:\n" << got);
    }
    // Decisions carry the cap at the time; one outbox row per rejected call, even when retried
    // (on the other instance), and each sent once though both instances' senders take rows.
    CHECK(pg.scalar("calls", "SELECT count(*) FROM calls WHERE max = 3 AND active BETWEEN 0 AND 3") == "60");
    std::vector<std::string> want_outbox;
    for (auto& sid : rejected) want_outbox.push_back(sid + "|+972500000001|sent|1");
    CHECK(test::eventually([&] {
        return pg.query("calls", "SELECT call_sid, number, status, attempts FROM whatsapp_outbox ORDER BY call_sid") ==
               want_outbox;
    }, 15s));
    CHECK(test::holds_for([&] { return api.requests().size() == rejected.size(); }, 1s));
    CHECK(api.accepted_to("+972500000001") == rejected.size());
    CHECK(metric(a, "callguard_whatsapp_sent_total") + metric(b, "callguard_whatsapp_sent_total") ==
          static_cast<double>(rejected.size()));
    CHECK(pg.scalar("calls", "SELECT count(*) FROM calls WHERE created_at > updated_at") == "0");
    CHECK(metric(a, "callguard_call_log_dropped_total") == 0);
    CHECK(metric(b, "callguard_call_log_failed_total") == 0);
    CHECK(metric(a, "callguard_call_log_database_up") == 1);
    CHECK(a.log().find(test::postgres_server::password) == std::string::npos);
}

TEST_CASE("postgres: database stopped for 10 s under webhook load, no webhook slower, no row lost") {
    test::postgres_server pg;
    pg.create_database("calls");
    service s({{"CALLS_DB_URL", pg.url("calls")}, {"MAX_ACTIVE_CALLS", "1000"}});

    latencies up, down;
    const int n_up = call_for(s, "CA-up-", 4s, up);
    CHECK(test::eventually([&] { return count_like(pg, "CA-up-%", "completed") == std::to_string(n_up); }, 10s));

    pg.stop();
    const int n_down = call_for(s, "CA-down-", 10s, down);
    CHECK(metric(s, "callguard_call_log_database_up") == 0);
    CHECK(metric(s, "callguard_call_log_queued") == 2 * n_down);
    pg.start();
    // The writer retries with backoff (at most 5 s apart), then writes everything that waited.
    CHECK(test::eventually([&] { return count_like(pg, "CA-down-%", "completed") == std::to_string(n_down); }, 15s));
    CHECK(count_like(pg, "CA-down-%") == std::to_string(n_down));
    CHECK(test::eventually([&] { return metric(s, "callguard_call_log_queued") == 0; }, 5s));
    CHECK(metric(s, "callguard_call_log_dropped_total") == 0);
    CHECK(metric(s, "callguard_call_log_database_up") == 1);
    CHECK(metric(s, "callguard_call_log_written_total") == 2 * (n_up + n_down));

    // The request path never waits for the database: with it gone, webhooks answer as fast as
    // with it up. Bounds allow for a shared 2-core machine: within twice the median and p99
    // measured with the database up, plus a few milliseconds of scheduling noise.
    const double up50 = up.percentile(50), up99 = up.percentile(99);
    const double down50 = down.percentile(50), down99 = down.percentile(99), downmax = down.percentile(100);
    MESSAGE("webhook latency ms, database up (" << up.ms.size() << " requests): p50 " << up50 << " p99 " << up99
                                                << "; stopped (" << down.ms.size() << "): p50 " << down50 << " p99 "
                                                << down99 << " max " << downmax);
    CHECK(down50 <= 2 * up50 + 2);
    CHECK(down99 <= 2 * up99 + 10);
    CHECK(downmax < 500); // never anything like a database timeout

    const auto log = s.log();
    CHECK(occurrences(log, "call log: database unavailable") == 1); // once per outage, not per retry
    CHECK(occurrences(log, "call log: database available again after") == 1);
    CHECK(log.find(test::postgres_server::password) == std::string::npos);
}

TEST_CASE("postgres: beyond CALLS_DB_QUEUE_LIMIT the drop counter is exact, and a dropped schema is re-migrated") {
    test::postgres_server pg;
    pg.create_database("calls");
    service s({{"CALLS_DB_URL", pg.url("calls")}, {"MAX_ACTIVE_CALLS", "1000"}, {"CALLS_DB_QUEUE_LIMIT", "50"}});
    CHECK(s.log().find("db_queue_limit=50") != std::string::npos);
    s.incoming_call("CA-pre");
    REQUIRE(test::eventually([&] { return count_like(pg, "CA-pre") == "1" && metric(s, "callguard_call_log_queued") == 0; }, 10s));

    pg.stop();
    for (int i = 0; i < 80; ++i) REQUIRE(s.incoming_call("CA-q-" + std::to_string(i)).status == 200);
    CHECK(metric(s, "callguard_call_log_dropped_total") == 30); // one row per call: 80 - 50
    CHECK(metric(s, "callguard_call_log_queued") == 50);
    CHECK(s.active() == 81); // calls were admitted all the same
    pg.start();
    CHECK(test::eventually([&] { return count_like(pg, "CA-q-%") == "50"; }, 15s));
    // The first 50 waited; the 30 that found the queue full are the ones missing.
    CHECK(pg.scalar("calls", "SELECT max(substr(call_sid, 6)::int) || '/' || min(substr(call_sid, 6)::int) FROM calls "
                             "WHERE call_sid LIKE 'CA-q-%'") == "49/0");
    CHECK(test::eventually([&] { return metric(s, "callguard_call_log_queued") == 0; }, 5s));
    CHECK(metric(s, "callguard_call_log_dropped_total") == 30);
    CHECK(test::eventually([&] { return s.log().find("queue has room again; 30 rows were dropped") != std::string::npos; }, 5s));
    CHECK(occurrences(s.log(), "queue full (50 rows waiting") == 1);

    // The database comes back without the call log's tables: they are created again.
    pg.exec("calls", "DROP TABLE calls, whatsapp_outbox, callguard_schema_version");
    pg.stop();
    pg.start();
    s.incoming_call("CA-after");
    CHECK(test::eventually([&] { return count_like(pg, "CA-after", "admitted") == "1"; }, 15s));
    CHECK(s.log().find("call log: tables migrated from schema version 0 to 3") != std::string::npos);
    CHECK(pg.query("calls", "SELECT version FROM callguard_schema_version ORDER BY 1") == std::vector<std::string>{"1", "2", "3"});
}

TEST_CASE("postgres: a database that is down at start does not stop the service") {
    test::postgres_server pg;
    pg.create_database("calls");
    pg.stop();
    service s({{"CALLS_DB_URL", pg.url("calls")}, {"MAX_ACTIVE_CALLS", "5"}});
    CHECK(s.log().find("call log: database unavailable at start (postgresql://callguard:***@127.0.0.1:") !=
          std::string::npos);
    CHECK(s.incoming_call("CA-1").body.find("<Connect>") != std::string::npos);
    CHECK(test::eventually([&] { return metric(s, "callguard_call_log_database_up") == 0; }, 5s));
    pg.start();
    CHECK(test::eventually([&] { return count_like(pg, "CA-1", "admitted") == "1"; }, 15s));
    CHECK(test::eventually([&] { return metric(s, "callguard_call_log_database_up") == 1; }, 5s));
    CHECK(s.log().find(test::postgres_server::password) == std::string::npos);
}

TEST_CASE("postgres: a bad CALLS_DB_URL stops the service at start with the problem named, the password masked") {
    test::postgres_server pg;
    pg.create_database("calls");
    const std::string port = std::to_string(pg.port());
    const std::string secret = "Wr0ng-pa55word";
    struct bad {
        std::string url, problem, shown;
    };
    for (const auto& b : {
             bad{"postgresql://callguard:" + secret + "%zz@127.0.0.1:" + port + "/calls", "invalid percent-encoded token",
                 "postgresql://callguard:***@127.0.0.1:" + port + "/calls"},
             bad{"host=127.0.0.1 password=" + secret + " oops dbname=calls", "missing \"=\" after \"***\"",
                 "host=127.0.0.1 password=***"},
             bad{"mysql://callguard:" + secret + "@127.0.0.1/calls", "expected postgresql://", "mysql://callguard:***@"},
             bad{"postgresql://callguard:" + secret + "@127.0.0.1:" + port + "/calls",
                 "password authentication failed for user \"callguard\"",
                 "postgresql://callguard:***@127.0.0.1:" + port + "/calls"},
             bad{"host=127.0.0.1 port=" + port + " user=callguard dbname=calls password='" + secret + "'",
                 "password authentication failed for user \"callguard\"", "dbname=calls password='***'"},
             bad{pg.url("no_such_db"), "database \"no_such_db\" does not exist",
                 "postgresql://callguard:***@127.0.0.1:" + port + "/no_such_db"},
         }) {
        CAPTURE(b.url);
        auto r = run_to_exit({{"CALLS_DB_URL", b.url}});
        CAPTURE(r.output);
        CHECK(r.code == 2);
        CHECK(r.output.find("[SERVICE] configuration error: CALLS_DB_URL=\"") != std::string::npos);
        CHECK(r.output.find(b.problem) != std::string::npos);
        CHECK(r.output.find(b.shown) != std::string::npos);
        CHECK(r.output.find(secret) == std::string::npos);
        CHECK(r.output.find(test::postgres_server::password) == std::string::npos);
    }
}
