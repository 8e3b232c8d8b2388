#pragma once

// Runs the real calls_service binary on a free loopback port and talks to it over real sockets:
// HTTP with Boost.Beast, Media Streams over a real WebSocket, raw TCP for the malformed cases.

#include <utility> // before Boost: asio 1.74 uses std::exchange without including it

#include "../support/probes.hpp" // free_port, find_program (no hiredis: also built without Redis)

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef CALLS_SERVICE_BINARY
#error "CALLS_SERVICE_BINARY must name the calls_service executable"
#endif

namespace svc {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

struct response {
    unsigned status = 0;
    std::string content_type;
    std::string body;
};

/// One running calls_service. Environment: PORT, HOST, CALLS_DB_PATH are set here; the rest
/// comes from `env`. Killed (SIGKILL) on destruction unless stopped before.
class service {
public:
    service() : service(std::map<std::string, std::string>{}) {}
    service(std::initializer_list<std::pair<const std::string, std::string>> env)
        : service(std::map<std::string, std::string>(env)) {}
    explicit service(std::map<std::string, std::string> env) : env_(std::move(env)) {
        char tmpl[] = "/tmp/callguard-svc-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
        port_ = test::free_port();
        env_.try_emplace("CALLS_DB_PATH", dir_ + "/calls.db");
        env_["PORT"] = std::to_string(port_);
        env_["HOST"] = "127.0.0.1";
        start();
    }
    service(const service&) = delete;
    service& operator=(const service&) = delete;
    ~service() {
        kill_hard();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    std::uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }
    const std::string& dir() const { return dir_; }
    std::string log() const {
        std::ifstream in(dir_ + "/service.log");
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit code (-1 on timeout).
    int terminate(std::chrono::milliseconds limit = 5s) {
        if (pid_ <= 0) return -1;
        ::kill(pid_, SIGTERM);
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            std::this_thread::sleep_for(20ms);
        }
        return -1;
    }
    void kill_hard() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    bool running() {
        if (pid_ <= 0) return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return false;
        }
        return true;
    }

    // ---- HTTP ----------------------------------------------------------------------------

    response request(http::verb method, std::string target, std::string body = {},
                     std::map<std::string, std::string> headers = {},
                     std::string content_type = "application/x-www-form-urlencoded") const {
        net::io_context ioc;
        beast::tcp_stream stream(ioc);
        stream.expires_after(10s);
        stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_));
        http::request<http::string_body> req{method, target, 11};
        req.set(http::field::host, "127.0.0.1:" + std::to_string(port_));
        if (!content_type.empty() && method == http::verb::post) req.set(http::field::content_type, content_type);
        for (auto& [k, v] : headers) req.set(k, v);
        req.body() = std::move(body);
        req.prepare_payload();
        http::write(stream, req);
        beast::flat_buffer buf;
        http::response_parser<http::string_body> parser;
        parser.body_limit(1 << 20);
        http::read(stream, buf, parser);
        auto res = parser.release();
        beast::error_code ec;
        stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        return {res.result_int(), std::string(res[http::field::content_type]), res.body()};
    }
    response get(std::string target) const { return request(http::verb::get, std::move(target)); }
    response post(std::string target, std::string body, std::map<std::string, std::string> headers = {}) const {
        return request(http::verb::post, std::move(target), std::move(body), std::move(headers));
    }
    response incoming_call(const std::string& sid, std::string extra = {}) const {
        return post("/webhook/incoming_call", "CallSid=" + sid + "&From=%2B972500000001&To=%2B97231234567" + extra);
    }
    response call_status(const std::string& sid, const std::string& status) const {
        return post("/webhook/call_status", "CallSid=" + sid + "&CallStatus=" + status);
    }

    /// A field of /health/details as text (numbers and booleans).
    std::string health_field(const std::string& key) const {
        auto body = get("/health/details").body;
        auto pos = body.find("\"" + key + "\":");
        if (pos == std::string::npos) return {};
        pos += key.size() + 3;
        auto end = body.find_first_of(",}", pos);
        auto v = body.substr(pos, end - pos);
        if (!v.empty() && v.front() == '"') v = v.substr(1, v.size() - 2);
        return v;
    }
    long active() const { return std::stol(health_field("active_calls")); }

    /// A value of /metrics (`callguard_<name>`, e.g. "already_held_total"); -1 if missing.
    long metric(const std::string& name) const {
        const auto body = get("/metrics").body;
        const auto key = "\ncallguard_" + name + " ";
        const auto pos = body.find(key);
        return pos == std::string::npos ? -1 : std::stol(body.substr(pos + key.size()));
    }

    /// Waits (bounded) until `n` acquires found their slot already held. A media stream's
    /// `start` adopts its webhook's slot that way, and the WebSocket answers nothing: this is how
    /// a test knows the service has processed the `start` it sent (and the stream holds the slot).
    bool wait_adopted(long n, std::chrono::milliseconds limit = 10s) const {
        return test::eventually([&] { return metric("already_held_total") == n; }, limit);
    }

    /// Polls (bounded) until active_calls == n.
    bool wait_active(long n, std::chrono::milliseconds limit = 10s) const {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            if (active() == n) return true;
            std::this_thread::sleep_for(20ms);
        }
        return active() == n;
    }

    /// Sends raw bytes and returns whatever comes back before the server closes (bounded).
    std::string raw(const std::string& bytes, std::chrono::milliseconds limit = 3s) const {
        net::io_context ioc;
        tcp::socket s(ioc);
        s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_));
        beast::error_code ec;
        net::write(s, net::buffer(bytes), ec);
        std::string out;
        std::array<char, 4096> buf{};
        auto deadline = std::chrono::steady_clock::now() + limit;
        s.non_blocking(true);
        while (std::chrono::steady_clock::now() < deadline) {
            auto n = s.read_some(net::buffer(buf), ec);
            if (ec == net::error::would_block) {
                std::this_thread::sleep_for(5ms);
                continue;
            }
            if (ec) break;
            out.append(buf.data(), n);
        }
        return out;
    }

