#pragma once

// One libpq connection whose every wait is bounded: non-blocking sockets polled against a
// deadline and a stop token, so a database that is down, frozen or unreachable costs the call
// log's writer a timeout, never a hang (libpq's blocking calls have no timeout once connected).

#include "postgres_conninfo.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace calls {

/// A failure of the connection or of a statement; the message is scrubbed of passwords.
class postgres_error : public std::runtime_error {
public:
    enum class stage { connect, statement };
    postgres_error(stage where, std::string sqlstate, const std::string& message)
        : std::runtime_error(message), stage_(where), sqlstate_(std::move(sqlstate)) {}

    stage where() const noexcept { return stage_; }
    /// The server's SQLSTATE; empty when the connection itself failed (or timed out).
    const std::string& sqlstate() const noexcept { return sqlstate_; }

private:
    stage stage_;
    std::string sqlstate_;
};

/// Bad data, not a bad database: the row would fail the same way on any retry
/// (22 data exception, 23 integrity constraint violation, 54 program limit exceeded).
inline bool postgres_bad_data(std::string_view sqlstate) {
    return sqlstate.starts_with("22") || sqlstate.starts_with("23") || sqlstate.starts_with("54");
}

/// The database is down, busy, restarting or lost its tables: worth retrying later
/// (08 connection, 40 rollback, 53 resources, 55 object state, 57 operator intervention,
/// 58 system, XX internal, 25 transaction state, 42P01/42703/3F000 tables or schema gone).
inline bool postgres_transient(std::string_view sqlstate) {
    if (sqlstate.empty()) return true;
    for (auto cls : {"08", "40", "53", "55", "57", "58", "XX", "25"})
        if (sqlstate.starts_with(cls)) return true;
    return sqlstate == "42P01" || sqlstate == "42703" || sqlstate == "3F000";
}

class postgres_connection {
public:
    /// One statement of a pipeline: a prepared statement's name and its text parameters
    /// (nullptr: SQL NULL).
    struct call {
        const char* statement;
        std::vector<const char*> params;
    };
    /// What became of one statement of a pipeline.
    struct result {
        bool ok = false;
        bool aborted = false; ///< skipped: an earlier statement of its transaction failed
        std::string sqlstate, message;
    };

    /// Connects within `info.connect_timeout()`; throws `postgres_error` (stage connect).
    postgres_connection(const postgres_conninfo& info, std::stop_token stop, std::chrono::milliseconds io_timeout)
        : info_(info), stop_(std::move(stop)), io_timeout_(io_timeout) {
        // Before "dbname" so that the string's own values win (libpq: later keywords override).
        const char* keys[] = {"connect_timeout", "fallback_application_name", "dbname", nullptr};
        const auto timeout = std::to_string(info.connect_timeout().count());
        const char* values[] = {timeout.c_str(), "calls_service", info.text().c_str(), nullptr};
        conn_.reset(PQconnectStartParams(keys, values, 1));
        if (!conn_) throw std::bad_alloc();
        deadline_ = clock::now() + info.connect_timeout();
        if (PQstatus(conn_.get()) == CONNECTION_BAD) fail(postgres_error::stage::connect, "cannot connect");
        for (auto st = PGRES_POLLING_WRITING; st != PGRES_POLLING_OK; st = PQconnectPoll(conn_.get())) {
            if (st == PGRES_POLLING_FAILED) fail(postgres_error::stage::connect, "cannot connect");
            wait_socket(st == PGRES_POLLING_READING ? POLLIN : POLLOUT, postgres_error::stage::connect);
        }
        if (PQsetnonblocking(conn_.get(), 1) != 0) fail(postgres_error::stage::connect, "cannot connect");
        // Notices ("relation already exists, skipping" from idempotent DDL) are not ours to print.
        PQsetNoticeProcessor(conn_.get(), [](void*, const char*) {}, nullptr);
    }

    /// Runs SQL text (several statements allowed); throws on the first error.
    void exec(std::string_view sql) {
        start_operation();
        if (!PQsendQuery(conn_.get(), std::string(sql).c_str())) fail(postgres_error::stage::statement, "send failed");
        drain_results(nullptr);
    }

    /// The first column of the first row of a query (empty for none or NULL).
    std::string query_value(std::string_view sql) {
        start_operation();
        if (!PQsendQuery(conn_.get(), std::string(sql).c_str())) fail(postgres_error::stage::statement, "send failed");
        std::string value;
        drain_results(&value);
        return value;
    }

    /// One row of a query's result, as text (nullopt: SQL NULL).
    using row = std::vector<std::optional<std::string>>;

    /// Runs a prepared statement with text parameters (nullptr: SQL NULL), outside any pipeline,
    /// and returns its rows; throws `postgres_error` on an error.
    std::vector<row> query_prepared(const char* statement, std::span<const char* const> params) {
        start_operation();
        if (!PQsendQueryPrepared(conn_.get(), statement, static_cast<int>(params.size()), params.data(), nullptr,
                                 nullptr, 0))
            fail(postgres_error::stage::statement, "send failed");
        std::vector<row> rows;
        drain_results(nullptr, &rows);
        return rows;
    }

    void prepare(const char* name, std::string_view sql) {
        start_operation();
        if (!PQsendPrepare(conn_.get(), name, std::string(sql).c_str(), 0, nullptr))
            fail(postgres_error::stage::statement, "send failed");
        drain_results(nullptr);
    }

