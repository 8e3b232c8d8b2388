#pragma once

// The call log in PostgreSQL (CALLS_DB_URL): one log for every instance of the fleet, in the
// database the application already runs. Same tables and meaning as the SQLite store; a batch is
// one pipelined round trip and one transaction.

#include "call_log.hpp"
#include "call_log_schema.hpp"
#include "postgres_connection.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace calls {

class postgres_store final : public call_store {
public:
    /// Connects (within the string's connect_timeout) and brings the tables to the latest
    /// schema version. Throws `postgres_error`, its message free of passwords. Every later wait
    /// on the database is bounded by `io_timeout` and ends when `stop` is signalled.
    explicit postgres_store(const postgres_conninfo& info, std::stop_token stop = {},
                            std::chrono::milliseconds io_timeout = std::chrono::seconds(10))
        : conn_(info, std::move(stop), io_timeout) {
        migrator m{conn_};
        found_version_ = schema::migrate(m);
        conn_.prepare(upsert_name, upsert_sql());
        conn_.prepare(outbox_name, outbox_sql);
        conn_.prepare(claim_name, claim_sql);
        conn_.prepare(sent_name, sent_sql);
        conn_.prepare(retry_name, retry_sql);
        conn_.prepare(failed_name, failed_sql);
    }

    /// The schema version the database had when connected (0: new).
    int found_version() const noexcept { return found_version_; }

    outcome write(std::span<const call_row> rows) override {
        const auto values = texts(rows);
        std::vector<postgres_connection::call> calls;
        calls.reserve(rows.size());
        for (std::size_t i = 0; i < rows.size(); ++i) calls.push_back(call_for(rows[i], values[i]));
        try {
            auto results = conn_.pipeline(calls, true);
            const auto bad = std::find_if(results.begin(), results.end(), [](const auto& r) { return !r.ok && !r.aborted; });
            if (bad == results.end()) return {rows.size(), 0, {}};
            if (!postgres_bad_data(bad->sqlstate)) return {0, 0, bad->message};
            // A row the database will never take: write the others one transaction each.
            results = conn_.pipeline(calls, false);
            outcome out;
            for (const auto& r : results) {
                if (r.ok) {
                    ++out.written;
                } else if (postgres_bad_data(r.sqlstate)) {
                    ++out.failed;
                    out.error = r.message;
                } else {
                    out.error = r.message; // the database went away mid-way: the rest is retried
                    break;
                }
            }
            return out;
        } catch (const postgres_error& e) {
            return {0, 0, e.what()};
        }
    }

    std::vector<outbox_message> claim_due_messages(std::size_t limit, std::chrono::milliseconds lease) override {
        const auto limit_text = std::to_string(limit);
        const auto lease_text = std::to_string(lease.count());
        const std::array<const char*, 2> params{limit_text.c_str(), lease_text.c_str()};
        std::vector<outbox_message> out;
        for (auto& r : conn_.query_prepared(claim_name, params)) {
            outbox_message m;
            m.call_sid = r.at(0).value_or("");
            m.number = r.at(1).value_or("");
            m.attempts = std::stoi(r.at(2).value_or("0"));
            out.push_back(std::move(m));
        }
        return out;
    }

    void record_sent(const std::string& call_sid, const std::string& message_sid) override {
        const std::array<const char*, 2> params{call_sid.c_str(), message_sid.c_str()};
        conn_.query_prepared(sent_name, params);
    }

    void record_retry(const std::string& call_sid, std::chrono::milliseconds delay, std::optional<int> error_code,
                      const std::string& error) override {
        const auto delay_text = std::to_string(delay.count());
        const auto code_text = error_code ? std::to_string(*error_code) : std::string();
        const std::array<const char*, 4> params{call_sid.c_str(), delay_text.c_str(),
                                                error_code ? code_text.c_str() : nullptr, error.c_str()};
        conn_.query_prepared(retry_name, params);
    }

