#pragma once

// One connection to Redis, pipelined: commands are written as they come (everything queued
// while a write is under way goes out together in the next one; script calls that say they may
// go as one command, an acquire or release of one limiter, do; commands sent by callers while
// a read's replies are handed out go a few at a time, see on_read; with `max_writes_in_flight`,
// commands wait for a reply while that many writes are unanswered), replies are matched to them
// in order, and each command has a deadline. All of its work runs on one strand, so it can be driven
// by an application's io_context (many commands in flight, no thread hand-off) or by the
// blocking callers themselves (blocking_driver): the same code either way.
//
// Failures, and what each does to the commands it touches:
// - a command past its deadline (a stuck server): that command, every one written after it and
//   every one queued fail with a timeout, and the connection is closed (its replies can no
//   longer be matched);
// - the connection breaks (reset, closed, a reply cut in half): commands written on a connection
//   that had answered before are sent once more on a new one (it may simply have been closed
//   by the server while idle; every script is idempotent per call id); the others fail;
// - connecting fails (refused, TLS, AUTH, a check of the new connection): every queued command
//   fails with the reason.
// Replies are handed out only after they were read whole, so none can reach the wrong caller.

#include "failure.hpp"
#include "resp.hpp"
#include "stream.hpp"

#include <utility> // before Asio

#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <memory_resource>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace callguard::detail {

using steady = std::chrono::steady_clock;

/// One command and what happens to its reply. `finish` runs exactly once, on the channel's strand.
class channel_request {
public:
    explicit channel_request(std::string resp_command) : resp(std::move(resp_command)) {}
    virtual ~channel_request() = default;
    /// A reply (an error reply is a reply), or, with a null reply, why there is none.
    virtual void finish(reply_ptr reply, const failure& why) noexcept = 0;
    /// The callers it answers.
    virtual std::size_t calls() const noexcept { return 1; }

    /// The command, encoded: `resp`, or when that is empty `borrowed`, bytes its sender keeps
    /// alive and unchanged until `finish` (a script call's own buffer: no copy per call).
    std::string_view command() const noexcept { return resp.empty() ? borrowed : std::string_view(resp); }

    std::string resp;
    std::string_view borrowed;
    steady::time_point deadline{};
    bool may_resend = true;     ///< may be sent once more on a new connection
    bool on_used_connection = false;
    bool ends_write = false;    ///< the last command of its write: its reply ends that write's wait

    /// Requests with the same non-empty head that wait to be written at the same moment travel
    /// as one command: the head (`batch_head_argc` arguments, encoded) and then each one's item
    /// (`batch_item_argc` arguments), in queue order; its reply is an array, one element per
    /// request. Any other reply (an error: NOSCRIPT, MOVED...) reaches each request as its own.
    /// `batch_key` (the call id) keeps a request behind earlier ones with the same key. All
    /// three view the command's bytes.
    std::string_view batch_head, batch_item, batch_key;
    std::size_t batch_head_argc = 0, batch_item_argc = 0;
};
using request_ptr = std::unique_ptr<channel_request>;

/// A request that calls a function with the reply.
template <class F>
class request_fn final : public channel_request {
public:
    request_fn(std::string resp_command, F f) : channel_request(std::move(resp_command)), f_(std::move(f)) {}
    void finish(reply_ptr reply, const failure& why) noexcept override { f_(std::move(reply), why); }

private:
    F f_;
};

template <class F>
request_ptr make_request(std::string resp_command, F f) {
    return std::make_unique<request_fn<F>>(std::move(resp_command), std::move(f));
}

/// Commands every new connection runs after AUTH/SELECT, pipelined with them (one round trip),
/// and the check of their replies: the dataset marker, the eviction advice, a master's ROLE.
class connection_check {
public:
    virtual ~connection_check() = default;
    /// Appends commands (encoded) and returns how many.
    virtual std::size_t append_commands(std::string& resp, const redis_target& where) = 0;
    /// Their replies, in order. Throws `redis_error` to refuse the connection.
    virtual void check(std::span<reply_ptr> replies, const redis_target& where) = 0;
};

