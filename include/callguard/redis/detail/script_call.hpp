#pragma once

// One script call, as an asynchronous operation over a channel: EVALSHA (loading the script
// first when its SHA is not known, and again on NOSCRIPT: a restarted or failed-over server,
// SCRIPT FLUSH), a cluster's redirections followed, and a Sentinel master check when one is due.
// Whoever drives the channel's executor drives the call; it ends by calling `done(reply,
// failure)` exactly once. The reply is never an error reply: those become failures.

#include "../errors.hpp"
#include "../options.hpp"
#include "channel.hpp"
#include "failure.hpp"
#include "resp.hpp"
#include "router.hpp"
#include "script_cache.hpp"
#include "scripts.hpp"

#include <utility> // before Asio

#include <boost/asio/steady_timer.hpp>

#include <charconv>
#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace callguard::detail {

/// What a script call needs besides its channel; owned by the backend, outlives every call.
struct script_context {
    router& route;
    script_cache& scripts;
    tls_setup tls;
    /// Every data connection is re-made before its next command (MOVED, READONLY, a master
    /// that moved).
    std::function<void()> reconnect_all;
};

template <class Done>
class script_call : public std::enable_shared_from_this<script_call<Done>> {
public:
    static constexpr int max_hops = 5;
    static constexpr std::size_t sha_size = 40; // SHA1, in hex

    /// Encodes the whole command once, in one buffer that every send of this call uses: EVALSHA,
    /// the SHA (written in at each send: it is learned by the first SCRIPT LOAD), numkeys, the
    /// keys and the arguments.
    script_call(script_context& ctx, std::shared_ptr<channel> ch, script_id id,
                std::span<const std::string_view> keys, std::span<const std::string_view> args, Done done)
        : ctx_(ctx), ch_(std::move(ch)), id_(id), argc_(3 + keys.size() + args.size()), done_(std::move(done)) {
        const auto shared = shared_args(id);
        const auto head_args = shared != 0 && shared < args.size() ? shared : args.size();
        std::size_t size = 64 + sha_size;
        for (auto k : keys) size += bulk_size_bound(k);
        for (auto a : args) size += bulk_size_bound(a);
        cmd_.reserve(size);
        append_header(cmd_, '*', argc_);
        head_at_ = cmd_.size();
        append_bulk(cmd_, "EVALSHA");
        sha_at_ = cmd_.size() + 5; // after "$40\r\n"
        append_bulk(cmd_, std::string_view("0000000000000000000000000000000000000000", sha_size));
        char digits[24];
        append_bulk(cmd_, std::string_view(digits, std::to_chars(digits, digits + sizeof digits, keys.size()).ptr));
        for (auto k : keys) append_bulk(cmd_, k);
        for (std::size_t i = 0; i < args.size(); ++i) {
            if (i == head_args) item_at_ = cmd_.size();
            append_bulk(cmd_, args[i]);
            if (i == head_args) key_ = {cmd_.size() - 2 - args[i].size(), args[i].size()};
        }
        if (head_args == args.size()) item_at_ = cmd_.size();
        item_argc_ = args.size() - head_args;
    }

    void start() {
        if (!ctx_.route.master_check_due()) return send();
        ctx_.route.async_master_moved(ch_->inner_executor(), ctx_.tls, [self = this->shared_from_this()](bool moved) {
            if (moved) self->ctx_.reconnect_all(); // Sentinel moved the master: follow now
            self->send();
        });
    }

private:
    /// The command with `sha` written in (every SHA has `sha_size` characters: SCRIPT LOAD's
    /// answer is checked).
    std::string_view evalsha(std::string_view sha) {
        if (sha.size() == sha_size) cmd_.replace(sha_at_, sha_size, sha);
        return cmd_;
    }

    void send() {
        const auto sha = ctx_.scripts.sha(id_);
        if (sha.empty()) return load_then_send();
        auto req = make_request(std::string(), [self = this->shared_from_this()](reply_ptr r, const failure& why) {
            self->on_reply(std::move(r), why);
        });
        const std::string_view cmd = evalsha(sha); // lives as long as this call, which the request keeps
        req->borrowed = cmd;
        if (item_argc_ > 0) { // may travel with other calls of this script on these keys
            req->batch_head = cmd.substr(head_at_, item_at_ - head_at_);
            req->batch_head_argc = argc_ - item_argc_;
            req->batch_item = cmd.substr(item_at_);
            req->batch_item_argc = item_argc_;
            req->batch_key = cmd.substr(key_.first, key_.second);
        }
        ch_->exec(std::move(req));
    }

