#pragma once

// `redis_options::from_url` in small named steps: scheme, query, userinfo, hosts, path, query
// parameters. Included by options.hpp once `redis_options` is defined.

#include "../../errors.hpp"
#include "../../detail/percent.hpp"
#include "../../detail/text.hpp"
#include "url_mask.hpp"

#include <string>
#include <string_view>

namespace callguard::detail {

class redis_url_parser {
public:
    explicit redis_url_parser(std::string_view url) : url_(url), shown_(mask_url_passwords(url)) {}

    redis_options parse() {
        redis_options o;
        split_scheme();
        split_query();
        if (rest_.find('#') != std::string_view::npos) fail("fragments ('#') are not allowed");
        // "rediss..." is "redis..." over TLS.
        std::string scheme(scheme_);
        if (scheme.size() >= 6 && iequals(std::string_view(scheme).substr(0, 6), "rediss")) {
            o.tls.enabled = true;
            scheme.erase(5, 1);
        }
        if (iequals(scheme, "unix") && !o.tls.enabled)
            parse_unix(o);
        else if (iequals(scheme, "redis"))
            parse_server(o);
        else if (iequals(scheme, "redis+sentinel"))
            parse_sentinel(o);
        else if (iequals(scheme, "redis+cluster"))
            parse_cluster(o);
        else
            fail("unknown scheme '" + printable(scheme_) +
                 "' (expected redis://, rediss://, unix://, redis[s]+sentinel:// or redis[s]+cluster://)");
        apply_query(o);
        return o;
    }

private:
    [[noreturn]] void fail(const std::string& why) const { throw config_error("url", shown_, why); }

    std::string decode(std::string_view part, const char* what) const {
        auto d = percent_decode(part);
        if (!d) fail(std::string("malformed percent-escape in the ") + what);
        return std::move(*d);
    }

    int parse_db(std::string_view text) const {
        auto v = parse_int(text);
        if (!v || *v > 1'000'000) fail("db must be a non-negative integer, got '" + printable(text) + "'");
        return static_cast<int>(*v);
    }

    void split_scheme() {
        const auto sep = url_.find("://");
        if (sep == std::string_view::npos) fail("expected redis://host[:port][/db] or unix:///path.sock");
        scheme_ = url_.substr(0, sep);
        rest_ = url_.substr(sep + 3);
    }

    void split_query() {
        if (auto q = rest_.find('?'); q != std::string_view::npos) {
            query_ = rest_.substr(q + 1);
            rest_ = rest_.substr(0, q);
        }
    }

    /// `[user:pass@]authority[/path]`: fills the credentials, leaves authority_ and path_.
    void split_authority(redis_options& o) {
        authority_ = rest_;
        if (auto slash = rest_.find('/'); slash != std::string_view::npos) {
            authority_ = rest_.substr(0, slash);
            path_ = rest_.substr(slash + 1);
        }
        const auto at = authority_.rfind('@');
        if (at == std::string_view::npos) return;
        const auto userinfo = authority_.substr(0, at);
        authority_ = authority_.substr(at + 1);
        const auto colon = userinfo.find(':');
        if (colon == std::string_view::npos) fail("userinfo must be user:password or :password");
        o.user = decode(userinfo.substr(0, colon), "user");
        o.password = decode(userinfo.substr(colon + 1), "password");
    }

    /// `host`, `host:port` or `[v6]:port`.
    redis_endpoint parse_endpoint(std::string_view text, int default_port) const {
        std::string_view host = text, port;
        if (!text.empty() && text.front() == '[') {
            const auto close = text.find(']');
            if (close == std::string_view::npos) fail("unterminated '[' in the host");
            host = text.substr(1, close - 1);
            const auto after = text.substr(close + 1);
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
        if (auto bad = find_not_name_char(host, ".-_:"); bad != std::string_view::npos)
            fail("host contains '" + printable(host.substr(bad, 1)) + "'");
        redis_endpoint e{std::string(host), default_port};
        if (!port.empty()) {
            auto p = parse_int(port);
            if (!p || *p < 1 || *p > 65535) fail("port must be 1-65535, got '" + printable(port) + "'");
            e.port = static_cast<int>(*p);
        }
        return e;
    }

    /// `h1:p1,h2:p2,...` (sentinels, cluster nodes).
    void parse_seeds(redis_options& o, int default_port) {
        for (std::string_view list = authority_;;) {
            const auto comma = list.find(',');
            o.seeds.push_back(parse_endpoint(list.substr(0, comma), default_port));
            if (comma == std::string_view::npos) break;
            list.remove_prefix(comma + 1);
        }
        if (o.seeds.size() > 64) fail("more than 64 hosts");
        o.host = o.seeds.front().host;
        o.port = o.seeds.front().port;
    }

    void parse_unix(redis_options& o) {
        if (rest_.empty() || rest_.front() != '/') fail("unix socket path must be absolute (unix:///path.sock)");
        o.unix_socket = decode(rest_, "socket path");
    }

    void parse_server(redis_options& o) {
        split_authority(o);
        auto e = parse_endpoint(authority_, 6379);
        o.host = std::move(e.host);
        o.port = e.port;
        if (!path_.empty()) o.db = parse_db(path_);
    }

    /// `.../master_name[/db]`
    void parse_sentinel(redis_options& o) {
        o.topology = redis_topology::sentinel;
        split_authority(o);
        parse_seeds(o, 26379);
        const auto slash = path_.find('/');
        const auto name = path_.substr(0, slash);
        if (name.empty()) fail("the master name is missing (redis+sentinel://host:26379/master_name)");
        o.sentinel_master = decode(name, "master name");
        if (find_not_name_char(o.sentinel_master, "_.-") != std::string_view::npos)
            fail("the master name may only contain [A-Za-z0-9_.-]");
        if (slash != std::string_view::npos) o.db = parse_db(path_.substr(slash + 1));
    }

    void parse_cluster(redis_options& o) {
        o.topology = redis_topology::cluster;
        split_authority(o);
        parse_seeds(o, 6379);
        if (!path_.empty()) fail("Redis Cluster has no databases: redis+cluster://host:port[,host:port...]");
    }

    /// `db` where the path cannot carry it (unix sockets); the sentinels' own password.
    void apply_query(redis_options& o) {
        for (std::string_view q = query_; !q.empty();) {
            const auto amp = q.find('&');
            const auto item = q.substr(0, amp);
            q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
            if (item.empty()) continue;
            const auto eq = item.find('=');
            const auto name = item.substr(0, eq);
            const auto value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
            if (name == "db" && !o.unix_socket.empty())
                o.db = parse_db(value);
            else if (name == "sentinel_password" && o.topology == redis_topology::sentinel)
                o.sentinel_password = decode(value, "sentinel password");
            else
                fail("unknown URL parameter '" + printable(name) + "'");
        }
    }

    std::string_view url_;
    std::string shown_; // the URL with passwords masked: the only form errors show
    std::string_view scheme_, rest_, query_, authority_, path_;
};

} // namespace callguard::detail
