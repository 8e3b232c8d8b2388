// The over-capacity behaviours on one instance (any backend the binary was built with, memory
// here), driven as Twilio drives them: following the URLs of the TwiML answered. Voicemail keeps
// the recording; the queue lets callers in as slots free, in order, and gives the fallback after
// the longest wait or beyond the longest line. (Two instances on one Redis:
// test_service_fleet_overcapacity.cpp.)

#include "service_harness.hpp"
#include "sqlite_rows.hpp"
#include "twiml_follow.hpp"

#include <callguard/twilio/twiml.hpp>

using namespace std::chrono_literals;
using svc::service;

namespace {

bool admitted(const svc::response& r) { return r.status == 200 && r.body.find("<Connect><Stream") != std::string::npos; }
bool leaves(const svc::response& r) { return r.status == 200 && r.body.find("<Leave/>") != std::string::npos; }
bool records(const svc::response& r) { return r.status == 200 && r.body.find("<Record ") != std::string::npos; }
/// The position a waitUrl answer announces (0 when it announces none).
long announced_position(const svc::response& r) {
    const std::string before = "אתם במקום ";
    const auto at = r.body.find(before);
    if (at == std::string::npos) return 0;
    return std::stol(r.body.substr(at + before.size()));
}

/// One waitUrl request of Twilio's, for a caller `queue_time` seconds in its queue.
svc::response wait_poll(const service& s, const std::string& wait_url, const std::string& sid, int queue_time = 0) {
    return s.post(svc::target_of(wait_url), "CallSid=" + sid + "&QueuePosition=1&QueueSid=QU1&QueueTime=" +
                                                std::to_string(queue_time) +
                                                "&AvgQueueTime=0&CurrentQueueSize=1&MaxQueueSize=1000");
}

/// The Enqueue action, with the queue's result.
svc::response queue_result(const service& s, const std::string& action_url, const std::string& sid,
                           const std::string& result) {
    return s.post(svc::target_of(action_url),
                  "CallSid=" + sid + "&QueueResult=" + result + "&QueueSid=QU1&QueueTime=3&From=%2B972500000009");
}

} // namespace

TEST_CASE("voicemail: the recording's URL, length, SID and status are kept in the call log") {
    service s({{"MAX_ACTIVE_CALLS", "1"}, {"CALLS_OVER_CAPACITY_BEHAVIOR", "voicemail"}});
    REQUIRE(admitted(s.incoming_call("CA-held")));
    auto r = s.incoming_call("CA-vm");
    REQUIRE(records(r));
    const auto base = "http://127.0.0.1:" + std::to_string(s.port());
    const auto action = svc::twiml_attribute(r.body, "Record", "action");
    const auto status_cb = svc::twiml_attribute(r.body, "Record", "recordingStatusCallback");
    CHECK(action == base + "/webhook/voicemail");
    CHECK(status_cb == base + "/webhook/recording_status");
    CHECK(svc::twiml_attribute(r.body, "Record", "maxLength") == "120");
    const std::string url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0123";
    // The recording's action (the caller hung up after speaking), then its status callback.
    auto done = s.post(svc::own_target(s, action), "CallSid=CA-vm&RecordingUrl=" + url + "&RecordingDuration=14&Digits=hangup");
    CHECK(done.status == 200);
    CHECK(done.body == callguard::twilio::hangup_twiml());
    CHECK(s.post(svc::own_target(s, status_cb), "CallSid=CA-vm&RecordingSid=RE0123&RecordingStatus=completed&"
                                                "RecordingDuration=14&RecordingUrl=" + url + "&RecordingChannels=1")
              .status == 204);
    CHECK(s.call_status("CA-vm", "completed").status == 204);
    const auto db = s.dir() + "/calls.db";
    CHECK(test::eventually(
        [&] {
            return svc::sqlite_rows(db, "SELECT status, recording_url, recording_duration, recording_sid, recording_status "
                                        "FROM calls WHERE call_sid = 'CA-vm'") ==
                   std::vector<std::string>{"voicemail|" + url + "|14|RE0123|completed"};
        },
        5s));
    // Malformed recording fields: a precise 400, nothing written.
    CHECK(s.post("/webhook/voicemail", "CallSid=CA-vm2&RecordingUrl=x&RecordingDuration=soon").status == 400);
    CHECK(s.post("/webhook/recording_status", "RecordingSid=RE1").status == 400);
    CHECK(s.post("/webhook/recording_status", "CallSid=CA-vm3&RecordingSid=RE%0A1").status == 400);
    // No recording (the caller hung up at the prompt): hang up, keep nothing.
    CHECK(s.post("/webhook/voicemail", "CallSid=CA-silent").body == callguard::twilio::hangup_twiml());
    CHECK(test::holds_for([&] { return svc::sqlite_rows(db, "SELECT count(*) FROM calls WHERE call_sid IN ('CA-vm2', "
                                                           "'CA-vm3', 'CA-silent')") == std::vector<std::string>{"0"}; },
                          300ms));
}

