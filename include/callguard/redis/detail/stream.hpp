#pragma once

// One byte stream to a Redis server: TCP, TLS over TCP, or a unix socket, behind one interface
// for the channel that speaks the protocol over it.

#include "../options.hpp"
#include "tls_context.hpp"

#include <utility> // before Asio: Boost 1.74's Asio uses std::exchange without including it

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <memory>
#include <string>
#include <variant>

namespace callguard::detail {

namespace asio = boost::asio;

/// Where one connection goes: a host and port, or a unix socket path.
struct redis_target {
    std::string host;
    int port = 0;
    std::string unix_path;

    std::string name() const { return unix_path.empty() ? host + ":" + std::to_string(port) : unix_path; }
};

/// What a stream needs to set up TLS (null `context`: plain TCP).
struct tls_setup {
    std::shared_ptr<asio::ssl::context> context;
    std::string server_name; ///< overrides the target's host for verification and SNI
    bool verify = true;
};

class redis_stream {
public:
    using tcp = asio::ip::tcp;
    using tls_socket = asio::ssl::stream<tcp::socket>;
    using unix_socket = asio::local::stream_protocol::socket;

    explicit redis_stream(asio::any_io_executor ex) : ex_(std::move(ex)) {}

    /// Connects (resolving the host, then the TLS handshake when `tls.context` is set) and calls
    /// `done(std::string error)`: empty on success, else why, in words a user can act on.
    template <class Done>
    void async_connect(const redis_target& t, const tls_setup& tls, Done done) {
        close();
        if (!t.unix_path.empty()) {
            auto& s = sock_.emplace<unix_socket>(ex_);
            s.async_connect(asio::local::stream_protocol::endpoint(t.unix_path),
                            [done = std::move(done)](const boost::system::error_code& ec) mutable {
                                done(ec ? ec.message() : std::string());
                            });
            return;
        }
        boost::system::error_code bad;
        const auto address = asio::ip::make_address(t.host, bad);
        if (!bad) { // an address: no resolver (and none of its threads)
            auto& s = sock_.emplace<tcp::socket>(ex_);
            s.async_connect(tcp::endpoint(address, static_cast<unsigned short>(t.port)),
                            [this, t, tls, done = std::move(done)](const boost::system::error_code& ec) mutable {
                                connected(ec, t, tls, std::move(done));
                            });
            return;
        }
        auto resolver = std::make_shared<tcp::resolver>(ex_);
        resolver->async_resolve(
            t.host, std::to_string(t.port),
            [this, resolver, t, tls, done = std::move(done)](const boost::system::error_code& ec,
                                                            tcp::resolver::results_type results) mutable {
                if (ec) return done("cannot resolve " + t.host + ": " + ec.message());
                auto& s = sock_.emplace<tcp::socket>(ex_);
                asio::async_connect(s, results,
                                    [this, t, tls, done = std::move(done)](const boost::system::error_code& cec,
                                                                          const tcp::endpoint&) mutable {
                                        connected(cec, t, tls, std::move(done));
                                    });
            });
    }

    /// Writes all of `buffer`; `done(error_code, bytes)`.
    template <class Buffer, class Done>
    void async_write(const Buffer& buffer, Done done) {
        visit_open([&](auto& s) { asio::async_write(s, buffer, std::move(done)); }, done);
    }

    /// Reads what is there; `done(error_code, bytes)`.
    template <class Buffer, class Done>
    void async_read_some(const Buffer& buffer, Done done) {
        visit_open([&](auto& s) { s.async_read_some(buffer, std::move(done)); }, done);
    }

    /// Why a connection that passed its TLS handshake may still be refused: the server asked for
    /// a client certificate and none is configured. Empty otherwise.
    std::string tls_refusal_hint() const {
        auto* s = std::get_if<tls_socket>(&sock_);
        if (!s || !client_cert_requested(const_cast<tls_socket*>(s)->native_handle())) return {};
        return " (the server asked for a client certificate, and none is configured: set tls.cert_file and "
               "tls.key_file, CALLS_REDIS_TLS_CERT_FILE / CALLS_REDIS_TLS_KEY_FILE; tls-auth-clients yes "
               "means certificate required)";
    }

    void close() noexcept {
        boost::system::error_code ignored;
        if (auto* s = std::get_if<tcp::socket>(&sock_)) s->close(ignored);
        if (auto* s = std::get_if<tls_socket>(&sock_)) s->lowest_layer().close(ignored);
        if (auto* s = std::get_if<unix_socket>(&sock_)) s->close(ignored);
    }

private:
    template <class Op, class Done>
    void visit_open(Op&& op, Done& done) {
        if (auto* s = std::get_if<tcp::socket>(&sock_)) return op(*s);
        if (auto* s = std::get_if<tls_socket>(&sock_)) return op(*s);
        if (auto* s = std::get_if<unix_socket>(&sock_)) return op(*s);
        asio::post(ex_, [done = std::move(done)]() mutable { done(asio::error::not_connected, std::size_t{0}); });
    }

    template <class Done>
    void connected(const boost::system::error_code& ec, const redis_target& t, const tls_setup& tls, Done done) {
        if (ec) return done(ec.message());
        set_nodelay();
        if (!tls.context) return done(std::string());
        handshake(t, tls, std::move(done));
    }

    void set_nodelay() {
        boost::system::error_code ignored;
        std::get<tcp::socket>(sock_).set_option(tcp::no_delay(true), ignored);
    }

    static bool is_address(const std::string& name) {
        boost::system::error_code ec;
        asio::ip::make_address(name, ec);
        return !ec;
    }

    /// TLS over the connected socket: SNI for a host name, and (when verifying) the certificate
    /// checked against the name or address by OpenSSL itself, so a failure says why.
    template <class Done>
    void handshake(const redis_target& t, const tls_setup& tls, Done done) {
        auto plain = std::move(std::get<tcp::socket>(sock_));
        auto& s = sock_.emplace<tls_socket>(std::move(plain), *tls.context);
        SSL* ssl = s.native_handle();
        const std::string& name = tls.server_name.empty() ? t.host : tls.server_name;
        const bool address = is_address(name);
        if (!address) SSL_set_tlsext_host_name(ssl, name.c_str());
        if (tls.verify) {
            if (address)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
            else
                SSL_set1_host(ssl, name.c_str());
        }
        s.async_handshake(asio::ssl::stream_base::client,
                          [this, name, done = std::move(done)](const boost::system::error_code& ec) mutable {
                              if (!ec) return done(std::string());
                              std::string why = "TLS handshake failed: ";
                              const long verify = tls_verify_result();
                              if (verify != X509_V_OK)
                                  why += std::string("certificate not accepted for '") + name +
                                         "': " + X509_verify_cert_error_string(verify);
                              else
                                  why += ec.message();
                              done(std::move(why));
                          });
    }

    long tls_verify_result() const noexcept {
        auto* s = std::get_if<tls_socket>(&sock_);
        return s ? SSL_get_verify_result(const_cast<tls_socket*>(s)->native_handle()) : X509_V_OK;
    }

    asio::any_io_executor ex_;
    std::variant<std::monostate, tcp::socket, tls_socket, unix_socket> sock_;
};

} // namespace callguard::detail
