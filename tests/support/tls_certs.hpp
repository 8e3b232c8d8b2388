#pragma once

// Certificates for the TLS tests, made with the `openssl` command line in a temporary folder:
// a test CA; a server certificate it signed for localhost and 127.0.0.1; the same for the wrong
// name, already expired, or signed by another CA; a client certificate; and a self-signed one.
// And a redis-server that speaks TLS on a port of its own (its plain port stays for the tests'
// own commands).

#include "probes.hpp"
#include "redis_server.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace test {

class tls_certs {
public:
    tls_certs() {
        char tmpl[] = "/tmp/callguard-tls-XXXXXX";
        if (!::mkdtemp(tmpl)) throw std::runtime_error("tls_certs: mkdtemp failed");
        dir_ = tmpl;
        make_ca("ca", "callguard test CA");
        make_ca("other_ca", "another CA");
        // Servers also show it as a client: replicas to their master, cluster nodes to each other.
        make_leaf("server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth,clientAuth", 2);
        make_leaf("wrong_host", "ca", "other.example", "DNS:other.example", "serverAuth", 2);
        make_leaf("expired", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth", -1);
        make_leaf("untrusted", "other_ca", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth", 2);
        make_leaf("client", "ca", "callguard client", "DNS:client", "clientAuth", 2);
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj '/CN=localhost'"
            " -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' -keyout self_signed.key -out self_signed.pem");
    }
    tls_certs(const tls_certs&) = delete;
    tls_certs& operator=(const tls_certs&) = delete;
    ~tls_certs() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    /// `name.pem` (certificate) and `name.key` (key) for: ca, other_ca, server, wrong_host,
    /// expired, untrusted, client, self_signed.
    std::string pem(const std::string& name) const { return dir_ + "/" + name + ".pem"; }
    std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }
    const std::string& dir() const noexcept { return dir_; }

    /// A file with this content in the certificates' folder (a malformed bundle, say).
    std::string write(const std::string& name, const std::string& content) const {
        const auto path = dir_ + "/" + name;
        std::ofstream(path) << content;
        return path;
    }

private:
    void run(const std::string& cmd) const {
        const auto full = "cd '" + dir_ + "' && " + cmd + " >>openssl.log 2>&1";
        if (std::system(full.c_str()) != 0)
            throw std::runtime_error("openssl failed (see " + dir_ + "/openssl.log): " + cmd);
    }

    void make_ca(const std::string& name, const std::string& cn) const {
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj '/CN=" + cn +
            "' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'"
            " -keyout " + name + ".key -out " + name + ".pem");
    }

    /// A certificate signed by `ca`, valid for `days` (negative: expired already).
    void make_leaf(const std::string& name, const std::string& ca, const std::string& cn, const std::string& san,
                   const std::string& usage, int days) const {
        std::ofstream(dir_ + "/" + name + ".ext") << "subjectAltName=" << san << "\nextendedKeyUsage=" << usage
                                                  << "\nbasicConstraints=CA:FALSE\n";
        run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=" + cn + "' -keyout " +
            name + ".key -out " + name + ".csr");
        run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca + ".key -CAcreateserial -days " +
            std::to_string(days) + " -extfile " + name + ".ext -out " + name + ".pem");
    }

    std::string dir_;
};

/// A redis-server with TLS on `tls_port()` presenting `cert` (a name from tls_certs), trusting
/// the test CA for client certificates; `--tls-auth-clients` as given.
class tls_redis {
public:
    tls_redis(const tls_certs& certs, const std::string& cert = "server", bool require_client_cert = false,
              std::vector<std::string> extra = {})
        : tls_port_(free_port()) {
        std::vector<std::string> args{"--tls-port",          std::to_string(tls_port_),
                                      "--tls-cert-file",     certs.pem(cert),
                                      "--tls-key-file",      certs.key(cert),
                                      "--tls-ca-cert-file",  certs.pem("ca"),
                                      "--tls-auth-clients",  require_client_cert ? "yes" : "no"};
        args.insert(args.end(), extra.begin(), extra.end());
        server_ = std::make_unique<redis_server>(std::move(args));
    }

    redis_server& server() noexcept { return *server_; }
    std::uint16_t tls_port() const noexcept { return tls_port_; }
    /// `rediss://<host>:<tls port>`.
    std::string url(const std::string& host = "127.0.0.1") const {
        return "rediss://" + host + ":" + std::to_string(tls_port_);
    }

private:
    std::uint16_t tls_port_;
    std::unique_ptr<redis_server> server_;
};

} // namespace test
