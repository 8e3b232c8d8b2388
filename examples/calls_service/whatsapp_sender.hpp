#pragma once

// The WhatsApp sender: a thread of its own that takes due rows from the outbox (its own
// database connection), posts each to Twilio's Messages resource, and records the outcome:
// `sent` with the message SID, `pending` again with a later attempt (429, 5xx, no answer: an
// exponential backoff with jitter, Retry-After honoured), or `failed` with Twilio's error code
// (a permanent refusal such as 21211 or 63016, or the last attempt used up). Rows are taken with
// a lease, so a sender that dies mid-send leaves them to be sent after the lease ends, by it
// after a restart or by another instance on the same database. Webhooks never wait for it.

#include "call_log.hpp"
#include "https_client.hpp"
#include "twilio_signature.hpp"
#include "whatsapp_config.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace calls {

/// What one attempt to send came to.
struct send_outcome {
    enum class verdict { sent, retry, failed };
    verdict what = verdict::failed;
    std::string message_sid;                          ///< sent
    std::optional<int> error_code;                    ///< Twilio's `code`, when it said one
    std::string error;                                ///< for the row and the log
    std::optional<std::chrono::seconds> retry_after;  ///< the server asked to wait this long
};

/// Reads Twilio's answer: 2xx -> sent (its `sid`); 429 and 5xx -> worth retrying; any other
/// status -> a permanent refusal. The error's `code` and `message` come from Twilio's JSON body.
inline send_outcome classify_twilio_answer(const http_response& r) {
    send_outcome out;
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    auto text = [&](const char* key) -> std::string {
        if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
        return {};
    };
    if (r.status >= 200 && r.status < 300) {
        out.what = send_outcome::verdict::sent;
        out.message_sid = text("sid");
        return out;
    }
    if (j.is_object() && j.contains("code") && j["code"].is_number_integer()) out.error_code = j["code"].get<int>();
    auto message = text("message");
    if (message.size() > 300) message.resize(300);
    out.error = "HTTP " + std::to_string(r.status) + (message.empty() ? std::string() : ": " + message);
    out.retry_after = r.retry_after;
    out.what = r.status == 429 || r.status >= 500 ? send_outcome::verdict::retry : send_outcome::verdict::failed;
    return out;
}

/// "+972501234567" -> "+972*******67": enough to tell numbers apart in a log, not to dial one.
inline std::string masked_number(std::string_view n) {
    if (n.size() <= 6) return std::string(n.size(), '*');
    return std::string(n.substr(0, 4)) + std::string(n.size() - 6, '*') + std::string(n.substr(n.size() - 2));
}

struct whatsapp_sender_options {
    std::size_t batch = 5;                       ///< rows taken (and leased) at a time
    std::chrono::milliseconds idle_poll{1000};   ///< looks at the outbox at least this often
    std::chrono::milliseconds db_retry_min{100}; ///< database unavailable: first wait, doubled
    std::chrono::milliseconds db_retry_max{5000};
};

class whatsapp_sender {
public:
    using warning = std::function<void(const std::string&)>;
    using options = whatsapp_sender_options;

    /// Starts the thread. `make_store` opens the sender's own connection (on its thread).
    whatsapp_sender(call_log::store_factory make_store, whatsapp_config config, warning say, options o = {})
        : config_(std::move(config)), options_(o), make_store_(std::move(make_store)), say_(std::move(say)),
          client_(config_.api), basic_auth_("Basic " + base64_text(config_.account_sid + ":" + config_.auth_token)),
          thread_([this] { run(); }) {}

    whatsapp_sender(const whatsapp_sender&) = delete;
    whatsapp_sender& operator=(const whatsapp_sender&) = delete;

    /// Stops at once: a request in flight is abandoned (its row stays leased and is sent again
    /// after the lease, so Twilio may get it twice if it had already taken it).
    ~whatsapp_sender() {
        {
            std::lock_guard lk(mu_);
            stop_.request_stop();
        }
        cv_.notify_all();
        thread_.join();
    }

    /// A row may be due now (the call log just wrote one): look without waiting for the poll.
    void wake() noexcept {
        {
            std::lock_guard lk(mu_);
            woken_ = true;
        }
        cv_.notify_all();
    }

    std::uint64_t sent() const noexcept { return sent_.load(); }
    std::uint64_t failed() const noexcept { return failed_.load(); }
    std::uint64_t retried() const noexcept { return retried_.load(); }
    /// How long a taken row stays out of other senders' reach: the batch's requests, and one more.
    std::chrono::milliseconds lease() const {
        return std::chrono::duration_cast<std::chrono::milliseconds>(config_.request_timeout) *
               static_cast<long>(options_.batch + 1);
    }

private:
    using clock = std::chrono::steady_clock;

    /// An outcome not yet written to the database (it went away meanwhile): written first
    /// after the reconnect, so a sent message is never sent again for want of its record.
    struct record {
        std::string call_sid;
        send_outcome outcome;
        std::chrono::milliseconds delay{0};
    };

    static std::string base64_text(const std::string& s) {
        return base64(reinterpret_cast<const unsigned char*>(s.data()), s.size());
    }

