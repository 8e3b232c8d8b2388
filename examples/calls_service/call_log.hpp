#pragma once

// The call log's queue and writer thread, independent of the database: rows are queued by the
// request path (never blocking on the database) and written in batches by one background thread
// into a `call_store` (SQLite or PostgreSQL). A slow, locked or unreachable database never delays
// a call: rows wait in the bounded queue while the writer reconnects with backoff, and rows that
// find the queue full are dropped and counted.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace calls {

struct call_row {
    enum class kind { call_status, whatsapp_outbox } what = kind::call_status;
    std::string call_sid;
    std::string status; // admitted, queued, rejected_capacity, rejected_unavailable, completed, voicemail
    std::string tenant; // empty: none
    std::string number; // the caller, for the WhatsApp outbox
    std::optional<std::int64_t> active; ///< the limiter's counts at a decision; none for a call's end
    std::optional<std::int64_t> max;
    /// A voicemail's recording (status `voicemail`); empty/none: unknown, the stored value is kept.
    std::string recording_url, recording_sid, recording_status;
    std::optional<std::int64_t> recording_duration; ///< seconds
    std::chrono::system_clock::time_point at{}; ///< when it happened; `push` stamps an unset one
};

/// A WhatsApp outbox row handed to the sender (`call_store::claim_due_messages`).
struct outbox_message {
    std::string call_sid;
    std::string number;
    int attempts = 0; ///< this one included
};

/// Where rows end up. `write` is used by the call log's writer thread; the outbox methods by the
/// WhatsApp sender's thread, on a store of its own (each store is one connection).
class call_store {
public:
    struct outcome {
        std::size_t written = 0; ///< rows stored
        std::size_t failed = 0;  ///< rows the database refused for good (bad data): counted, not retried
        std::string error;       ///< why rows failed or the rest were not written (never a password)
    };

    virtual ~call_store() = default;
    /// Writes the rows in order, in one transaction where the database has them. The first
    /// `written + failed` rows are done; the others were not written because the database is
    /// unavailable (down, slow, its tables gone): the call log keeps them, drops this store and
    /// retries with a new one. Writing a row twice is harmless (upserts keyed by call_sid).
    virtual outcome write(std::span<const call_row> rows) = 0;

    // --- the WhatsApp outbox, for the sender. Each throws (std::runtime_error or a derived
    // type) when the database cannot answer; the sender then opens a new store later.

    /// Up to `limit` pending rows whose next attempt is due, oldest first, each taken for
    /// `lease` (its next attempt pushed to now + lease, its attempts counted) in the same
    /// statement, so that another sender on the same database skips them; a sender that dies
    /// mid-send leaves its rows to be taken again when the lease ends.
    virtual std::vector<outbox_message> claim_due_messages(std::size_t limit, std::chrono::milliseconds lease) = 0;
    /// The message was accepted: status `sent` with Twilio's message SID.
    virtual void record_sent(const std::string& call_sid, const std::string& message_sid) = 0;
    /// Worth another attempt after `delay`; the row stays `pending` with the error so far.
    virtual void record_retry(const std::string& call_sid, std::chrono::milliseconds delay,
                              std::optional<int> error_code, const std::string& error) = 0;
    /// Given up: status `failed` with Twilio's error code (none for a network failure).
    virtual void record_failed(const std::string& call_sid, std::optional<int> error_code, const std::string& error) = 0;
};

struct call_log_options {
    std::size_t queue_limit = 10000; ///< CALLS_DB_QUEUE_LIMIT: rows waiting, the batch being written included
    std::size_t batch_limit = 512;   ///< rows per transaction
    std::chrono::milliseconds retry_min{100}; ///< first wait after a failed flush, doubled per failure
    std::chrono::milliseconds retry_max{5000};
    std::chrono::milliseconds shutdown_grace{2000}; ///< how long the destructor lets the writer retry
    /// Called on the writer thread after a batch with WhatsApp outbox rows was written (the
    /// sender looks at once instead of at its next poll). Must not throw or block.
    std::function<void()> on_outbox_written;
};

class call_log {
public:
    /// Makes a store (a database connection); runs on the writer thread, may throw. The token
    /// is signalled when the log is destroyed, so a store can give up waiting on the network.
    using store_factory = std::function<std::unique_ptr<call_store>(std::stop_token)>;
    /// Receives the log's own messages: each outage and recovery once, each burst of drops once.
    using warning = std::function<void(const std::string&)>;

