#pragma once

// Real Redis deployments on loopback for the Sentinel and Cluster tests: a master, a replica and
// three sentinels; or a three-master cluster made with `redis-cli --cluster create`. Every
// process is started and killed (by PID) by these fixtures.

#include "probes.hpp"
#include "redis_server.hpp"
#include "tls_certs.hpp"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace test {

/// The cluster hash slot of `key` (CRC16/XMODEM of the hash tag, mod 16384), as Redis computes it.
inline int key_slot(std::string_view key) {
    if (auto open = key.find('{'); open != std::string_view::npos) {
        auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
    }
    std::uint16_t crc = 0;
    for (unsigned char c : key) {
        crc ^= static_cast<std::uint16_t>(c << 8);
        for (int i = 0; i < 8; ++i)
            crc = static_cast<std::uint16_t>(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc % 16384;
}

/// The redis-server arguments of a TLS port presenting the test server certificate, with
/// replication (and the cluster bus, for cluster nodes) over TLS too.
inline std::vector<std::string> tls_server_args(const tls_certs& certs, std::uint16_t tls_port, bool cluster = false) {
    std::vector<std::string> a{"--tls-port",         std::to_string(tls_port), "--tls-cert-file", certs.pem("server"),
                               "--tls-key-file",     certs.key("server"),       "--tls-ca-cert-file", certs.pem("ca"),
                               "--tls-auth-clients", "no",                      "--tls-replication", "yes"};
    if (cluster) a.insert(a.end(), {"--tls-cluster", "yes"});
    return a;
}

/// A master, its replica and three sentinels (quorum 2) watching them as `callguard`.
/// Data nodes require `data_password`, sentinels `sentinel_password`. With `tls`, every node
/// and sentinel also listens with TLS (their plain ports stay for the tests' own commands), and
/// replication and the sentinels' own connections use TLS.
class sentinel_group {
public:
    static constexpr const char* master_name = "callguard";
    static constexpr const char* data_password = "data-pass";
    static constexpr const char* sentinel_password = "sentinel-pass";

    explicit sentinel_group(const tls_certs* tls = nullptr) : tls_(tls) {
        const std::vector<std::string> auth{"--requirepass", data_password, "--masterauth", data_password};
        for (int i = 0; i < 2; ++i) tls_ports_.push_back(tls ? free_port() : 0);
        auto master_args = auth;
        if (tls) append(master_args, tls_server_args(*tls, static_cast<std::uint16_t>(tls_ports_[0])));
        nodes_.push_back(std::make_unique<redis_server>(master_args, std::vector<std::string>{}, data_password));
        auto replica_args = auth;
        if (tls) append(replica_args, tls_server_args(*tls, static_cast<std::uint16_t>(tls_ports_[1])));
        replica_args.insert(replica_args.end(), {"--replicaof", "127.0.0.1", std::to_string(client_port(0))});
        nodes_.push_back(std::make_unique<redis_server>(replica_args, std::vector<std::string>{}, data_password));
        for (int i = 0; i < 3; ++i) {
            // Sentinels rewrite their config file, so each gets its own, in its own folder.
            char tmpl[] = "/tmp/callguard-sentinel-XXXXXX";
            if (!::mkdtemp(tmpl)) throw std::runtime_error("sentinel_group: mkdtemp failed");
            conf_dirs_.emplace_back(tmpl);
            const auto conf = conf_dirs_.back() + "/sentinel.conf";
            std::ofstream out(conf);
            out << "sentinel monitor " << master_name << " 127.0.0.1 " << client_port(0) << " 2\n"
                                << "sentinel down-after-milliseconds " << master_name << " 1000\n"
                                << "sentinel failover-timeout " << master_name << " 4000\n"
                                << "sentinel parallel-syncs " << master_name << " 1\n"
                                << "sentinel auth-pass " << master_name << " " << data_password << "\n"
                                << "requirepass " << sentinel_password << "\n"
                                << "sentinel sentinel-pass " << sentinel_password << "\n";
            sentinel_tls_ports_.push_back(tls ? free_port() : 0);
            if (tls)
                out << "tls-port " << sentinel_tls_ports_.back() << "\ntls-cert-file " << tls->pem("server")
                    << "\ntls-key-file " << tls->key("server") << "\ntls-ca-cert-file " << tls->pem("ca")
                    << "\ntls-auth-clients no\ntls-replication yes\n";
            out.close();
            sentinels_.push_back(std::make_unique<redis_server>(std::vector<std::string>{},
                                                                std::vector<std::string>{conf, "--sentinel"},
                                                                sentinel_password));
        }
    }
    sentinel_group(const sentinel_group&) = delete;
    sentinel_group& operator=(const sentinel_group&) = delete;
    ~sentinel_group() {
        sentinels_.clear();
        nodes_.clear();
        std::error_code ec;
        for (auto& d : conf_dirs_) std::filesystem::remove_all(d, ec);
    }

    std::string url(std::string_view sentinel_pass = sentinel_password) const {
        std::string u = std::string(tls_ ? "rediss" : "redis") + "+sentinel://:" + std::string(data_password) + "@";
        for (std::size_t i = 0; i < sentinels_.size(); ++i)
            u += (i ? ",127.0.0.1:" : "127.0.0.1:") +
                 std::to_string(tls_ ? sentinel_tls_ports_[i] : sentinels_[i]->port());
        return u + "/" + master_name + "?sentinel_password=" + std::string(sentinel_pass);
    }

    redis_server& node(int i) { return *nodes_[static_cast<std::size_t>(i)]; }
    redis_server& sentinel(int i) { return *sentinels_[static_cast<std::size_t>(i)]; }

    /// The master's port as the first sentinel that answers sees it (0 if none does).
    int master_port() const {
        for (auto& s : sentinels_) {
            try {
                auto reply = s->command({"SENTINEL", "get-master-addr-by-name", master_name});
                auto sp = reply.rfind(' ');
                if (sp != std::string::npos) return std::stoi(reply.substr(sp + 1));
            } catch (const std::exception&) {
            }
        }
        return 0;
    }

    /// The node serving as master now, and the other one.
    redis_server& master() { return node(client_port(0) == master_port() ? 0 : 1); }
    redis_server& replica() { return node(client_port(0) == master_port() ? 1 : 0); }

    /// The port clients (and the sentinels) use for node `i`: its TLS port with TLS.
    int client_port(int i) const {
        return tls_ ? tls_ports_[static_cast<std::size_t>(i)] : nodes_[static_cast<std::size_t>(i)]->port();
    }

    /// Waits until the replica is linked and every sentinel knows it (and its peers).
    bool ready(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
        return eventually(
            [&] {
                try {
                    if (replica().command({"INFO", "replication"}).find("master_link_status:up") == std::string::npos)
                        return false;
                    for (auto& s : sentinels_) {
                        auto info = s->command({"SENTINEL", "master", master_name});
                        auto count = [&](std::string_view key) {
                            auto pos = info.find(std::string(key) + " ");
                            return pos == std::string::npos ? -1 : std::atoi(info.c_str() + pos + key.size() + 1);
                        };
                        if (count("num-slaves") < 1 || count("num-other-sentinels") < 2) return false;
                    }
                    return true;
                } catch (const std::exception&) {
                    return false;
                }
            },
            limit);
    }

private:
    static void append(std::vector<std::string>& to, const std::vector<std::string>& more) {
        to.insert(to.end(), more.begin(), more.end());
    }

    const tls_certs* tls_;
    std::vector<int> tls_ports_, sentinel_tls_ports_;
    std::vector<std::unique_ptr<redis_server>> nodes_, sentinels_;
    std::vector<std::string> conf_dirs_;
};

/// Three masters (no replicas) made into a cluster with `redis-cli --cluster create`. With
/// `tls`, every node also listens with TLS and the cluster bus uses TLS; clients on a TLS
/// connection are then redirected (MOVED, ASK) to TLS ports.
class cluster_group {
public:
    explicit cluster_group(const tls_certs* tls = nullptr) : tls_(tls) {
        for (int i = 0; i < 3; ++i) nodes_.push_back(start_node());
        std::string cmd = "redis-cli --cluster create";
        for (auto& n : nodes_) cmd += " 127.0.0.1:" + std::to_string(n->port());
        cmd += " --cluster-replicas 0 --cluster-yes > " + nodes_[0]->dir() + "/create.log 2>&1";
        if (std::system(cmd.c_str()) != 0)
            throw std::runtime_error("redis-cli --cluster create failed; see " + nodes_[0]->dir() + "/create.log");
        if (!eventually([&] { return all_ok(); }, std::chrono::seconds(20)))
            throw std::runtime_error("the cluster did not reach cluster_state:ok");
    }

    std::string url() const {
        std::string u = tls_ ? "rediss+cluster://" : "redis+cluster://";
        for (std::size_t i = 0; i < nodes_.size(); ++i)
            u += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(tls_ ? tls_ports_[i] : nodes_[i]->port());
        return u;
    }

    /// A URL naming only node `i` as the seed (the limiter must follow MOVED from there).
    std::string url_of(int i) const {
        const auto n = static_cast<std::size_t>(i);
        return std::string(tls_ ? "rediss+cluster://127.0.0.1:" : "redis+cluster://127.0.0.1:") +
               std::to_string(tls_ ? tls_ports_[n] : nodes_[n]->port());
    }

    redis_server& node(int i) { return *nodes_[static_cast<std::size_t>(i)]; }
    std::string id(int i) { return node(i).command({"CLUSTER", "MYID"}); }

    struct slot_range {
        int lo, hi, node;
    };

    /// Who serves which slots now, by node 0's CLUSTER NODES.
    std::vector<slot_range> ranges() {
        std::vector<slot_range> out;
        std::istringstream lines(node(0).command({"CLUSTER", "NODES"}));
        std::string line;
        while (std::getline(lines, line)) {
            std::istringstream f(line);
            std::string node_id, addr, flags, master, ping, pong, epoch, link, range;
            f >> node_id >> addr >> flags >> master >> ping >> pong >> epoch >> link;
            const auto colon = addr.rfind(':');
            const int port = std::stoi(addr.substr(colon + 1, addr.find('@') - colon - 1));
            int index = -1;
            for (std::size_t i = 0; i < nodes_.size(); ++i)
                if (nodes_[i]->port() == port) index = static_cast<int>(i);
            while (f >> range) {
                if (range.front() == '[') continue; // a slot in migration
                auto dash = range.find('-');
                const int lo = std::stoi(range.substr(0, dash));
                out.push_back({lo, dash == std::string::npos ? lo : std::stoi(range.substr(dash + 1)), index});
            }
        }
        return out;
    }

    /// Which node serves `slot` now (-1 if none does).
    int owner(int slot) {
        for (auto& r : ranges())
            if (slot >= r.lo && slot <= r.hi) return r.node;
        return -1;
    }

    /// The lowest slot node `from` serves: `redis-cli --cluster reshard` moves a node's slots
    /// from its lowest up.
    int first_slot_of(int from) {
        int best = -1;
        for (auto& r : ranges())
            if (r.node == from && (best < 0 || r.lo < best)) best = r.lo;
        return best;
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots (the lowest) from node `from` to `to`.
    int reshard(int from, int to, int slots) {
        std::string cmd = "redis-cli --cluster reshard 127.0.0.1:" + std::to_string(node(from).port()) +
                          " --cluster-from " + id(from) + " --cluster-to " + id(to) + " --cluster-slots " +
                          std::to_string(slots) + " --cluster-yes > " + node(0).dir() + "/reshard.log 2>&1";
        return std::system(cmd.c_str());
    }

private:
    /// One node on free ports. A port can be taken between choosing it and the server binding it
    /// (another test's connection may get it): the node is then started again on new ports.
    std::unique_ptr<redis_server> start_node() {
        for (int attempt = 1;; ++attempt) {
            // The bus port defaults to port + 10000, which a free port may not leave room for.
            std::vector<std::string> args{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                          "--cluster-node-timeout", "3000",
                                          "--cluster-port", std::to_string(free_port())};
            const int tls_port = tls_ ? free_port() : 0;
            if (tls_) {
                auto more = tls_server_args(*tls_, static_cast<std::uint16_t>(tls_port), true);
                args.insert(args.end(), more.begin(), more.end());
            }
            try {
                auto node = std::make_unique<redis_server>(args);
                tls_ports_.push_back(tls_port);
                return node;
            } catch (const std::runtime_error& e) {
                if (attempt == 5 || std::string_view(e.what()).find("exited at start-up") == std::string_view::npos)
                    throw;
            }
        }
    }

    bool all_ok() {
        try {
            for (auto& n : nodes_)
                if (n->command({"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) return false;
            return true;
        } catch (const std::exception&) {
            return false;
        }
    }

    const tls_certs* tls_;
    std::vector<int> tls_ports_;
    std::vector<std::unique_ptr<redis_server>> nodes_;
};

} // namespace test
