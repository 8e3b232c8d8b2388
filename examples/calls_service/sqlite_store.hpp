#pragma once

// The call log in SQLite (CALLS_DB_PATH): the embedded default for one instance.

#include "call_log.hpp"

#include <sqlite3.h>

#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace calls {

class sqlite_store final : public call_store {
public:
    /// Opens (or creates) the database and its tables; throws `std::runtime_error` if it cannot.
    explicit sqlite_store(const std::string& path) {
        sqlite3* db = nullptr;
        if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
            std::string why = db ? sqlite3_errmsg(db) : "out of memory";
            if (db) sqlite3_close(db);
            throw std::runtime_error("cannot open call log " + path + ": " + why);
        }
        db_.reset(db);
        sqlite3_busy_timeout(db, 2000);
        char* err = nullptr;
        if (sqlite3_exec(db, schema, nullptr, nullptr, &err) != SQLITE_OK) {
            std::string why = err ? err : "?";
            sqlite3_free(err);
            throw std::runtime_error("cannot create the call log tables: " + why);
        }
        upsert_ = prepare(upsert_sql);
        outbox_ = prepare(outbox_sql);
    }

    outcome write(std::span<const call_row> rows) override {
        sqlite3* db = db_.get();
        outcome out;
        sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
        for (const auto& r : rows) {
            if (step(r)) {
                ++out.written;
            } else {
                ++out.failed;
                out.error = std::string("call log row failed: ") + sqlite3_errmsg(db);
            }
        }
        if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
            out.error = std::string("call log write failed: ") + sqlite3_errmsg(db);
            sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
            return {0, rows.size(), out.error};
        }
        return out;
    }

private:
    static constexpr const char* schema =
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE IF NOT EXISTS calls ("
        "  call_sid TEXT PRIMARY KEY, status TEXT NOT NULL, tenant TEXT,"
        "  active INTEGER, max INTEGER,"
        "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),"
        "  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
        "CREATE TABLE IF NOT EXISTS whatsapp_outbox ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL, number TEXT,"
        "  sent INTEGER NOT NULL DEFAULT 0,"
        "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));";
    // The only change of an existing row is admitted -> completed: a retried webhook does not
    // reopen a call, and a rejected call's final status callback keeps it rejected.
    static constexpr const char* upsert_sql =
        "INSERT INTO calls (call_sid, status, tenant, active, max) VALUES (?1, ?2, ?3, ?4, ?5) "
        "ON CONFLICT(call_sid) DO UPDATE SET status = excluded.status, "
        "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
        "WHERE calls.status = 'admitted' AND excluded.status = 'completed'";
    static constexpr const char* outbox_sql = "INSERT INTO whatsapp_outbox (call_sid, number) VALUES (?1, ?2)";

    struct db_close {
        void operator()(sqlite3* db) const noexcept { sqlite3_close(db); }
    };
    struct stmt_finalize {
        void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
    };
    using statement = std::unique_ptr<sqlite3_stmt, stmt_finalize>;

    statement prepare(const char* sql) {
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(db_.get(), sql, -1, &st, nullptr) != SQLITE_OK)
            throw std::runtime_error(std::string("cannot prepare a call log statement: ") + sqlite3_errmsg(db_.get()));
        return statement(st);
    }

    static void bind_text(sqlite3_stmt* st, int i, const std::string& s) {
        sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }

    /// Binds and runs one row's statement; true when it was written.
    bool step(const call_row& r) {
        sqlite3_stmt* st = r.what == call_row::kind::call_status ? upsert_.get() : outbox_.get();
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        bind_text(st, 1, r.call_sid);
        if (r.what == call_row::kind::call_status) {
            bind_text(st, 2, r.status);
            if (!r.tenant.empty()) bind_text(st, 3, r.tenant);
            sqlite3_bind_int64(st, 4, r.active);
            sqlite3_bind_int64(st, 5, r.max);
        } else {
            bind_text(st, 2, r.number);
        }
        return sqlite3_step(st) == SQLITE_DONE;
    }

    std::unique_ptr<sqlite3, db_close> db_;
    statement upsert_, outbox_;
};

} // namespace calls
