#pragma once

// A real redis-server for tests: started on 127.0.0.1 and a free port, with no persistence,
// in its own temporary folder; killed by PID when the fixture dies. Tests can also kill, pause,
// resume and restart it to make real failures, and run commands on it directly.
//
//   test::redis_server srv;                  // throws if redis-server is missing
//   callguard::redis_backend b{srv.url()};   // "redis://127.0.0.1:<port>"
//   srv.pause(); ... srv.resume();           // SIGSTOP / SIGCONT: a frozen server
//   srv.kill_hard(); srv.restart();          // SIGKILL, then the same port again (empty data)
//   srv.command({"SCRIPT", "FLUSH"});        // any command, reply as text

#include "probes.hpp" // free_port, find_program

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace test {

class redis_server {
public:
    /// Starts the server; `extra` are more command-line arguments (e.g. {"--requirepass", "s3"}).
    explicit redis_server(std::vector<std::string> extra = {}) : redis_server(std::move(extra), {}, {}) {}

    /// `leading` go first (a config file, "--sentinel"); `password` is sent by `command`.
    redis_server(std::vector<std::string> extra, std::vector<std::string> leading, std::string password,
                 std::uint16_t port = 0)
        : extra_(std::move(extra)), leading_(std::move(leading)), password_(std::move(password)) {
        binary_ = find_program("redis-server");
        if (binary_.empty())
            throw std::runtime_error(
                "redis-server not found: run scripts/deps.sh (installs the Debian package redis-server)");
        char tmpl[] = "/tmp/callguard-redis-XXXXXX";
        if (!::mkdtemp(tmpl)) throw std::runtime_error("redis_server: mkdtemp failed");
        dir_ = tmpl;
        port_ = port ? port : free_port();
        start();
    }

    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    ~redis_server() {
        stop();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    std::uint16_t port() const noexcept { return port_; }
    pid_t pid() const noexcept { return pid_; }
    const std::string& dir() const noexcept { return dir_; }
    bool alive() const noexcept { return pid_ > 0; }
    std::string url(int db = 0) const {
        return "redis://127.0.0.1:" + std::to_string(port_) + (db ? "/" + std::to_string(db) : "");
    }

    /// SIGKILL, like a crashed host; the port stays reserved for `restart()`.
    void kill_hard() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGCONT); // a stopped process must be able to die
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    /// SIGSTOP: the server keeps its sockets but answers nothing (a frozen VM or a GC pause).
    void pause() { ::kill(pid_, SIGSTOP); }
    void resume() { ::kill(pid_, SIGCONT); }
    /// Starts again on the same port with an empty dataset.
    void restart() {
        stop();
        start();
    }

    /// Runs a command on a fresh connection; the reply rendered as text (arrays joined by
    /// spaces, errors prefixed with "ERROR: "). Throws if the server does not answer in 2 s.
    std::string command(std::initializer_list<std::string_view> args) const {
        timeval tv{2, 0};
        redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
        if (!c || c->err) {
            std::string msg = c ? c->errstr : "out of memory";
            if (c) redisFree(c);
            throw std::runtime_error("redis_server::command: cannot connect: " + msg);
        }
        redisSetTimeout(c, tv);
        if (!password_.empty()) {
            if (auto* a = static_cast<redisReply*>(redisCommand(c, "AUTH %s", password_.c_str()))) freeReplyObject(a);
        }
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        for (auto a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
        if (!r) {
            std::string msg = c->errstr;
            redisFree(c);
            throw std::runtime_error("redis_server::command: " + msg);
        }
        auto text = render(r);
        freeReplyObject(r);
        redisFree(c);
        return text;
    }

    /// Convenience for integer replies (ZCARD, DBSIZE, ...).
    long long integer(std::initializer_list<std::string_view> args) const {
        return std::stoll(command(args));
    }

    /// Calls of one command (lower case: "evalsha", "zadd") in INFO commandstats; 0 if never called.
    long long command_calls(std::string_view cmd) const {
        const auto info = command({"INFO", "commandstats"});
        const auto key = "cmdstat_" + std::string(cmd) + ":calls=";
        const auto at = info.find(key);
        return at == std::string::npos ? 0 : std::stoll(info.substr(at + key.size()));
    }

private:
    static std::string render(const redisReply* r) {
        switch (r->type) {
        case REDIS_REPLY_INTEGER: return std::to_string(r->integer);
        case REDIS_REPLY_NIL: return "(nil)";
        case REDIS_REPLY_ERROR: return "ERROR: " + std::string(r->str, r->len);
        case REDIS_REPLY_ARRAY: {
            std::string out;
            for (std::size_t i = 0; i < r->elements; ++i) {
                if (i) out += ' ';
                out += render(r->element[i]);
            }
            return out;
        }
        default: return std::string(r->str, r->len);
        }
    }

    void start() {
        std::vector<std::string> args{binary_};
        args.insert(args.end(), leading_.begin(), leading_.end());
        const std::vector<std::string> common{"--port", std::to_string(port_), "--bind", "127.0.0.1",
                                              "--save", "", "--appendonly", "no", "--dir", dir_,
                                              "--daemonize", "no", "--protected-mode", "no",
                                              "--logfile", dir_ + "/redis.log"};
        args.insert(args.end(), common.begin(), common.end());
        args.insert(args.end(), extra_.begin(), extra_.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("redis_server: fork failed");
        if (pid_ == 0) {
            // Dies with the test (even a crashed one), and never holds the test's output pipes
            // open: ctest waits for those to close.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            int devnull = ::open("/dev/null", O_RDWR);
            if (devnull >= 0) {
                ::dup2(devnull, 0);
                ::dup2(devnull, 1);
                ::dup2(devnull, 2);
            }
            ::execv(binary_.c_str(), argv.data());
            std::_Exit(127);
        }
        // Wait (bounded) until it answers PING.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("redis-server exited at start-up; see " + dir_ + "/redis.log");
            }
            try {
                auto pong = command({"PING"});
                if (pong == "PONG" || pong.rfind("ERROR: NOAUTH", 0) == 0) return;
            } catch (const std::exception&) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        stop();
        throw std::runtime_error("redis-server did not answer within 10 s on port " + std::to_string(port_));
    }

    void stop() noexcept {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGCONT);
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    std::vector<std::string> extra_, leading_;
    std::string password_;
    std::string binary_, dir_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

} // namespace test
