#pragma once

// The call log: one SQLite row per call (admitted / rejected_capacity / completed) and a
// WhatsApp outbox. Written by one background thread from a bounded queue, so a slow, locked,
// full or broken database never blocks or fails a call: when the queue is full, rows are
// dropped and counted.

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace calls {

struct call_row {
    enum class kind { call_status, whatsapp_outbox } what = kind::call_status;
    std::string call_sid;
    std::string status; // admitted, rejected_capacity, completed (call_status rows)
    std::string tenant;
    std::string number; // the caller, for the WhatsApp outbox
    std::int64_t active = 0;
    std::int64_t max = 0;
};

class call_log {
public:
    static constexpr std::size_t queue_limit = 10000;

    /// Opens (or creates) the database in the background; errors go to `warn`, once each kind.
    call_log(std::string path, std::function<void(const std::string&)> warn)
        : path_(std::move(path)), warn_(std::move(warn)), writer_([this] { run(); }) {}

    call_log(const call_log&) = delete;
    call_log& operator=(const call_log&) = delete;

    ~call_log() {
        {
            std::lock_guard lk(mu_);
            stopping_ = true;
        }
        cv_.notify_one();
        writer_.join();
    }

    /// Never blocks on the database; drops (and counts) the row when the queue is full.
    void push(call_row row) noexcept {
        try {
            std::lock_guard lk(mu_);
            if (queue_.size() >= queue_limit) {
                dropped_.fetch_add(1);
                return;
            }
            queue_.push_back(std::move(row));
        } catch (...) {
            dropped_.fetch_add(1);
            return;
        }
        cv_.notify_one();
    }

    /// Blocks until everything queued so far is written (tests and shutdown).
    bool flush(std::chrono::milliseconds limit) {
        std::unique_lock lk(mu_);
        return idle_cv_.wait_for(lk, limit, [&] { return queue_.empty() && !writing_; });
    }

    std::uint64_t dropped() const noexcept { return dropped_.load(); }
    std::uint64_t failed() const noexcept { return failed_.load(); }
    std::uint64_t written() const noexcept { return written_.load(); }

private:
    void run() {
        sqlite3* db = open();
        std::vector<call_row> batch;
        while (true) {
            {
                std::unique_lock lk(mu_);
                writing_ = false;
                idle_cv_.notify_all();
                cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
                if (queue_.empty() && stopping_) break;
                while (!queue_.empty() && batch.size() < 512) {
                    batch.push_back(std::move(queue_.front()));
                    queue_.pop_front();
                }
                writing_ = true;
            }
            write(db, batch);
            batch.clear();
        }
        if (db) sqlite3_close(db);
    }

    sqlite3* open() {
        sqlite3* db = nullptr;
        if (sqlite3_open(path_.c_str(), &db) != SQLITE_OK) {
            warn_once("cannot open call log " + path_ + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
            if (db) sqlite3_close(db);
            return nullptr;
        }
        sqlite3_busy_timeout(db, 2000);
        const char* schema =
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
        char* err = nullptr;
        if (sqlite3_exec(db, schema, nullptr, nullptr, &err) != SQLITE_OK) {
            warn_once(std::string("cannot create the call log tables: ") + (err ? err : "?"));
            sqlite3_free(err);
        }
        return db;
    }

    void write(sqlite3* db, const std::vector<call_row>& rows) {
        if (!db) {
            failed_.fetch_add(rows.size());
            return;
        }
        // The only change of an existing row is admitted -> completed: a retried webhook does
        // not reopen a call, and a rejected call's final status callback keeps it rejected.
        static constexpr const char* upsert =
            "INSERT INTO calls (call_sid, status, tenant, active, max) VALUES (?1, ?2, ?3, ?4, ?5) "
            "ON CONFLICT(call_sid) DO UPDATE SET status = excluded.status, "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
            "WHERE calls.status = 'admitted' AND excluded.status = 'completed'";
        static constexpr const char* outbox = "INSERT INTO whatsapp_outbox (call_sid, number) VALUES (?1, ?2)";
        sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
        sqlite3_stmt *up = nullptr, *ob = nullptr;
        sqlite3_prepare_v2(db, upsert, -1, &up, nullptr);
        sqlite3_prepare_v2(db, outbox, -1, &ob, nullptr);
        std::size_t ok = 0;
        for (const auto& r : rows) {
            sqlite3_stmt* st = r.what == call_row::kind::call_status ? up : ob;
            if (!st) continue;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            sqlite3_bind_text(st, 1, r.call_sid.data(), static_cast<int>(r.call_sid.size()), SQLITE_TRANSIENT);
            if (st == up) {
                sqlite3_bind_text(st, 2, r.status.data(), static_cast<int>(r.status.size()), SQLITE_TRANSIENT);
                if (!r.tenant.empty())
                    sqlite3_bind_text(st, 3, r.tenant.data(), static_cast<int>(r.tenant.size()), SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, 4, r.active);
                sqlite3_bind_int64(st, 5, r.max);
            } else {
                sqlite3_bind_text(st, 2, r.number.data(), static_cast<int>(r.number.size()), SQLITE_TRANSIENT);
            }
            if (sqlite3_step(st) == SQLITE_DONE) ++ok;
        }
        sqlite3_finalize(up);
        sqlite3_finalize(ob);
        if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
            warn_once(std::string("call log write failed: ") + sqlite3_errmsg(db));
            failed_.fetch_add(rows.size());
            return;
        }
        written_.fetch_add(ok);
        if (ok < rows.size()) {
            failed_.fetch_add(rows.size() - ok);
            warn_once(std::string("call log row failed: ") + sqlite3_errmsg(db));
        }
    }

    void warn_once(const std::string& msg) {
        if (warned_.exchange(true)) return;
        if (warn_) warn_(msg);
    }

    std::string path_;
    std::function<void(const std::string&)> warn_;
    std::mutex mu_;
    std::condition_variable cv_, idle_cv_;
    std::deque<call_row> queue_;
    bool stopping_ = false, writing_ = true;
    std::atomic<bool> warned_{false};
    std::atomic<std::uint64_t> dropped_{0}, failed_{0}, written_{0};
    std::thread writer_; // last: starts after everything above exists
};

} // namespace calls
