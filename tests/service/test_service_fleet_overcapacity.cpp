// Over capacity across two service instances sharing one real redis-server: the fair waiting
// queue (Twilio's waitUrl and action followed as Twilio does, each request to either instance),
// and WhatsApp's one message per call and per number across the fleet.

#include "../support/redis_server.hpp"
#include "signed_requests.hpp"
#include "sqlite_rows.hpp"
#include "twilio_standin.hpp"
#include "twiml_follow.hpp"

#include <callguard/twilio/twiml.hpp>

#include <algorithm>
#include <future>
#include <random>

using namespace std::chrono_literals;
using svc::service;

namespace {

bool admitted(const svc::response& r) { return r.status == 200 && r.body.find("<Connect><Stream") != std::string::npos; }
bool leaves(const svc::response& r) { return r.status == 200 && r.body.find("<Leave/>") != std::string::npos; }
long announced_position(const svc::response& r) {
    const std::string before = "אתם במקום ";
    const auto at = r.body.find(before);
    return at == std::string::npos ? 0 : std::stol(r.body.substr(at + before.size()));
}

/// A caller in Twilio's queue: the URLs its `<Enqueue>` named.
struct waiter {
    std::string sid, wait_url, action_url;
    bool out = false; ///< admitted or gone
};

svc::response wait_poll(const service& s, const waiter& w, int queue_time = 0) {
    return s.post(svc::target_of(w.wait_url),
                  "CallSid=" + w.sid + "&QueuePosition=1&QueueTime=" + std::to_string(queue_time) + "&QueueSid=QU1");
}
svc::response queue_result(const service& s, const waiter& w, const std::string& result) {
    return s.post(svc::target_of(w.action_url), "CallSid=" + w.sid + "&QueueResult=" + result + "&QueueTime=2");
}

} // namespace