TEST_CASE("queue on one instance: waiters let in as slots free, in order, and the longest line gives the fallback") {
    service s({{"MAX_ACTIVE_CALLS", "1"},
               {"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"},
               {"CALLS_QUEUE_MAX_LENGTH", "2"},
               {"CALLS_QUEUE_MAX_WAIT_SECONDS", "30"},
               {"CALLS_QUEUE_FALLBACK", "voicemail"},
               {"CALLS_TENANT_LIMITS", "biz1=5"},
               {"CALLS_CAPACITY_LOG_LEVEL", "INFO"}});
    REQUIRE(admitted(s.incoming_call("CA-held")));
    auto q1 = s.incoming_call("CA-q1", "&Tenant=biz1");
    auto q2 = s.incoming_call("CA-q2");
    REQUIRE(q1.body.find("<Enqueue ") != std::string::npos);
    REQUIRE(q2.body.find("<Enqueue ") != std::string::npos);
    CHECK(q1.body.find(std::string(callguard::twilio::default_queue_message)) != std::string::npos);
    const auto wait1 = svc::twiml_attribute(q1.body, "Enqueue", "waitUrl");
    const auto action1 = svc::twiml_attribute(q1.body, "Enqueue", "action");
    const auto wait2 = svc::twiml_attribute(q2.body, "Enqueue", "waitUrl");
    const auto action2 = svc::twiml_attribute(q2.body, "Enqueue", "action");
    const auto base = "http://127.0.0.1:" + std::to_string(s.port());
    CHECK(wait1 == base + "/webhook/queue_wait?tenant=biz1"); // the tenant rides along (Twilio does not send ours)
    CHECK(action1 == base + "/webhook/queue_result?tenant=biz1");
    CHECK(wait2 == base + "/webhook/queue_wait");
    CHECK(svc::twiml_attribute(q1.body, "Enqueue", "waitUrlMethod") == "POST");
    // Beyond CALLS_QUEUE_MAX_LENGTH: the fallback at once.
    CHECK(records(s.incoming_call("CA-q3")));
    CHECK(s.log().find("[CAPACITY] QUEUE_FULL call_id=CA-q3 waiting=2 max_length=2") != std::string::npos);

    auto p1 = wait_poll(s, wait1, "CA-q1");
    CHECK(p1.body.find(R"(<Say language="he-IL" voice="Google.he-IL-Wavenet-A">אתם במקום 1 בתור.)") != std::string::npos);
    CHECK(p1.body.find(R"(<Pause length="5"/>)") != std::string::npos);
    CHECK(announced_position(wait_poll(s, wait2, "CA-q2")) == 2);
    CHECK(s.metric("waiting_calls") == 2);

    // A slot frees: the first in line gets it, whoever asks first; a retried poll is still let out.
    REQUIRE(s.call_status("CA-held", "completed").status == 204);
    CHECK(announced_position(wait_poll(s, wait2, "CA-q2")) == 2);
    CHECK(leaves(wait_poll(s, wait1, "CA-q1")));
    CHECK(leaves(wait_poll(s, wait1, "CA-q1")));
    auto in = queue_result(s, action1, "CA-q1", "leave");
    CHECK(admitted(in));
    CHECK(in.body.find(R"(<Parameter name="tenant" value="biz1"/>)") != std::string::npos);
    CHECK(s.active() == 1);
    CHECK(announced_position(wait_poll(s, wait2, "CA-q2")) == 1);
    CHECK(s.log().find("[CAPACITY] DEQUEUED call_id=CA-q1") != std::string::npos);
    const auto metrics = s.get("/metrics").body;
    CHECK(metrics.find("callguard_queue_wait_seconds_count 1") != std::string::npos);
    CHECK(metrics.find("callguard_dequeued_total 1") != std::string::npos);

    // The caller hangs up while waiting: out of the line, an empty answer.
    auto gone = queue_result(s, action2, "CA-q2", "hangup");
    CHECK(gone.status == 200);
    CHECK(gone.body == callguard::twilio::empty_twiml());
    CHECK(s.metric("waiting_calls") == 0);
    CHECK(s.log().find("[CAPACITY] QUEUE_LEFT call_id=CA-q2 position=1") != std::string::npos);
    // Twilio's own queue full (or an error) while the caller is still on the line: the fallback.
    CHECK(records(queue_result(s, action2, "CA-q2", "queue-full")));
    CHECK(queue_result(s, action2, "CA-q2", "").status == 200); // unknown result: treated as an error
    CHECK(s.post("/webhook/queue_result", "CallSid=CA-q2").status == 400);
    CHECK(s.post("/webhook/queue_wait", "QueueTime=3").status == 400);
    CHECK(s.post("/webhook/queue_wait?tenant=bad%20tenant", "CallSid=CA-q9").status == 400);

    const auto db = s.dir() + "/calls.db";
    CHECK(test::eventually(
        [&] {
            return svc::sqlite_rows(db, "SELECT call_sid, status FROM calls WHERE call_sid LIKE 'CA-q%' ORDER BY 1") ==
                   std::vector<std::string>{"CA-q1|admitted", "CA-q2|queued", "CA-q3|rejected_capacity"};
        },
        5s));
}

