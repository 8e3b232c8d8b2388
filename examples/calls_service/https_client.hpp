#pragma once

// A small HTTP(S) client for Twilio's REST API: one POST per connection, every step bounded by
// one deadline, the server's certificate verified against the system's trust store (OpenSSL's
// default paths, so SSL_CERT_FILE and SSL_CERT_DIR are honoured), with SNI and host name
// verification. Blocking for its caller: each request runs on an io_context of its own, on the
// calling thread (the WhatsApp sender's), never on the service's HTTP threads.

#include <utility> // before Boost: asio 1.74 uses std::exchange without including it

#include <callguard/errors.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace calls {

/// Where requests go: `http(s)://host[:port][/base/path]`, as TWILIO_API_BASE_URL gives it.
struct http_endpoint {
    bool tls = true;
    std::string host;
    std::string port;
    std::string base_path; ///< without a trailing '/', empty for none

    /// Throws `callguard::config_error` naming `variable` for anything but an http(s) URL with a
    /// host (no user info, query or fragment).
    static http_endpoint parse(const std::string& variable, std::string_view url) {
        http_endpoint e;
        std::string_view rest;
        if (url.starts_with("https://")) {
            rest = url.substr(8);
        } else if (url.starts_with("http://")) {
            e.tls = false;
            rest = url.substr(7);
        } else {
            throw callguard::config_error(variable, url, "expected https://host[:port][/path] (http:// for local tests)");
        }
        const auto slash = rest.find('/');
        auto authority = rest.substr(0, slash);
        auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
        if (authority.empty() || authority.find_first_of("@ \t") != std::string_view::npos)
            throw callguard::config_error(variable, url, "expected a host name (no user name, no spaces)");
        if (path.find_first_of("?# \t") != std::string_view::npos)
            throw callguard::config_error(variable, url, "expected no query, fragment or spaces in the path");
        if (authority.front() == '[') { // [IPv6]:port
            const auto close = authority.find(']');
            if (close == std::string_view::npos) throw callguard::config_error(variable, url, "unclosed '[' in the host");
            e.host = std::string(authority.substr(1, close - 1));
            authority.remove_prefix(close + 1);
            if (!authority.empty() && authority.front() != ':')
                throw callguard::config_error(variable, url, "expected ':port' after ']'");
            if (!authority.empty()) e.port = std::string(authority.substr(1));
        } else {
            const auto colon = authority.rfind(':');
            e.host = std::string(authority.substr(0, colon));
            if (colon != std::string_view::npos) e.port = std::string(authority.substr(colon + 1));
        }
        if (e.host.empty()) throw callguard::config_error(variable, url, "expected a host name");
        if (e.port.empty()) {
            e.port = e.tls ? "443" : "80";
        } else {
            int p = 0;
            for (char c : e.port) {
                if (c < '0' || c > '9' || p > 65535) throw callguard::config_error(variable, url, "the port is not a number");
                p = p * 10 + (c - '0');
            }
            if (p < 1 || p > 65535) throw callguard::config_error(variable, url, "the port must be 1 to 65535");
        }
        while (!path.empty() && path.back() == '/') path.remove_suffix(1);
        e.base_path = std::string(path);
        return e;
    }

    /// The Host header: the port only when it is not the scheme's default.
    std::string host_header() const {
        const bool ipv6 = host.find(':') != std::string::npos;
        std::string h = ipv6 ? "[" + host + "]" : host;
        if (port != (tls ? "443" : "80")) h += ":" + port;
        return h;
    }
};

/// A request that got no HTTP answer (name resolution, connection, TLS, timeout).
class http_transport_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct http_response {
    unsigned status = 0;
    std::string body;
    std::optional<std::chrono::seconds> retry_after; ///< a 429's or 503's Retry-After, in seconds
};

class https_client {
public:
    /// Loads the trust store once (OpenSSL's default paths: SSL_CERT_FILE, SSL_CERT_DIR or the
    /// system's bundle).
    explicit https_client(http_endpoint endpoint)
        : endpoint_(std::move(endpoint)), tls_(boost::asio::ssl::context::tls_client) {
        tls_.set_default_verify_paths();
        tls_.set_verify_mode(boost::asio::ssl::verify_peer);
        tls_.set_options(boost::asio::ssl::context::default_workarounds | boost::asio::ssl::context::no_sslv2 |
                         boost::asio::ssl::context::no_sslv3 | boost::asio::ssl::context::no_tlsv1 |
                         boost::asio::ssl::context::no_tlsv1_1);
    }

    const http_endpoint& endpoint() const noexcept { return endpoint_; }

