#pragma once

// The TLS client context of a Redis backend, built once from `redis_tls_options`: what to trust,
// which client certificate to show. Files that cannot be used are a `config_error` naming the
// setting and the file, at construction, never a surprise at the first connection. Included by
// options.hpp once `redis_tls_options` is defined.

#include "../../errors.hpp"

#include <utility> // before Asio: Boost 1.74's Asio uses std::exchange without including it

#include <boost/asio/ssl/context.hpp>

#include <fstream>
#include <memory>
#include <string>

namespace callguard::detail {

/// Throws `config_error` (`tls.ca_file`, `tls.cert_file`, `tls.key_file`) for a file that
/// cannot be read or is not what it should be.
inline std::shared_ptr<boost::asio::ssl::context> make_tls_context(const redis_tls_options& t) {
    namespace ssl = boost::asio::ssl;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                     ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    auto check_readable = [](const char* field, const std::string& path) {
        if (!std::ifstream(path).good()) throw config_error(field, path, "cannot read the file");
    };
    boost::system::error_code ec;
    if (!t.ca_file.empty()) {
        check_readable("tls.ca_file", t.ca_file);
        if (ctx->load_verify_file(t.ca_file, ec); ec)
            throw config_error("tls.ca_file", t.ca_file, "not a PEM certificate bundle (" + ec.message() + ")");
    } else if (t.verify) {
        ctx->set_default_verify_paths(ec); // the system store; SSL_CERT_FILE / SSL_CERT_DIR honoured
    }
    ctx->set_verify_mode(t.verify ? ssl::verify_peer : ssl::verify_none);
    if (!t.cert_file.empty()) {
        check_readable("tls.cert_file", t.cert_file);
        check_readable("tls.key_file", t.key_file);
        if (ctx->use_certificate_chain_file(t.cert_file, ec); ec)
            throw config_error("tls.cert_file", t.cert_file, "not a PEM certificate (" + ec.message() + ")");
        if (ctx->use_private_key_file(t.key_file, ssl::context::pem, ec); ec)
            throw config_error("tls.key_file", t.key_file, "not a PEM private key (" + ec.message() + ")");
        if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
            throw config_error("tls.key_file", t.key_file, "does not match the certificate in " + t.cert_file);
    }
    return ctx;
}

} // namespace callguard::detail
