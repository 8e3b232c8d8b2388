#pragma once

// The network side: Boost.Beast HTTP/1.1 with keep-alive, and the Media Streams WebSocket.
// Limits that a slow or hostile client cannot get around: a connection cap, header and body
// limits (431 / 413), read timeouts, a message-size limit and an idle timeout on WebSockets.

#include "media_session.hpp"
#include "webhooks.hpp"

#include <utility> // before Boost: asio 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace calls {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

inline constexpr std::size_t max_body_bytes = 64 * 1024;
inline constexpr std::size_t max_header_bytes = 16 * 1024;

template <class Limiter>
class server : public std::enable_shared_from_this<server<Limiter>> {
public:
    server(net::io_context& ioc, const service_config& config, webhooks<Limiter>& hooks, Limiter& limiter)
        : ioc_(ioc), acceptor_(net::make_strand(ioc)), config_(config), hooks_(hooks), limiter_(limiter) {}

    /// Binds and starts accepting; returns the bound port (useful with PORT=0).
    std::uint16_t start() {
        tcp::endpoint ep{net::ip::make_address(config_.host), config_.port};
        acceptor_.open(ep.protocol());
        acceptor_.set_option(net::socket_base::reuse_address(true));
        acceptor_.bind(ep);
        acceptor_.listen(net::socket_base::max_listen_connections);
        accept();
        return acceptor_.local_endpoint().port();
    }

    /// Stops accepting and closes every media socket; their guards release the slots.
    void stop() {
        net::post(acceptor_.get_executor(), [self = this->shared_from_this()] {
            beast::error_code ec;
            self->acceptor_.close(ec);
        });
        std::vector<std::shared_ptr<void>> alive;
        std::lock_guard lk(ws_mu_);
        for (auto& [w, close] : media_sockets_)
            if (auto s = w.lock()) close();
    }

    std::size_t connections() const noexcept { return connections_.load(); }

private:
    class http_session;
    class media_socket;

    void accept() {
        acceptor_.async_accept(net::make_strand(ioc_), [self = this->shared_from_this()](beast::error_code ec, tcp::socket s) {
            if (ec) {
                if (ec != net::error::operation_aborted && self->acceptor_.is_open()) self->accept();
                return;
            }
            if (self->connections_.load() >= self->config_.max_connections) {
                beast::error_code ignored;
                s.close(ignored); // over the connection cap: refuse before reading anything
            } else {
                std::make_shared<http_session>(self, std::move(s))->run();
            }
            self->accept();
        });
    }

    void track(std::weak_ptr<void> w, std::function<void()> close) {
        std::lock_guard lk(ws_mu_);
        std::erase_if(media_sockets_, [](const auto& e) { return e.first.expired(); });
        media_sockets_.emplace_back(std::move(w), std::move(close));
    }

    /// One HTTP connection; hands itself over to a media_socket on a WebSocket upgrade.
    class http_session : public std::enable_shared_from_this<http_session> {
    public:
        http_session(std::shared_ptr<server> srv, tcp::socket s) : srv_(std::move(srv)), stream_(std::move(s)) {
            ++srv_->connections_;
        }
        ~http_session() { --srv_->connections_; }

        void run() { read(); }

    private:
        void read() {
            parser_.emplace();
            parser_->header_limit(max_header_bytes);
            parser_->body_limit(max_body_bytes);
            stream_.expires_after(srv_->config_.read_timeout);
            http::async_read_header(stream_, buffer_, *parser_,
                                    [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                                        self->on_header(ec);
                                    });
        }

        void on_header(beast::error_code ec) {
            if (ec) return on_error(ec);
            // Refuse an announced oversized body before reading a byte of it.
            if (auto len = parser_->content_length(); len && *len > max_body_bytes)
                return fail(http::status::payload_too_large, "request body over 64 KiB\n");
            http::async_read(stream_, buffer_, *parser_,
                             [self = this->shared_from_this()](beast::error_code read_ec, std::size_t) {
                                 self->on_read(read_ec);
                             });
        }

        void on_error(beast::error_code ec) {
            if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
                ec == net::error::operation_aborted || ec == net::error::connection_reset || ec == net::error::eof)
                return close();
            if (ec == http::error::body_limit) return fail(http::status::payload_too_large, "request body over 64 KiB\n");
            if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
                return fail(http::status::request_header_fields_too_large, "request header too large\n");
            return fail(http::status::bad_request, "malformed HTTP request\n");
        }

        void on_read(beast::error_code ec) {
            if (ec) return on_error(ec);
            auto req = parser_->release();
            const auto target = std::string_view(req.target().data(), req.target().size());
            if (websocket::is_upgrade(req)) {
                if (target.substr(0, target.find('?')) != "/ws/media")
                    return fail(http::status::not_found, "no WebSocket here\n");
                if (!srv_->hooks_.handshake_signature_ok(view_of(req)))
                    return fail(http::status::forbidden, "invalid Twilio signature\n");
                stream_.expires_never();
                // The media socket counts itself; this session's count goes when it dies, now.
                return std::make_shared<media_socket>(srv_, std::move(stream_))->run(std::move(req));
            }
            // The answer may come later (after the limiter answered), from another thread: it is
            // written on this connection's strand. Nothing more is read until it is.
            const bool keep_alive = req.keep_alive(), head = req.method() == http::verb::head;
            auto answer = [self = this->shared_from_this(), keep_alive, head](reply r) {
                net::dispatch(self->stream_.get_executor(), [self, r = std::move(r), keep_alive, head]() mutable {
                    self->respond(static_cast<http::status>(r.status), std::move(r.content_type), std::move(r.body),
                                  keep_alive, head);
                });
            };
            try {
                srv_->hooks_.handle(view_of(req), answer);
            } catch (const std::exception& e) {
                std::fprintf(stderr, "[SERVICE] request failed: %s\n", e.what());
                answer({500, "text/plain; charset=utf-8", "internal error\n"});
            }
        }