struct channel_settings {
    std::string user, password; ///< AUTH; empty password: none (a PING finds out if one is needed)
    int db = 0;
    std::chrono::milliseconds connect_timeout{250}, command_timeout{250};
    tls_setup tls;
    std::shared_ptr<connection_check> check;
    /// Where to connect, tried in order; asked before each connection (it may ask sentinels).
    /// Calls its argument with the targets, or an empty list and why.
    std::function<void(std::function<void(std::vector<redis_target>, failure)>)> targets;
    /// Told which target a new connection went to.
    std::function<void(const redis_target&)> on_connected;
    /// The io_context is the channel's own, run only while a caller waits (blocking_driver):
    /// its deadline timer may stay armed between commands (no `run()` to keep from returning),
    /// which saves re-arming it for every command.
    bool own_context = false;
    /// 0: whatever is queued is written as soon as the previous write is done. N: while N writes
    /// wait for their replies, new commands wait for the next reply (or until a command's worth,
    /// `max_batch`, is queued) and then go out together: acquires or releases of many callers as
    /// one script call. For blocking callers, whose commands arrive one by one from their own
    /// threads: without it most went out alone, and the server ran twice the script calls. With
    /// 2 the server mostly has one write to work on while the next gathers. The cost: a held
    /// command reaches the server after that reply, not before it, and its deadline starts when
    /// it is written, so a caller can wait up to about two command timeouts on a slow server
    /// (a stuck one fails it with the earlier write's timeout, within one).
    std::size_t max_writes_in_flight = 0;
};

class channel : public std::enable_shared_from_this<channel> {
public:
    using executor_type = asio::strand<asio::any_io_executor>;

    channel(asio::any_io_executor ex, channel_settings s)
        : strand_(asio::make_strand(std::move(ex))), settings_(std::move(s)), stream_(strand_), timer_(strand_) {}

    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;

    const executor_type& get_executor() const noexcept { return strand_; }
    /// The executor under the strand: for companions of this channel (one-off connections,
    /// timers) that need their own strand.
    asio::any_io_executor inner_executor() const { return strand_.get_inner_executor(); }

    /// Queues `r` (from any thread); it is written as soon as the connection is ready.
    void exec(request_ptr r) {
        if (strand_.running_in_this_thread()) return do_exec(std::move(r)); // a caller answered here
        asio::dispatch(strand_, [self = shared_from_this(), r = std::move(r)]() mutable {
            self->do_exec(std::move(r));
        });
    }

    /// Every connection made before this call is replaced before its next command: once what is
    /// in flight has been answered, the channel reconnects (asking for targets again).
    void invalidate() {
        asio::dispatch(strand_, [self = shared_from_this()] { self->do_invalidate(); });
    }

    /// Fails everything queued or in flight (`failure::shutdown`) and closes for good.
    void close() {
        asio::dispatch(strand_, [self = shared_from_this()] { self->do_close(); });
    }

    /// The same as `invalidate` / `close`, done at once. Only when no thread can be running this
    /// channel's handlers (a pooled channel's own io_context, between leases).
    void invalidate_now() { do_invalidate(); }
    void close_now() { do_close(); }

    bool connected() const noexcept { return connected_.load(std::memory_order_relaxed); }
    /// Writes made: each carries every command queued at that moment.
    std::uint64_t writes() const noexcept { return writes_.load(std::memory_order_relaxed); }
    /// Requests that travelled with others as one command.
    std::uint64_t batched() const noexcept { return batched_.load(std::memory_order_relaxed); }

private:
    enum class phase { idle, connecting, ready };

