#pragma once

// A real PostgreSQL server for tests: a fresh cluster (initdb) in its own temporary folder,
// listening on 127.0.0.1 and a free port, its unix socket in that folder, password (SCRAM)
// authentication over TCP. Nothing is shared with a system server. PostgreSQL refuses to run as
// root, so under root the server runs as `nobody`. Stopped by PID when the fixture dies.
//
//   test::postgres_server pg;                  // throws if the binaries are missing
//   pg.create_database("calls");
//   auto url = pg.url("calls");                // postgresql://callguard:<password>@127.0.0.1:<port>/calls
//   pg.stop(); ... pg.start();                 // fast shutdown, then the same data on the same port
//   pg.freeze(); ... pg.thaw();                // SIGSTOP / SIGCONT of every server process
//   pg.query("calls", "select count(*) from calls")   // rows as text

#include "redis_server.hpp" // free_port, find_program

#include <libpq-fe.h>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test {

class postgres_server {
public:
    static constexpr const char* user = "callguard";
    static constexpr const char* password = "pg-s3cret-4711";

    postgres_server() {
        bindir_ = find_bindir();
        if (bindir_.empty())
            throw std::runtime_error("PostgreSQL server binaries not found: run scripts/deps.sh (installs the "
                                     "Debian package postgresql)");
        char tmpl[] = "/tmp/callguard-pg-XXXXXX";
        if (!::mkdtemp(tmpl)) throw std::runtime_error("postgres_server: mkdtemp failed");
        dir_ = tmpl;
        if (::geteuid() == 0) {
            const passwd* pw = ::getpwnam("nobody");
            if (!pw) throw std::runtime_error("postgres_server: running as root and there is no user 'nobody'");
            uid_ = pw->pw_uid;
            gid_ = pw->pw_gid;
            if (::chown(dir_.c_str(), uid_, gid_) != 0) throw std::runtime_error("postgres_server: chown failed");
        }
        port_ = free_port();
        {
            std::ofstream(dir_ + "/pwfile") << password << "\n";
            if (::geteuid() == 0 && ::chown((dir_ + "/pwfile").c_str(), uid_, gid_) != 0)
                throw std::runtime_error("postgres_server: chown failed");
        }
        const int rc = run_as_server_user({bindir_ + "/initdb", "-D", data_dir(), "-U", user, "--pwfile=" + dir_ + "/pwfile",
                                           "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                           "--locale=C", "--no-sync"},
                                          dir_ + "/initdb.log");
        if (rc != 0) throw std::runtime_error("initdb failed; see " + dir_ + "/initdb.log");
        start();
    }

    postgres_server(const postgres_server&) = delete;
    postgres_server& operator=(const postgres_server&) = delete;

    ~postgres_server() {
        stop_now();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    std::uint16_t port() const noexcept { return port_; }
    pid_t pid() const noexcept { return pid_; }
    const std::string& dir() const noexcept { return dir_; }
    bool running() const noexcept { return pid_ > 0; }

    /// A URI with the password, for CALLS_DB_URL.
    std::string url(const std::string& db = "postgres") const {
        return std::string("postgresql://") + user + ":" + password + "@127.0.0.1:" + std::to_string(port_) + "/" + db;
    }
    /// The same as libpq key=value pairs.
    std::string keywords(const std::string& db = "postgres") const {
        return std::string("host=127.0.0.1 port=") + std::to_string(port_) + " dbname=" + db + " user=" + user +
               " password=" + password;
    }

    void create_database(const std::string& name) { exec("postgres", "CREATE DATABASE \"" + name + "\""); }

    /// Runs SQL; throws with the server's message on error.
    void exec(const std::string& db, const std::string& sql) const { query(db, sql); }

    /// Runs SQL and returns the rows of its last result, each row's columns joined by '|'.
    std::vector<std::string> query(const std::string& db, const std::string& sql) const {
        std::unique_ptr<PGconn, decltype(&PQfinish)> c(PQconnectdb((keywords(db) + " connect_timeout=5").c_str()),
                                                        &PQfinish);
        if (PQstatus(c.get()) != CONNECTION_OK)
            throw std::runtime_error("postgres_server: cannot connect: " + std::string(PQerrorMessage(c.get())));
        std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c.get(), sql.c_str()), &PQclear);
        const auto st = PQresultStatus(r.get());
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            throw std::runtime_error("postgres_server: " + sql + ": " + PQresultErrorMessage(r.get()));
        std::vector<std::string> rows;
        for (int i = 0; i < PQntuples(r.get()); ++i) {
            std::string row;
            for (int j = 0; j < PQnfields(r.get()); ++j) {
                if (j) row += '|';
                row += PQgetisnull(r.get(), i, j) ? "NULL" : PQgetvalue(r.get(), i, j);
            }
            rows.push_back(std::move(row));
        }
        return rows;
    }
    /// The single value of a query ("" when it returns no row).
    std::string scalar(const std::string& db, const std::string& sql) const {
        auto rows = query(db, sql);
        return rows.empty() ? std::string() : rows.front();
    }

