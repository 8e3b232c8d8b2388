#pragma once

// The call log in SQLite (CALLS_DB_PATH): the embedded default for one instance.

#include "call_log.hpp"
#include "call_log_schema.hpp"

#include <sqlite3.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace calls {

class sqlite_store final : public call_store {
public:
    /// Opens (or creates) the database and brings its tables to the latest schema version;
    /// throws `std::runtime_error` if it cannot.
    explicit sqlite_store(const std::string& path) {
        sqlite3* db = nullptr;
        if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
            std::string why = db ? sqlite3_errmsg(db) : "out of memory";
            if (db) sqlite3_close(db);
            throw std::runtime_error("cannot open call log " + path + ": " + why);
        }
        db_.reset(db);
        sqlite3_busy_timeout(db, 2000);
        exec("PRAGMA journal_mode=WAL"); // outside any transaction
        migrator m{*this};
        try {
            found_version_ = schema::migrate(m);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("cannot create or migrate the call log tables: ") + e.what());
        }
        upsert_ = prepare(upsert_sql().c_str());
        outbox_ = prepare(outbox_sql);
        claim_ = prepare(claim_sql);
        sent_ = prepare(sent_sql);
        retry_ = prepare(retry_sql);
        failed_ = prepare(failed_sql);
    }

    /// The schema version the file had when opened (0: new, or from before versioning).
    int found_version() const noexcept { return found_version_; }

    outcome write(std::span<const call_row> rows) override {
        sqlite3* db = db_.get();
        if (sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return {0, 0, error("begin")};
        outcome out;
        for (const auto& r : rows) {
            const int rc = step(r);
            if (rc == SQLITE_DONE) {
                ++out.written;
            } else if (refused_for_good(rc)) {
                ++out.failed;
                out.error = error("a row");
            } else {
                auto why = error("a row");
                sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
                return {0, 0, why};
            }
        }
        if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
            auto why = error("commit");
            sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
            return {0, 0, why};
        }
        return out;
    }

    std::vector<outbox_message> claim_due_messages(std::size_t limit, std::chrono::milliseconds lease) override {
        sqlite3_stmt* st = start(claim_);
        sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(limit));
        bind_text(st, 2, seconds_modifier(lease));
        std::vector<outbox_message> out;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            outbox_message m;
            m.call_sid = column_text(st, 0);
            m.number = column_text(st, 1);
            m.attempts = sqlite3_column_int(st, 2);
            out.push_back(std::move(m));
        }
        if (rc != SQLITE_DONE) throw std::runtime_error(error("claiming outbox rows"));
        sqlite3_reset(st);
        return out;
    }

    void record_sent(const std::string& call_sid, const std::string& message_sid) override {
        sqlite3_stmt* st = start(sent_);
        bind_text(st, 1, call_sid);
        bind_text(st, 2, message_sid);
        finish(st, "recording a sent message");
    }

    void record_retry(const std::string& call_sid, std::chrono::milliseconds delay, std::optional<int> error_code,
                      const std::string& error_text) override {
        sqlite3_stmt* st = start(retry_);
        bind_text(st, 1, call_sid);
        bind_text(st, 2, seconds_modifier(delay));
        if (error_code) sqlite3_bind_int(st, 3, *error_code);
        bind_text(st, 4, error_text);
        finish(st, "recording a retry");
    }

    void record_failed(const std::string& call_sid, std::optional<int> error_code, const std::string& error_text) override {
        sqlite3_stmt* st = start(failed_);
        bind_text(st, 1, call_sid);
        if (error_code) sqlite3_bind_int(st, 2, *error_code);
        bind_text(st, 3, error_text);
        finish(st, "recording a failed message");
    }

