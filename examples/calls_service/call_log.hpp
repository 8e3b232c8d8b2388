#pragma once

// The call log's queue and writer thread, independent of the database: rows are queued by the
// request path (never blocking on the database) and written in batches by one background thread
// into a `call_store` (SQLite today; another database is one more store). When the queue is
// full, rows are dropped and counted: a slow, locked or broken database never delays a call.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace calls {

struct call_row {
    enum class kind { call_status, whatsapp_outbox } what = kind::call_status;
    std::string call_sid;
    std::string status; // admitted, rejected_capacity, rejected_unavailable, completed
    std::string tenant;
    std::string number; // the caller, for the WhatsApp outbox
    std::int64_t active = 0;
    std::int64_t max = 0;
};

/// Where rows end up. Used by the call log's writer thread only.
class call_store {
public:
    struct outcome {
        std::size_t written = 0;
        std::size_t failed = 0;
        std::string error; ///< why rows failed, for the log (never a password)
    };

    virtual ~call_store() = default;
    /// Writes a batch (in one transaction where the database has them).
    virtual outcome write(std::span<const call_row> rows) = 0;
};

class call_log {
public:
    static constexpr std::size_t queue_limit = 10000;
    static constexpr std::size_t batch_limit = 512;
    using warning = std::function<void(const std::string&)>;

    /// `make_store` runs on the writer thread (a database connection stays on one thread);
    /// problems go to `warn`, once each kind.
    call_log(std::function<std::unique_ptr<call_store>()> make_store, warning warn)
        : make_store_(std::move(make_store)), warn_(std::move(warn)), writer_([this] { run(); }) {}

    call_log(const call_log&) = delete;
    call_log& operator=(const call_log&) = delete;

    ~call_log() {
        {
            std::lock_guard lk(mu_);
            stopping_ = true;
        }
        cv_.notify_one();
        writer_.join();
    }

    /// Never blocks on the database; drops (and counts) the row when the queue is full.
    void push(call_row row) noexcept {
        try {
            std::lock_guard lk(mu_);
            if (queue_.size() >= queue_limit) {
                dropped_.fetch_add(1);
                return;
            }
            queue_.push_back(std::move(row));
        } catch (...) {
            dropped_.fetch_add(1);
            return;
        }
        cv_.notify_one();
    }

    /// Blocks until everything queued so far is written (tests and shutdown).
    bool flush(std::chrono::milliseconds limit) {
        std::unique_lock lk(mu_);
        return idle_cv_.wait_for(lk, limit, [&] { return queue_.empty() && !writing_; });
    }

    std::uint64_t dropped() const noexcept { return dropped_.load(); }
    std::uint64_t failed() const noexcept { return failed_.load(); }
    std::uint64_t written() const noexcept { return written_.load(); }

private:
    void run() {
        std::unique_ptr<call_store> store;
        try {
            store = make_store_();
        } catch (const std::exception& e) {
            warn_once(e.what());
        }
        std::vector<call_row> batch;
        while (next_batch(batch)) {
            write(store.get(), batch);
            batch.clear();
        }
    }

    /// Waits for rows; false once stopping with nothing left to write.
    bool next_batch(std::vector<call_row>& batch) {
        std::unique_lock lk(mu_);
        writing_ = false;
        idle_cv_.notify_all();
        cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return false;
        while (!queue_.empty() && batch.size() < batch_limit) {
            batch.push_back(std::move(queue_.front()));
            queue_.pop_front();
        }
        writing_ = true;
        return true;
    }

    void write(call_store* store, const std::vector<call_row>& batch) {
        if (!store) {
            failed_.fetch_add(batch.size());
            return;
        }
        call_store::outcome done;
        try {
            done = store->write(batch);
        } catch (const std::exception& e) {
            done = {0, batch.size(), e.what()};
        }
        written_.fetch_add(done.written);
        failed_.fetch_add(done.failed);
        if (done.failed > 0) warn_once(done.error);
    }

    void warn_once(const std::string& msg) {
        if (warned_.exchange(true)) return;
        if (warn_) warn_(msg);
    }

    std::function<std::unique_ptr<call_store>()> make_store_;
    warning warn_;
    std::mutex mu_;
    std::condition_variable cv_, idle_cv_;
    std::deque<call_row> queue_;
    bool stopping_ = false, writing_ = true;
    std::atomic<bool> warned_{false};
    std::atomic<std::uint64_t> dropped_{0}, failed_{0}, written_{0};
    std::thread writer_; // last: starts after everything above exists
};

} // namespace calls
