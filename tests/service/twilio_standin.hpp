#pragma once

// A stand-in for Twilio's Messages resource on a loopback port, over HTTP or HTTPS: it checks a
// request the way Twilio does (the account's path, HTTP Basic auth with the account SID and auth
// token, a form body with To, From or MessagingServiceSid, and ContentSid or Body) and answers as
// Twilio does (201 with a message SID, or an error body with Twilio's code). What it answers for
// each recipient is scripted by the test: 201, 429, 500, a 400 with an error code, or a stall
// (reads the request and never answers). It records every request it saw.

#include <utility> // before Boost: asio 1.74 uses std::exchange without including it

#include "../support/probes.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace svc {

class twilio_standin {
public:
    /// One scripted answer.
    struct answer {
        unsigned status = 201;
        int code = 0;                          ///< Twilio's error code (errors only)
        std::string message;                   ///< Twilio's error message (errors only)
        std::chrono::milliseconds stall{0};    ///< > 0: read the request, say nothing for this long, close
        std::optional<int> retry_after;        ///< Retry-After header, seconds
    };
    static answer created() { return {}; }
    static answer too_many() { return {429, 20429, "Too Many Requests", {}, {}}; }
    static answer server_error() { return {500, 20500, "Internal Server Error", {}, {}}; }
    static answer invalid_to() { return {400, 21211, "Invalid 'To' Phone Number", {}, {}}; }
    static answer outside_window() {
        return {400, 63016, "Failed to send freeform message because you are outside the allowed window.", {}, {}};
    }
    static answer stall_for(std::chrono::milliseconds d) { return {0, 0, {}, d, {}}; }

    /// What one request looked like and what it got.
    struct request {
        std::string target;
        bool authorized = false;
        std::map<std::string, std::string> fields;
        unsigned status = 0; ///< 0: stalled, no answer
        std::string message_sid;
        std::chrono::steady_clock::time_point at;
    };

    struct tls_files {
        std::string certificate_chain, private_key;
    };

    twilio_standin(std::string account_sid, std::string auth_token, std::optional<tls_files> tls = std::nullopt)
        : account_sid_(std::move(account_sid)), auth_token_(std::move(auth_token)),
          acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}),
          ssl_(boost::asio::ssl::context::tls_server) {
        if (tls) {
            ssl_.use_certificate_chain_file(tls->certificate_chain);
            ssl_.use_private_key_file(tls->private_key, boost::asio::ssl::context::pem);
            tls_ = true;
        }
        port_ = acceptor_.local_endpoint().port();
        accepting_ = std::thread([this] { accept_loop(); });
    }

    twilio_standin(const twilio_standin&) = delete;
    twilio_standin& operator=(const twilio_standin&) = delete;

    ~twilio_standin() {
        stopping_ = true;
        boost::system::error_code ec;
        acceptor_.close(ec);
        // Wake the accept loop (a connect to ourselves), then wait for every connection thread.
        try {
            boost::asio::io_context tmp;
            boost::asio::ip::tcp::socket s(tmp);
            s.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ec);
        } catch (...) {
        }
        if (accepting_.joinable()) accepting_.join();
        std::vector<std::thread> workers;
        {
            std::lock_guard lk(mu_);
            workers.swap(workers_);
        }
        for (auto& t : workers) t.join();
    }

    std::uint16_t port() const { return port_; }
    /// The value for TWILIO_API_BASE_URL.
    std::string base_url(const std::string& host = "127.0.0.1") const {
        return std::string(tls_ ? "https://" : "http://") + host + ":" + std::to_string(port_);
    }

    /// The answers for messages to `to` (E.164), in order; once used up, 201.
    void script(const std::string& to, std::vector<answer> answers) {
        std::lock_guard lk(mu_);
        auto& q = scripts_[to];
        for (auto& a : answers) q.push_back(std::move(a));
    }

    std::vector<request> requests() const {
        std::lock_guard lk(mu_);
        return requests_;
    }
    /// Requests for `to` (E.164) so far.
    std::vector<request> requests_to(const std::string& to) const {
        std::vector<request> out;
        for (auto& r : requests()) {
            auto it = r.fields.find("To");
            if (it != r.fields.end() && it->second == "whatsapp:" + to) out.push_back(r);
        }
        return out;
    }
    /// Messages accepted (answered 201) for `to`.
    std::size_t accepted_to(const std::string& to) const {
        std::size_t n = 0;
        for (auto& r : requests_to(to)) n += r.status == 201;
        return n;
    }
    /// Connections that began but never became a request (a failed TLS handshake).
    std::size_t broken_connections() const { return broken_.load(); }

