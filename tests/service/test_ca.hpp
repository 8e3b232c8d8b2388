#pragma once

// Certificates made at test time with the openssl command: a test CA, a server certificate it
// signed for localhost and 127.0.0.1, and a self-signed one for the same names that nobody
// trusts. Files live in a temporary folder removed with the object.

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace svc {

class test_ca {
public:
    test_ca() {
        char tmpl[] = "/tmp/callguard-ca-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
        const std::string d = "'" + dir_ + "'";
        const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        const std::string names = "subjectAltName=DNS:localhost,IP:127.0.0.1";
        run("openssl req -x509 " + ec + " -keyout " + d + "/ca.key -out " + d +
            "/ca.pem -days 2 -subj '/CN=callguard test CA'");
        run("openssl req " + ec + " -keyout " + d + "/server.key -out " + d + "/server.csr -subj '/CN=localhost'");
        run("printf '" + names + "\\n' > " + d + "/server.ext");
        run("openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/server.pem -days 2 -extfile " + d + "/server.ext");
        run("openssl req -x509 " + ec + " -keyout " + d + "/untrusted.key -out " + d +
            "/untrusted.pem -days 2 -subj '/CN=localhost' -addext '" + names + "'");
    }
    test_ca(const test_ca&) = delete;
    test_ca& operator=(const test_ca&) = delete;
    ~test_ca() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    std::string ca_file() const { return dir_ + "/ca.pem"; }          ///< for SSL_CERT_FILE
    std::string server_cert() const { return dir_ + "/server.pem"; }  ///< signed by the CA
    std::string server_key() const { return dir_ + "/server.key"; }
    std::string untrusted_cert() const { return dir_ + "/untrusted.pem"; } ///< self-signed
    std::string untrusted_key() const { return dir_ + "/untrusted.key"; }

private:
    static void run(const std::string& cmd) {
        const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
        REQUIRE_MESSAGE(rc == 0, "failed: " << cmd);
    }
    std::string dir_;
};

} // namespace svc