    /// Fast shutdown (SIGINT: sessions are cut, then the server exits); waits until it has.
    void stop() {
        if (pid_ <= 0) return;
        thaw();
        ::kill(pid_, SIGINT);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (std::chrono::steady_clock::now() < deadline) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        stop_now();
    }

    /// Starts on the same port with the same data; returns once it accepts connections.
    void start() {
        if (pid_ > 0) return;
        pid_ = spawn_as_server_user({bindir_ + "/postgres", "-D", data_dir(), "-p", std::to_string(port_), "-k", dir_,
                                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                                     "synchronous_commit=off", "-c", "full_page_writes=off", "-c",
                                     "shared_buffers=16MB", "-c", "max_connections=40"},
                                    dir_ + "/postgres.log", true);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        const auto conninfo = keywords() + " connect_timeout=2";
        while (std::chrono::steady_clock::now() < deadline) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("postgres exited at start-up; see " + dir_ + "/postgres.log");
            }
            if (PQping(conninfo.c_str()) == PQPING_OK) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
        }
        stop_now();
        throw std::runtime_error("postgres did not accept connections within 20 s; see " + dir_ + "/postgres.log");
    }

    /// SIGSTOP to the postmaster and every process it started: connections stay open, nothing
    /// answers (a frozen VM).
    void freeze() {
        frozen_ = server_processes();
        for (pid_t p : frozen_) ::kill(p, SIGSTOP);
    }
    void thaw() {
        for (pid_t p : frozen_) ::kill(p, SIGCONT);
        frozen_.clear();
    }

    std::string log() const {
        std::ifstream in(dir_ + "/postgres.log");
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

private:
    std::string data_dir() const { return dir_ + "/data"; }

    static std::string find_bindir() {
        std::vector<std::string> versions;
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec))
            versions.push_back(e.path().filename().string());
        std::sort(versions.begin(), versions.end(), [](const std::string& a, const std::string& b) {
            return std::atoi(a.c_str()) > std::atoi(b.c_str());
        });
        for (const auto& v : versions) {
            auto bin = "/usr/lib/postgresql/" + v + "/bin";
            if (::access((bin + "/postgres").c_str(), X_OK) == 0 && ::access((bin + "/initdb").c_str(), X_OK) == 0)
                return bin;
        }
        auto initdb = find_program("initdb");
        if (!initdb.empty()) return std::filesystem::path(std::filesystem::canonical(initdb)).parent_path().string();
        return {};
    }

    /// The postmaster and its children (from /proc).
    std::vector<pid_t> server_processes() const {
        std::vector<pid_t> out;
        if (pid_ <= 0) return out;
        out.push_back(pid_);
        if (DIR* d = ::opendir("/proc")) {
            while (auto* e = ::readdir(d)) {
                const pid_t p = std::atoi(e->d_name);
                if (p <= 0) continue;
                std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
                std::string line;
                std::getline(stat, line);
                auto close = line.rfind(')');
                if (close == std::string::npos) continue;
                std::istringstream rest(line.substr(close + 2));
                char state = 0;
                pid_t ppid = 0;
                rest >> state >> ppid;
                if (ppid == pid_) out.push_back(p);
            }
            ::closedir(d);
        }
        return out;
    }

    /// fork + exec as the unprivileged user (when root), output to `log`.
    pid_t spawn_as_server_user(std::vector<std::string> args, const std::string& log, bool die_with_parent) const {
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        // Built before fork: the child of a threaded process may only make system calls.
        std::vector<std::string> env_text{"LC_ALL=C", "PATH=/usr/bin:/bin"};
        std::vector<char*> envp;
        for (auto& e : env_text) envp.push_back(e.data());
        envp.push_back(nullptr);
        const bool root = ::geteuid() == 0;
        const pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("postgres_server: fork failed");
        if (pid == 0) {
            int devnull = ::open("/dev/null", O_RDONLY);
            int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (devnull >= 0) ::dup2(devnull, 0);
            if (out >= 0) {
                ::dup2(out, 1);
                ::dup2(out, 2);
            }
            if (root) {
                if (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0) std::_Exit(126);
            }
            // After the credentials change, which clears it: the server dies with the test.
            if (die_with_parent) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::chdir(dir_.c_str()) != 0) std::_Exit(126);
            ::execve(argv[0], argv.data(), envp.data());
            std::_Exit(127);
        }
        return pid;
    }

    int run_as_server_user(std::vector<std::string> args, const std::string& log) const {
        const pid_t pid = spawn_as_server_user(std::move(args), log, true);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return -1;
    }

    void stop_now() noexcept {
        if (pid_ <= 0) return;
        auto all = server_processes();
        for (pid_t p : all) ::kill(p, SIGCONT);
        ::kill(pid_, SIGQUIT); // immediate shutdown: the postmaster takes its children down
        for (int i = 0; i < 250; ++i) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        for (pid_t p : all) ::kill(p, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    std::string bindir_, dir_;
    uid_t uid_ = 0;
    gid_t gid_ = 0;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
    std::vector<pid_t> frozen_;
};

} // namespace test