    call_log(store_factory make_store, warning warn, call_log_options options = {})
        : options_(sanitized(options)), make_store_(std::move(make_store)), warn_(std::move(warn)),
          writer_([this] { run(); }) {}

    call_log(const call_log&) = delete;
    call_log& operator=(const call_log&) = delete;

    /// Lets the writer finish what is queued (retrying for up to `shutdown_grace`), then stops it;
    /// rows still unwritten are counted as dropped.
    ~call_log() {
        std::unique_lock lk(mu_);
        stopping_ = true;
        cv_.notify_all();
        done_cv_.wait_for(lk, options_.shutdown_grace, [&] { return writer_done_; });
        stop_.request_stop();
        cv_.notify_all();
        lk.unlock();
        writer_.join();
    }

    /// Never blocks on the database; drops (and counts) the row when the queue is full.
    void push(call_row row) noexcept {
        bool burst_starts = false;
        try {
            if (row.at == std::chrono::system_clock::time_point{}) row.at = std::chrono::system_clock::now();
            std::lock_guard lk(mu_);
            if (writer_done_) { // destroyed: nothing will write it
                dropped_.fetch_add(1);
                return;
            }
            if (held_ >= options_.queue_limit) {
                dropped_.fetch_add(1);
                ++burst_dropped_;
                burst_starts = !dropping_;
                dropping_ = true;
            } else {
                queue_.push_back(std::move(row));
                ++held_;
                queued_.store(held_);
            }
        } catch (...) {
            dropped_.fetch_add(1);
            return;
        }
        if (burst_starts)
            say("queue full (" + std::to_string(options_.queue_limit) +
                " rows waiting, CALLS_DB_QUEUE_LIMIT): dropping new rows until it drains");
        else
            cv_.notify_one();
    }

    /// Blocks until every row queued so far is written (or dropped); false after `limit`.
    bool flush(std::chrono::milliseconds limit) {
        std::unique_lock lk(mu_);
        return idle_cv_.wait_for(lk, limit, [&] { return held_ == 0; });
    }

    std::uint64_t dropped() const noexcept { return dropped_.load(); }
    std::uint64_t failed() const noexcept { return failed_.load(); }
    std::uint64_t written() const noexcept { return written_.load(); }
    /// Rows waiting, the batch being written included.
    std::uint64_t queued() const noexcept { return queued_.load(); }
    /// Whether the last attempt to reach the database worked (true before the first).
    bool database_up() const noexcept { return database_up_.load(); }
    const call_log_options& options() const noexcept { return options_; }

private:
    using clock = std::chrono::steady_clock;

    static call_log_options sanitized(call_log_options o) {
        o.queue_limit = std::max<std::size_t>(o.queue_limit, 1);
        o.batch_limit = std::max<std::size_t>(o.batch_limit, 1);
        o.retry_min = std::max(o.retry_min, std::chrono::milliseconds(1));
        o.retry_max = std::max(o.retry_max, o.retry_min);
        return o;
    }

    void run() {
        std::unique_ptr<call_store> store;
        std::vector<call_row> batch; // taken from the queue, written in order, kept until written
        auto backoff = options_.retry_min;
        for (;;) {
            std::string error;
            if (!store) store = open_store(error); // at start too: tables are created or migrated then
            if (store) {
                if (batch.empty()) {
                    recovered(); // connected, nothing pending
                    if (!next_batch(batch)) break;
                }
                error = write(*store, batch);
                if (batch.empty()) {
                    recovered();
                    backoff = options_.retry_min;
                    continue;
                }
                store.reset(); // reconnect: a broken or schema-less connection is not reused
            }
            outage(error);
            if (!wait_retry(backoff)) break;
            backoff = std::min(backoff * 2, options_.retry_max);
        }
        finish();
    }

    std::unique_ptr<call_store> open_store(std::string& error) {
        try {
            auto s = make_store_(stop_.get_token());
            if (s) return s;
            error = "no store";
        } catch (const std::exception& e) {
            error = e.what();
        }
        return nullptr;
    }

