// The Media Streams WebSocket: the slot taken by the webhook is released however the socket ends.

#include "service_harness.hpp"

using svc::media_client;
using svc::service;

TEST_CASE("media: stop releases the slot the webhook took") {
    service s({{"MAX_ACTIVE_CALLS", "1"}});
    REQUIRE(s.incoming_call("CA-stop").body.find("<Connect>") != std::string::npos);
    media_client m(s);
    m.connected();
    m.start("CA-stop");
    for (int i = 1; i <= 20; ++i) m.media(i);
    REQUIRE(s.wait_adopted(1)); // the service has taken the start (a look before proves nothing)
    CHECK(s.active() == 1);     // adopted, not taken twice
    m.stop("CA-stop");
    CHECK(s.wait_active(0));
    auto reason = m.wait_close();
    CHECK(reason.code == svc::websocket::close_code::normal);
    // The status callback after the stream is a no-op.
    CHECK(s.call_status("CA-stop", "completed").status == 204);
    CHECK(s.active() == 0);
}

TEST_CASE("media: a close without stop releases") {
    service s;
    s.incoming_call("CA-close");
    media_client m(s);
    m.start("CA-close");
    m.media(1);
    m.close();
    CHECK(s.wait_active(0));
}

TEST_CASE("media: an abrupt TCP drop releases") {
    service s;
    s.incoming_call("CA-drop");
    media_client m(s);
    m.start("CA-drop");
    m.media(1);
    REQUIRE(s.active() == 1);
    m.drop();
    CHECK(s.wait_active(0));
}

TEST_CASE("media: bad frames close the socket with a reason, release, and never crash") {
    service s({{"MAX_ACTIVE_CALLS", "3"}});
    struct bad {
        const char* name;
        std::string frame;
        const char* reason;
    };
    for (const auto& [name, frame, reason] : {
             bad{"not JSON", "hello", "invalid JSON"},
             bad{"JSON but not an object", "[1,2,3]", "message is not a JSON object"},
             bad{"no event", R"({"start":{}})", "message has no event"},
             bad{"a second start", R"({"event":"start","start":{"callSid":"CA-x"}})", "duplicate start"},
         }) {
        CAPTURE(name);
        s.incoming_call("CA-bad");
        media_client m(s);
        m.start("CA-bad");
        m.media(1);
        REQUIRE(s.active() == 1);
        m.send(frame);
        auto r = m.wait_close();
        CHECK(r.reason == reason);
        CHECK(r.code == svc::websocket::close_code::policy_error);
        CHECK(s.wait_active(0)); // the adopted slot went back with the socket
    }
    // The same frames as the first message, on fresh sockets.
    for (const auto& [frame, reason] : {std::pair{std::string(R"({"event":"media","media":{}})"), "media before start"},
                                        std::pair{std::string(R"({"event":"start","start":{}})"), "call_id is empty"},
                                        std::pair{std::string(R"({"event":"start","start":{"callSid":"CA\n1"}})"),
                                                  "call_id contains a control character"}}) {
        media_client m(s);
        m.send(frame);
        CHECK(m.wait_close().reason == reason);
    }
    {
        media_client m(s);
        m.send_binary(std::string("\x00\x01\x02", 3));
        CHECK(m.wait_close().reason == "binary frames are not supported");
    }
    {
        media_client m(s);
        try {
            m.send(std::string(100 * 1024, 'x')); // over the 64 KiB message limit
        } catch (const boost::system::system_error&) {
            // The server may refuse (close, reset) before the whole message is written.
        }
        m.wait_close();
    }
    CHECK(s.active() == 0);
    CHECK(s.running());
}

TEST_CASE("media: a stream for a call over capacity is closed") {
    service s({{"MAX_ACTIVE_CALLS", "1"}});
    s.incoming_call("CA-in");
    media_client m(s);
    m.start("CA-never-admitted");
    CHECK(m.wait_close().reason == "over capacity");
    CHECK(s.active() == 1);
}

TEST_CASE("media: SIGTERM closes media sockets and releases their slots") {
    svc::service s({{"MAX_ACTIVE_CALLS", "5"}, {"CALLS_CAPACITY_LOG_LEVEL", "INFO"}});
    s.incoming_call("CA-term");
    media_client m(s);
    m.start("CA-term");
    m.media(1);
    REQUIRE(s.wait_adopted(1)); // the stream's guard holds the slot before the signal
    REQUIRE(s.active() == 1);
    CHECK(s.terminate() == 0);
    CHECK(s.log().find("[CAPACITY] RELEASED call_id=CA-term") != std::string::npos);
    CHECK(s.log().find("[SERVICE] stopped; active_calls=0") != std::string::npos);
}

TEST_CASE("media: the handshake is signed when a token is set") {
    const std::string token = "tok";
    service s({{"TWILIO_AUTH_TOKEN", token}});
    CHECK_THROWS(media_client(s)); // unsigned: 403
    auto url = "ws://127.0.0.1:" + std::to_string(s.port()) + "/ws/media";
    media_client ok(s, {{"X-Twilio-Signature", svc::twilio_sign(token, url, {})}});
    ok.connected();
    ok.close();
}

TEST_CASE("media: ended sockets give their connection back (many sessions under a small connection cap)") {
    // With CALLS_MAX_CONNECTIONS=8, a connection count that missed a decrement would refuse
    // every request after a few sessions.
    service s({{"CALLS_MAX_CONNECTIONS", "8"}, {"MAX_ACTIVE_CALLS", "4"}});
    for (int i = 0; i < 40; ++i) {
        const auto sid = "CA-conn-" + std::to_string(i);
        REQUIRE(s.incoming_call(sid).body.find("<Connect>") != std::string::npos);
        {
            media_client m(s);
            m.start(sid);
            m.media(1);
            switch (i % 3) {
            case 0: m.stop(sid); m.close(); break;
            case 1: m.close(); break;
            default: m.drop(); break;
            }
        }
        REQUIRE(s.wait_active(0));
        CHECK(s.call_status(sid, "completed").status == 204);
    }
}
