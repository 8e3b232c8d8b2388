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
/// Where a connection notes that the server asked for a client certificate it was not given
/// (`tls-auth-clients yes`): in TLS 1.3 the server refuses only after the handshake, with a
/// reset that can swallow its alert, so this note is what explains the failure.
inline int client_cert_requested_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

inline bool client_cert_requested(SSL* ssl) noexcept {
    return ssl && SSL_get_ex_data(ssl, client_cert_requested_index()) != nullptr;
}

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
        if (ctx->use_private_key_file(t.key_file, ssl::context::pem, ec); ec) {
            if (ec.message().find("mismatch") != std::string::npos)
                throw config_error("tls.key_file", t.key_file, "does not match the certificate in " + t.cert_file);
            throw config_error("tls.key_file", t.key_file, "not a PEM private key (" + ec.message() + ")");
        }
        if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
            throw config_error("tls.key_file", t.key_file, "does not match the certificate in " + t.cert_file);
    } else {
        static const int note = client_cert_requested_index();
        (void)note;
        SSL_CTX_set_client_cert_cb(ctx->native_handle(), [](SSL* ssl, X509**, EVP_PKEY**) -> int {
            SSL_set_ex_data(ssl, client_cert_requested_index(), reinterpret_cast<void*>(1));
            return 0; // none to give
        });
    }
    return ctx;
}

} // namespace callguard::detail