    void record_failed(const std::string& call_sid, std::optional<int> error_code, const std::string& error) override {
        const auto code_text = error_code ? std::to_string(*error_code) : std::string();
        const std::array<const char*, 3> params{call_sid.c_str(), error_code ? code_text.c_str() : nullptr,
                                                error.c_str()};
        conn_.query_prepared(failed_name, params);
    }

private:
    static constexpr const char* upsert_name = "callguard_calls_upsert";
    static constexpr const char* outbox_name = "callguard_outbox_insert";
    static constexpr const char* claim_name = "callguard_outbox_claim";
    static constexpr const char* sent_name = "callguard_outbox_sent";
    static constexpr const char* retry_name = "callguard_outbox_retry";
    static constexpr const char* failed_name = "callguard_outbox_failed";

    // Version 1: the tables of the single-instance log, so every database walks the same steps.
    static constexpr std::array<std::string_view, 2> migration_1{
        "CREATE TABLE IF NOT EXISTS calls ("
        "  call_sid text PRIMARY KEY, status text NOT NULL, tenant text, active bigint, max bigint,"
        "  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE IF NOT EXISTS whatsapp_outbox ("
        "  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, call_sid text NOT NULL, number text,"
        "  sent boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now())",
    };
    static constexpr std::array<std::string_view, 10> migration_2{
        "ALTER TABLE calls ADD COLUMN IF NOT EXISTS recording_url text,"
        "  ADD COLUMN IF NOT EXISTS recording_duration integer, ADD COLUMN IF NOT EXISTS recording_sid text",
        "DELETE FROM whatsapp_outbox a USING whatsapp_outbox b WHERE a.call_sid = b.call_sid AND a.id > b.id",
        "ALTER TABLE whatsapp_outbox ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'pending',"
        "  ADD COLUMN IF NOT EXISTS message_sid text, ADD COLUMN IF NOT EXISTS error_code integer,"
        "  ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,"
        "  ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz,"
        "  ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now()",
        "UPDATE whatsapp_outbox SET status = CASE WHEN sent THEN 'sent' ELSE 'pending' END, updated_at = created_at",
        "ALTER TABLE whatsapp_outbox DROP COLUMN sent",
        "CREATE UNIQUE INDEX IF NOT EXISTS whatsapp_outbox_call_sid ON whatsapp_outbox (call_sid)",
        "CREATE INDEX IF NOT EXISTS whatsapp_outbox_status_next_attempt ON whatsapp_outbox (status, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS calls_status_created_at ON calls (status, created_at)",
        "CREATE INDEX IF NOT EXISTS calls_tenant_created_at ON calls (tenant, created_at)",
        "CREATE INDEX IF NOT EXISTS calls_created_at ON calls (created_at)",
    };
    static constexpr std::array<std::string_view, 2> migration_3{
        "ALTER TABLE calls ADD COLUMN IF NOT EXISTS recording_status text",
        "ALTER TABLE whatsapp_outbox ADD COLUMN IF NOT EXISTS error_message text",
    };

    /// The migration procedure's view of this database (see schema::migrate).
    struct migrator {
        postgres_connection& c;
        // Instances starting together queue on an advisory lock held until the transaction
        // ends; the second finds the work done.
        void lock() { c.exec("BEGIN; SELECT pg_advisory_xact_lock(7165872379416834912)"); }
        void exec(std::string_view sql) { c.exec(sql); }
        int query_int(std::string_view sql) {
            auto v = c.query_value(sql);
            return v.empty() ? 0 : std::stoi(v);
        }
        void commit() { c.exec("COMMIT"); }
        void rollback() noexcept {
            try {
                c.exec("ROLLBACK");
            } catch (...) {
            }
        }
        static std::string_view version_table_ddl() {
            return "CREATE TABLE IF NOT EXISTS callguard_schema_version ("
                   "  version integer PRIMARY KEY, description text NOT NULL,"
                   "  applied_at timestamptz NOT NULL DEFAULT now())";
        }
        static std::span<const std::string_view> migration(int version) {
            if (version == 1) return migration_1;
            if (version == 2) return migration_2;
            if (version == 3) return migration_3;
            throw std::logic_error("postgres_store: no statements for schema version " + std::to_string(version));
        }
    };

