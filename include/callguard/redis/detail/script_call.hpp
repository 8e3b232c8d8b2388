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

    script_call(script_context& ctx, std::shared_ptr<channel> ch, script_id id,
                std::span<const std::string_view> keys, std::span<const std::string_view> args, Done done)
        : ctx_(ctx), ch_(std::move(ch)), id_(id), argc_(3 + keys.size() + args.size()), done_(std::move(done)) {
        const auto shared = shared_args(id);
        const auto head_args = shared != 0 && shared < args.size() ? shared : args.size();
        append_bulk(tail_, std::to_string(keys.size()));
        for (auto k : keys) append_bulk(tail_, k);
        for (std::size_t i = 0; i < args.size(); ++i) append_bulk(i < head_args ? tail_ : item_, args[i]);
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
    static void append_bulk(std::string& out, std::string_view s) {
        out += '$';
        out += std::to_string(s.size());
        out += "\r\n";
        out += s;
        out += "\r\n";
    }

    /// EVALSHA with the SHA, the keys and the arguments shared with other calls, encoded.
    std::string head(std::string_view sha) const {
        std::string out = "$7\r\nEVALSHA\r\n";
        append_bulk(out, sha);
        out += tail_;
        return out;
    }

    std::string evalsha(std::string_view sha) const { return evalsha_of(head(sha)); }
    std::string evalsha_of(const std::string& head) const {
        return "*" + std::to_string(argc_) + "\r\n" + head + item_;
    }

    void send() {
        const auto sha = ctx_.scripts.sha(id_);
        if (sha.empty()) return load_then_send();
        auto h = head(sha);
        auto req = make_request(evalsha_of(h), [self = this->shared_from_this()](reply_ptr r, const failure& why) {
            self->on_reply(std::move(r), why);
        });
        if (item_argc_ > 0) { // may travel with other calls of this script on these keys
            req->batch_head = std::move(h);
            req->batch_head_argc = argc_ - item_argc_;
            req->batch_item = item_;
            req->batch_item_argc = item_argc_;
        }
        ch_->exec(std::move(req));
    }

    void load_then_send() {
        ch_->exec(make_request(encode({"SCRIPT", "LOAD", script_source(id_)}),
                               [self = this->shared_from_this()](reply_ptr r, const failure& why) {
                                   if (why) return self->finish(nullptr, why);
                                   if (reply_is_error(r.get()) || r->type != REDIS_REPLY_STRING)
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
                  evalsha(ctx_.scripts.sha(id_))},
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
    std::string tail_; // numkeys, keys and the arguments shared with other calls, encoded
    std::string item_; // this call's own arguments (see `shared_args`), encoded
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
