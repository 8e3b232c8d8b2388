#pragma once

// A thread-safe pool of hiredis connections. Connections are made lazily, outside the pool's
// lock (a slow connect never blocks callers that could use an idle connection); a broken one is
// destroyed, never returned; waiting for a free one is bounded by a timeout.

#include "connection.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace callguard::detail {

class connection_pool {
public:
    using opener = std::function<std::unique_ptr<redis_connection>()>;

    /// `o` must outlive the pool.
    explicit connection_pool(const redis_options& o) : options_(o) { idle_.reserve(options_.pool_size); }

    /// How new connections are made (default: to the options' server). Set before first use.
    void set_opener(opener open) { open_ = std::move(open); }

    /// A connection on loan; goes back to the pool (or is destroyed if broken) when it dies.
    class lease {
    public:
        lease(connection_pool* p, std::unique_ptr<redis_connection> c, bool reused) noexcept
            : pool_(p), conn_(std::move(c)), reused_(reused) {}
        lease(lease&& o) noexcept = default;
        lease& operator=(lease&&) = delete;
        ~lease() {
            if (pool_ && conn_) pool_->give_back(std::move(conn_));
        }
        redis_connection* operator->() const noexcept { return conn_.get(); }
        redis_connection& operator*() const noexcept { return *conn_; }
        /// Taken from the idle list (it may have been closed by the server since).
        bool reused() const noexcept { return reused_; }

    private:
        connection_pool* pool_;
        std::unique_ptr<redis_connection> conn_;
        bool reused_;
    };

    /// Throws redis_pool_timeout when none frees up in time, or the connect error.
    lease get() {
        std::unique_lock lk(mu_);
        const auto wait = options_.connect_timeout + options_.command_timeout;
        if (!cv_.wait_for(lk, wait, [&] { return !idle_.empty() || total_ < options_.pool_size; }))
            throw redis_pool_timeout("all " + std::to_string(options_.pool_size) +
                                     " Redis connections stayed busy for " +
                                     std::to_string(wait.count()) + " ms");
        if (!idle_.empty()) {
            auto c = std::move(idle_.back());
            idle_.pop_back();
            return lease(this, std::move(c), true);
        }
        ++total_; // reserve the place, connect without the lock
        lk.unlock();
        try {
            return lease(this, open_ ? open_() : std::make_unique<redis_connection>(options_), false);
        } catch (...) {
            lk.lock();
            --total_;
            cv_.notify_one();
            throw;
        }
    }

    /// Drops every idle connection: after a failure they are likely dead too (a restarted or
    /// failed-over server), and finding that out one call at a time would cost a timeout each.
    void drop_idle() noexcept {
        std::vector<std::unique_ptr<redis_connection>> doomed;
        {
            std::lock_guard lk(mu_);
            doomed.swap(idle_);
            total_ -= doomed.size();
        }
        cv_.notify_all();
    }

    std::size_t open_connections() const {
        std::lock_guard lk(mu_);
        return total_;
    }

private:
    void give_back(std::unique_ptr<redis_connection> c) noexcept {
        if (c->broken()) {
            c.reset(); // close outside the lock
            std::lock_guard lk(mu_);
            --total_;
        } else {
            std::lock_guard lk(mu_);
            idle_.push_back(std::move(c));
        }
        cv_.notify_one();
    }

    const redis_options& options_;
    opener open_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<redis_connection>> idle_;
    std::size_t total_ = 0; // idle + lent + connecting
};

} // namespace callguard::detail
