// The Media Streams handler: any sequence of frames (split on newlines) leaves the limiter
// consistent: at most one slot for the stream, none once the session ends, no exception escapes.
// The session's asynchronous answers run on an io_context driven here between frames.
#include "media_session.hpp"

#include <callguard/callguard.hpp>

#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using limiter_t = callguard::capacity_limiter<callguard::memory_backend>;
    callguard::limiter_config cfg;
    cfg.max_active_calls = 2;
    cfg.tenant_limits = {{"biz", 1}};
    limiter_t limiter({}, cfg, {callguard::null_sink(), {}});
    boost::asio::io_context ioc;
    {
        bool closed_later = false;
        calls::media_session<limiter_t> session(limiter, std::chrono::seconds(1), ioc.get_executor(),
                                                [&](calls::media_verdict v) {
                                                    if (!v.close || v.reason.size() > 123) std::abort();
                                                    closed_later = true;
                                                });
        std::string_view in(reinterpret_cast<const char*>(data), size);
        while (!in.empty() && !closed_later) {
            auto nl = in.find('\n');
            auto frame = in.substr(0, nl);
            in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
            auto v = frame == "BINARY" ? session.on_binary() : session.on_text(frame);
            ioc.restart();
            ioc.poll(); // the admission and refresh answers of this frame
            if (limiter.status().active_calls > 1) std::abort();
            if (v.close) {
                if (v.reason.size() > 123) std::abort(); // fits a WebSocket close frame
                break;
            }
        }
    }
    ioc.restart();
    ioc.poll(); // the guard's release, started by the session's end
    if (limiter.status().active_calls != 0) std::abort();
    return 0;
}