TEST_CASE("fleet queue: two instances on one Redis let waiters in strictly in arrival order, whoever serves the poll") {
    test::redis_server redis;
    std::map<std::string, std::string> env{{"REDIS_URL", redis.url()},
                                           {"CALLS_REDIS_KEY_PREFIX", "fleetq"},
                                           {"MAX_ACTIVE_CALLS", "2"},
                                           {"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"},
                                           {"CALLS_QUEUE_MAX_WAIT_SECONDS", "120"},
                                           {"CALLS_CAPACITY_LOG_LEVEL", "INFO"}};
    service a(env), b(env);
    const std::array<const service*, 2> instances{&a, &b};
    std::mt19937 rng(20240515);
    auto any = [&]() -> const service& { return *instances[rng() % 2]; };

    REQUIRE(admitted(a.incoming_call("CA-h1")));
    REQUIRE(admitted(b.incoming_call("CA-h2")));
    // Six more arrive, alternating instances: each is queued, in order.
    std::vector<waiter> line;
    for (int i = 1; i <= 6; ++i) {
        const service& s = *instances[static_cast<std::size_t>(i % 2)];
        const auto sid = "CA-q" + std::to_string(i);
        auto r = s.incoming_call(sid);
        REQUIRE_MESSAGE(r.body.find("<Enqueue ") != std::string::npos, r.body);
        line.push_back({sid, svc::twiml_attribute(r.body, "Enqueue", "waitUrl"),
                        svc::twiml_attribute(r.body, "Enqueue", "action")});
        CHECK(s.log().find("[CAPACITY] QUEUED call_id=" + sid + " position=" + std::to_string(i) + " waiting=" +
                           std::to_string(i)) != std::string::npos);
    }
    CHECK(a.metric("waiting_calls") == 6);
    CHECK(b.metric("waiting_calls") == 6);

    // Polls in random order, to either instance: each hears its own place.
    auto poll_all = [&](std::vector<std::string>& let_out) {
        std::vector<std::size_t> order;
        for (std::size_t i = 0; i < line.size(); ++i)
            if (!line[i].out) order.push_back(i);
        std::shuffle(order.begin(), order.end(), rng);
        std::map<std::string, long> heard;
        for (auto i : order) {
            auto r = wait_poll(any(), line[i]);
            if (leaves(r)) {
                let_out.push_back(line[i].sid);
                auto in = queue_result(any(), line[i], "leave"); // Twilio follows the action
                CHECK_MESSAGE(admitted(in), in.body);
                line[i].out = true;
            } else {
                heard[line[i].sid] = announced_position(r);
            }
        }
        return heard;
    };
    std::vector<std::string> admitted_order;
    auto heard = poll_all(admitted_order);
    CHECK(admitted_order.empty()); // no slot free yet
    for (int i = 1; i <= 6; ++i) CHECK(heard["CA-q" + std::to_string(i)] == i);

    // A slot frees; a new caller arrives meanwhile at the other instance: it queues behind them.
    REQUIRE(a.call_status("CA-h1", "completed").status == 204);
    auto newcomer = b.incoming_call("CA-new");
    REQUIRE_MESSAGE(newcomer.body.find("<Enqueue ") != std::string::npos, newcomer.body);
    line.push_back({"CA-new", svc::twiml_attribute(newcomer.body, "Enqueue", "waitUrl"),
                    svc::twiml_attribute(newcomer.body, "Enqueue", "action")});
    CHECK(b.log().find("[CAPACITY] QUEUED call_id=CA-new position=7 waiting=7") != std::string::npos);
    for (int round = 0; round < 3 && admitted_order.empty(); ++round) poll_all(admitted_order);
    CHECK(admitted_order == std::vector<std::string>{"CA-q1"});

    // A waiter hangs up: it leaves the line, and everyone behind it moves up.
    auto gone = queue_result(any(), line[2], "hangup");
    CHECK(gone.body == callguard::twilio::empty_twiml());
    line[2].out = true;
    heard = poll_all(admitted_order);
    CHECK(heard == std::map<std::string, long>{{"CA-q2", 1}, {"CA-q4", 2}, {"CA-q5", 3}, {"CA-q6", 4}, {"CA-new", 5}});

    // Each freed slot goes to the earliest waiter, whichever instance frees it or serves the poll.
    std::vector<std::string> freeing{"CA-h2", "CA-q1", "CA-q2", "CA-q4", "CA-q5"};
    for (const auto& holder : freeing) {
        const auto before = admitted_order.size();
        REQUIRE(any().call_status(holder, "completed").status == 204);
        for (int round = 0; round < 3 && admitted_order.size() == before; ++round) poll_all(admitted_order);
        CHECK(admitted_order.size() == before + 1);
    }
    CHECK(admitted_order == std::vector<std::string>{"CA-q1", "CA-q2", "CA-q4", "CA-q5", "CA-q6", "CA-new"});
    CHECK(a.metric("waiting_calls") == 0);
    CHECK(a.active() == 2);
    CHECK(redis.integer({"ZCARD", "{fleetq}:active"}) == 2);
    // Each instance counted the dequeues it served; together, all six.
    CHECK(a.metric("dequeued_total") + b.metric("dequeued_total") == 6);
    const auto hist = a.get("/metrics").body + b.get("/metrics").body;
    CHECK(hist.find("callguard_queue_wait_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
}

TEST_CASE("fleet queue: past the longest wait the caller gets the fallback, beyond the longest line at once") {
    test::redis_server redis;
    std::map<std::string, std::string> env{{"REDIS_URL", redis.url()},
                                           {"CALLS_REDIS_KEY_PREFIX", "fleetw"},
                                           {"MAX_ACTIVE_CALLS", "1"},
                                           {"CALLS_OVER_CAPACITY_BEHAVIOR", "queue"},
                                           {"CALLS_QUEUE_MAX_WAIT_SECONDS", "1"},
                                           {"CALLS_QUEUE_MAX_LENGTH", "1"},
                                           {"CALLS_QUEUE_FALLBACK", "voicemail"}};
    service a(env), b(env);
    REQUIRE(admitted(a.incoming_call("CA-held")));
    auto r = b.incoming_call("CA-t");
    waiter w{"CA-t", svc::twiml_attribute(r.body, "Enqueue", "waitUrl"), svc::twiml_attribute(r.body, "Enqueue", "action")};
    REQUIRE(!w.wait_url.empty());
    CHECK(announced_position(wait_poll(a, w)) == 1);
    // The line holds one: the next caller gets the fallback at once, on either instance.
    auto full = a.incoming_call("CA-full");
    CHECK(full.body.find("<Record ") != std::string::npos);
    CHECK(a.log().find("[CAPACITY] QUEUE_FULL call_id=CA-full waiting=1 max_length=1") != std::string::npos);
    std::this_thread::sleep_for(1100ms);
    auto out = wait_poll(a, w, 1);
    CHECK(leaves(out));
    CHECK(a.log().find("[CAPACITY] QUEUE_TIMEOUT call_id=CA-t position=1 waited_ms=") != std::string::npos);
    auto fallback = queue_result(b, w, "leave");
    CHECK(fallback.body.find("<Record ") != std::string::npos);
    CHECK(svc::twiml_attribute(fallback.body, "Record", "action") ==
          "http://127.0.0.1:" + std::to_string(b.port()) + "/webhook/voicemail");
    CHECK(b.metric("waiting_calls") == 0);
    CHECK(a.active() == 1);
}

TEST_CASE("fleet whatsapp: one message per call with the webhook retried on both instances, one per number per cooldown") {
    const std::string account = "AC0123456789abcdef0123456789abcdef", token = "fleet-token-0123";
    test::redis_server redis;
    svc::twilio_standin api(account, token);
    std::map<std::string, std::string> env{{"REDIS_URL", redis.url()},
                                           {"CALLS_REDIS_KEY_PREFIX", "fleetwa"},
                                           {"MAX_ACTIVE_CALLS", "1"},
                                           {"CALLS_OVER_CAPACITY_BEHAVIOR", "whatsapp"},
                                           {"TWILIO_ACCOUNT_SID", account},
                                           {"TWILIO_AUTH_TOKEN", token},
                                           {"CALLS_WHATSAPP_FROM", "+14155238886"},
                                           {"CALLS_WHATSAPP_CONTENT_SID", "HX0123456789abcdef0123456789abcdef"},
                                           {"TWILIO_API_BASE_URL", api.base_url()},
                                           {"CALLS_WHATSAPP_RETRY_BASE_MS", "100"}};
    service a(env), b(env); // each with its own SQLite call log: only Redis can tell them apart
    auto call = [&](const service& s, const std::string& sid, const std::string& from) {
        return svc::post_signed(s, "/webhook/incoming_call", {{"CallSid", sid}, {"From", from}, {"To", "+97231234567"}},
                                token);
    };
    REQUIRE(admitted(call(a, "CA-held", "+972500000001")));
    // The same call's webhook, three times on each instance, all at once.
    std::vector<std::future<svc::response>> tries;
    for (int i = 0; i < 6; ++i)
        tries.push_back(std::async(std::launch::async, [&, i] { return call(i % 2 ? a : b, "CA-dup", "+972500000071"); }));
    for (auto& t : tries) {
        auto r = t.get();
        CHECK(r.status == 200);
        CHECK(r.body.find(std::string(callguard::twilio::default_whatsapp_message)) != std::string::npos);
    }
    CHECK(test::eventually([&] { return api.accepted_to("+972500000071") == 1; }, 10s));
    CHECK(test::holds_for([&] { return api.requests_to("+972500000071").size() == 1; }, 1s));
    auto rows = svc::sqlite_rows(a.dir() + "/calls.db", "SELECT status FROM whatsapp_outbox");
    auto more = svc::sqlite_rows(b.dir() + "/calls.db", "SELECT status FROM whatsapp_outbox");
    rows.insert(rows.end(), more.begin(), more.end());
    CHECK(rows == std::vector<std::string>{"sent"}); // one row in the fleet
    const auto skipped = [&](const char* reason) {
        long n = 0;
        for (const service* s : {&a, &b}) {
            const auto body = s->get("/metrics").body;
            const auto key = std::string("callguard_whatsapp_skipped_total{reason=\"") + reason + "\"} ";
            const auto at = body.find(key);
            if (at != std::string::npos) n += std::stol(body.substr(at + key.size()));
        }
        return n;
    };
    CHECK(skipped("duplicate") == 5);
    // The same caller turned away again and again, on either instance: still one invitation.
    for (int i = 0; i < 5; ++i) {
        auto r = call(i % 2 ? a : b, "CA-again-" + std::to_string(i), "+972500000071");
        CHECK(r.body.find(std::string(callguard::twilio::default_reject_message)) != std::string::npos);
    }
    CHECK(skipped("cooldown") == 5);
    CHECK(call(b, "CA-fresh", "+972500000072").body.find(std::string(callguard::twilio::default_whatsapp_message)) !=
          std::string::npos);
    CHECK(test::eventually([&] { return api.accepted_to("+972500000072") == 1; }, 10s));
    CHECK(test::holds_for([&] { return api.requests().size() == 2; }, 500ms));
    CHECK(redis.integer({"EXISTS", "{fleetwa}:claim:whatsapp:to:+972500000071"}) == 1);
    CHECK(redis.integer({"PTTL", "{fleetwa}:claim:whatsapp:to:+972500000071"}) > 86'000'000);
}
