#pragma once

// A loopback TCP proxy for fault tests: sits between a client (the limiter) and a server
// (redis-server) and can add latency, stall, black-hole traffic, cut connections, or cut them
// in the middle of a reply. One thread, poll(), bounded buffers; 127.0.0.1 only.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test {

class tcp_proxy {
public:
    enum class mode {
        pass,      ///< forward both ways (after `latency`)
        stall,     ///< accept and keep connections, forward nothing (a frozen peer)
        blackhole, ///< like stall, and new connections are accepted but never answered
    };

    explicit tcp_proxy(std::uint16_t upstream_port) : upstream_port_(upstream_port) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listen_fd_ < 0) throw std::runtime_error("tcp_proxy: socket failed");
        int one = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::listen(listen_fd_, 64) != 0) {
            ::close(listen_fd_);
            throw std::runtime_error("tcp_proxy: bind/listen failed");
        }
        socklen_t len = sizeof a;
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        set_nonblocking(listen_fd_);
        if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
            ::close(listen_fd_);
            throw std::runtime_error("tcp_proxy: pipe failed");
        }
        thread_ = std::thread([this] { run(); });
    }

    tcp_proxy(const tcp_proxy&) = delete;
    tcp_proxy& operator=(const tcp_proxy&) = delete;

    ~tcp_proxy() {
        stop_ = true;
        wake();
        thread_.join();
        for (auto& c : conns_) close_pair(c, false);
        ::close(listen_fd_);
        ::close(wake_[0]);
        ::close(wake_[1]);
    }

    std::uint16_t port() const noexcept { return port_; }
    std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

    void set_mode(mode m) {
        mode_ = m;
        wake();
    }
    /// Delay added to every chunk, each way.
    void set_latency(std::chrono::milliseconds d) {
        latency_ms_ = d.count();
        wake();
    }
    /// Cuts every open connection at once (RST), then keeps accepting new ones.
    void drop_all() {
        drop_all_ = true;
        wake();
    }
    /// Cuts each connection after it has carried `n` more bytes from the server to the client:
    /// a reply broken in the middle.
    void cut_replies_after(std::size_t n) {
        cut_after_ = static_cast<std::int64_t>(n);
        wake();
    }
    /// Open client connections right now.
    std::size_t connections() const { return open_.load(); }
    /// Connections accepted since construction.
    std::size_t accepted() const { return accepted_.load(); }

private:
    struct chunk {
        std::chrono::steady_clock::time_point due;
        std::string bytes;
    };
    struct conn {
        int client = -1, server = -1;
        std::deque<chunk> to_server, to_client;
        std::int64_t budget = -1; // bytes server->client before a cut; -1 = unlimited
        bool dead = false;
    };

    static void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

    void wake() {
        char c = 1;
        [[maybe_unused]] auto n = ::write(wake_[1], &c, 1);
    }

    void close_pair(conn& c, bool reset) {
        for (int fd : {c.client, c.server}) {
            if (fd < 0) continue;
            if (reset) {
                linger l{1, 0}; // close with RST, like a crashed peer or a cut cable
                ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            }
            ::close(fd);
        }
        if (c.client >= 0) --open_;
        c.client = c.server = -1;
        c.dead = true;
    }

    int connect_upstream() {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(upstream_port_);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(fd);
            return -1;
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        set_nonblocking(fd);
        return fd;
    }

    void accept_new() {
        while (true) {
            int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;
            ++accepted_;
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            conn c;
            c.client = fd;
            ++open_;
            if (mode_.load() != mode::blackhole) {
                c.server = connect_upstream();
                if (c.server < 0) { // upstream down: the client sees the connection close
                    close_pair(c, true);
                    continue;
                }
            }
            c.budget = cut_after_.load();
            conns_.push_back(std::move(c));
        }
    }

    /// Reads what is available from `from` into `queue`; false when the peer closed or failed.
    bool pump_in(int from, std::deque<chunk>& queue) {
        char buf[16384];
        while (true) {
            auto n = ::read(from, buf, sizeof buf);
            if (n > 0) {
                auto due = std::chrono::steady_clock::now() + std::chrono::milliseconds(latency_ms_.load());
                queue.push_back({due, std::string(buf, static_cast<std::size_t>(n))});
                if (queue.size() > 4096) return false; // bounded: a flood is a failure here
                continue;
            }
            if (n == 0) return false;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
    }

    /// Writes due chunks of `queue` to `to`; false on a write failure or an exhausted budget.
    bool pump_out(int to, std::deque<chunk>& queue, std::int64_t* budget) {
        const auto now = std::chrono::steady_clock::now();
        while (!queue.empty() && queue.front().due <= now) {
            auto& front = queue.front();
            std::size_t len = front.bytes.size();
            if (budget && *budget >= 0) {
                if (*budget == 0) return false;
                len = std::min<std::size_t>(len, static_cast<std::size_t>(*budget));
            }
            auto n = ::write(to, front.bytes.data(), len);
            if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
            if (budget && *budget >= 0) *budget -= n;
            front.bytes.erase(0, static_cast<std::size_t>(n));
            if (front.bytes.empty()) queue.pop_front();
            if (budget && *budget == 0) return false; // cut right here, mid-reply
        }
        return true;
    }

    void run() {
        while (!stop_) {
            if (drop_all_.exchange(false))
                for (auto& c : conns_) close_pair(c, true);
            conns_.remove_if([](const conn& c) { return c.dead; });

            const auto m = mode_.load();
            std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
            for (auto& c : conns_) {
                // Stalled or black-holed: nothing is read, so nothing flows and the peer waits.
                short ev = m == mode::pass ? POLLIN : 0;
                fds.push_back({c.client, ev, 0});
                fds.push_back({c.server, ev, 0});
            }
            ::poll(fds.data(), fds.size(), 5); // 5 ms tick: latency queues drain on time
            if (fds[0].revents & POLLIN) {
                char buf[64];
                while (::read(wake_[0], buf, sizeof buf) > 0) {
                }
            }
            if (fds[1].revents & POLLIN) accept_new();
            if (m != mode::pass) continue;

            for (auto& c : conns_) {
                if (c.dead || c.server < 0) continue;
                bool ok = pump_in(c.client, c.to_server) && pump_in(c.server, c.to_client) &&
                          pump_out(c.server, c.to_server, nullptr) &&
                          pump_out(c.client, c.to_client, &c.budget);
                if (!ok) close_pair(c, true);
            }
        }
    }

    std::uint16_t upstream_port_;
    std::uint16_t port_ = 0;
    int listen_fd_ = -1;
    int wake_[2] = {-1, -1};
    std::atomic<bool> stop_{false}, drop_all_{false};
    std::atomic<mode> mode_{mode::pass};
    std::atomic<std::int64_t> latency_ms_{0}, cut_after_{-1};
    std::atomic<std::size_t> open_{0}, accepted_{0};
    std::list<conn> conns_; // only the proxy thread touches these
    std::thread thread_;
};

} // namespace test
