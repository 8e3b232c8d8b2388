#pragma once

// Where the Redis backend connects and how patiently: a plain struct of std::chrono durations,
// filled by hand, from a URL, or from the environment.

#include "../config.hpp"
#include "../errors.hpp"
#include "../detail/text.hpp"

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
    /// Receives operational warnings (an eviction policy that can drop our keys, a dropped
    /// queued release). Default: one line on stderr.
    std::function<void(std::string_view)> on_warning;

    /// Percent-decoded URLs, one per topology:
    ///   `redis://[user:pass@]host[:port][/db]`, `unix:///path.sock[?db=N]`
    ///   `redis+sentinel://[user:pass@]host:port[,host:port...]/master_name[/db][?sentinel_password=P]`
    ///   `redis+cluster://[user:pass@]host:port[,host:port...]`
    /// (user:pass authenticate to the data nodes; sentinels default to port 26379, cluster nodes
    /// and servers to 6379). Throws `config_error` (variable REDIS_URL, passwords masked) naming
    /// the part that is wrong.
    static redis_options from_url(std::string_view url);

    /// REDIS_URL (required), CALLS_REDIS_KEY_PREFIX, CALLS_REDIS_TIMEOUT_MS (connect and command),
    /// CALLS_REDIS_CONNECTION_MODE (`multiplexed` or `pooled`).
    static redis_options from_env(const env_lookup& lookup);
    static redis_options from_env() { return from_env(process_env()); }

    /// Throws `config_error` for values no connection could use.
    void validate() const;
};

namespace detail {

inline int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// Percent-decodes `s`; nothing on a malformed escape.
inline std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size()) return std::nullopt; // needs two hex digits after '%'
        const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

/// The URL with any password replaced by `***`, for error messages and logs.
inline std::string mask_query_secret(std::string s) {
    static constexpr std::string_view key = "sentinel_password=";
    for (auto pos = s.find(key); pos != std::string::npos; pos = s.find(key, pos + 1)) {
        const auto start = pos + key.size();
        const auto end = std::min(s.find('&', start), s.size());
        s.replace(start, end - start, "***");
    }
    return s;
}

/// The URL with every password (userinfo, `sentinel_password=`) replaced by `***`, made
/// printable, for error messages and logs.
inline std::string mask_url_password(std::string_view url) {
    std::string out;
    auto scheme_end = url.find("://");
    // The same split as the parser: userinfo ends at the LAST '@' before the path or query.
    auto authority_start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
    auto authority_end = url.find_first_of("/?#", authority_start);
    if (authority_end == std::string_view::npos) authority_end = url.size();
    auto at = url.substr(0, authority_end).rfind('@');
    if (scheme_end == std::string_view::npos || at == std::string_view::npos || at < authority_start) {
        out = std::string(url);
    } else {
        auto colon = url.find(':', authority_start);
        out = std::string(url.substr(0, authority_start));
        if (colon != std::string_view::npos && colon < at) {
            out += url.substr(authority_start, colon - authority_start);
            out += ":***";
        } else {
            out += "***";
        }
        out += url.substr(at);
    }
    return printable(mask_query_secret(std::move(out)), 200);
}

inline bool valid_key_prefix(std::string_view p) noexcept {
    return !p.empty() && p.size() <= 64 && find_not_name_char(p, "_.:-") == std::string_view::npos;
}

} // namespace detail