    /// Writes `batch`, erasing the rows that are done; returns the error when rows remain.
    std::string write(call_store& store, std::vector<call_row>& batch) {
        call_store::outcome out;
        try {
            out = store.write(batch);
        } catch (const std::exception& e) {
            out = {0, 0, e.what()};
        }
        const auto done = std::min(out.written + out.failed, batch.size());
        const bool outbox = options_.on_outbox_written &&
                            std::any_of(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(done),
                                        [](const call_row& r) { return r.what == call_row::kind::whatsapp_outbox; });
        written_.fetch_add(out.written);
        failed_.fetch_add(out.failed);
        if (out.failed > 0) refused(out.failed, out.error);
        if (done == batch.size()) database_up_.store(true); // before flush() can see the rows gone
        batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(done));
        release(done);
        if (outbox) {
            try {
                options_.on_outbox_written();
            } catch (...) {
            }
        }
        return out.error.empty() ? std::string("the database did not take the rows") : out.error;
    }

    /// Waits for rows; false once stopping with nothing left to write.
    bool next_batch(std::vector<call_row>& batch) {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return false;
        while (!queue_.empty() && batch.size() < options_.batch_limit) {
            batch.push_back(std::move(queue_.front()));
            queue_.pop_front();
        }
        return true;
    }

    /// `n` rows left the log (written, refused or given up): room in the queue again.
    void release(std::size_t n) {
        if (n == 0) return;
        std::uint64_t burst = 0;
        {
            std::lock_guard lk(mu_);
            held_ -= n;
            queued_.store(held_);
            // A burst ends when the queue is half empty again, so a database that keeps up
            // only just does not log a pair of lines per flush.
            if (dropping_ && held_ <= options_.queue_limit / 2) {
                dropping_ = false;
                burst = burst_dropped_;
                burst_dropped_ = 0;
            }
            if (held_ == 0) idle_cv_.notify_all();
        }
        if (burst > 0)
            say("queue has room again; " + std::to_string(burst) + " rows were dropped while it was full (" +
                std::to_string(dropped_.load()) + " since start)");
    }

    /// Sleeps `d` before the next attempt; false when the log is being destroyed and either has
    /// nothing left to write or its grace is over.
    bool wait_retry(std::chrono::milliseconds d) {
        std::unique_lock lk(mu_);
        auto give_up = [&] { return stop_.stop_requested() || (stopping_ && held_ == 0); };
        cv_.wait_for(lk, d, give_up);
        return !give_up();
    }

    void outage(const std::string& error) {
        database_up_.store(false);
        if (outage_since_) return;
        outage_since_ = clock::now();
        say("database unavailable: " + error + "; rows wait in the queue (" + std::to_string(queued_.load()) +
            " now, at most " + std::to_string(options_.queue_limit) + ") and the writer retries with backoff");
    }

    void recovered() {
        database_up_.store(true);
        if (!outage_since_) return;
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - *outage_since_);
        outage_since_.reset();
        say("database available again after " + std::to_string(ms.count() / 1000) + "." +
            std::to_string(ms.count() % 1000 / 100) + " s");
    }

    /// Rows the database refused for good: logged at most once a minute, with the count since.
    void refused(std::size_t n, const std::string& error) {
        refused_since_log_ += n;
        const auto now = clock::now();
        if (last_refused_log_ && now - *last_refused_log_ < std::chrono::minutes(1)) return;
        last_refused_log_ = now;
        say(std::to_string(refused_since_log_) + " rows refused by the database (not retried): " + error);
        refused_since_log_ = 0;
    }

    /// The writer is leaving: whatever is still held was not written.
    void finish() {
        std::size_t lost = 0;
        {
            std::lock_guard lk(mu_);
            lost = held_; // the queue and the writer's batch
            queue_.clear();
            held_ = 0;
            queued_.store(0);
            writer_done_ = true;
            idle_cv_.notify_all();
            done_cv_.notify_all();
        }
        if (lost > 0) {
            dropped_.fetch_add(lost);
            say(std::to_string(lost) + " rows not written at shutdown: the database was unavailable");
        }
    }

    void say(const std::string& msg) noexcept {
        try {
            if (warn_) warn_(msg);
        } catch (...) {
        }
    }

    const call_log_options options_;
    store_factory make_store_;
    warning warn_;
    std::mutex mu_;
    std::condition_variable cv_, idle_cv_, done_cv_;
    std::deque<call_row> queue_;
    std::size_t held_ = 0; // queue_ plus the writer's batch
    bool stopping_ = false, writer_done_ = false, dropping_ = false;
    std::uint64_t burst_dropped_ = 0;
    std::stop_source stop_;
    // Writer thread only.
    std::optional<clock::time_point> outage_since_, last_refused_log_;
    std::size_t refused_since_log_ = 0;
    std::atomic<bool> database_up_{true};
    std::atomic<std::uint64_t> dropped_{0}, failed_{0}, written_{0}, queued_{0};
    std::thread writer_; // last: starts after everything above exists
};

} // namespace calls