TEST_CASE("queue on one instance: the longest wait lets the caller go to the fallback") {
    service s({{"MAX_ACTIVE_CALLS", "1"},
               {"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"},
               {"CALLS_QUEUE_MAX_WAIT_SECONDS", "1"},
               {"CALLS_QUEUE_FALLBACK", "reject"}});
    REQUIRE(admitted(s.incoming_call("CA-held")));
    auto q = s.incoming_call("CA-wait");
    const auto wait = svc::twiml_attribute(q.body, "Enqueue", "waitUrl");
    const auto action = svc::twiml_attribute(q.body, "Enqueue", "action");
    CHECK(announced_position(wait_poll(s, wait, "CA-wait")) == 1);
    std::this_thread::sleep_for(1100ms);
    CHECK(leaves(wait_poll(s, wait, "CA-wait", 1)));
    CHECK(s.log().find("[CAPACITY] QUEUE_TIMEOUT call_id=CA-wait position=1") != std::string::npos);
    auto after = queue_result(s, action, "CA-wait", "leave");
    CHECK(after.body == callguard::twilio::reject_twiml());
    CHECK(s.metric("queue_timeouts_total") == 1);
    CHECK(s.metric("waiting_calls") == 0);
    // Twilio's QueueTime counts too (a caller who joined our line again keeps its whole wait).
    auto q2 = s.incoming_call("CA-long");
    CHECK(leaves(wait_poll(s, svc::twiml_attribute(q2.body, "Enqueue", "waitUrl"), "CA-long", 400)));
    CHECK(test::eventually(
        [&] {
            return svc::sqlite_rows(s.dir() + "/calls.db",
                                    "SELECT status FROM calls WHERE call_sid IN ('CA-wait', 'CA-long')") ==
                   std::vector<std::string>{"rejected_capacity", "rejected_capacity"};
        },
        5s));
}