inline redis_options redis_options::from_url(std::string_view url) {
    const std::string shown = detail::mask_url_password(url);
    auto fail = [&](const std::string& why) -> void { throw config_error("REDIS_URL", shown, why); };
    auto decode = [&](std::string_view part, const char* what) {
        auto d = detail::percent_decode(part);
        if (!d) fail(std::string("malformed percent-escape in the ") + what);
        return *d;
    };
    auto parse_db = [&](std::string_view text) {
        auto v = detail::parse_int(text);
        if (!v || *v > 1'000'000) fail("db must be a non-negative integer, got '" + detail::printable(text) + "'");
        return static_cast<int>(*v);
    };

    redis_options o;
    auto sep = url.find("://");
    if (sep == std::string_view::npos) fail("expected redis://host[:port][/db] or unix:///path.sock");
    const auto scheme = url.substr(0, sep);
    auto rest = url.substr(sep + 3);

    // Query string (the same for both schemes).
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    if (rest.find('#') != std::string_view::npos) fail("fragments ('#') are not allowed");

    if (detail::iequals(scheme, "rediss"))
        fail("TLS (rediss://) is not supported: this build's hiredis has no TLS; use a TLS "
             "proxy (e.g. stunnel) on localhost and redis:// to it");
    if (detail::iequals(scheme, "unix")) {
        if (rest.empty() || rest.front() != '/') fail("unix socket path must be absolute (unix:///path.sock)");
        o.unix_socket = decode(rest, "socket path");
    } else if (detail::iequals(scheme, "redis") || detail::iequals(scheme, "redis+sentinel") ||
               detail::iequals(scheme, "redis+cluster")) {
        if (detail::iequals(scheme, "redis+sentinel")) o.topology = redis_topology::sentinel;
        if (detail::iequals(scheme, "redis+cluster")) o.topology = redis_topology::cluster;
        // authority [/path]
        std::string_view authority = rest, path;
        if (auto slash = rest.find('/'); slash != std::string_view::npos) {
            authority = rest.substr(0, slash);
            path = rest.substr(slash + 1);
        }
        if (auto at = authority.rfind('@'); at != std::string_view::npos) {
            auto userinfo = authority.substr(0, at);
            authority = authority.substr(at + 1);
            auto colon = userinfo.find(':');
            if (colon == std::string_view::npos)
                fail("userinfo must be user:password or :password");
            o.user = decode(userinfo.substr(0, colon), "user");
            o.password = decode(userinfo.substr(colon + 1), "password");
        }
        const int default_port = o.topology == redis_topology::sentinel ? 26379 : 6379;
        auto endpoint_of = [&](std::string_view text) {
            std::string_view host = text, port;
            if (!text.empty() && text.front() == '[') { // [IPv6]:port
                auto close = text.find(']');
                if (close == std::string_view::npos) fail("unterminated '[' in the host");
                host = text.substr(1, close - 1);
                auto after = text.substr(close + 1);
                if (!after.empty()) {
                    if (after.front() != ':') fail("unexpected text after ']' in the host");
                    port = after.substr(1);
                    if (port.empty()) fail("port is empty");
                }
            } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
                host = text.substr(0, colon);
                port = text.substr(colon + 1);
                if (port.empty()) fail("port is empty");
            }
            if (host.empty()) fail("host is empty");
            if (auto bad = detail::find_not_name_char(host, ".-_:"); bad != std::string_view::npos)
                fail("host contains '" + detail::printable(host.substr(bad, 1)) + "'");
            redis_endpoint e{std::string(host), default_port};
            if (!port.empty()) {
                auto p = detail::parse_int(port);
                if (!p || *p < 1 || *p > 65535) fail("port must be 1-65535, got '" + detail::printable(port) + "'");
                e.port = static_cast<int>(*p);
            }
            return e;
        };
        if (o.topology == redis_topology::standalone) {
            auto e = endpoint_of(authority);
            o.host = e.host;
            o.port = e.port;
            if (!path.empty()) o.db = parse_db(path);
        } else {
            for (std::string_view list = authority; ;) {
                auto comma = list.find(',');
                o.seeds.push_back(endpoint_of(list.substr(0, comma)));
                if (comma == std::string_view::npos) break;
                list.remove_prefix(comma + 1);
            }
            if (o.seeds.size() > 64) fail("more than 64 hosts");
            o.host = o.seeds.front().host;
            o.port = o.seeds.front().port;
            if (o.topology == redis_topology::sentinel) {
                auto slash = path.find('/');
                auto name = path.substr(0, slash);
                if (name.empty())
                    fail("the master name is missing (redis+sentinel://host:26379/master_name)");
                o.sentinel_master = decode(name, "master name");
                if (detail::find_not_name_char(o.sentinel_master, "_.-") != std::string_view::npos)
                    fail("the master name may only contain [A-Za-z0-9_.-]");
                if (slash != std::string_view::npos) o.db = parse_db(path.substr(slash + 1));
            } else if (!path.empty()) {
                fail("Redis Cluster has no databases: redis+cluster://host:port[,host:port...]");
            }
        }
    } else {
        fail("unknown scheme '" + detail::printable(scheme) +
             "' (expected redis://, unix://, redis+sentinel:// or redis+cluster://)");
    }

    // Parameters: db where the path cannot carry it; the sentinels' own password.
    while (!query.empty()) {
        auto amp = query.find('&');
        auto item = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (item.empty()) continue;
        auto eq = item.find('=');
        auto name = item.substr(0, eq);
        auto value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
        if (name == "db" && !o.unix_socket.empty())
            o.db = parse_db(value);
        else if (name == "sentinel_password" && o.topology == redis_topology::sentinel)
            o.sentinel_password = decode(value, "sentinel password");
        else
            fail("unknown URL parameter '" + detail::printable(name) + "'");
    }
    return o;
}

