#pragma once

// Many callers, one socket: concurrent callers' commands are written together and their replies
// handed back in order (pipelining without a batching timer).
//
// There is no I/O thread. A caller queues its command; if no one is talking to Redis it becomes
// the leader: it takes the whole queue, writes it in one go and reads the replies, while callers
// arriving meanwhile queue up for the next round. A lone caller is its own leader at once, so it
// pays one round trip and nothing more; under load each round trip carries every waiting caller.

#include "connection.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace callguard::detail {

/// A small number fixed per thread, to spread threads over several sockets without a shared
/// counter.
inline std::size_t thread_slot() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t slot = next.fetch_add(1, std::memory_order_relaxed);
    return slot;
}

class multiplexed_connection {
public:
    /// `open` makes a new connection, ready for commands (connected, authenticated, checked);
    /// what it throws fails the round that needed it.
    using opener = std::function<std::unique_ptr<redis_connection>()>;
    explicit multiplexed_connection(opener open) : open_conn_(std::move(open)) {}

    multiplexed_connection(const multiplexed_connection&) = delete;
    multiplexed_connection& operator=(const multiplexed_connection&) = delete;

    /// Sends one command (its arguments) and returns its reply; an error reply is returned, not
    /// thrown. Throws redis_io_error / redis_timeout_error when the round carrying it failed:
    /// then every command of that round, and every command queued behind it, fails too (the
    /// server is unreachable or stuck, and each caller gets its answer within one timeout).
    /// A connection found closed (CLIENT KILL, an idle timeout, a restart) is re-made and the
    /// round sent again once, so the commands must be safe to repeat.
    reply_ptr call(std::span<const std::string_view> args) {
        request req;
        append_resp(req.encoded, args);
        std::unique_lock lk(mu_);
        queue_.push_back(&req);
        while (!req.done) {
            if (busy_) {
                req.wake.wait(lk);
                continue;
            }
            busy_ = true; // lead one round: everything queued so far, ours included
            auto& round = round_;
            round.clear();
            round.swap(queue_); // both keep their capacity: no allocation per round
            const bool reconnect = std::exchange(stale_, false);
            lk.unlock();
            if (reconnect) close();
            const failure broke = run_round(round);
            lk.lock();
            // Wake exactly who needs it: the callers of this round, and the first caller queued
            // behind it, who leads the next round. Nobody else stirs.
            for (auto* r : round) {
                r->done = true;
                if (r != &req) r->wake.notify_one();
            }
            if (broke) fail_queued(broke);
            busy_ = false;
            if (!queue_.empty()) queue_.front()->wake.notify_one();
        }
        if (req.error) req.error.raise();
        return std::move(req.reply);
    }

    reply_ptr call(std::initializer_list<std::string_view> args) {
        return call(std::span<const std::string_view>(args.begin(), args.size()));
    }

    /// Rounds written so far (each carries one command or more).
    std::uint64_t rounds() const noexcept { return rounds_.load(std::memory_order_relaxed); }

    bool connected() const {
        std::lock_guard lk(mu_);
        return open_;
    }

    /// The next round starts on a new connection (the server moved, or stopped being a master).
    void invalidate() {
        std::lock_guard lk(mu_);
        stale_ = true;
    }

private:
    /// What broke a round, copied to each of its callers, who each throw their own exception
    /// (one exception object rethrown on many threads would be destroyed under their feet).
    struct failure {
        enum class kind { none, io, timeout, reply } what = kind::none;
        std::string message;

        explicit operator bool() const noexcept { return what != kind::none; }

        static failure current() noexcept {
            try {
                throw;
            } catch (const redis_timeout_error& e) {
                return make(kind::timeout, e.what());
            } catch (const redis_io_error& e) {
                return make(kind::io, e.what());
            } catch (const std::exception& e) { // AUTH/SELECT refused at connect, the hook
                return make(kind::reply, e.what());
            } catch (...) {
                return make(kind::io, "unknown failure");
            }
        }

        static failure make(kind k, const char* text) noexcept {
            failure f;
            f.what = k;
            try {
                f.message = text;
            } catch (...) {
            }
            return f;
        }

        [[noreturn]] void raise() const {
            switch (what) {
            case kind::timeout: throw redis_timeout_error(message);
            case kind::reply: throw redis_reply_error(message);
            default: throw redis_io_error(message);
            }
        }
    };

    struct request {
        std::string encoded;
        reply_ptr reply;
        failure error;
        bool done = false; // guarded by mu_
        std::condition_variable wake;
    };

    /// The leader's I/O, outside the lock. Fills every request of the round with a reply or an
    /// error; returns the error that broke the connection, if any.
    failure run_round(const std::vector<request*>& round) noexcept {
        bool reused = conn_ != nullptr;
        for (int attempt = 0;; ++attempt) {
            try {
                if (!conn_) connect();
                rounds_.fetch_add(1, std::memory_order_relaxed);
                if (round.size() == 1) {
                    conn_->append_encoded(round.front()->encoded);
                    round.front()->reply = conn_->read_reply();
                    return {};
                }
                batch_.clear();
                for (auto* r : round) batch_ += r->encoded;
                conn_->append_encoded(batch_);
                // All or nothing: replies are kept until the whole round is read, so a retry
                // after a break cannot hand out a reply twice or to the wrong caller.
                replies_.clear();
                for (std::size_t i = 0; i < round.size(); ++i) replies_.push_back(conn_->read_reply());
                for (std::size_t i = 0; i < round.size(); ++i) round[i]->reply = std::move(replies_[i]);
                replies_.clear();
                return {};
            } catch (const redis_timeout_error&) {
                return fail_round(round, failure::current());
            } catch (const redis_io_error&) {
                // A connection that served earlier rounds may simply have been closed by the
                // server meanwhile: one more try on a new one.
                if (reused && attempt == 0) {
                    close();
                    reused = false;
                    continue;
                }
                return fail_round(round, failure::current());
            } catch (...) {
                return fail_round(round, failure::current());
            }
        }
    }

    failure fail_round(const std::vector<request*>& round, const failure& e) noexcept {
        for (auto* r : round) {
            r->reply.reset();
            r->error = e;
        }
        close();
        return e;
    }

    void fail_queued(const failure& e) noexcept {
        for (auto* r : queue_) {
            r->error = e;
            r->done = true;
            r->wake.notify_one();
        }
        queue_.clear();
    }

    void connect() {
        conn_ = open_conn_();
        std::lock_guard lk(mu_);
        open_ = true;
    }

    void close() noexcept {
        conn_.reset();
        std::lock_guard lk(mu_);
        open_ = false;
    }

    opener open_conn_;
    mutable std::mutex mu_;
    std::vector<request*> queue_; // waiting for the next round
    bool busy_ = false;           // a leader is in a round
    bool open_ = false;           // conn_ is set (readable without being the leader)
    bool stale_ = false;          // the next round reconnects first
    // The leader's, reused from round to round.
    std::vector<request*> round_;
    std::string batch_;
    std::vector<reply_ptr> replies_;
    std::unique_ptr<redis_connection> conn_; // touched only by the leader
    std::atomic<std::uint64_t> rounds_{0};
};

} // namespace callguard::detail
