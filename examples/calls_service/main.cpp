// calls_service: Twilio webhooks and Media Streams guarded by callguard.
// REDIS_URL set: the cap is shared with every instance on that Redis; unset: in-memory.
#include "server.hpp"
#include "sqlite_store.hpp"

#if CALLS_SERVICE_WITH_REDIS // set by CMake: callguard::redis exists (CALLGUARD_WITH_REDIS=ON)
#include <callguard/backends/redis.hpp>
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

void print_listening(std::uint16_t port, std::string_view backend, const settings& s) {
    const auto& lc = s.limiter;
    const auto& sc = s.service;
    fmt::print(stderr,
               "[SERVICE] calls_service listening on http://{}:{} backend={} max_active_calls={} "
               "slot_ttl={}s behavior={} fail_mode={} log_level={} tenants={} signature_check={} "
               "public_base_url={} db={} threads={}\n",
               sc.host, port, backend, lc.max_active_calls, lc.slot_ttl.count(),
               callguard::to_string(lc.behavior), callguard::to_string(lc.fail_mode),
               callguard::to_string(lc.log_level), lc.tenant_limits.size(),
               sc.auth_token.empty() ? "off" : "on",
               sc.public_base_url.empty() ? "(from Host header)" : sc.public_base_url, sc.db_path, sc.threads);
}

/// Graceful stop on SIGINT/SIGTERM: stop accepting, close the media sockets (their guards
/// release the slots), give the close handshakes a moment, then stop the io_context.
class graceful_stop {
public:
    template <class Server>
    graceful_stop(calls::net::io_context& ioc, Server& srv) : signals_(ioc, SIGINT, SIGTERM), grace_(ioc) {
        signals_.async_wait([this, &ioc, &srv](const boost::system::error_code& ec, int sig) {
            if (ec) return;
            fmt::print(stderr, "[SERVICE] signal {}: stopping\n", sig);
            srv.stop();
            grace_.expires_after(std::chrono::milliseconds(500));
            grace_.async_wait([&ioc](const boost::system::error_code&) { ioc.stop(); });
        });
    }

private:
    calls::net::signal_set signals_;
    calls::net::steady_timer grace_;
};

/// Runs `ioc` on `n` threads (this one included) until it stops.
void run_io(calls::net::io_context& ioc, unsigned n) {
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < n; ++i) threads.emplace_back([&] { ioc.run(); });
    ioc.run();
    for (auto& t : threads) t.join();
}

template <class Backend>
int serve(Backend backend, std::string_view backend_desc, const settings& s) {
    using limiter_type = callguard::capacity_limiter<Backend>;
    calls::call_log log([path = s.service.db_path] { return std::make_unique<calls::sqlite_store>(path); },
                        [](const std::string& msg) { fmt::print(stderr, "[SERVICE] call log: {}\n", msg); });
    limiter_type limiter(std::move(backend), s.limiter, {callguard::stderr_sink(), call_log_observer(log)});
    calls::webhooks<limiter_type> hooks(limiter, s.service, s.twiml, log);

    calls::net::io_context ioc(static_cast<int>(s.service.threads));
    auto srv = std::make_shared<calls::server<limiter_type>>(ioc, s.service, hooks, limiter);
    std::uint16_t port = 0;
    try {
        port = srv->start();
    } catch (const std::exception& e) {
        fmt::print(stderr, "[SERVICE] cannot listen on {}:{}: {}\n", s.service.host, s.service.port, e.what());
        return 1;
    }
    print_listening(port, backend_desc, s);
    {
        graceful_stop stop(ioc, *srv);
        run_io(ioc, s.service.threads);
    }
    srv.reset(); // handlers still queued die with the io_context, and with them any guard
    log.flush(std::chrono::seconds(2));
    fmt::print(stderr, "[SERVICE] stopped; active_calls={}\n", limiter.status().active_calls);
    return 0;
}

int serve_from_env(const settings& s, const callguard::env_reader& env) {
    if (auto url = env.text("REDIS_URL")) {
#if CALLS_SERVICE_WITH_REDIS
        auto ro = callguard::redis_options::from_env();
        auto desc = fmt::format("redis url={} prefix={{{}}} timeout={}ms", callguard::masked_url(*url),
                                ro.key_prefix, ro.command_timeout.count());
        return serve(callguard::redis_backend(std::move(ro)), desc, s);
#else
        fmt::print(stderr, "[SERVICE] configuration error: REDIS_URL is set, but this calls_service "
                           "was built without Redis (CALLGUARD_WITH_REDIS=OFF): unset REDIS_URL to "
                           "run on memory, or rebuild with hiredis\n");
        return 2;
#endif
    }
    return serve(callguard::memory_backend{}, "memory", s);
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
