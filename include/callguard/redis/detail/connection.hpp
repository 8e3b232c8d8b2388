#pragma once

// One hiredis connection: connect with timeouts, AUTH and SELECT, commands as argv, and every
// failure mapped to the redis_error hierarchy in one place (`throw_context_error`).

#include "../errors.hpp"
#include "../options.hpp"

#include <hiredis/hiredis.h>

#include <cerrno>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <sys/time.h>
#include <vector>

namespace callguard::detail {

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

inline timeval to_timeval(std::chrono::milliseconds ms) noexcept {
    timeval tv{};
    tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
    tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
    return tv;
}

inline std::string reply_text(const redisReply* r) {
    return r && r->str ? std::string(r->str, r->len) : std::string();
}

inline bool reply_is_error(const redisReply* r) noexcept { return r && r->type == REDIS_REPLY_ERROR; }

/// True for the error prefix `code` ("NOSCRIPT", "WRONGPASS", ...).
inline bool reply_error_is(const redisReply* r, std::string_view code) noexcept {
    if (!reply_is_error(r) || r->len < code.size()) return false;
    return std::string_view(r->str, code.size()) == code;
}

/// Maps a context's failure to our exceptions. hiredis 1.x reports timeouts as
/// REDIS_ERR_TIMEOUT; 0.14 reports them as REDIS_ERR_IO with errno EAGAIN.
[[noreturn]] inline void throw_context_error(const redisContext* c, std::string_view during) {
    std::string what = std::string(during) + ": ";
    if (!c) throw redis_io_error(what + "out of memory creating the connection");
    what += c->errstr[0] ? c->errstr : "unknown error";
#ifdef REDIS_ERR_TIMEOUT
    if (c->err == REDIS_ERR_TIMEOUT) throw redis_timeout_error(what);
#endif
    const std::string_view text = c->errstr;
    const bool timed_out = errno == EAGAIN || errno == EWOULDBLOCK || errno == ETIMEDOUT ||
                           text.find("temporarily unavailable") != std::string_view::npos ||
                           text.find("timed out") != std::string_view::npos;
    if (c->err == REDIS_ERR_IO && timed_out) throw redis_timeout_error(what);
    throw redis_io_error(what);
}

/// Appends one command in the Redis protocol (an array of bulk strings) to `out`.
inline void append_resp(std::string& out, std::span<const std::string_view> args) {
    out += '*';
    out += std::to_string(args.size());
    out += "\r\n";
    for (auto a : args) {
        out += '$';
        out += std::to_string(a.size());
        out += "\r\n";
        out += a;
        out += "\r\n";
    }
}

inline void append_resp(std::string& out, std::initializer_list<std::string_view> args) {
    append_resp(out, std::span<const std::string_view>(args.begin(), args.size()));
}

class redis_connection {
public:
    /// Connects (to `at`, else to the options' server), sets the command timeout,
    /// authenticates and selects the db. Throws redis_io_error / redis_timeout_error /
    /// redis_reply_error (for AUTH or SELECT).
    explicit redis_connection(const redis_options& o, const redis_endpoint* at = nullptr) {
        const auto ctv = to_timeval(o.connect_timeout);
        const bool unix_path = !at && !o.unix_socket.empty();
        const std::string& host = at ? at->host : o.host;
        const int port = at ? at->port : o.port;
        ctx_ = unix_path ? redisConnectUnixWithTimeout(o.unix_socket.c_str(), ctv)
                         : redisConnectWithTimeout(host.c_str(), port, ctv);
        if (!ctx_ || ctx_->err) {
            std::string where = unix_path ? o.unix_socket : host + ":" + std::to_string(port);
            auto* c = ctx_;
            ctx_ = nullptr;
            try {
                throw_context_error(c, "connect to " + where);
            } catch (...) {
                if (c) redisFree(c);
                throw;
            }
        }
        if (redisSetTimeout(ctx_, to_timeval(o.command_timeout)) != REDIS_OK) {
            redisFree(ctx_);
            throw redis_io_error("cannot set the command timeout");
        }
        try {
            if (!o.password.empty()) {
                auto r = o.user.empty() ? command({"AUTH", o.password})
                                        : command({"AUTH", o.user, o.password});
                if (reply_is_error(r.get()))
                    throw redis_reply_error("AUTH refused: " + reply_text(r.get()));
            } else {
                // Without a password, find out now whether one is needed: an unauthenticated
                // script call would fail later with a less helpful protocol error.
                auto r = command({"PING"});
                if (reply_is_error(r.get()))
                    throw redis_reply_error("Redis refused the connection (" + reply_text(r.get()) +
                                            "): it needs a password and none is set "
                                            "(redis_options::password, or :password@ in the URL)");
            }
            if (o.db != 0) {
                auto r = command({"SELECT", std::to_string(o.db)});
                if (reply_is_error(r.get()))
                    throw redis_reply_error("SELECT " + std::to_string(o.db) + " refused: " + reply_text(r.get()));
            }
        } catch (...) {
            redisFree(ctx_);
            throw;
        }
    }

    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;
    ~redis_connection() {
        if (ctx_) redisFree(ctx_);
    }

    /// Sends one command and reads its reply. An error reply is returned, not thrown; an I/O
    /// failure throws and marks the connection broken (its state is unknown after it).
    reply_ptr command(std::initializer_list<std::string_view> args) {
        return command(std::span<const std::string_view>(args.begin(), args.size()));
    }

    reply_ptr command(std::span<const std::string_view> args) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        argv.reserve(args.size());
        lens.reserve(args.size());
        for (auto a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        return command_argv(static_cast<int>(argv.size()), argv.data(), lens.data());
    }

    reply_ptr command_argv(int argc, const char** argv, const std::size_t* lens) {
        auto* r = static_cast<redisReply*>(redisCommandArgv(ctx_, argc, argv, lens));
        if (!r) {
            broken_ = true;
            throw_context_error(ctx_, "redis command");
        }
        return reply_ptr(r);
    }

    /// Queues already-encoded commands (RESP) for the next `read_reply`, which sends them first.
    void append_encoded(std::string_view commands) {
        if (redisAppendFormattedCommand(ctx_, commands.data(), commands.size()) != REDIS_OK) {
            broken_ = true;
            throw_context_error(ctx_, "redis pipeline");
        }
    }

    /// Sends whatever is queued, then reads the next reply in order. Throws like `command`.
    reply_ptr read_reply() {
        void* r = nullptr;
        if (redisGetReply(ctx_, &r) != REDIS_OK || !r) {
            broken_ = true;
            throw_context_error(ctx_, "redis pipeline");
        }
        return reply_ptr(static_cast<redisReply*>(r));
    }

    bool broken() const noexcept { return broken_ || !ctx_ || ctx_->err != 0; }

private:
    redisContext* ctx_ = nullptr;
    bool broken_ = false;
};

} // namespace callguard::detail
