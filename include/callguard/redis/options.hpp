#pragma once

// Where the Redis backend connects and how patiently: a plain struct of std::chrono durations,
// filled by hand, from a URL, or from the environment.

#include "../env.hpp"
#include "../errors.hpp"
#include "../detail/text.hpp"
#include "detail/url_mask.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace callguard {

/// How concurrent callers share connections to Redis.
enum class redis_connection_mode {
    /// Callers' commands share a few sockets and travel together: each round trip carries
    /// every caller waiting at that moment (pipelining). The default: fewer round trips and
    /// system calls per operation, and no pool to run out of.
    multiplexed,
    /// One connection per concurrent caller, up to `pool_size`; a caller waits for a free one.
    pooled,
};

/// What kind of deployment the URL names.
enum class redis_topology {
    standalone, ///< one server (`redis://`, `unix://`)
    sentinel,   ///< a master found through Sentinel (`redis+sentinel://`), followed across failovers
    cluster,    ///< Redis Cluster (`redis+cluster://`): the node owning the limiter's hash slot
};

/// A `host:port` of a sentinel or a cluster node.
struct redis_endpoint {
    std::string host;
    int port = 0;
    friend bool operator==(const redis_endpoint&, const redis_endpoint&) = default;
};

/// TLS to Redis (`rediss://`, `rediss+sentinel://`, `rediss+cluster://`): managed services such as
/// Upstash, Azure Cache for Redis, ElastiCache serverless and Heroku Redis accept nothing else.
struct redis_tls_options {
    bool enabled = false;    ///< set by the `rediss` schemes
    std::string ca_file;     ///< PEM bundle to trust instead of the system store
    std::string cert_file;   ///< client certificate (PEM), for servers with `tls-auth-clients yes`
    std::string key_file;    ///< its private key (PEM); needed with `cert_file`
    /// Name to verify in the server's certificate and to send as SNI; empty: the host connected
    /// to (an IP address is then checked against the certificate's IP addresses, and no SNI goes).
    std::string server_name;
    /// false skips certificate verification (self-signed providers): the connection is encrypted
    /// but the server is not authenticated. The backend warns at construction.
    bool verify = true;
};

struct redis_options {
    redis_topology topology = redis_topology::standalone;
    /// Sentinel: the sentinels; cluster: nodes to start from (any of them will do).
    std::vector<redis_endpoint> seeds;
    std::string sentinel_master;   ///< sentinel: the monitored master's name
    std::string sentinel_password; ///< sentinel: AUTH for the sentinels themselves; empty: none
    std::string host = "127.0.0.1";
    int port = 6379;
    std::string unix_socket; ///< when set, used instead of host/port
    int db = 0;
    std::string user;     ///< ACL user (Redis 6+); empty: the default user
    std::string password; ///< empty: no AUTH
    std::chrono::milliseconds connect_timeout{250};
    std::chrono::milliseconds command_timeout{250};
    redis_connection_mode connection_mode = redis_connection_mode::multiplexed;
    /// Multiplexed mode: sockets shared by all callers (each caller thread keeps to one).
    std::size_t multiplexed_connections = 1;
    std::size_t pool_size = 4; ///< pooled mode: connections kept for concurrent callers
    std::string key_prefix = "calls"; ///< keys are `{prefix}:...`: one hash tag, one cluster slot
    /// While Redis is unreachable, at most one call per interval tries the network (the probe);
    /// every other call is decided at once by the limiter's fail mode.
    std::chrono::milliseconds probe_interval{1000};
    /// Releases that failed while Redis was unreachable, kept and replayed when it answers again.
    std::size_t max_pending_releases = 10000;
    /// How long a released call id is remembered at least (at most twice that,
    /// `{prefix}:released:*`), so that a late reinstatement (another instance putting back a call
    /// it admitted during an outage) does not bring back a call that ended; 0 remembers nothing.
    /// It needs to cover the time instances take to put their calls back after an outage, not the
    /// outage itself (a release that fails during the outage is replayed when Redis answers, and
    /// remembered from then on).
    std::chrono::milliseconds release_memory{std::chrono::minutes(10)};
    /// Receives operational warnings (an eviction policy that can drop our keys, a dropped
    /// queued release). Default: one line on stderr.
    std::function<void(std::string_view)> on_warning;
    redis_tls_options tls; ///< off unless the URL's scheme is `rediss...` or `enabled` is set