        request_view view_of(const http::request<http::string_body>& req) const {
            auto sv = [](beast::string_view s) { return std::string_view(s.data(), s.size()); };
            auto header = [&](auto field) {
                auto it = req.find(field);
                return it == req.end() ? std::string_view{} : sv(it->value());
            };
            return {sv(req.method_string()), sv(req.target()), header(http::field::host),
                    header("X-Forwarded-Proto"), header("X-Twilio-Signature"),
                    header(http::field::content_type), req.body()};
        }

        void respond(http::status status, std::string type, std::string body, bool keep_alive, bool head = false) {
            auto res = std::make_shared<http::response<http::string_body>>(status, 11);
            res->set(http::field::server, "callguard-calls-service");
            if (!type.empty()) res->set(http::field::content_type, type);
            res->keep_alive(keep_alive);
            if (!head) res->body() = std::move(body);
            res->prepare_payload();
            stream_.expires_after(srv_->config_.read_timeout);
            http::async_write(stream_, *res, [self = this->shared_from_this(), res, keep_alive](beast::error_code ec, std::size_t) {
                if (ec || !keep_alive) return self->linger_close();
                self->read();
            });
        }

        /// An error answer, then a lingering close: the client may still be sending (a 4 MiB
        /// body); closing at once would reset the connection before it reads our answer.
        void fail(http::status status, std::string body) {
            respond(status, "text/plain; charset=utf-8", std::move(body), false);
        }

        void linger_close() {
            beast::error_code ec;
            stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
            stream_.expires_after(std::chrono::seconds(2));
            drain_budget_ = 8 * 1024 * 1024;
            drain();
        }

        void drain() {
            stream_.async_read_some(net::buffer(drain_buf_), [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                if (ec || n >= self->drain_budget_) return self->close();
                self->drain_budget_ -= n;
                self->drain();
            });
        }

        void close() {
            beast::error_code ec;
            stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
            stream_.close();
        }

        std::shared_ptr<server> srv_;
        beast::tcp_stream stream_;
        beast::flat_buffer buffer_;
        std::optional<http::request_parser<http::string_body>> parser_;
        std::array<char, 16384> drain_buf_{};
        std::size_t drain_budget_ = 0;
    };

    /// One Media Streams WebSocket. Its media_session holds the call's slot guard, so the slot
    /// goes back when this object dies, whatever ended the connection.
    class media_socket : public std::enable_shared_from_this<media_socket> {
    public:
        media_socket(std::shared_ptr<server> srv, beast::tcp_stream stream)
            : srv_(std::move(srv)), ws_(std::move(stream)),
              session_(srv_->limiter_, srv_->config_.refresh_interval, ws_.get_executor(),
                       [this](media_verdict v) { // on the strand, while the session lives
                           close(v.normal ? websocket::close_code::normal : websocket::close_code::policy_error,
                                 v.reason);
                       }) {
            ++srv_->connections_;
        }
        ~media_socket() { --srv_->connections_; }

        void run(http::request<http::string_body> req) {
            websocket::stream_base::timeout t{};
            t.handshake_timeout = std::chrono::seconds(10);
            t.idle_timeout = srv_->config_.media_idle_timeout;
            t.keep_alive_pings = true;
            ws_.set_option(t);
            ws_.read_message_max(max_body_bytes);
            ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
                res.set(http::field::server, "callguard-calls-service");
            }));
            srv_->track(this->weak_from_this(), [w = this->weak_from_this()] {
                if (auto self = w.lock())
                    net::post(self->ws_.get_executor(), [self] { self->close(websocket::close_code::going_away, "server shutting down"); });
            });
            ws_.async_accept(req, [self = this->shared_from_this()](beast::error_code ec) {
                if (!ec) self->read();
            });
        }

    private:
        void read() {
            buffer_.clear();
            ws_.async_read(buffer_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                self->on_read(ec);
            });
        }

        void on_read(beast::error_code ec) {
            if (ec) {
                session_.end(); // closed, dropped, timed out or oversized: release now
                return;
            }
            media_verdict v;
            try {
                if (ws_.got_text()) {
                    auto data = buffer_.cdata();
                    v = session_.on_text(std::string_view(static_cast<const char*>(data.data()), data.size()));
                } else {
                    v = session_.on_binary();
                }
            } catch (const std::exception&) {
                v = {true, false, "internal error"};
            }
            if (v.close)
                return close(v.normal ? websocket::close_code::normal : websocket::close_code::policy_error, v.reason);
            read();
        }

        void close(websocket::close_code code, std::string reason) {
            session_.end();
            if (closing_ || !ws_.is_open()) return;
            closing_ = true;
            websocket::close_reason cr(code, reason);
            ws_.async_close(cr, [self = this->shared_from_this()](beast::error_code) {});
        }

        std::shared_ptr<server> srv_;
        websocket::stream<beast::tcp_stream> ws_;
        beast::flat_buffer buffer_;
        media_session<Limiter> session_;
        bool closing_ = false;
    };

    net::io_context& ioc_;
    tcp::acceptor acceptor_;
    const service_config& config_;
    webhooks<Limiter>& hooks_;
    Limiter& limiter_;
    std::atomic<std::size_t> connections_{0};
    std::mutex ws_mu_;
    std::vector<std::pair<std::weak_ptr<void>, std::function<void()>>> media_sockets_;
};

} // namespace calls
