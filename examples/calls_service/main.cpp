// calls_service: Twilio webhooks and Media Streams guarded by callguard.
// REDIS_URL set: the cap is shared with every instance on that Redis; unset: in-memory.
// CALLS_DB_URL set: the call log is shared in PostgreSQL; unset: SQLite at CALLS_DB_PATH.
#include "server.hpp"
#include "sqlite_store.hpp"

#if CALLS_SERVICE_WITH_REDIS // set by CMake: callguard::redis exists (CALLGUARD_WITH_REDIS=ON)
#include <callguard/backends/redis.hpp>
#endif
#ifdef CALLS_SERVICE_WITH_POSTGRES
#include "postgres_store.hpp"
#endif

#include <fmt/core.h>

#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

/// Everything read from the environment at start.
struct settings {
    callguard::limiter_config limiter;
    callguard::twilio::twiml_options twiml;
    calls::service_config service;
};

/// Where the call log goes: how to open its store (on the writer thread) and what to print.
struct call_log_target {
    calls::call_log::store_factory make_store;
    std::string description;
};

void print_log_line(const std::string& msg) { fmt::print(stderr, "[SERVICE] call log: {}\n", msg); }

/// A store opened by the writer (again) after finding the tables missing or old says so.
template <class Store>
std::unique_ptr<calls::call_store> announced(std::unique_ptr<Store> store) {
    if (store->found_version() < calls::schema::latest_version)
        print_log_line(fmt::format("tables migrated from schema version {} to {}", store->found_version(),
                                   calls::schema::latest_version));
    return store;
}

#ifdef CALLS_SERVICE_WITH_POSTGRES
/// Connects once at start (bounded by connect_timeout) and creates or migrates the tables, so a
/// bad password, an unknown database or missing privileges stop the service with a clear error.
/// A server that does not answer is not a configuration error: the service starts, and the
/// writer keeps trying while rows wait in the queue.
void check_postgres_at_start(const calls::postgres_conninfo& info) {
    try {
        calls::postgres_store probe(info);
        print_log_line(fmt::format("PostgreSQL {} (schema version {}{})", info.masked(), calls::schema::latest_version,
                                   probe.found_version() < calls::schema::latest_version
                                       ? fmt::format(", migrated from {}", probe.found_version())
                                       : std::string()));
    } catch (const calls::postgres_error& e) {
        bool refused = false;
        if (e.where() == calls::postgres_error::stage::connect) {
            // The server answered but would not take us (password, database, role, pg_hba):
            // PQPING_OK means "up and accepting connections", whatever our credentials.
            const char* keys[] = {"connect_timeout", "dbname", nullptr};
            const auto timeout = std::to_string(info.connect_timeout().count());
            const char* values[] = {timeout.c_str(), info.text().c_str(), nullptr};
            refused = PQpingParams(keys, values, 1) == PQPING_OK;
        } else {
            refused = !calls::postgres_transient(e.sqlstate());
        }
        if (refused) throw callguard::config_error("CALLS_DB_URL", info.masked(), e.what());
        print_log_line(fmt::format("database unavailable at start ({}): {}; calls are served and rows wait in the "
                                   "queue until it answers",
                                   info.masked(), e.what()));
    }
}
#endif

/// PostgreSQL when CALLS_DB_URL is set (checked now), else SQLite at CALLS_DB_PATH.
call_log_target call_log_target_from(const calls::service_config& sc) {
    if (!sc.db_url.empty()) {
#ifdef CALLS_SERVICE_WITH_POSTGRES
        auto info = calls::postgres_conninfo::parse("CALLS_DB_URL", sc.db_url);
        check_postgres_at_start(info);
        auto desc = info.masked();
        return {[info = std::move(info)](std::stop_token stop) {
                    return announced(std::make_unique<calls::postgres_store>(info, std::move(stop)));
                },
                std::move(desc)};
#else
        throw callguard::config_error("CALLS_DB_URL", "(not shown)",
                                      "this build has no PostgreSQL call log (built without libpq)");
#endif
    }
    return {[path = sc.db_path](std::stop_token) { return announced(std::make_unique<calls::sqlite_store>(path)); },
            "sqlite:" + sc.db_path};
}

/// Call log rows for the limiter's decisions. The observer runs on the deciding thread, so it
/// only queues; the call log's own thread writes. (A call's end is logged by the status
/// callback, which knows it even for a call admitted without a slot.)
callguard::event_observer call_log_observer(calls::call_log& log) {
    return [&log](const callguard::capacity_event& e) {
        calls::call_row row;
        switch (e.kind) {
        case callguard::event_kind::acquired:
        case callguard::event_kind::admitted_fail_open: row.status = "admitted"; break;
        case callguard::event_kind::rejected: row.status = "rejected_capacity"; break;
        case callguard::event_kind::rejected_fail_closed: row.status = "rejected_unavailable"; break;
        default: return;
        }
        row.call_sid = std::string(e.call_id);
        row.tenant = std::string(e.tenant);
        row.active = e.active;
        row.max = e.max;
        log.push(std::move(row));
    };
}

