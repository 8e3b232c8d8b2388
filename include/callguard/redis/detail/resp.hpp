#pragma once

// The Redis protocol (RESP2): commands encoded as arrays of bulk strings, replies decoded by
// hiredis's reader (the same in hiredis 0.14 and 1.x). No I/O here.

#include "../errors.hpp"

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace callguard::detail {

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

inline std::string reply_text(const redisReply* r) {
    return r && r->str ? std::string(r->str, r->len) : std::string();
}

inline bool reply_is_error(const redisReply* r) noexcept { return r && r->type == REDIS_REPLY_ERROR; }

/// True for the error prefix `code` ("NOSCRIPT", "WRONGPASS", ...).
inline bool reply_error_is(const redisReply* r, std::string_view code) noexcept {
    if (!reply_is_error(r) || r->len < code.size()) return false;
    return std::string_view(r->str, code.size()) == code;
}

/// Appends `*n\r\n` (an array's header) or `$n\r\n` (a bulk string's) to `out`.
inline void append_header(std::string& out, char kind, std::size_t n) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
    out += kind;
    out.append(digits, end);
    out.append("\r\n", 2);
}

/// Appends one bulk string to `out`.
inline void append_bulk(std::string& out, std::string_view s) {
    append_header(out, '$', s.size());
    out += s;
    out.append("\r\n", 2);
}

/// The bytes `append_bulk` appends for `s`, or more: for reserving a command's size up front.
constexpr std::size_t bulk_size_bound(std::string_view s) noexcept { return s.size() + 25; }

/// Appends one command (an array of bulk strings) to `out`.
inline void append_resp(std::string& out, std::span<const std::string_view> args) {
    append_header(out, '*', args.size());
    for (auto a : args) append_bulk(out, a);
}

inline void append_resp(std::string& out, std::initializer_list<std::string_view> args) {
    append_resp(out, std::span<const std::string_view>(args.begin(), args.size()));
}

inline std::string encode(std::initializer_list<std::string_view> args) {
    std::string out;
    append_resp(out, args);
    return out;
}

/// Replies out of a byte stream, in order.
class resp_reader {
public:
    resp_reader() : r_(redisReaderCreate()) {
        if (!r_) throw redis_io_error("out of memory creating a reply reader");
    }
    resp_reader(const resp_reader&) = delete;
    resp_reader& operator=(const resp_reader&) = delete;
    ~resp_reader() { redisReaderFree(r_); }

    void feed(const char* data, std::size_t n) {
        if (redisReaderFeed(r_, data, n) != REDIS_OK) throw redis_io_error("cannot buffer a reply");
    }

    /// The next complete reply, or nothing until more bytes arrive. Throws `redis_io_error` on
    /// bytes that are not the Redis protocol (the connection cannot be trusted after that).
    std::optional<reply_ptr> next() {
        void* reply = nullptr;
        if (redisReaderGetReply(r_, &reply) != REDIS_OK)
            throw redis_io_error(std::string("protocol error from Redis: ") + r_->errstr);
        if (!reply) return std::nullopt;
        return reply_ptr(static_cast<redisReply*>(reply));
    }

private:
    redisReader* r_;
};

/// An error reply of its own carrying `text` (one line): for handing one answer to each of
/// several requests.
inline reply_ptr error_reply(std::string_view text) {
    std::string line = "-";
    for (char c : text) line += c == '\r' || c == '\n' ? ' ' : c;
    line += "\r\n";
    resp_reader reader;
    reader.feed(line.data(), line.size());
    auto r = reader.next();
    if (!r) throw redis_io_error("cannot copy an error reply");
    return std::move(*r);
}

} // namespace callguard::detail