    /// Percent-decoded URLs, one per topology (`rediss` instead of `redis` turns TLS on):
    ///   `redis://[user:pass@]host[:port][/db]`, `unix:///path.sock[?db=N]`
    ///   `redis+sentinel://[user:pass@]host:port[,host:port...]/master_name[/db][?sentinel_password=P]`
    ///   `redis+cluster://[user:pass@]host:port[,host:port...]`
    /// (user:pass authenticate to the data nodes; sentinels default to port 26379, cluster nodes
    /// and servers to 6379). Throws `config_error` (variable `url`, passwords masked) naming the
    /// part that is wrong.
    static redis_options from_url(std::string_view url);

    /// REDIS_URL (required), CALLS_REDIS_KEY_PREFIX, CALLS_REDIS_TIMEOUT_MS (connect and command),
    /// CALLS_REDIS_CONNECTION_MODE (`multiplexed` or `pooled`), and for TLS
    /// CALLS_REDIS_TLS_CA_FILE, CALLS_REDIS_TLS_CERT_FILE, CALLS_REDIS_TLS_KEY_FILE,
    /// CALLS_REDIS_TLS_SERVER_NAME, CALLS_REDIS_TLS_VERIFY (`1` default). Errors name the
    /// variable; unreadable or malformed certificate files are found here already.
    static redis_options from_env(const env_lookup& lookup);
    static redis_options from_env() { return from_env(process_env()); }

    /// Throws `config_error` naming the field for values no connection could use.
    void validate() const;
};

/// `url` with its passwords replaced by `***` and control bytes escaped: safe to log.
inline std::string masked_url(std::string_view url) {
    return callguard::detail::printable(detail::mask_url_passwords(url), 200);
}

} // namespace callguard

#include "detail/tls_context.hpp"
#include "detail/url_parser.hpp"