    /// A handshake command's reply goes to the channel, not to a caller.
    struct handshake_request final : channel_request {
        handshake_request(std::string resp_command, std::weak_ptr<channel> ch, std::uint64_t gen)
            : channel_request(std::move(resp_command)), ch_(std::move(ch)), gen_(gen) {}
        void finish(reply_ptr reply, const failure& why) noexcept override {
            if (why) return; // the channel fails the connection itself
            if (auto c = ch_.lock()) c->on_handshake_reply(gen_, std::move(reply));
        }
        std::weak_ptr<channel> ch_;
        std::uint64_t gen_;
    };

    struct finished {
        request_ptr request;
        reply_ptr reply;
        failure why;
    };

    /// Requests travelling as one command (see `channel_request::batch_head`).
    struct batch_request final : channel_request {
        batch_request() : channel_request(std::string()) {}

        void encode() {
            const auto& head = members.front()->batch_head;
            auto argc = members.front()->batch_head_argc;
            auto size = head.size() + 24;
            for (const auto& m : members) {
                argc += m->batch_item_argc;
                size += m->batch_item.size();
            }
            resp.reserve(size);
            append_header(resp, '*', argc);
            resp += head;
            for (const auto& m : members) resp += m->batch_item;
        }

        void finish(reply_ptr reply, const failure& why) noexcept override {
            if (why || !reply) {
                const auto failed = why ? why : failure::reply("no reply to calls sent as one");
                for (auto& m : members) m->finish(nullptr, failed);
                return;
            }
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements == members.size()) {
                for (std::size_t i = 0; i < members.size(); ++i) {
                    reply_ptr one(reply->element[i]); // taken out of the array, which frees the rest
                    reply->element[i] = nullptr;
                    members[i]->finish(std::move(one), {});
                }
                return;
            }
            // Refused or failed as a whole (NOSCRIPT, MOVED, READONLY...): each request gets the
            // answer as its own, and handles it as it would alone (load the script, follow the
            // redirection...).
            const auto text = reply_text(reply.get());
            for (auto& m : members) {
                try {
                    if (!reply_is_error(reply.get()))
                        throw redis_reply_error("unexpected reply to " + std::to_string(members.size()) +
                                                " calls sent as one: " + text);
                    m->finish(error_reply(text), {});
                } catch (...) {
                    m->finish(nullptr, failure::current());
                }
            }
        }

        std::size_t calls() const noexcept override { return members.size(); }