    static std::string upsert_sql() {
        return "INSERT INTO calls AS c (call_sid, status, tenant, active, max, created_at, updated_at, "
               "recording_url, recording_duration, recording_sid, recording_status) "
               "VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10) ON CONFLICT (call_sid) DO UPDATE SET " +
               schema::calls_conflict_update("c") + ", created_at = LEAST(c.created_at, excluded.created_at)";
    }
    // One outbox row per call: a retried webhook, or a batch written again, adds nothing.
    static constexpr const char* outbox_sql =
        "INSERT INTO whatsapp_outbox (call_sid, number, created_at, updated_at) VALUES ($1, $2, $3, $3) "
        "ON CONFLICT (call_sid) DO NOTHING";

    // The sender's statements, on the database's clock (one clock for the whole fleet). Rows
    // another sender has locked are skipped, and the lease written in the same statement keeps
    // them skipped after it commits.
    static constexpr const char* claim_sql =
        "UPDATE whatsapp_outbox o SET attempts = o.attempts + 1, "
        "next_attempt_at = now() + $2::bigint * interval '1 millisecond', updated_at = now() "
        "FROM (SELECT id FROM whatsapp_outbox WHERE status = 'pending' AND "
        "(next_attempt_at IS NULL OR next_attempt_at <= now()) ORDER BY id LIMIT $1::bigint "
        "FOR UPDATE SKIP LOCKED) due WHERE o.id = due.id RETURNING o.call_sid, o.number, o.attempts";
    static constexpr const char* sent_sql =
        "UPDATE whatsapp_outbox SET status = 'sent', message_sid = $2, error_code = NULL, error_message = NULL, "
        "next_attempt_at = NULL, updated_at = now() WHERE call_sid = $1 AND status = 'pending'";
    static constexpr const char* retry_sql =
        "UPDATE whatsapp_outbox SET next_attempt_at = now() + $2::bigint * interval '1 millisecond', "
        "error_code = $3::integer, error_message = $4, updated_at = now() WHERE call_sid = $1 AND status = 'pending'";
    static constexpr const char* failed_sql =
        "UPDATE whatsapp_outbox SET status = 'failed', error_code = $2::integer, error_message = $3, "
        "next_attempt_at = NULL, updated_at = now() WHERE call_sid = $1 AND status = 'pending'";

    /// A row's parameters as text (libpq's text format; the pointers below point into these).
    struct row_texts {
        std::string at;
        std::optional<std::string> active, max, recording_duration;
    };

    static std::vector<row_texts> texts(std::span<const call_row> rows) {
        std::vector<row_texts> out;
        out.reserve(rows.size());
        for (const auto& r : rows) {
            row_texts t;
            t.at = schema::format_time(r.at);
            if (r.active) t.active = std::to_string(*r.active);
            if (r.max) t.max = std::to_string(*r.max);
            if (r.recording_duration) t.recording_duration = std::to_string(*r.recording_duration);
            out.push_back(std::move(t));
        }
        return out;
    }

    static postgres_connection::call call_for(const call_row& r, const row_texts& t) {
        if (r.what == call_row::kind::whatsapp_outbox)
            return {outbox_name, {r.call_sid.c_str(), r.number.c_str(), t.at.c_str()}};
        auto text_or_null = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
        return {upsert_name,
                {r.call_sid.c_str(), r.status.c_str(), text_or_null(r.tenant), t.active ? t.active->c_str() : nullptr,
                 t.max ? t.max->c_str() : nullptr, t.at.c_str(), text_or_null(r.recording_url),
                 t.recording_duration ? t.recording_duration->c_str() : nullptr, text_or_null(r.recording_sid),
                 text_or_null(r.recording_status)}};
    }

    postgres_connection conn_;
    int found_version_ = 0;
};

} // namespace calls