    void load_then_send() {
        ch_->exec(make_request(encode({"SCRIPT", "LOAD", script_source(id_)}),
                               [self = this->shared_from_this()](reply_ptr r, const failure& why) {
                                   if (why) return self->finish(nullptr, why);
                                   if (reply_is_error(r.get()) || r->type != REDIS_REPLY_STRING || r->len != sha_size)
                                       return self->finish(nullptr, failure::reply("SCRIPT LOAD failed: " +
                                                                                   reply_text(r.get())));
                                   self->ctx_.scripts.remember(self->id_, reply_text(r.get()));
                                   self->send();
                               }));
    }

    void on_reply(reply_ptr r, const failure& why) {
        if (why) return finish(nullptr, why);
        if (!reply_is_error(r.get())) return finish(std::move(r), {});
        const auto text = reply_text(r.get());
        if (reply_error_is(r.get(), "NOSCRIPT") && !reloaded_) {
            reloaded_ = true;
            return load_then_send();
        }
        const bool more = hop_ < max_hops;
        if (more && reply_error_is(r.get(), "MOVED")) {
            if (auto to = redirect_target(text)) {
                ++hop_;
                ctx_.route.moved(std::move(*to));
                ctx_.reconnect_all();
                return send();
            }
        }
        if (more && reply_error_is(r.get(), "ASK")) {
            if (auto at = redirect_target(text)) {
                ++hop_;
                return send_asking(*at);
            }
        }
        if (more && (reply_error_is(r.get(), "TRYAGAIN") || reply_error_is(r.get(), "CLUSTERDOWN"))) {
            // A slot in migration, a failover in the cluster: wait a little and send again.
            ++hop_;
            auto timer = std::make_shared<asio::steady_timer>(ch_->get_executor(), std::chrono::milliseconds(10 * hop_));
            timer->async_wait([self = this->shared_from_this(), timer](const boost::system::error_code&) { self->send(); });
            return;
        }
        if (reply_error_is(r.get(), "READONLY")) { // a demoted master: find the new one
            ctx_.route.forget();
            ctx_.reconnect_all();
            return finish(nullptr, failure::io(ctx_.route.last_target() + " no longer takes writes (" + text +
                                               "): reconnecting to the current master"));
        }
        finish(nullptr, failure::reply("Redis refused the script: " + text));
    }

    /// A cluster's ASK: this one call goes to `at`, after ASKING (with the script loaded there,
    /// in the same round trip, in case that node has not seen it).
    void send_asking(const redis_endpoint& at) {
        one_shot(ch_->inner_executor(), ctx_.route.node_settings(ctx_.tls), target_of(at),
                 {encode({"SCRIPT", "LOAD", script_source(id_)}), encode({"ASKING"}),
                  std::string(evalsha(ctx_.scripts.sha(id_)))},
                 [self = this->shared_from_this()](reply_ptr r, const failure& why) {
                     self->on_reply(std::move(r), why);
                 });
    }

    void finish(reply_ptr r, const failure& why) {
        auto done = std::move(done_);
        done(std::move(r), why);
    }

    script_context& ctx_;
    std::shared_ptr<channel> ch_;
    script_id id_;
    std::size_t argc_, item_argc_ = 0;
    std::string cmd_;                            // the whole command, encoded
    std::size_t head_at_ = 0, sha_at_ = 0, item_at_ = 0; // where EVALSHA, the SHA and this call's own arguments start
    std::pair<std::size_t, std::size_t> key_{};  // where the first of its own (the call id) is, and its size
    int hop_ = 0;
    bool reloaded_ = false;
    Done done_;
};

/// Starts a script call on `ch`; `done(reply_ptr, const failure&)` runs exactly once, on the
/// channel's strand (or the strand of a one-off connection the call used).
template <class Done>
void start_script_call(script_context& ctx, std::shared_ptr<channel> ch, script_id id,
                       std::span<const std::string_view> keys, std::span<const std::string_view> args, Done done) {
    std::make_shared<script_call<Done>>(ctx, std::move(ch), id, keys, args, std::move(done))->start();
}

} // namespace callguard::detail