private:
    using tcp = boost::asio::ip::tcp;

    void accept_loop() {
        while (!stopping_) {
            boost::system::error_code ec;
            tcp::socket s(ioc_);
            acceptor_.accept(s, ec);
            if (ec || stopping_) break;
            std::lock_guard lk(mu_);
            workers_.emplace_back([this, sock = std::move(s)]() mutable { serve(std::move(sock)); });
        }
    }

    void serve(tcp::socket sock) {
        namespace beast = boost::beast;
        namespace http = beast::http;
        try {
            if (tls_) {
                beast::ssl_stream<tcp::socket> stream(std::move(sock), ssl_);
                boost::system::error_code ec;
                stream.handshake(boost::asio::ssl::stream_base::server, ec);
                if (ec) {
                    ++broken_;
                    return;
                }
                exchange(stream);
                stream.shutdown(ec);
            } else {
                exchange(sock);
                boost::system::error_code ec;
                sock.shutdown(tcp::socket::shutdown_both, ec);
            }
        } catch (const std::exception&) {
            // a client that went away mid-request: nothing to answer
        }
    }

    template <class Stream>
    void exchange(Stream& stream) {
        namespace beast = boost::beast;
        namespace http = beast::http;
        beast::flat_buffer buf;
        http::request<http::string_body> req;
        http::read(stream, buf, req);
        request seen;
        seen.target = std::string(req.target());
        seen.at = std::chrono::steady_clock::now();
        seen.authorized = req[http::field::authorization] == "Basic " + base64(account_sid_ + ":" + auth_token_);
        seen.fields = parse_form(req.body());
        auto [res, stall] = decide(req, seen);
        seen.status = stall.count() > 0 ? 0 : res.result_int();
        if (seen.status == 201) seen.message_sid = nlohmann::json::parse(res.body())["sid"].get<std::string>();
        {
            std::lock_guard lk(mu_);
            requests_.push_back(seen);
        }
        if (stall.count() > 0) {
            const auto until = std::chrono::steady_clock::now() + stall;
            while (!stopping_ && std::chrono::steady_clock::now() < until)
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            return;
        }
        http::write(stream, res);
    }

    using response = boost::beast::http::response<boost::beast::http::string_body>;

    static response error(unsigned status, int code, const std::string& message) {
        response res{static_cast<boost::beast::http::status>(status), 11};
        res.set(boost::beast::http::field::content_type, "application/json");
        res.body() = nlohmann::json{{"code", code},
                                    {"message", message},
                                    {"more_info", "https://www.twilio.com/docs/errors/" + std::to_string(code)},
                                    {"status", status}}
                         .dump();
        res.prepare_payload();
        return res;
    }

    /// Twilio's own checks first, then the script for the recipient.
    std::pair<response, std::chrono::milliseconds> decide(const boost::beast::http::request<boost::beast::http::string_body>& req,
                                                          const request& seen) {
        namespace http = boost::beast::http;
        const auto path = "/2010-04-01/Accounts/" + account_sid_ + "/Messages.json";
        if (req.method() != http::verb::post || std::string(req.target()) != path)
            return {error(404, 20404, "The requested resource " + std::string(req.target()) + " was not found"), {}};
        if (!seen.authorized) return {error(401, 20003, "Authenticate"), {}};
        if (req[http::field::content_type].find("application/x-www-form-urlencoded") != 0)
            return {error(400, 20001, "Content-Type must be application/x-www-form-urlencoded"), {}};
        auto field = [&](const char* n) -> std::string {
            auto it = seen.fields.find(n);
            return it == seen.fields.end() ? std::string() : it->second;
        };
        const auto to = field("To");
        if (to.rfind("whatsapp:+", 0) != 0 || to.size() < 18) return {error(400, 21211, "Invalid 'To' Phone Number"), {}};
        if (field("From").rfind("whatsapp:+", 0) != 0 && field("MessagingServiceSid").rfind("MG", 0) != 0)
            return {error(400, 21603, "A 'From' phone number is required."), {}};
        if (field("ContentSid").empty() && field("Body").empty())
            return {error(400, 21602, "Message body is required."), {}};
        if (!field("ContentVariables").empty() && !nlohmann::json::accept(field("ContentVariables")))
            return {error(400, 21656, "The ContentVariables Parameter is invalid."), {}};
        answer a;
        {
            std::lock_guard lk(mu_);
            auto& q = scripts_[to.substr(9)];
            if (!q.empty()) {
                a = q.front();
                q.pop_front();
            }
        }
        if (a.stall.count() > 0) return {response{}, a.stall};
        if (a.status != 201) {
            auto res = error(a.status, a.code, a.message);
            if (a.retry_after) {
                res.set(http::field::retry_after, std::to_string(*a.retry_after));
                res.prepare_payload();
            }
            return {res, {}};
        }
        char sid[35];
        std::snprintf(sid, sizeof sid, "SM%032x", message_counter_.fetch_add(1) + 1);
        response res{http::status::created, 11};
        res.set(http::field::content_type, "application/json");
        res.body() = nlohmann::json{{"sid", sid}, {"status", "queued"}, {"to", to}, {"account_sid", account_sid_}}.dump();
        res.prepare_payload();
        return {res, {}};
    }

    static std::map<std::string, std::string> parse_form(const std::string& body) {
        std::map<std::string, std::string> out;
        std::size_t i = 0;
        while (i <= body.size()) {
            auto amp = body.find('&', i);
            if (amp == std::string::npos) amp = body.size();
            auto item = body.substr(i, amp - i);
            auto eq = item.find('=');
            if (!item.empty()) out[decode(item.substr(0, eq))] = eq == std::string::npos ? "" : decode(item.substr(eq + 1));
            i = amp + 1;
        }
        return out;
    }

    static std::string decode(const std::string& s) {
        std::string out;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '+') out += ' ';
            else if (s[i] == '%' && i + 2 < s.size()) {
                out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
                i += 2;
            } else out += s[i];
        }
        return out;
    }

    static std::string base64(const std::string& s) {
        std::string out(4 * ((s.size() + 2) / 3), '\0');
        const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
        out.resize(static_cast<std::size_t>(n));
        return out;
    }

    std::string account_sid_, auth_token_;
    boost::asio::io_context ioc_;
    tcp::acceptor acceptor_;
    boost::asio::ssl::context ssl_;
    bool tls_ = false;
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> broken_{0};
    mutable std::mutex mu_;
    std::map<std::string, std::deque<answer>> scripts_;
    std::vector<request> requests_;
    std::atomic<unsigned> message_counter_{0};
    std::vector<std::thread> workers_;
    std::thread accepting_; // last: starts after everything above exists
};

} // namespace svc