inline void redis_options::validate() const {
    auto fail = [](const char* var, const std::string& value, const char* why) {
        throw config_error(var, value, why);
    };
    if (!detail::valid_key_prefix(key_prefix))
        fail("CALLS_REDIS_KEY_PREFIX", detail::printable(key_prefix),
             "expected 1-64 characters from [A-Za-z0-9_.:-]");
    if (unix_socket.empty() && (host.empty() || port < 1 || port > 65535))
        fail("REDIS_URL", detail::printable(host) + ":" + std::to_string(port),
             "host is empty or port out of range");
    if (topology != redis_topology::standalone) {
        if (seeds.empty()) fail("REDIS_URL", "", "sentinel and cluster URLs need at least one host");
        for (const auto& e : seeds)
            if (e.host.empty() || e.port < 1 || e.port > 65535)
                fail("REDIS_URL", detail::printable(e.host) + ":" + std::to_string(e.port),
                     "host is empty or port out of range");
    }
    if (topology == redis_topology::sentinel && sentinel_master.empty())
        fail("REDIS_URL", "", "the sentinel master name is empty");
    if (topology == redis_topology::cluster && db != 0)
        fail("REDIS_URL", std::to_string(db), "Redis Cluster has only db 0");
    if (db < 0) fail("REDIS_URL", std::to_string(db), "db must be non-negative");
    if (connect_timeout.count() < 1 || command_timeout.count() < 1)
        fail("CALLS_REDIS_TIMEOUT_MS", std::to_string(command_timeout.count()), "timeouts must be positive");
    if (multiplexed_connections < 1 || multiplexed_connections > 64)
        fail("multiplexed_connections", std::to_string(multiplexed_connections),
             "expected 1 to 64 connections");
    if (pool_size < 1 || pool_size > 1024)
        fail("pool_size", std::to_string(pool_size), "expected 1 to 1024 connections");
    if (probe_interval.count() < 1)
        fail("probe_interval", std::to_string(probe_interval.count()), "must be positive");
}

inline redis_options redis_options::from_env(const env_lookup& lookup) {
    auto get = [&](const char* name) { return lookup ? lookup(name) : std::nullopt; };
    auto url = get("REDIS_URL");
    if (!url || detail::trim(*url).empty())
        throw config_error("REDIS_URL", url ? detail::printable(*url) : "", "is not set");
    auto o = from_url(detail::trim(*url));
    if (auto p = get("CALLS_REDIS_KEY_PREFIX")) {
        auto prefix = detail::trim(*p);
        if (!detail::valid_key_prefix(prefix))
            throw config_error("CALLS_REDIS_KEY_PREFIX", detail::printable(*p),
                               "expected 1-64 characters from [A-Za-z0-9_.:-]");
        o.key_prefix = std::string(prefix);
    }
    if (auto m = get("CALLS_REDIS_CONNECTION_MODE")) {
        auto mode = detail::trim(*m);
        if (mode == "multiplexed")
            o.connection_mode = redis_connection_mode::multiplexed;
        else if (mode == "pooled")
            o.connection_mode = redis_connection_mode::pooled;
        else
            throw config_error("CALLS_REDIS_CONNECTION_MODE", detail::printable(*m),
                               "expected multiplexed or pooled");
    }
    if (auto t = get("CALLS_REDIS_TIMEOUT_MS")) {
        auto ms = std::chrono::milliseconds(parse_positive("CALLS_REDIS_TIMEOUT_MS", *t, 60'000));
        o.connect_timeout = o.command_timeout = ms;
    }
    return o;
}

} // namespace callguard