void print_listening(std::uint16_t port, std::string_view backend, const settings& s, std::string_view db) {
    const auto& lc = s.limiter;
    const auto& sc = s.service;
    fmt::print(stderr,
               "[SERVICE] calls_service listening on http://{}:{} backend={} max_active_calls={} "
               "slot_ttl={}s behavior={} fail_mode={} log_level={} tenants={} signature_check={} "
               "public_base_url={} db={} db_queue_limit={} threads={}\n",
               sc.host, port, backend, lc.max_active_calls, lc.slot_ttl.count(),
               callguard::to_string(lc.behavior), callguard::to_string(lc.fail_mode),
               callguard::to_string(lc.log_level), lc.tenant_limits.size(),
               sc.auth_token.empty() ? "off" : "on",
               sc.public_base_url.empty() ? "(from Host header)" : sc.public_base_url, db, sc.db_queue_limit,
               sc.threads);
}

/// Graceful stop on SIGINT/SIGTERM: stop accepting, close the media sockets (their guards
/// release the slots, asynchronously), give that a moment, note the count, then stop the
/// io_context.
template <class Limiter>
class graceful_stop {
public:
    template <class Server>
    graceful_stop(calls::net::io_context& ioc, Server& srv, Limiter& limiter)
        : signals_(ioc, SIGINT, SIGTERM), grace_(ioc) {
        signals_.async_wait([this, &ioc, &srv, &limiter](const boost::system::error_code& ec, int sig) {
            if (ec) return;
            fmt::print(stderr, "[SERVICE] signal {}: stopping\n", sig);
            srv.stop();
            grace_.expires_after(std::chrono::milliseconds(500));
            grace_.async_wait([this, &ioc, &limiter](const boost::system::error_code&) {
                callguard::async_status(limiter, [this, &ioc](callguard::capacity_status st) {
                    final_active_ = st.active_calls;
                    ioc.stop();
                });
            });
        });
    }

    /// The count when the service stopped (after its own calls were released).
    std::int64_t final_active() const noexcept { return final_active_; }

private:
    calls::net::signal_set signals_;
    calls::net::steady_timer grace_;
    std::int64_t final_active_ = -1;
};

/// Runs `ioc` on `n` threads (this one included) until it stops.
void run_io(calls::net::io_context& ioc, unsigned n) {
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < n; ++i) threads.emplace_back([&] { ioc.run(); });
    ioc.run();
    for (auto& t : threads) t.join();
}

/// Serves until a signal stops it. The io_context is made first and destroyed last: the Redis
/// backend runs its I/O on it, so no I/O thread ever waits for Redis.
template <class Backend>
int serve(calls::net::io_context& ioc, Backend backend, std::string_view backend_desc, const settings& s,
          call_log_target target) {
    using limiter_type = callguard::capacity_limiter<Backend>;
    calls::call_log_options log_options;
    log_options.queue_limit = s.service.db_queue_limit;
    calls::call_log log(std::move(target.make_store), print_log_line, log_options);
    boost::asio::thread_pool blocking(2); // what must still block: never the I/O threads
    limiter_type limiter(std::move(backend), s.limiter, {callguard::stderr_sink(), call_log_observer(log)});
    calls::webhooks<limiter_type> hooks(limiter, s.service, s.twiml, log, blocking);

    auto srv = std::make_shared<calls::server<limiter_type>>(ioc, s.service, hooks, limiter);
    std::uint16_t port = 0;
    try {
        port = srv->start();
    } catch (const std::exception& e) {
        fmt::print(stderr, "[SERVICE] cannot listen on {}:{}: {}\n", s.service.host, s.service.port, e.what());
        return 1;
    }
    print_listening(port, backend_desc, s, target.description);
    std::int64_t final_active = -1;
    {
        graceful_stop<limiter_type> stop(ioc, *srv, limiter);
        run_io(ioc, s.service.threads);
        final_active = stop.final_active();
    }
    srv.reset();
    blocking.join();
    // Whatever was still in flight finishes (within the backend's timeouts) before the limiter
    // goes, so no release is lost and nothing is left queued on a dying io_context.
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(500));
    // The call log's destructor (last: it was made first) gives its writer 2 s to finish.
    fmt::print(stderr, "[SERVICE] stopped; active_calls={}\n", final_active);
    return 0;
}

int serve_from_env(const settings& s, const callguard::env_reader& env) {
    auto target = call_log_target_from(s.service);
    calls::net::io_context ioc(static_cast<int>(s.service.threads));
    if (auto url = env.text("REDIS_URL")) {
#if CALLS_SERVICE_WITH_REDIS
        auto ro = callguard::redis_options::from_env();
        auto desc = fmt::format("redis url={} prefix={{{}}} timeout={}ms", callguard::masked_url(*url),
                                ro.key_prefix, ro.command_timeout.count());
        return serve(ioc, callguard::redis_backend(ioc.get_executor(), std::move(ro)), desc, s, std::move(target));
#else
        fmt::print(stderr, "[SERVICE] configuration error: REDIS_URL is set, but this calls_service "
                           "was built without Redis (CALLGUARD_WITH_REDIS=OFF): unset REDIS_URL to "
                           "run on memory, or rebuild with hiredis\n");
        return 2;
#endif
    }
    return serve(ioc, callguard::memory_backend{}, "memory", s, std::move(target));
}

} // namespace

int main() {
    std::signal(SIGPIPE, SIG_IGN);
    const auto env = callguard::process_env();
    try {
        const settings s{callguard::limiter_config::from_env(env), callguard::twilio::twiml_options::from_env(env),
                         calls::service_config::from_env(env)};
        return serve_from_env(s, callguard::env_reader(env));
    } catch (const callguard::config_error& e) {
        fmt::print(stderr, "[SERVICE] configuration error: {}\n", e.what());
        return 2;
    }
}