    /// Sends every call in one round trip (libpq pipeline mode). With `one_transaction`, they
    /// run as one transaction (one sync point: an error rolls back all of them); otherwise each
    /// is its own. Throws `postgres_error` when the connection fails or times out.
    std::vector<result> pipeline(std::span<const call> calls, bool one_transaction) {
        start_operation();
        PGconn* c = conn_.get();
        if (!PQenterPipelineMode(c)) fail(postgres_error::stage::statement, "cannot enter pipeline mode");
        for (const auto& k : calls) {
            if (!PQsendQueryPrepared(c, k.statement, static_cast<int>(k.params.size()), k.params.data(), nullptr,
                                     nullptr, 0))
                fail(postgres_error::stage::statement, "send failed");
            if (!one_transaction && !PQpipelineSync(c)) fail(postgres_error::stage::statement, "send failed");
        }
        if (one_transaction && !PQpipelineSync(c)) fail(postgres_error::stage::statement, "send failed");
        std::vector<result> out(calls.size());
        for (auto& r : out) {
            result_ptr res(next_result());
            if (!res) fail(postgres_error::stage::statement, "a statement's result is missing");
            switch (PQresultStatus(res.get())) {
            case PGRES_COMMAND_OK:
            case PGRES_TUPLES_OK: r.ok = true; break;
            case PGRES_PIPELINE_ABORTED: r.aborted = true; break;
            default:
                r.sqlstate = field(res.get(), PG_DIAG_SQLSTATE);
                r.message = info_.scrub(PQresultErrorMessage(res.get()));
            }
            if (result_ptr extra{next_result()}) fail(postgres_error::stage::statement, "unexpected extra result");
            if (!one_transaction) expect_sync();
        }
        if (one_transaction) expect_sync();
        if (!PQexitPipelineMode(c)) fail(postgres_error::stage::statement, "cannot leave pipeline mode");
        return out;
    }

private:
    using clock = std::chrono::steady_clock;
    struct conn_close {
        void operator()(PGconn* c) const noexcept { PQfinish(c); }
    };
    struct result_clear {
        void operator()(PGresult* r) const noexcept { PQclear(r); }
    };
    using result_ptr = std::unique_ptr<PGresult, result_clear>;

    static std::string field(const PGresult* r, int code) {
        const char* v = PQresultErrorField(r, code);
        return v ? v : "";
    }

    void start_operation() { deadline_ = clock::now() + io_timeout_; }

    [[noreturn]] void fail(postgres_error::stage where, std::string_view what, std::string sqlstate = {}) const {
        std::string detail = conn_ ? PQerrorMessage(conn_.get()) : "";
        std::string msg(what);
        if (!detail.empty()) msg += ": " + info_.scrub(detail);
        throw postgres_error(where, std::move(sqlstate), msg);
    }

    /// Polls the socket (in short slices, watching the stop token) until `events` or the deadline.
    void wait_socket(short events, postgres_error::stage where) const {
        const int fd = PQsocket(conn_.get());
        if (fd < 0) fail(where, "connection lost");
        for (;;) {
            if (stop_.stop_requested()) throw postgres_error(where, {}, "stopped: the service is shutting down");
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock::now());
            if (left.count() <= 0)
                throw postgres_error(where, {},
                                     where == postgres_error::stage::connect
                                         ? "no connection within " + std::to_string(info_.connect_timeout().count()) + " s"
                                         : "no answer within " + std::to_string(io_timeout_.count()) + " ms");
            pollfd p{fd, events, 0};
            const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 100)));
            if (n > 0) return;
            if (n < 0 && errno != EINTR) fail(where, "poll failed");
        }
    }

    /// The next result, waiting (bounded) until libpq has one or the end of a statement's results.
    PGresult* next_result() {
        PGconn* c = conn_.get();
        for (;;) {
            const int f = PQflush(c);
            if (f < 0) fail(postgres_error::stage::statement, "send failed");
            if (!PQisBusy(c)) return PQgetResult(c);
            wait_socket(static_cast<short>(POLLIN | (f == 1 ? POLLOUT : 0)), postgres_error::stage::statement);
            if (!PQconsumeInput(c)) fail(postgres_error::stage::statement, "connection lost");
        }
    }

    void expect_sync() {
        result_ptr sync(next_result());
        if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC)
            fail(postgres_error::stage::statement, "pipeline out of step");
    }

    /// Reads every result of a query; the first error is thrown after all are read.
    void drain_results(std::string* first_value, std::vector<row>* rows = nullptr) {
        std::string sqlstate, message;
        while (result_ptr r{next_result()}) {
            const auto st = PQresultStatus(r.get());
            if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
                if (message.empty()) {
                    sqlstate = field(r.get(), PG_DIAG_SQLSTATE);
                    message = info_.scrub(PQresultErrorMessage(r.get()));
                }
            } else if (first_value && st == PGRES_TUPLES_OK && first_value->empty() && PQntuples(r.get()) > 0 &&
                       !PQgetisnull(r.get(), 0, 0)) {
                *first_value = PQgetvalue(r.get(), 0, 0);
            } else if (rows && st == PGRES_TUPLES_OK) {
                for (int i = 0; i < PQntuples(r.get()); ++i) {
                    row out;
                    for (int j = 0; j < PQnfields(r.get()); ++j) {
                        if (PQgetisnull(r.get(), i, j)) out.emplace_back();
                        else out.emplace_back(PQgetvalue(r.get(), i, j));
                    }
                    rows->push_back(std::move(out));
                }
            }
        }
        if (!message.empty()) throw postgres_error(postgres_error::stage::statement, sqlstate, message);
        if (PQstatus(conn_.get()) != CONNECTION_OK) fail(postgres_error::stage::statement, "connection lost");
    }

    const postgres_conninfo info_;
    std::stop_token stop_;
    std::chrono::milliseconds io_timeout_;
    clock::time_point deadline_{};
    std::unique_ptr<PGconn, conn_close> conn_;
};

} // namespace calls