private:
    // Version 1: the tables as the single-instance service created them before versioning, so an
    // existing file passes through unchanged and is then migrated like any other.
    static constexpr std::array<std::string_view, 2> migration_1{
        "CREATE TABLE IF NOT EXISTS calls ("
        "  call_sid TEXT PRIMARY KEY, status TEXT NOT NULL, tenant TEXT,"
        "  active INTEGER, max INTEGER,"
        "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),"
        "  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
        "CREATE TABLE IF NOT EXISTS whatsapp_outbox ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL, number TEXT,"
        "  sent INTEGER NOT NULL DEFAULT 0,"
        "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
    };
    // Version 2 (SQLite adds one column per statement, and a column added to a table with rows
    // can only default to a constant).
    static constexpr std::array<std::string_view, 17> migration_2{
        "ALTER TABLE calls ADD COLUMN recording_url TEXT",
        "ALTER TABLE calls ADD COLUMN recording_duration INTEGER",
        "ALTER TABLE calls ADD COLUMN recording_sid TEXT",
        "DELETE FROM whatsapp_outbox WHERE id NOT IN (SELECT min(id) FROM whatsapp_outbox GROUP BY call_sid)",
        "ALTER TABLE whatsapp_outbox ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'",
        "ALTER TABLE whatsapp_outbox ADD COLUMN message_sid TEXT",
        "ALTER TABLE whatsapp_outbox ADD COLUMN error_code INTEGER",
        "ALTER TABLE whatsapp_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE whatsapp_outbox ADD COLUMN next_attempt_at TEXT",
        "ALTER TABLE whatsapp_outbox ADD COLUMN updated_at TEXT",
        "UPDATE whatsapp_outbox SET status = CASE WHEN sent <> 0 THEN 'sent' ELSE 'pending' END, updated_at = created_at",
        "ALTER TABLE whatsapp_outbox DROP COLUMN sent",
        "CREATE UNIQUE INDEX IF NOT EXISTS whatsapp_outbox_call_sid ON whatsapp_outbox (call_sid)",
        "CREATE INDEX IF NOT EXISTS whatsapp_outbox_status_next_attempt ON whatsapp_outbox (status, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS calls_status_created_at ON calls (status, created_at)",
        "CREATE INDEX IF NOT EXISTS calls_tenant_created_at ON calls (tenant, created_at)",
        "CREATE INDEX IF NOT EXISTS calls_created_at ON calls (created_at)",
    };
    static constexpr std::array<std::string_view, 2> migration_3{
        "ALTER TABLE calls ADD COLUMN recording_status TEXT",
        "ALTER TABLE whatsapp_outbox ADD COLUMN error_message TEXT",
    };

    /// The migration procedure's view of this database (see schema::migrate).
    struct migrator {
        sqlite_store& s;
        void lock() { s.exec("BEGIN IMMEDIATE"); } // the write lock: one migrator at a time
        void exec(std::string_view sql) { s.exec(std::string(sql)); }
        int query_int(std::string_view sql) { return s.query_int(std::string(sql)); }
        void commit() { s.exec("COMMIT"); }
        void rollback() noexcept { sqlite3_exec(s.db_.get(), "ROLLBACK", nullptr, nullptr, nullptr); }
        static std::string_view version_table_ddl() {
            return "CREATE TABLE IF NOT EXISTS callguard_schema_version ("
                   "  version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
                   "  applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))";
        }
        static std::span<const std::string_view> migration(int version) {
            if (version == 1) return migration_1;
            if (version == 2) return migration_2;
            if (version == 3) return migration_3;
            throw std::logic_error("sqlite_store: no statements for schema version " + std::to_string(version));
        }
    };

    static std::string upsert_sql() {
        return "INSERT INTO calls AS c (call_sid, status, tenant, active, max, created_at, updated_at, "
               "recording_url, recording_duration, recording_sid, recording_status) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (call_sid) DO UPDATE SET " +
               schema::calls_conflict_update("c") + ", created_at = min(c.created_at, excluded.created_at)";
    }
    // One outbox row per call: a retried webhook, or a batch written again, adds nothing.
    static constexpr const char* outbox_sql =
        "INSERT INTO whatsapp_outbox (call_sid, number, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) "
        "ON CONFLICT (call_sid) DO NOTHING";

    // The sender's statements. Times are the database's own (one clock for every sender on the
    // file), in the same text format as the rows' (so they compare as text).
#define CALLS_SQLITE_NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
    // One statement takes the rows and leases them: atomic against another connection.
    static constexpr const char* claim_sql =
        "UPDATE whatsapp_outbox SET attempts = attempts + 1, next_attempt_at = strftime('%Y-%m-%dT%H:%M:%fZ','now',?2), "
        "updated_at = " CALLS_SQLITE_NOW " WHERE id IN (SELECT id FROM whatsapp_outbox WHERE status = 'pending' AND "
        "(next_attempt_at IS NULL OR next_attempt_at <= " CALLS_SQLITE_NOW ") ORDER BY id LIMIT ?1) "
        "RETURNING call_sid, number, attempts";
    static constexpr const char* sent_sql =
        "UPDATE whatsapp_outbox SET status = 'sent', message_sid = ?2, error_code = NULL, error_message = NULL, "
        "next_attempt_at = NULL, updated_at = " CALLS_SQLITE_NOW " WHERE call_sid = ?1 AND status = 'pending'";
    static constexpr const char* retry_sql =
        "UPDATE whatsapp_outbox SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%fZ','now',?2), error_code = ?3, "
        "error_message = ?4, updated_at = " CALLS_SQLITE_NOW " WHERE call_sid = ?1 AND status = 'pending'";
    static constexpr const char* failed_sql =
        "UPDATE whatsapp_outbox SET status = 'failed', error_code = ?2, error_message = ?3, next_attempt_at = NULL, "
        "updated_at = " CALLS_SQLITE_NOW " WHERE call_sid = ?1 AND status = 'pending'";
