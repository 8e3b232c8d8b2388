// calls_service: Twilio webhooks and Media Streams guarded by callguard.
// REDIS_URL set: the cap is shared with every instance on that Redis; unset: in-memory.
#include "server.hpp"

#if CALLS_SERVICE_WITH_REDIS // set by CMake: callguard::redis exists (CALLGUARD_WITH_REDIS=ON)
#include <callguard/backends/redis.hpp>
#endif

#include <fmt/core.h>

#include <csignal>
#include <thread>

namespace {

/// Call log rows from the limiter's events (the observer runs on the deciding thread: it only
/// queues; the call log's own thread writes).
callguard::event_observer log_observer(calls::call_log& log) {
    return [&log](const callguard::capacity_event& e) {
        calls::call_row row;
        row.call_sid = std::string(e.call_id);
        row.tenant = std::string(e.tenant);
        row.active = e.active;
        row.max = e.max;
        switch (e.kind) {
        case callguard::event_kind::acquired:
        case callguard::event_kind::admitted_fail_open: row.status = "admitted"; break;
        case callguard::event_kind::rejected: row.status = "rejected_capacity"; break;
        case callguard::event_kind::rejected_fail_closed: row.status = "rejected_unavailable"; break;
        case callguard::event_kind::released: row.status = "completed"; break;
        default: return;
        }
        log.push(std::move(row));
    };
}

template <class Backend>
int serve(Backend backend, std::string backend_desc, const callguard::limiter_config& lc,
          const callguard::twilio::twiml_options& twiml, const calls::service_config& sc) {
    calls::call_log log(sc.db_path, [](const std::string& msg) {
        fmt::print(stderr, "[SERVICE] call log: {}\n", msg);
    });
    callguard::capacity_limiter<Backend> limiter(std::move(backend), lc,
                                                 {callguard::stderr_sink(), log_observer(log)});
    calls::webhooks<callguard::capacity_limiter<Backend>> hooks(limiter, sc, twiml, log);

    calls::net::io_context ioc(static_cast<int>(sc.threads));
    auto srv = std::make_shared<calls::server<callguard::capacity_limiter<Backend>>>(ioc, sc, hooks, limiter);
    std::uint16_t port = 0;
    try {
        port = srv->start();
    } catch (const std::exception& e) {
        fmt::print(stderr, "[SERVICE] cannot listen on {}:{}: {}\n", sc.host, sc.port, e.what());
        return 1;
    }
    fmt::print(stderr,
               "[SERVICE] calls_service listening on http://{}:{} backend={} max_active_calls={} "
               "slot_ttl={}s behavior={} fail_mode={} log_level={} tenants={} signature_check={} "
               "public_base_url={} db={} threads={}\n",
               sc.host, port, backend_desc, lc.max_active_calls, lc.slot_ttl.count(),
               callguard::to_string(lc.behavior), callguard::to_string(lc.fail_mode),
               callguard::to_string(lc.log_level), lc.tenant_limits.size(),
               sc.auth_token.empty() ? "off" : "on",
               sc.public_base_url.empty() ? "(from Host header)" : sc.public_base_url, sc.db_path, sc.threads);

    // Graceful stop: stop accepting, close the media sockets (their guards release the slots),
    // give the close handshakes a moment, then stop.
    calls::net::signal_set signals(ioc, SIGINT, SIGTERM);
    calls::net::steady_timer grace(ioc);
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        fmt::print(stderr, "[SERVICE] signal {}: stopping\n", sig);
        srv->stop();
        grace.expires_after(std::chrono::milliseconds(500));
        grace.async_wait([&](const boost::system::error_code&) { ioc.stop(); });
    });

    std::vector<std::thread> threads;
    for (unsigned i = 1; i < sc.threads; ++i) threads.emplace_back([&] { ioc.run(); });
    ioc.run();
    for (auto& t : threads) t.join();
    srv.reset();
    // Handlers still queued die with the io_context, and with them any remaining guard.
    log.flush(std::chrono::seconds(2));
    fmt::print(stderr, "[SERVICE] stopped; active_calls={}\n", limiter.status().active_calls);
    return 0;
}

} // namespace

int main() {
    std::signal(SIGPIPE, SIG_IGN);
    const auto env = callguard::process_env();
    try {
        const auto lc = callguard::limiter_config::from_env();
        const auto twiml = callguard::twilio::twiml_options::from_env();
        const auto sc = calls::service_config::from_env(env);
        if (auto url = env("REDIS_URL"); url && !callguard::detail::trim(*url).empty()) {
#if CALLS_SERVICE_WITH_REDIS
            auto ro = callguard::redis_options::from_env();
            auto desc = fmt::format("redis url={} prefix={{{}}} timeout={}ms",
                                    callguard::detail::mask_url_password(*url), ro.key_prefix,
                                    ro.command_timeout.count());
            return serve(callguard::redis_backend(std::move(ro)), desc, lc, twiml, sc);
#else
            fmt::print(stderr, "[SERVICE] configuration error: REDIS_URL is set, but this calls_service "
                               "was built without Redis (CALLGUARD_WITH_REDIS=OFF): unset REDIS_URL to "
                               "run on memory, or rebuild with hiredis\n");
            return 2;
#endif
        }
        return serve(callguard::memory_backend{}, "memory", lc, twiml, sc);
    } catch (const callguard::config_error& e) {
        fmt::print(stderr, "[SERVICE] configuration error: {}\n", e.what());
        return 2;
    }
}