private:
    void start() {
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            int out = ::open((dir_ + "/service.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int in = ::open("/dev/null", O_RDONLY);
            ::dup2(in, 0);
            ::dup2(out, 1);
            ::dup2(out, 2);
            ::chdir(dir_.c_str());
            for (auto& [k, v] : env_) ::setenv(k.c_str(), v.c_str(), 1);
            ::execl(CALLS_SERVICE_BINARY, "calls_service", static_cast<char*>(nullptr));
            std::_Exit(127);
        }
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < deadline) {
            REQUIRE_MESSAGE(running(), "calls_service exited at start-up:\n" << log());
            try {
                if (get("/health").status == 200) return;
            } catch (const std::exception&) {
            }
            std::this_thread::sleep_for(20ms);
        }
        FAIL("calls_service did not answer /health within 10 s:\n" << log());
    }

    std::map<std::string, std::string> env_;
    std::string dir_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

/// A Media Streams client: connects to /ws/media and sends Twilio-shaped messages.
class media_client {
public:
    explicit media_client(const service& s, std::map<std::string, std::string> headers = {})
        : ws_(ioc_) {
        auto& sock = beast::get_lowest_layer(ws_);
        sock.expires_after(5s);
        sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), s.port()));
        ws_.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
            for (auto& [k, v] : headers) req.set(k, v);
        }));
        ws_.handshake("127.0.0.1:" + std::to_string(s.port()), "/ws/media");
        sock.expires_never();
    }

    void send(const std::string& text) { ws_.write(net::buffer(text)); }
    void send_binary(const std::string& bytes) {
        ws_.binary(true);
        ws_.write(net::buffer(bytes));
        ws_.text(true);
    }
    void connected() { send(R"({"event":"connected","protocol":"Call","version":"1.0.0"})"); }
    void start(const std::string& sid) {
        send(R"({"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":")" +
             sid + R"(","tracks":["inbound"],"customParameters":{"callSid":")" + sid +
             R"("},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"})");
    }
    void media(int n) {
        send(R"({"event":"media","sequenceNumber":")" + std::to_string(n) +
             R"(","media":{"track":"inbound","chunk":")" + std::to_string(n) +
             R"(","timestamp":"20","payload":"//////////8="},"streamSid":"MZ1"})");
    }
    void stop(const std::string& sid) {
        send(R"({"event":"stop","sequenceNumber":"9","stop":{"accountSid":"AC1","callSid":")" + sid +
             R"("},"streamSid":"MZ1"})");
    }
    void close() { ws_.close(websocket::close_code::normal); }
    /// Drops the TCP connection without a close frame (a crashed peer or a cut cable).
    void drop() {
        beast::error_code ec;
        beast::get_lowest_layer(ws_).socket().set_option(net::socket_base::linger(true, 0), ec);
        beast::get_lowest_layer(ws_).socket().close(ec);
    }
    /// Reads until the server closes; returns its close reason (empty if none came in time).
    websocket::close_reason wait_close(std::chrono::milliseconds limit = 3s) {
        beast::get_lowest_layer(ws_).expires_after(limit);
        beast::flat_buffer buf;
        beast::error_code ec;
        while (!ec) ws_.read(buf, ec);
        return ws_.reason();
    }

private:
    net::io_context ioc_;
    websocket::stream<beast::tcp_stream> ws_;
};

/// The signature Twilio's own helper library (npm `twilio`) computes.
inline std::string twilio_sign(const std::string& token, const std::string& url,
                               const std::vector<std::pair<std::string, std::string>>& params) {
    std::string cmd = "node '" CALLGUARD_NODE_DIR "/sign.js' '" + token + "' '" + url + "'";
    for (auto& [k, v] : params) cmd += " '" + k + "' '" + v + "'";
    REQUIRE_MESSAGE(std::filesystem::exists(CALLGUARD_NODE_DIR "/node_modules/twilio"),
                    "npm package twilio missing: run scripts/deps.sh");
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[256] = {};
    std::string out;
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    REQUIRE(::pclose(p) == 0);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
}

/// Runs a shell command, returning its exit status.
inline int run(const std::string& cmd) { return std::system(cmd.c_str()); }

} // namespace svc
