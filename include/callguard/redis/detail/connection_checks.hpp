#pragma once

// What every new data connection checks in its first round trip (pipelined with AUTH/SELECT):
// with Sentinel, that the server is really a master (during a failover a sentinel may still
// name the old master, back as a replica); the dataset marker; the eviction advice (once).

#include "../errors.hpp"
#include "../options.hpp"
#include "channel.hpp"
#include "dataset_marker.hpp"
#include "eviction_check.hpp"

#include <span>
#include <string>

namespace callguard::detail {

class data_connection_check final : public connection_check {
public:
    /// Every argument must outlive the check.
    data_connection_check(const redis_options& o, dataset_marker& marker, eviction_check& eviction)
        : o_(o), marker_(marker), eviction_(eviction) {}

    std::size_t append_commands(std::string& resp, const redis_target&) override {
        std::size_t n = 0;
        if (o_.topology == redis_topology::sentinel) {
            append_resp(resp, {"ROLE"});
            ++n;
        }
        marker_.append_commands(resp);
        n += dataset_marker::command_count;
        if (eviction_.claim()) {
            eviction_check::append_commands(resp);
            n += eviction_check::command_count;
        }
        return n;
    }

    void check(std::span<reply_ptr> replies, const redis_target& where) override {
        std::size_t i = 0;
        if (o_.topology == redis_topology::sentinel) {
            const auto* role = replies[i++].get();
            const auto what = role && role->type == REDIS_REPLY_ARRAY && role->elements > 0 ? reply_text(role->element[0])
                                                                                           : reply_text(role);
            if (what != "master")
                throw redis_io_error("the sentinels name " + where.name() + " as master '" + o_.sentinel_master +
                                     "', but its ROLE is '" + what + "' (a failover is under way)");
        }
        marker_.check(replies[i + 1].get());
        i += dataset_marker::command_count;
        if (replies.size() >= i + eviction_check::command_count)
            eviction_check::check(replies[i].get(), replies[i + 1].get(), o_.on_warning);
    }

private:
    const redis_options& o_;
    dataset_marker& marker_;
    eviction_check& eviction_;
};

} // namespace callguard::detail