        std::vector<request_ptr> members;
    };
    static constexpr std::size_t max_batch = 64; // calls per command: bounds a script's run
    static constexpr std::size_t min_early_write = 4; // while replies are handed out (on_read)

    void do_exec(request_ptr r) {
        if (closed_) return r->finish(nullptr, failure::shutdown());
        queue_.push_back(std::move(r));
        pump();
    }

    void do_invalidate() {
        stale_ = true;
        pump();
    }

    void do_close() {
        if (closed_) return;
        closed_ = true;
        auto done = take_all(failure::shutdown());
        drop_connection();
        timer_.cancel();
        finish_all(done);
    }

    /// Moves things along: connect, reconnect after an invalidation, or write what is queued.
    void pump() {
        if (closed_) return;
        if (phase_ == phase::ready && stale_ && in_flight_.empty() && !writing_) {
            drop_connection(); // its successor asks for targets again
            stale_ = false;
        }
        if (phase_ == phase::idle) {
            stale_ = false;
            if (!queue_.empty()) start_connect();
            return;
        }
        if (phase_ == phase::ready && !stale_ && !writing_ && queue_.size() > held_back_ && !gathering())
            write_queued();
    }

    /// Commands wait for a reply (see `channel_settings::max_writes_in_flight`), unless enough
    /// of them wait to fill a command.
    bool gathering() const noexcept {
        const auto most = settings_.max_writes_in_flight;
        // Nothing in flight: no reply is coming to end the wait, whatever the count says.
        return most != 0 && writes_in_flight_ >= most && !in_flight_.empty() && queue_.size() < max_batch;
    }

    // --- connecting -------------------------------------------------------------------------

    void start_connect() {
        phase_ = phase::connecting;
        const auto gen = ++gen_;
        connect_deadline_ = steady::now() + settings_.connect_timeout;
        arm_timer(connect_deadline_);
        settings_.targets([self = shared_from_this(), gen](std::vector<redis_target> targets, failure why) {
            asio::dispatch(self->strand_, [self, gen, targets = std::move(targets), why = std::move(why)]() mutable {
                if (gen != self->gen_ || self->closed_) return;
                if (why || targets.empty())
                    return self->connect_failed(why ? why : failure::io("no Redis server to connect to"));
                self->targets_ = std::move(targets);
                self->connect_errors_.clear();
                self->try_target(gen, 0);
            });
        });
    }

    void try_target(std::uint64_t gen, std::size_t i) {
        if (i == targets_.size()) return connect_failed(failure::io("cannot connect: " + connect_errors_));
        stream_.async_connect(targets_[i], settings_.tls, [self = shared_from_this(), gen, i](std::string error) {
            if (gen != self->gen_ || self->closed_) return;
            if (!error.empty()) {
                self->connect_errors_ += (self->connect_errors_.empty() ? "" : "; ") + self->targets_[i].name() + ": " + error;
                return self->try_target(gen, i + 1);
            }
            self->target_ = self->targets_[i];
            self->send_handshake(gen);
        });
    }

    /// AUTH (or PING, to find out whether a password is needed), SELECT, then the owner's
    /// checks: all in one write, one round trip.
    void send_handshake(std::uint64_t gen) {
        std::string resp;
        if (!settings_.password.empty()) {
            if (settings_.user.empty())
                append_resp(resp, {"AUTH", settings_.password});
            else
                append_resp(resp, {"AUTH", settings_.user, settings_.password});
        } else {
            append_resp(resp, {"PING"});
        }
        std::size_t count = 1;
        if (settings_.db != 0) {
            append_resp(resp, {"SELECT", std::to_string(settings_.db)});
            ++count;
        }
        if (settings_.check) count += settings_.check->append_commands(resp, target_);
        handshake_replies_.clear();
        handshake_expected_ = count;
        // One request carries the whole batch; the others only wait for their replies.
        in_flight_.push_back(std::make_unique<handshake_request>(std::move(resp), weak_from_this(), gen));
        for (std::size_t n = 1; n < count; ++n)
            in_flight_.push_back(std::make_unique<handshake_request>(std::string(), weak_from_this(), gen));
        for (auto& r : in_flight_) r->deadline = connect_deadline_;
        write_in_flight_tail(0);
    }

    void on_handshake_reply(std::uint64_t gen, reply_ptr reply) {
        if (gen != gen_) return;
        handshake_replies_.push_back(std::move(reply));
        if (handshake_replies_.size() < handshake_expected_) return;
        try {
            check_handshake();
        } catch (...) {
            return connect_failed(failure::current());
        }
        phase_ = phase::ready;
        connected_.store(true, std::memory_order_relaxed);
        answered_ = 0;
        if (settings_.on_connected) settings_.on_connected(target_);
        pump();
    }

    void check_handshake() {
        auto& first = handshake_replies_.front();
        if (reply_is_error(first.get())) {
            if (!settings_.password.empty())
                throw redis_reply_error(target_.name() + ": AUTH refused: " + reply_text(first.get()));
            throw redis_reply_error(target_.name() + " refused the connection (" + reply_text(first.get()) +
                                    "): it needs a password and none is set "
                                    "(redis_options::password, or :password@ in the URL)");
        }
        std::size_t next = 1;
        if (settings_.db != 0) {
            auto& sel = handshake_replies_[next++];
            if (reply_is_error(sel.get()))
                throw redis_reply_error("SELECT " + std::to_string(settings_.db) + " refused: " + reply_text(sel.get()));
        }
        if (settings_.check)
            settings_.check->check(std::span<reply_ptr>(handshake_replies_).subspan(next), target_);
    }

    void connect_failed(const failure& why) {
        std::vector<finished> done;
        for (auto& r : in_flight_)
            if (!dynamic_cast<handshake_request*>(r.get())) done.push_back({std::move(r), nullptr, why});
        in_flight_.clear();
        for (auto& r : queue_) done.push_back({std::move(r), nullptr, why});
        queue_.clear();
        drop_connection();
        finish_all(done);
    }

    // --- writing and reading ----------------------------------------------------------------

    void write_queued() {
        const auto first = in_flight_.size();
        const auto deadline = steady::now() + settings_.command_timeout;
        // Requests that may travel together do, each group as one command where its first
        // stood; none passes a request queued before it on the same call id (nor any other
        // kind of request).
        struct group {
            std::size_t at;        // its place in in_flight_
            batch_request* batch;  // made when a second member comes
            std::size_t size() const { return batch ? batch->members.size() : 1; }
        };
        // Bookkeeping for this write only: from the channel's scratch buffer while it lasts (this
        // never runs twice at once: one strand), then from the heap, never from the application's
        // default memory resource.
        std::pmr::monotonic_buffer_resource memory(scratch_.data(), scratch_.size(), std::pmr::new_delete_resource());
        std::pmr::vector<group> groups(&memory);
        std::pmr::unordered_map<std::string_view, std::size_t> last(&memory); // call id -> place of its latest request
        std::size_t fence = first; // groups placed before this take no more members
        const bool many = queue_.size() > 1;
        while (!queue_.empty()) {
            auto r = std::move(queue_.front());
            queue_.pop_front();
            r->deadline = deadline;
            r->on_used_connection = answered_ > 0;
            if (!many || r->batch_head.empty()) {
                in_flight_.push_back(std::move(r));
                fence = in_flight_.size();
                continue;
            }
            const auto id = r->batch_key;
            auto seen = last.find(id);
            const std::size_t not_before = seen == last.end() ? fence : std::max(fence, seen->second);
            auto g = std::find_if(groups.begin(), groups.end(), [&](const group& x) {
                return x.at >= not_before && x.size() < max_batch && head_of(x)->batch_head == r->batch_head;
            });
            if (g == groups.end()) {
                groups.push_back({in_flight_.size(), nullptr});
                in_flight_.push_back(std::move(r));
                g = groups.end() - 1;
            } else {
                if (!g->batch) { // a second member: the first moves into a new group
                    auto b = std::make_unique<batch_request>();
                    b->deadline = deadline;
                    b->on_used_connection = in_flight_[g->at]->on_used_connection;
                    b->may_resend = in_flight_[g->at]->may_resend;
                    b->members.reserve(std::min(queue_.size() + 1, max_batch));
                    b->members.push_back(std::move(in_flight_[g->at]));
                    g->batch = b.get();
                    in_flight_[g->at] = std::move(b);
                }
                g->batch->may_resend = g->batch->may_resend && r->may_resend;
                g->batch->members.push_back(std::move(r));
            }
            last.insert_or_assign(id, g->at);
        }
        for (const auto& g : groups) {
            if (!g.batch) continue;
            g.batch->encode();
            batched_.fetch_add(g.size(), std::memory_order_relaxed);
        }
        arm_timer(in_flight_.front()->deadline);
        write_in_flight_tail(first);
    }

    /// A group's first request (alone in in_flight_, or the first member of its batch).
    const channel_request* head_of(const auto& g) const {
        return g.batch ? g.batch->members.front().get() : in_flight_[g.at].get();
    }

    /// Writes the commands of in_flight_[first...] in one go, and makes sure a read is pending.
    void write_in_flight_tail(std::size_t first) {
        wbuf_.clear();
        for (std::size_t i = first; i < in_flight_.size(); ++i) {
            wbuf_ += in_flight_[i]->command();
            in_flight_[i]->ends_write = i + 1 == in_flight_.size();
        }
        ++writes_in_flight_;
        writing_ = true;
        writes_.fetch_add(1, std::memory_order_relaxed);
        stream_.async_write(asio::buffer(wbuf_), [self = shared_from_this(), gen = gen_](
                                                     const boost::system::error_code& ec, std::size_t) {
            self->on_write(gen, ec);
        });
        if (!reading_) start_read();
    }

    void on_write(std::uint64_t gen, const boost::system::error_code& ec) {
        if (gen != gen_) return;
        writing_ = false;
        if (ec) return connection_broken(failure::io("write to " + target_.name() + " failed: " + ec.message()));
        pump();
    }

    void start_read() {
        reading_ = true;
        stream_.async_read_some(asio::buffer(rbuf_), [self = shared_from_this(), gen = gen_](
                                                         const boost::system::error_code& ec, std::size_t n) {
            self->on_read(gen, ec, n);
        });
    }

    void on_read(std::uint64_t gen, const boost::system::error_code& ec, std::size_t n) {
        if (gen != gen_) return;
        if (ec) {
            reading_ = false;
            const auto what = ec == asio::error::eof ? std::string("connection closed by ") + target_.name()
                                                     : "read from " + target_.name() + " failed: " + ec.message();
            return connection_broken(failure::io(what));
        }
        std::vector<finished> done;
        try {
            reader_->feed(rbuf_.data(), n);
            while (auto reply = reader_->next()) {
                if (in_flight_.empty()) throw redis_io_error("a reply from " + target_.name() + " that nothing asked for");
                auto r = std::move(in_flight_.front());
                in_flight_.pop_front();
                ++answered_;
                if (r->ends_write && writes_in_flight_ > 0) --writes_in_flight_;
                done.push_back({std::move(r), std::move(*reply), {}});
            }
        } catch (...) {
            reading_ = false;
            auto why = failure::current();
            finish_all(done); // replies read whole before the garbage are still good
            return connection_broken(why);
        }
        reading_ = false;
        // Callers answered here often send their next command at once (a coroutine resumed
        // inline). The first half of them go out together as soon as they are queued, and the
        // rest together once every reply is handed out: fewer writes, and the server works on
        // the first half while the others are answered (both cores busy, not taking turns).
        std::size_t calls = 0;
        for (const auto& f : done) calls += f.request->calls();
        held_back_ = std::max<std::size_t>(min_early_write, calls / 2) - 1;
        finish_all(done); // may queue more (a script load, a resend): handled by pump below
        held_back_ = 0;
        if (gen != gen_ || closed_) return;
        if (!in_flight_.empty() && !reading_) start_read();
        pump();
        if (in_flight_.empty() && queue_.empty() && phase_ == phase::ready && !settings_.own_context) disarm_timer();
    }

    /// Nothing is waiting for a reply: no deadline to watch, and no pending wait to keep an
    /// io_context's `run()` from returning.
    void disarm_timer() {
        if (!timer_armed_) return;
        timer_armed_ = false;
        ++timer_gen_;
        timer_.cancel();
    }

    /// The connection broke while connected (or while its handshake was in flight).
    void connection_broken(const failure& why) {
        if (phase_ == phase::connecting) {
            auto refused = why;
            refused.message += stream_.tls_refusal_hint();
            return connect_failed(refused);
        }
        std::vector<finished> done;
        std::deque<request_ptr> resend;
        for (auto& r : in_flight_) {
            if (why.what == failure::kind::io && r->on_used_connection && r->may_resend) {
                r->may_resend = false;
                resend.push_back(std::move(r));
            } else {
                done.push_back({std::move(r), nullptr, why});
            }
        }
        in_flight_.clear();
        if (why.what == failure::kind::timeout) { // a stuck server: nobody waits behind it
            for (auto& r : queue_) done.push_back({std::move(r), nullptr, why});
            queue_.clear();
        }
        for (auto it = resend.rbegin(); it != resend.rend(); ++it) queue_.push_front(std::move(*it));
        drop_connection();
        finish_all(done);
        pump(); // reconnects for whatever is left
    }

    void drop_connection() {
        stream_.close();
        ++gen_;
        phase_ = phase::idle;
        writing_ = reading_ = false;
        writes_in_flight_ = 0;
        reader_ = std::make_unique<resp_reader>();
        connected_.store(false, std::memory_order_relaxed);
    }

    /// Everything queued or in flight, failed with `why`.
    std::vector<finished> take_all(const failure& why) {
        std::vector<finished> done;
        for (auto& r : in_flight_)
            if (!dynamic_cast<handshake_request*>(r.get())) done.push_back({std::move(r), nullptr, why});
        for (auto& r : queue_) done.push_back({std::move(r), nullptr, why});
        in_flight_.clear();
        queue_.clear();
        return done;
    }

    static void finish_all(std::vector<finished>& done) noexcept {
        for (auto& f : done) f.request->finish(std::move(f.reply), f.why);
        done.clear();
    }

    // --- deadlines ----------------------------------------------------------------------------

    /// One timer serves every deadline: it is armed for the earliest that matters and, when it
    /// fires, either fails the connection or re-arms for the next one.
    void arm_timer(steady::time_point at) {
        if (timer_armed_ && armed_at_ <= at) return;
        timer_armed_ = true;
        armed_at_ = at;
        timer_.expires_at(at);
        timer_.async_wait([self = shared_from_this(), tgen = ++timer_gen_](const boost::system::error_code&) {
            self->on_timer(tgen);
        });
    }

    void on_timer(std::uint64_t tgen) {
        if (tgen != timer_gen_ || closed_) return;
        timer_armed_ = false;
        steady::time_point due;
        if (phase_ == phase::connecting)
            due = connect_deadline_;
        else if (!in_flight_.empty())
            due = in_flight_.front()->deadline;
        else
            return;
        if (due > steady::now()) return arm_timer(due);
        if (phase_ == phase::connecting)
            return connect_failed(failure::timeout("connect to " + (target_.host.empty() && target_.unix_path.empty()
                                                                        ? std::string("Redis")
                                                                        : target_.name()) +
                                                   " timed out after " +
                                                   std::to_string(settings_.connect_timeout.count()) + " ms"));
        connection_broken(failure::timeout(target_.name() + " did not answer within " +
                                           std::to_string(settings_.command_timeout.count()) + " ms"));
    }

    executor_type strand_;
    channel_settings settings_;
    redis_stream stream_;
    asio::steady_timer timer_;
    std::unique_ptr<resp_reader> reader_ = std::make_unique<resp_reader>();

    phase phase_ = phase::idle;
    bool closed_ = false, stale_ = false, writing_ = false, reading_ = false;
    std::size_t held_back_ = 0; // while a read's replies are handed out: commands queued before a write
    bool timer_armed_ = false;
    steady::time_point armed_at_{}, connect_deadline_{};
    std::uint64_t gen_ = 0, timer_gen_ = 0; // a new connection (or timer) makes old handlers stale
    std::uint64_t answered_ = 0;            // replies read on this connection
    std::size_t writes_in_flight_ = 0;      // writes with a reply still to come
    std::deque<request_ptr> queue_;         // not written yet
    std::deque<request_ptr> in_flight_;     // written, in reply order
    std::vector<redis_target> targets_;
    redis_target target_;
    std::string connect_errors_;
    std::vector<reply_ptr> handshake_replies_;
    std::size_t handshake_expected_ = 0;
    std::string wbuf_;
    std::array<char, 16 * 1024> rbuf_{};
    std::array<std::byte, 8 * 1024> scratch_; // write_queued's bookkeeping
    std::atomic<bool> connected_{false};
    std::atomic<std::uint64_t> writes_{0}, batched_{0};
};

} // namespace callguard::detail