    /// POSTs a form to `base_path + path` and returns the answer, whatever its status. Throws
    /// `http_transport_error` (saying what failed) when no answer came within `timeout`, or at
    /// once when `stop` is signalled.
    http_response post_form(std::string_view path, const std::map<std::string, std::string>& headers,
                            std::string body, std::chrono::milliseconds timeout, std::stop_token stop = {}) {
        namespace http = boost::beast::http;
        http::request<http::string_body> req{http::verb::post, endpoint_.base_path + std::string(path), 11};
        req.set(http::field::host, endpoint_.host_header());
        req.set(http::field::user_agent, "callguard-calls-service");
        req.set(http::field::content_type, "application/x-www-form-urlencoded");
        req.set(http::field::accept, "application/json");
        for (const auto& [k, v] : headers) req.set(k, v);
        req.body() = std::move(body);
        req.prepare_payload();

        std::optional<http_response> answer;
        std::exception_ptr failure;
        boost::asio::io_context ioc; // one per request: destroying it (first) ends whatever is left
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        boost::asio::co_spawn(ioc, exchange(req, deadline),
                              [&](std::exception_ptr e, http_response r) {
                                  if (e) failure = e;
                                  else answer = std::move(r);
                              });
        // Each socket operation has the deadline; this bounds name resolution too, and watches
        // the stop token.
        const auto limit = deadline + std::chrono::milliseconds(200);
        while (!ioc.stopped() && std::chrono::steady_clock::now() < limit) {
            if (stop.stop_requested()) throw http_transport_error("stopped: the service is shutting down");
            ioc.run_for(std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(100),
                                                                      limit - std::chrono::steady_clock::now()));
        }
        if (failure) std::rethrow_exception(failure);
        if (!answer) throw http_transport_error("no answer within " + std::to_string(timeout.count()) + " ms");
        return std::move(*answer);
    }

private:
    using tcp = boost::asio::ip::tcp;
    using clock = std::chrono::steady_clock;

    boost::asio::awaitable<http_response> exchange(boost::beast::http::request<boost::beast::http::string_body>& req,
                                                   clock::time_point deadline) {
        namespace beast = boost::beast;
        namespace http = beast::http;
        auto ex = co_await boost::asio::this_coro::executor;
        boost::system::error_code ec;
        auto token = boost::asio::redirect_error(boost::asio::use_awaitable, ec);
        auto check = [&](const char* what) {
            if (ec) throw http_transport_error(std::string(what) + " " + endpoint_.host_header() + ": " + describe(ec));
        };
        tcp::resolver resolver(ex);
        auto endpoints = co_await resolver.async_resolve(endpoint_.host, endpoint_.port, token);
        check("cannot resolve");
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.body_limit(1 << 20);
        if (endpoint_.tls) {
            beast::ssl_stream<beast::tcp_stream> stream(ex, tls_);
            if (!SSL_set_tlsext_host_name(stream.native_handle(), endpoint_.host.c_str()))
                throw http_transport_error("cannot set the TLS server name " + endpoint_.host);
            stream.set_verify_callback(boost::asio::ssl::host_name_verification(endpoint_.host));
            auto& tcp_layer = beast::get_lowest_layer(stream);
            tcp_layer.expires_at(deadline);
            co_await tcp_layer.async_connect(endpoints, token);
            check("cannot connect to");
            tcp_layer.expires_at(deadline);
            co_await stream.async_handshake(boost::asio::ssl::stream_base::client, token);
            check("TLS handshake with");
            tcp_layer.expires_at(deadline);
            co_await http::async_write(stream, req, token);
            check("cannot send to");
            tcp_layer.expires_at(deadline);
            co_await http::async_read(stream, buffer, parser, token);
            check("no answer from");
            tcp_layer.socket().shutdown(tcp::socket::shutdown_both, ec); // no close_notify wait
        } else {
            beast::tcp_stream stream(ex);
            stream.expires_at(deadline);
            co_await stream.async_connect(endpoints, token);
            check("cannot connect to");
            stream.expires_at(deadline);
            co_await http::async_write(stream, req, token);
            check("cannot send to");
            stream.expires_at(deadline);
            co_await http::async_read(stream, buffer, parser, token);
            check("no answer from");
            stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        }
        auto res = parser.release();
        http_response out;
        out.status = res.result_int();
        out.body = std::move(res.body());
        if (auto it = res.find(http::field::retry_after); it != res.end()) {
            long secs = 0;
            bool digits = !it->value().empty();
            for (char c : it->value()) {
                if (c < '0' || c > '9' || secs > 86400) {
                    digits = false;
                    break;
                }
                secs = secs * 10 + (c - '0');
            }
            if (digits) out.retry_after = std::chrono::seconds(secs);
        }
        co_return out;
    }

    /// A socket or TLS error in words; OpenSSL's reason (e.g. "certificate verify failed") when
    /// the handshake failed.
    static std::string describe(const boost::system::error_code& ec) {
        if (ec == boost::beast::error::timeout) return "timed out";
        if (ec.category() == boost::asio::error::get_ssl_category()) {
            std::string why = ec.message();
            if (auto reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value())))
                why = reason;
            return "TLS: " + why;
        }
        return ec.message();
    }

    http_endpoint endpoint_;
    boost::asio::ssl::context tls_;
};

} // namespace calls