namespace callguard {

inline redis_options redis_options::from_url(std::string_view url) {
    return detail::redis_url_parser(url).parse();
}

/// Whether `prefix` can name a limiter's keys: 1-64 characters from `[A-Za-z0-9_.:-]`.
constexpr bool valid_key_prefix(std::string_view prefix) noexcept {
    return !prefix.empty() && prefix.size() <= 64 &&
           detail::find_not_name_char(prefix, "_.:-") == std::string_view::npos;
}

inline void redis_options::validate() const {
    auto fail = [](const char* field, const std::string& value, const char* why) {
        throw config_error(field, value, why);
    };
    if (!valid_key_prefix(key_prefix))
        fail("key_prefix", key_prefix, "expected 1-64 characters from [A-Za-z0-9_.:-]");
    if (unix_socket.empty() && (host.empty() || port < 1 || port > 65535))
        fail("host", host + ":" + std::to_string(port), "host is empty or port out of range");
    if (topology != redis_topology::standalone) {
        if (seeds.empty()) fail("seeds", "", "sentinel and cluster topologies need at least one host");
        for (const auto& e : seeds)
            if (e.host.empty() || e.port < 1 || e.port > 65535)
                fail("seeds", e.host + ":" + std::to_string(e.port), "host is empty or port out of range");
    }
    if (topology == redis_topology::sentinel && sentinel_master.empty())
        fail("sentinel_master", "", "the sentinel master name is empty");
    if (topology == redis_topology::cluster && db != 0)
        fail("db", std::to_string(db), "Redis Cluster has only db 0");
    if (db < 0) fail("db", std::to_string(db), "db must be non-negative");
    if (release_memory.count() < 0)
        fail("release_memory", std::to_string(release_memory.count()), "expected 0 or a positive duration");
    if (connect_timeout.count() < 1)
        fail("connect_timeout", std::to_string(connect_timeout.count()), "timeouts must be positive");
    if (command_timeout.count() < 1)
        fail("command_timeout", std::to_string(command_timeout.count()), "timeouts must be positive");
    if (multiplexed_connections < 1 || multiplexed_connections > 64)
        fail("multiplexed_connections", std::to_string(multiplexed_connections),
             "expected 1 to 64 connections");
    if (pool_size < 1 || pool_size > 1024)
        fail("pool_size", std::to_string(pool_size), "expected 1 to 1024 connections");
    if (probe_interval.count() < 1)
        fail("probe_interval", std::to_string(probe_interval.count()), "must be positive");
    if (tls.cert_file.empty() != tls.key_file.empty())
        fail(tls.cert_file.empty() ? "tls.cert_file" : "tls.key_file", "",
             "a client certificate needs both cert_file and key_file");
    if (!tls.server_name.empty() &&
        detail::find_not_name_char(tls.server_name, ".-_:*") != std::string_view::npos)
        fail("tls.server_name", tls.server_name, "expected a host name or an address");
    if (!tls.enabled && (!tls.ca_file.empty() || !tls.cert_file.empty() || !tls.server_name.empty()))
        fail("tls.enabled", "false", "TLS settings are given but TLS is off (use a rediss:// URL)");
}

inline redis_options redis_options::from_env(const env_lookup& lookup) {
    const env_reader env(lookup);
    auto url = env.text("REDIS_URL");
    if (!url) throw config_error("REDIS_URL", env.get("REDIS_URL").value_or(""), "is not set");
    redis_options o;
    try {
        o = from_url(*url);
    } catch (const config_error& e) {
        throw e.renamed("REDIS_URL");
    }
    if (auto p = env.get("CALLS_REDIS_KEY_PREFIX")) {
        auto prefix = detail::trim(*p);
        if (!valid_key_prefix(prefix))
            throw config_error("CALLS_REDIS_KEY_PREFIX", *p, "expected 1-64 characters from [A-Za-z0-9_.:-]");
        o.key_prefix = std::string(prefix);
    }
    if (auto m = env.get("CALLS_REDIS_CONNECTION_MODE")) {
        auto mode = detail::trim(*m);
        if (mode == "multiplexed")
            o.connection_mode = redis_connection_mode::multiplexed;
        else if (mode == "pooled")
            o.connection_mode = redis_connection_mode::pooled;
        else
            throw config_error("CALLS_REDIS_CONNECTION_MODE", *m, "expected multiplexed or pooled");
    }
    if (auto t = env.get("CALLS_REDIS_TIMEOUT_MS")) {
        auto ms = std::chrono::milliseconds(parse_positive("CALLS_REDIS_TIMEOUT_MS", *t, 60'000));
        o.connect_timeout = o.command_timeout = ms;
    }
    if (auto v = env.text("CALLS_REDIS_TLS_CA_FILE")) o.tls.ca_file = *v;
    if (auto v = env.text("CALLS_REDIS_TLS_CERT_FILE")) o.tls.cert_file = *v;
    if (auto v = env.text("CALLS_REDIS_TLS_KEY_FILE")) o.tls.key_file = *v;
    if (auto v = env.text("CALLS_REDIS_TLS_SERVER_NAME")) o.tls.server_name = *v;
    if (auto v = env.get("CALLS_REDIS_TLS_VERIFY")) o.tls.verify = parse_flag("CALLS_REDIS_TLS_VERIFY", *v);
    static constexpr std::pair<std::string_view, const char*> variables[] = {
        {"tls.ca_file", "CALLS_REDIS_TLS_CA_FILE"},         {"tls.cert_file", "CALLS_REDIS_TLS_CERT_FILE"},
        {"tls.key_file", "CALLS_REDIS_TLS_KEY_FILE"},       {"tls.server_name", "CALLS_REDIS_TLS_SERVER_NAME"},
        {"tls.enabled", "REDIS_URL"},                       {"key_prefix", "CALLS_REDIS_KEY_PREFIX"}};
    try {
        o.validate();
        if (o.tls.enabled) detail::make_tls_context(o.tls); // unreadable files are named now
    } catch (const config_error& e) {
        for (auto [field, variable] : variables)
            if (e.variable() == field) throw e.renamed(variable);
        throw;
    }
    return o;
}

} // namespace callguard