#undef CALLS_SQLITE_NOW

    /// A date modifier: "+1.250 seconds".
    static std::string seconds_modifier(std::chrono::milliseconds d) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "%+.3f seconds", static_cast<double>(d.count()) / 1000.0);
        return buf;
    }

    static std::string column_text(sqlite3_stmt* st, int i) {
        const auto* v = sqlite3_column_text(st, i);
        return v ? reinterpret_cast<const char*>(v) : "";
    }


    struct db_close {
        void operator()(sqlite3* db) const noexcept { sqlite3_close(db); }
    };
    struct stmt_finalize {
        void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
    };
    using statement = std::unique_ptr<sqlite3_stmt, stmt_finalize>;

    static sqlite3_stmt* start(const statement& s) {
        sqlite3_reset(s.get());
        sqlite3_clear_bindings(s.get());
        return s.get();
    }

    void finish(sqlite3_stmt* st, const char* what) {
        const int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) throw std::runtime_error(error(what));
    }

    std::string error(const char* what) const {
        return std::string("SQLite ") + what + " failed: " + sqlite3_errmsg(db_.get());
    }

    void exec(const std::string& sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            std::string why = err ? err : sqlite3_errmsg(db_.get());
            sqlite3_free(err);
            throw std::runtime_error(why);
        }
    }

    int query_int(const std::string& sql) {
        auto st = prepare(sql.c_str());
        const int rc = sqlite3_step(st.get());
        if (rc == SQLITE_ROW) return sqlite3_column_int(st.get(), 0);
        if (rc == SQLITE_DONE) return 0;
        throw std::runtime_error(sqlite3_errmsg(db_.get()));
    }

    statement prepare(const char* sql) {
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(db_.get(), sql, -1, &st, nullptr) != SQLITE_OK)
            throw std::runtime_error(std::string("cannot prepare a call log statement: ") + sqlite3_errmsg(db_.get()));
        return statement(st);
    }

    /// Bad data, not a bad database: retrying the row would fail the same way.
    static bool refused_for_good(int rc) {
        switch (rc & 0xff) {
        case SQLITE_CONSTRAINT:
        case SQLITE_MISMATCH:
        case SQLITE_TOOBIG:
        case SQLITE_RANGE: return true;
        default: return false;
        }
    }

    static void bind_text(sqlite3_stmt* st, int i, const std::string& s) {
        sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
    static void bind_count(sqlite3_stmt* st, int i, const std::optional<std::int64_t>& v) {
        if (v) sqlite3_bind_int64(st, i, *v);
        else sqlite3_bind_null(st, i);
    }

    /// Binds and runs one row's statement; SQLITE_DONE when it was written.
    int step(const call_row& r) {
        sqlite3_stmt* st = r.what == call_row::kind::call_status ? upsert_.get() : outbox_.get();
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        const auto at = schema::format_time(r.at);
        bind_text(st, 1, r.call_sid);
        if (r.what == call_row::kind::call_status) {
            bind_text(st, 2, r.status);
            if (!r.tenant.empty()) bind_text(st, 3, r.tenant);
            bind_count(st, 4, r.active);
            bind_count(st, 5, r.max);
            bind_text(st, 6, at);
            if (!r.recording_url.empty()) bind_text(st, 7, r.recording_url);
            bind_count(st, 8, r.recording_duration);
            if (!r.recording_sid.empty()) bind_text(st, 9, r.recording_sid);
            if (!r.recording_status.empty()) bind_text(st, 10, r.recording_status);
        } else {
            bind_text(st, 2, r.number);
            bind_text(st, 3, at);
        }
        return sqlite3_step(st);
    }

    std::unique_ptr<sqlite3, db_close> db_;
    statement upsert_, outbox_, claim_, sent_, retry_, failed_;
    int found_version_ = 0;
};

} // namespace calls
