// The call log's stores against real databases: SQLite in a temporary file and a real PostgreSQL
// server (tests/support/postgres_server.hpp). The same rows must mean the same thing on both.

#include "../support/postgres_server.hpp"
#include "../support/probes.hpp"

#include "call_log_schema.hpp"
#include "postgres_store.hpp"
#include "sqlite_store.hpp"

#include <doctest/doctest.h>

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using calls::call_row;

namespace {

call_row status_row(const std::string& sid, const std::string& status, std::chrono::system_clock::time_point at,
                    bool decision_counts = true) {
    call_row r;
    r.call_sid = sid;
    r.status = status;
    r.at = at;
    if (decision_counts && status != "completed") {
        r.tenant = "biz1";
        r.active = 3;
        r.max = 5;
    }
    return r;
}

call_row outbox_row(const std::string& sid, const std::string& number) {
    call_row r;
    r.what = call_row::kind::whatsapp_outbox;
    r.call_sid = sid;
    r.number = number;
    r.at = std::chrono::system_clock::now();
    return r;
}

/// A temporary SQLite file, queried with the sqlite3 C API.
struct sqlite_db {
    std::string dir, path;
    sqlite_db() {
        char tmpl[] = "/tmp/callguard-sqlite-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        path = dir + "/calls.db";
    }
    ~sqlite_db() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::vector<std::string> query(const std::string& sql) const {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
        std::vector<std::string> rows;
        sqlite3_stmt* st = nullptr;
        REQUIRE_MESSAGE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK, sqlite3_errmsg(db));
        while (sqlite3_step(st) == SQLITE_ROW) {
            std::string row;
            for (int j = 0; j < sqlite3_column_count(st); ++j) {
                if (j) row += '|';
                auto* v = sqlite3_column_text(st, j);
                row += v ? reinterpret_cast<const char*>(v) : "NULL";
            }
            rows.push_back(row);
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        return rows;
    }
    void exec(const std::string& sql) const {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
        char* err = nullptr;
        const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
        std::string why = err ? err : "";
        sqlite3_free(err);
        sqlite3_close(db);
        REQUIRE_MESSAGE(rc == SQLITE_OK, why);
    }
};

/// One store and a way to read its tables, for tests that run on both databases.
struct store_case {
    std::string name;
    std::function<std::unique_ptr<calls::call_store>()> open;
    std::function<std::vector<std::string>(const std::string&)> query;
};

const std::array<std::string, 6> statuses{"admitted",  "rejected_capacity", "rejected_unavailable",
                                          "completed", "queued",            "voicemail"};

/// For every ordered pair of statuses, a call whose rows arrive in that order: its final status
/// must be the shared rule's, and the decision's tenant and counts kept whichever came first.
void check_status_rule(const store_case& sc) {
    CAPTURE(sc.name);
    auto store = sc.open();
    const auto t0 = std::chrono::system_clock::now();
    std::vector<call_row> rows;
    for (const auto& a : statuses)
        for (const auto& b : statuses) {
            const auto sid = "CA-" + a + "-" + b;
            rows.push_back(status_row(sid, a, t0));
            rows.push_back(status_row(sid, b, t0 + 1s));
        }
    // Half in one batch, the rest one row per batch: the rule holds within and across batches.
    const auto half = rows.size() / 2;
    auto out = store->write(std::span<const call_row>(rows).first(half));
    CHECK(out.written == half);
    for (std::size_t i = half; i < rows.size(); ++i) CHECK(store->write(std::span<const call_row>(&rows[i], 1)).written == 1);
    for (const auto& a : statuses)
        for (const auto& b : statuses) {
            const auto sid = "CA-" + a + "-" + b;
            CAPTURE(sid);
            auto got = sc.query("SELECT status, tenant, active, max FROM calls WHERE call_sid = '" + sid + "'");
            REQUIRE(got.size() == 1);
            const std::string want(calls::schema::merged_status(a, b));
            const bool has_decision = a != "completed" || b != "completed";
            CHECK(got[0] == want + (has_decision ? "|biz1|3|5" : "|NULL|NULL|NULL"));
        }
    // created_at is the first event's time, updated_at the last status change's.
    auto times = sc.query("SELECT created_at < updated_at, created_at = updated_at FROM calls WHERE call_sid IN "
                          "('CA-admitted-completed', 'CA-admitted-admitted') ORDER BY call_sid");
    REQUIRE(times.size() == 2);
    CHECK(times[0] == (sc.name == "sqlite" ? "0|1" : "f|t")); // admitted-admitted: no change
    CHECK(times[1] == (sc.name == "sqlite" ? "1|0" : "t|f")); // admitted-completed
}

void check_outbox_once_per_call(const store_case& sc) {
    CAPTURE(sc.name);
    auto store = sc.open();
    std::vector<call_row> rows{outbox_row("CA-w1", "+972500000001"), outbox_row("CA-w2", "+972500000002"),
                               outbox_row("CA-w1", "+972500000001")};
    CHECK(store->write(rows).written == 3);
    CHECK(store->write(rows).written == 3); // a batch written again (a retry) adds nothing
    CHECK(sc.query("SELECT call_sid, number, status, attempts, message_sid, error_code, next_attempt_at FROM "
                   "whatsapp_outbox ORDER BY call_sid") ==
          std::vector<std::string>{"CA-w1|+972500000001|pending|0|NULL|NULL|NULL",
                                   "CA-w2|+972500000002|pending|0|NULL|NULL|NULL"});
}

call_row voicemail_row(const std::string& sid, std::string url, std::optional<std::int64_t> duration,
                       std::string rec_sid, std::string rec_status) {
    call_row r;
    r.call_sid = sid;
    r.status = "voicemail";
    r.recording_url = std::move(url);
    r.recording_duration = duration;
    r.recording_sid = std::move(rec_sid);
    r.recording_status = std::move(rec_status);
    r.at = std::chrono::system_clock::now();
    return r;
}

/// A voicemail's two rows (the Record action's, the recording status callback's) end as one
/// `voicemail` row with every field, in either order and after any earlier status.
void check_voicemail(const store_case& sc) {
    CAPTURE(sc.name);
    auto store = sc.open();
    const auto t0 = std::chrono::system_clock::now();
    std::vector<call_row> rows{status_row("CA-vm1", "rejected_capacity", t0),
                               voicemail_row("CA-vm1", "https://api.twilio.com/rec/RE1", 14, "", ""),
                               voicemail_row("CA-vm1", "https://api.twilio.com/rec/RE1", 14, "RE1", "completed"),
                               status_row("CA-vm1", "completed", t0 + 30s),
                               // The status callback first, then the action, then the rejection.
                               voicemail_row("CA-vm2", "https://api.twilio.com/rec/RE2", 9, "RE2", "completed"),
                               voicemail_row("CA-vm2", "https://api.twilio.com/rec/RE2", std::nullopt, "", ""),
                               status_row("CA-vm2", "rejected_capacity", t0)};
    CHECK(store->write(rows).written == rows.size());
    CHECK(sc.query("SELECT call_sid, status, tenant, recording_url, recording_duration, recording_sid, recording_status "
                   "FROM calls WHERE call_sid LIKE 'CA-vm%' ORDER BY call_sid") ==
          std::vector<std::string>{"CA-vm1|voicemail|biz1|https://api.twilio.com/rec/RE1|14|RE1|completed",
                                   "CA-vm2|voicemail|biz1|https://api.twilio.com/rec/RE2|9|RE2|completed"});
}

/// The sender's side of the outbox: rows taken with a lease (never twice while it lasts), then
/// sent, retried later, or failed, each with what Twilio said.
void check_outbox_sender(const store_case& sc) {
    CAPTURE(sc.name);
    auto writer = sc.open();
    auto sender = sc.open(); // its own connection, as the sender thread has
    std::vector<call_row> rows{outbox_row("CA-s1", "+15550001"), outbox_row("CA-s2", "+15550002"),
                               outbox_row("CA-s3", "+15550003"), outbox_row("CA-s4", "+15550004")};
    REQUIRE(writer->write(rows).written == rows.size());
    auto first = sender->claim_due_messages(2, 60s);
    REQUIRE(first.size() == 2);
    std::sort(first.begin(), first.end(), [](auto& a, auto& b) { return a.call_sid < b.call_sid; });
    CHECK(first[0].call_sid == "CA-s1"); // oldest first
    CHECK(first[0].number == "+15550001");
    CHECK(first[0].attempts == 1);
    CHECK(first[1].call_sid == "CA-s2");
    auto rest = sender->claim_due_messages(10, 60s);
    CHECK(rest.size() == 2);
    CHECK(writer->claim_due_messages(10, 60s).empty()); // leased: another sender skips them
    sender->record_sent("CA-s1", "SM0001");
    sender->record_retry("CA-s2", 0ms, 20429, "Too Many Requests");
    sender->record_retry("CA-s3", 300ms, std::nullopt, "connection refused");
    sender->record_failed("CA-s4", 21211, "Invalid 'To' Phone Number");
    sender->record_sent("CA-s4", "SM-late"); // a failed row stays failed
    auto again = sender->claim_due_messages(10, 60s);
    REQUIRE(again.size() == 1); // CA-s2 is due at once, CA-s3 in 300 ms
    CHECK(again[0].call_sid == "CA-s2");
    CHECK(again[0].attempts == 2);
    CHECK(test::eventually([&] { return sender->claim_due_messages(10, 60s).size() == 1; }, 3s)); // CA-s3
    CHECK(sc.query("SELECT call_sid, status, message_sid, error_code, error_message, attempts FROM whatsapp_outbox "
                   "WHERE call_sid LIKE 'CA-s%' ORDER BY call_sid") ==
          std::vector<std::string>{"CA-s1|sent|SM0001|NULL|NULL|1", "CA-s2|pending|NULL|20429|Too Many Requests|2",
                                   "CA-s3|pending|NULL|NULL|connection refused|2",
                                   "CA-s4|failed|NULL|21211|Invalid 'To' Phone Number|1"});
    // A lease that ends (its sender died mid-send) gives the row to the next sender.
    CHECK(writer->write(std::vector<call_row>{outbox_row("CA-s5", "+15550005")}).written == 1);
    REQUIRE(sender->claim_due_messages(10, 200ms).size() == 1);
    CHECK(writer->claim_due_messages(10, 60s).empty());
    CHECK(test::eventually([&] { return writer->claim_due_messages(10, 60s).size() == 1; }, 3s));
}

/// Senders on their own connections taking rows at once: every row goes to exactly one of them.
void check_outbox_senders_race(const store_case& sc) {
    CAPTURE(sc.name);
    constexpr int n = 200, senders = 4;
    {
        auto writer = sc.open();
        std::vector<call_row> rows;
        for (int i = 0; i < n; ++i) rows.push_back(outbox_row("CA-race-" + std::to_string(i), "+1555"));
        REQUIRE(writer->write(rows).written == n);
    }
    std::vector<std::vector<std::string>> taken(senders);
    std::vector<std::string> errors(senders);
    std::vector<std::thread> threads;
    for (int t = 0; t < senders; ++t)
        threads.emplace_back([&, t] {
            try {
                auto store = sc.open();
                for (int round = 0; round < 200; ++round) {
                    auto batch = store->claim_due_messages(7, 60s);
                    if (batch.empty()) break;
                    for (auto& m : batch) taken[static_cast<std::size_t>(t)].push_back(m.call_sid);
                }
            } catch (const std::exception& e) {
                errors[static_cast<std::size_t>(t)] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    std::vector<std::string> all;
    for (int t = 0; t < senders; ++t) {
        CHECK_MESSAGE(errors[static_cast<std::size_t>(t)].empty(), errors[static_cast<std::size_t>(t)]);
        all.insert(all.end(), taken[static_cast<std::size_t>(t)].begin(), taken[static_cast<std::size_t>(t)].end());
    }
    std::sort(all.begin(), all.end());
    CHECK(all.size() == n);
    CHECK(std::adjacent_find(all.begin(), all.end()) == all.end()); // none taken twice
    CHECK(sc.query("SELECT count(*) FROM whatsapp_outbox WHERE call_sid LIKE 'CA-race-%' AND attempts = 1") ==
          std::vector<std::string>{std::to_string(n)});
}

void check_schema(const store_case& sc) {
    CAPTURE(sc.name);
    auto store = sc.open();
    CHECK(sc.query("SELECT version FROM callguard_schema_version ORDER BY version") ==
          std::vector<std::string>{"1", "2", "3"});
    // Opening again migrates nothing.
    auto again = sc.open();
    CHECK(sc.query("SELECT count(*) FROM callguard_schema_version") == std::vector<std::string>{"3"});
}

} // namespace

TEST_CASE("call stores: the status rule is the same on SQLite and PostgreSQL, within and across batches") {
    sqlite_db lite;
    test::postgres_server pg;
    pg.create_database("calls");
    const auto info = calls::postgres_conninfo::parse("CALLS_DB_URL", pg.url("calls"));
    const std::vector<store_case> cases{
        {"sqlite", [&] { return std::make_unique<calls::sqlite_store>(lite.path); },
         [&](const std::string& q) { return lite.query(q); }},
        {"postgres", [&] { return std::make_unique<calls::postgres_store>(info); },
         [&](const std::string& q) { return pg.query("calls", q); }},
    };
    for (const auto& sc : cases) {
        check_status_rule(sc);
        check_outbox_once_per_call(sc);
        check_schema(sc);
    }
}

TEST_CASE("call stores: voicemail rows and the WhatsApp sender's outbox work the same on SQLite and PostgreSQL") {
    sqlite_db lite;
    test::postgres_server pg;
    pg.create_database("calls");
    const auto info = calls::postgres_conninfo::parse("CALLS_DB_URL", pg.url("calls"));
    const std::vector<store_case> cases{
        {"sqlite", [&] { return std::make_unique<calls::sqlite_store>(lite.path); },
         [&](const std::string& q) { return lite.query(q); }},
        {"postgres", [&] { return std::make_unique<calls::postgres_store>(info); },
         [&](const std::string& q) { return pg.query("calls", q); }},
    };
    for (const auto& sc : cases) {
        check_voicemail(sc);
        check_outbox_sender(sc);
        check_outbox_senders_race(sc);
    }
}

TEST_CASE("call stores: PostgreSQL tables, types and the indexes an analyst needs") {
    test::postgres_server pg;
    pg.create_database("calls");
    calls::postgres_store store(calls::postgres_conninfo::parse("CALLS_DB_URL", pg.url("calls")));
    CHECK(store.found_version() == 0);
    auto column_types = pg.query("calls", "SELECT table_name || '.' || column_name || ':' || data_type FROM "
                                          "information_schema.columns WHERE table_name IN ('calls', 'whatsapp_outbox') "
                                          "AND column_name LIKE '%_at' ORDER BY 1");
    CHECK(column_types == std::vector<std::string>{"calls.created_at:timestamp with time zone",
                                                   "calls.updated_at:timestamp with time zone",
                                                   "whatsapp_outbox.created_at:timestamp with time zone",
                                                   "whatsapp_outbox.next_attempt_at:timestamp with time zone",
                                                   "whatsapp_outbox.updated_at:timestamp with time zone"});
    auto indexes = pg.query("calls", "SELECT indexdef FROM pg_indexes WHERE tablename IN ('calls', 'whatsapp_outbox') "
                                     "ORDER BY indexname");
    auto has = [&](const std::string& part) {
        return std::any_of(indexes.begin(), indexes.end(), [&](const std::string& d) { return d.find(part) != std::string::npos; });
    };
    CHECK(has("ON public.calls USING btree (status, created_at)"));
    CHECK(has("ON public.calls USING btree (tenant, created_at)"));
    CHECK(has("CREATE UNIQUE INDEX whatsapp_outbox_call_sid ON public.whatsapp_outbox USING btree (call_sid)"));
    CHECK(has("ON public.whatsapp_outbox USING btree (status, next_attempt_at)"));
    // The planner uses them for the analyst's question (small tables: forbid sequential scans).
    auto plan = pg.query("calls", "SET enable_seqscan = off; EXPLAIN SELECT count(*) FROM calls WHERE status = "
                                  "'rejected_capacity' AND created_at >= now() - interval '1 day'");
    std::string p;
    for (auto& l : plan) p += l + "\n";
    CHECK_MESSAGE(p.find("calls_status_created_at") != std::string::npos, p);
    // The event time is the one the service recorded, not the time of the write.
    const auto yesterday = std::chrono::system_clock::now() - std::chrono::hours(24);
    std::vector<call_row> rows{status_row("CA-old", "rejected_capacity", yesterday)};
    REQUIRE(store.write(rows).written == 1);
    CHECK(pg.scalar("calls", "SELECT created_at < now() - interval '23 hours' FROM calls WHERE call_sid = 'CA-old'") == "t");
}

TEST_CASE("call stores: several instances migrating one PostgreSQL database at once") {
    test::postgres_server pg;
    pg.create_database("calls");
    const auto info = calls::postgres_conninfo::parse("CALLS_DB_URL", pg.url("calls"));
    constexpr int n = 6;
    std::vector<int> found(n, -1);
    std::vector<std::string> errors(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
        threads.emplace_back([&, i] {
            try {
                calls::postgres_store s(info);
                found[i] = s.found_version();
            } catch (const std::exception& e) {
                errors[i] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (int i = 0; i < n; ++i) CHECK_MESSAGE(errors[i].empty(), errors[i]);
    CHECK(std::count(found.begin(), found.end(), 0) == 1); // one migrated, the others found it done
    CHECK(std::count(found.begin(), found.end(), 3) == n - 1);
    CHECK(pg.query("calls", "SELECT version FROM callguard_schema_version ORDER BY 1") == std::vector<std::string>{"1", "2", "3"});
}

TEST_CASE("call stores: a SQLite file from before versioning is migrated, its rows kept") {
    sqlite_db lite;
    // The tables as the single-instance service created them, with rows (a duplicate outbox row
    // from a retried webhook, one already sent).
    lite.exec("CREATE TABLE calls (call_sid TEXT PRIMARY KEY, status TEXT NOT NULL, tenant TEXT, active INTEGER, "
              "max INTEGER, created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), "
              "updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
              "CREATE TABLE whatsapp_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL, "
              "number TEXT, sent INTEGER NOT NULL DEFAULT 0, "
              "created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
              "INSERT INTO calls (call_sid, status, tenant, active, max, created_at, updated_at) VALUES "
              "('CA-old1', 'admitted', NULL, 1, 5, '2024-01-01T10:00:00.000Z', '2024-01-01T10:00:00.000Z'),"
              "('CA-old2', 'rejected_capacity', 'biz1', 5, 5, '2024-01-01T10:01:00.000Z', '2024-01-01T10:01:00.000Z');"
              "INSERT INTO whatsapp_outbox (call_sid, number, sent) VALUES ('CA-old2', '+1', 1), ('CA-old2', '+1', 0),"
              "('CA-old3', '+2', 0);");
    calls::sqlite_store store(lite.path);
    CHECK(store.found_version() == 0);
    CHECK(lite.query("SELECT version FROM callguard_schema_version ORDER BY 1") == std::vector<std::string>{"1", "2", "3"});
    CHECK(lite.query("SELECT call_sid, status FROM calls ORDER BY 1") ==
          std::vector<std::string>{"CA-old1|admitted", "CA-old2|rejected_capacity"});
    CHECK(lite.query("SELECT call_sid, status, attempts FROM whatsapp_outbox ORDER BY 1") ==
          std::vector<std::string>{"CA-old2|sent|0", "CA-old3|pending|0"});
    CHECK(lite.query("SELECT count(*) FROM pragma_table_info('whatsapp_outbox') WHERE name = 'sent'") ==
          std::vector<std::string>{"0"});
    // And it works as a current log: the old admitted call completes.
    std::vector<call_row> rows{status_row("CA-old1", "completed", std::chrono::system_clock::now())};
    CHECK(store.write(rows).written == 1);
    CHECK(lite.query("SELECT status, created_at FROM calls WHERE call_sid = 'CA-old1'") ==
          std::vector<std::string>{"completed|2024-01-01T10:00:00.000Z"});
    calls::sqlite_store again(lite.path);
    CHECK(again.found_version() == 3);
}

TEST_CASE("call stores: PostgreSQL refuses one bad row, the rest of its batch is written") {
    test::postgres_server pg;
    pg.create_database("calls");
    calls::postgres_store store(calls::postgres_conninfo::parse("CALLS_DB_URL", pg.url("calls")));
    std::vector<call_row> rows{status_row("CA-1", "admitted", std::chrono::system_clock::now()),
                               outbox_row("CA-2", std::string("+97250\xff\xfe", 8)), // not UTF-8: 22021
                               status_row("CA-3", "admitted", std::chrono::system_clock::now())};
    auto out = store.write(rows);
    CHECK(out.written == 2);
    CHECK(out.failed == 1);
    CHECK(out.error.find("invalid byte sequence") != std::string::npos);
    CHECK(pg.query("calls", "SELECT call_sid FROM calls ORDER BY 1") == std::vector<std::string>{"CA-1", "CA-3"});
    // A batch of 512 with a call admitted and completed inside it: one round trip, one row.
    std::vector<call_row> big;
    for (int i = 0; i < 255; ++i) {
        big.push_back(status_row("CA-b" + std::to_string(i), "admitted", std::chrono::system_clock::now()));
        big.push_back(status_row("CA-b" + std::to_string(i), "completed", std::chrono::system_clock::now()));
    }
    big.push_back(outbox_row("CA-b1", "+1"));
    big.push_back(outbox_row("CA-b1", "+1"));
    CHECK(store.write(big).written == big.size());
    CHECK(pg.scalar("calls", "SELECT count(*) FILTER (WHERE status = 'completed') || '/' || count(*) FROM calls "
                             "WHERE call_sid LIKE 'CA-b%'") == "255/255");
}

TEST_CASE("call stores: PostgreSQL down, frozen, or its tables dropped: the store says so, a new one recovers") {
    test::postgres_server pg;
    pg.create_database("calls");
    const auto info = calls::postgres_conninfo::parse("CALLS_DB_URL", pg.url("calls") + "?connect_timeout=2");
    auto now = [] { return std::chrono::system_clock::now(); };

    SUBCASE("tables dropped while connected") {
        calls::postgres_store store(info);
        pg.exec("calls", "DROP TABLE calls, whatsapp_outbox, callguard_schema_version");
        std::vector<call_row> rows{status_row("CA-1", "admitted", now())};
        auto out = store.write(rows);
        CHECK(out.written + out.failed == 0); // kept for a retry, not refused
        CHECK(out.error.find("does not exist") != std::string::npos);
        calls::postgres_store fresh(info); // what the writer does next: reconnect, re-migrate
        CHECK(fresh.found_version() == 0);
        CHECK(fresh.write(rows).written == 1);
    }
    SUBCASE("server stopped and started") {
        calls::postgres_store store(info);
        pg.stop();
        std::vector<call_row> rows{status_row("CA-1", "admitted", now())};
        auto out = store.write(rows);
        CHECK(out.written + out.failed == 0);
        CHECK_THROWS_AS(calls::postgres_store{info}, calls::postgres_error);
        pg.start();
        calls::postgres_store fresh(info);
        CHECK(fresh.write(rows).written == 1);
    }
    SUBCASE("server frozen: writes and connects give up at their deadlines") {
        calls::postgres_store store(info, {}, 500ms);
        pg.freeze();
        std::vector<call_row> rows{status_row("CA-1", "admitted", now())};
        auto t0 = std::chrono::steady_clock::now();
        auto out = store.write(rows);
        CHECK(std::chrono::steady_clock::now() - t0 < 2s);
        CHECK(out.written + out.failed == 0);
        CHECK(out.error.find("no answer within 500 ms") != std::string::npos);
        t0 = std::chrono::steady_clock::now();
        CHECK_THROWS_WITH_AS(calls::postgres_store(info, {}, 500ms), doctest::Contains("no connection within 2 s"),
                             calls::postgres_error);
        CHECK(std::chrono::steady_clock::now() - t0 < 4s);
        // A stop request ends a connect at once.
        std::stop_source stop;
        std::thread stopper([&] {
            std::this_thread::sleep_for(200ms);
            stop.request_stop();
        });
        t0 = std::chrono::steady_clock::now();
        CHECK_THROWS_WITH_AS(calls::postgres_store(info, stop.get_token()), doctest::Contains("shutting down"),
                             calls::postgres_error);
        CHECK(std::chrono::steady_clock::now() - t0 < 1s);
        stopper.join();
        pg.thaw();
        calls::postgres_store fresh(info);
        CHECK(fresh.write(rows).written == 1);
    }
}

TEST_CASE("CALLS_DB_URL: every form is parsed by libpq and shown with its password masked") {
    const std::string secret = "Pa55-w0rd!x";
    struct good {
        std::string text, masked;
    };
    for (const auto& g : {
             good{"postgresql://svc:" + secret + "@db.internal:5432/calls?sslmode=require",
                  "postgresql://svc:***@db.internal:5432/calls?sslmode=require"},
             good{"postgres://svc:" + secret + "@h1:5432,h2:5433/calls", "postgres://svc:***@h1:5432,h2:5433/calls"},
             good{"postgresql://svc@db/calls?password=" + secret + "&connect_timeout=3",
                  "postgresql://svc@db/calls?password=***&connect_timeout=3"},
             good{"postgresql://svc:Pa%24%24word@db/calls", "postgresql://svc:***@db/calls"},
             good{"host=db port=5432 dbname=calls user=svc password=" + secret,
                  "host=db port=5432 dbname=calls user=svc password=***"},
             good{"host=db password = '" + secret + " with spaces' user=svc",
                  "host=db password = '***' user=svc"},
             good{"postgresql:///calls?host=/run/postgresql", "postgresql:///calls?host=/run/postgresql"},
         }) {
        CAPTURE(g.text);
        auto c = calls::postgres_conninfo::parse("CALLS_DB_URL", g.text);
        CHECK(c.masked() == g.masked);
        CHECK(c.text() == g.text);
    }
    CHECK(calls::postgres_conninfo::parse("CALLS_DB_URL", "postgresql://h/db?connect_timeout=7").connect_timeout() == 7s);
    CHECK(calls::postgres_conninfo::parse("CALLS_DB_URL", "postgresql://h/db").connect_timeout() == 5s);

    struct bad {
        std::string text, why;
    };
    for (const auto& b : {
             bad{"postgresql://svc:" + secret + "%zz@db/calls", "invalid percent-encoded token"},
             bad{"postgresql://svc:" + secret + "@db/calls?bogus=1", "invalid URI query parameter: \"bogus\""},
             bad{"postgresql://svc:" + secret + "@[::1/calls", "matching \"]\""},
             bad{"host=db password=" + secret + " more words user=svc", "missing \"=\" after \"***\""},
             bad{"host=db password='" + secret, "unterminated quoted string"},
             bad{"mysql://svc:" + secret + "@db/calls", "expected postgresql://"},
             bad{"postgresql://svc:" + secret + "@db/calls?connect_timeout=soon", "connect_timeout must be"},
             bad{"just-a-word", "missing \"=\" after \"just-a-word\""},
         }) {
        CAPTURE(b.text);
        try {
            calls::postgres_conninfo::parse("CALLS_DB_URL", b.text);
            FAIL("accepted");
        } catch (const callguard::config_error& e) {
            const std::string what = e.what();
            CAPTURE(what);
            CHECK(what.rfind("CALLS_DB_URL=", 0) == 0);
            CHECK(what.find(b.why) != std::string::npos);
            CHECK(what.find(secret) == std::string::npos);
            CHECK(what.find("more") == std::string::npos); // the stray words of an unquoted password
            CHECK(what.find("words") == std::string::npos);
        }
    }
    // libpq itself does quote the password in those errors: that is why they are scrubbed.
    char* err = nullptr;
    CHECK(PQconninfoParse(("postgresql://svc:" + secret + "%zz@db/calls").c_str(), &err) == nullptr);
    REQUIRE(err != nullptr);
    CHECK(std::string(err).find(secret) != std::string::npos);
    PQfreemem(err);
}