    void run() {
        std::unique_ptr<call_store> store;
        auto backoff = options_.db_retry_min;
        while (!stop_.stop_requested()) {
            try {
                if (!store) {
                    store = make_store_(stop_.get_token());
                    if (!store) throw std::runtime_error("no store");
                }
                flush(*store);
                database_available();
                auto batch = store->claim_due_messages(options_.batch, lease());
                for (const auto& m : batch) {
                    if (stop_.stop_requested()) break;
                    unrecorded_.push_back(attempt(m));
                    flush(*store);
                }
                backoff = options_.db_retry_min;
                if (batch.size() == options_.batch) continue; // more may be due
                idle();
            } catch (const std::exception& e) {
                store.reset();
                database_unavailable(e.what());
                sleep_for(backoff);
                backoff = std::min(backoff * 2, options_.db_retry_max);
            }
        }
    }

    void flush(call_store& store) {
        while (!unrecorded_.empty()) {
            const auto& r = unrecorded_.front();
            switch (r.outcome.what) {
            case send_outcome::verdict::sent: store.record_sent(r.call_sid, r.outcome.message_sid); break;
            case send_outcome::verdict::retry:
                store.record_retry(r.call_sid, r.delay, r.outcome.error_code, r.outcome.error);
                break;
            case send_outcome::verdict::failed:
                store.record_failed(r.call_sid, r.outcome.error_code, r.outcome.error);
                break;
            }
            unrecorded_.erase(unrecorded_.begin());
        }
    }

    record attempt(const outbox_message& m) {
        record r{m.call_sid, {}, {}};
        const auto to = e164_number(m.number);
        if (to.empty()) {
            r.outcome.error = "no usable caller number";
        } else {
            try {
                r.outcome = classify_twilio_answer(
                    client_.post_form(config_.messages_path(), {{"Authorization", basic_auth_}},
                                      config_.message_form(to), config_.request_timeout, stop_.get_token()));
            } catch (const http_transport_error& e) {
                r.outcome.what = send_outcome::verdict::retry;
                r.outcome.error = e.what();
            }
        }
        const auto who = "call_id=" + m.call_sid + " to=" + masked_number(m.number);
        const auto code = r.outcome.error_code ? " code=" + std::to_string(*r.outcome.error_code) : std::string();
        if (r.outcome.what == send_outcome::verdict::retry && m.attempts >= config_.max_attempts) {
            r.outcome.what = send_outcome::verdict::failed;
            r.outcome.error += " (gave up after " + std::to_string(m.attempts) + " attempts)";
        }
        switch (r.outcome.what) {
        case send_outcome::verdict::sent:
            sent_.fetch_add(1);
            say("sent " + who + " message_sid=" + r.outcome.message_sid + " attempt=" + std::to_string(m.attempts));
            break;
        case send_outcome::verdict::retry: {
            r.delay = backoff(m.attempts, r.outcome.retry_after);
            retried_.fetch_add(1);
            next_retry_ = std::min(next_retry_, clock::now() + r.delay);
            say("retry " + who + " attempt=" + std::to_string(m.attempts) + "/" + std::to_string(config_.max_attempts) +
                " next_in_ms=" + std::to_string(r.delay.count()) + code + ": " + r.outcome.error);
            break;
        }
        case send_outcome::verdict::failed:
            failed_.fetch_add(1);
            say("failed " + who + " attempt=" + std::to_string(m.attempts) + code + ": " + r.outcome.error);
            break;
        }
        return r;
    }

    /// base x 2^(attempt-1), capped, with jitter (a random half of it), and never below what the
    /// server asked for.
    std::chrono::milliseconds backoff(int attempt, std::optional<std::chrono::seconds> retry_after) {
        const auto shift = std::clamp(attempt - 1, 0, 20);
        const auto full = std::min<std::int64_t>(config_.retry_base.count() << shift, config_.retry_max.count());
        std::uniform_int_distribution<std::int64_t> half(0, full / 2);
        auto d = std::chrono::milliseconds(full - full / 2 + half(random_));
        if (retry_after) d = std::max<std::chrono::milliseconds>(d, *retry_after);
        return d;
    }

    /// Waits for the next poll, the earliest retry this sender scheduled, or a wake-up.
    void idle() {
        const auto until = std::min(clock::now() + options_.idle_poll, next_retry_);
        std::unique_lock lk(mu_);
        cv_.wait_until(lk, until, [&] { return woken_ || stop_.stop_requested(); });
        woken_ = false;
        next_retry_ = clock::time_point::max();
    }

    void sleep_for(std::chrono::milliseconds d) {
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, d, [&] { return stop_.stop_requested(); });
    }

    void database_unavailable(const std::string& why) {
        if (database_down_) return;
        database_down_ = true;
        say("database unavailable: " + why + "; messages wait in the outbox");
    }

    void database_available() {
        if (!database_down_) return;
        database_down_ = false;
        say("database available again");
    }

    void say(const std::string& msg) noexcept {
        try {
            if (say_) say_(msg);
        } catch (...) {
        }
    }

    const whatsapp_config config_;
    const options options_;
    call_log::store_factory make_store_;
    warning say_;
    https_client client_;
    const std::string basic_auth_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool woken_ = false;
    std::stop_source stop_;
    std::atomic<std::uint64_t> sent_{0}, failed_{0}, retried_{0};
    // The sender thread's own.
    std::vector<record> unrecorded_;
    clock::time_point next_retry_ = clock::time_point::max();
    bool database_down_ = false;
    std::mt19937_64 random_{std::random_device{}()};
    std::thread thread_; // last: starts after everything above exists
};

} // namespace calls
