// TwiML builders: the documents Twilio gets are well-formed and carry escaped values.

#include <callguard/twilio/twiml.hpp>
#include <doctest/doctest.h>

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <sstream>

namespace tw = callguard::twilio;
namespace pt = boost::property_tree;

namespace {

pt::ptree parse(const std::string& xml) {
    std::istringstream in(xml);
    pt::ptree tree;
    pt::read_xml(in, tree); // throws on anything not well-formed
    return tree;
}

constexpr std::string_view declaration = R"(<?xml version="1.0" encoding="UTF-8"?>)";

} // namespace

TEST_CASE("admit: Connect/Stream with the call SID as a Parameter") {
    auto xml = tw::admit_twiml("wss://calls.example.com/ws/media", {{"callSid", "CA123"}, {"tenant", "biz1"}});
    CHECK(xml.rfind(declaration, 0) == 0);
    CHECK(xml ==
          std::string(declaration) +
              R"(<Response><Connect><Stream url="wss://calls.example.com/ws/media">)"
              R"(<Parameter name="callSid" value="CA123"/><Parameter name="tenant" value="biz1"/>)"
              R"(</Stream></Connect></Response>)");
    auto t = parse(xml);
    CHECK(t.get<std::string>("Response.Connect.Stream.<xmlattr>.url") == "wss://calls.example.com/ws/media");
}

TEST_CASE("admit: refuses URLs Twilio cannot stream to") {
    CHECK_THROWS_AS(tw::admit_twiml("https://x/ws"), std::invalid_argument);
    CHECK_THROWS_AS(tw::admit_twiml("wss://x/ws?callSid=CA1"), std::invalid_argument);
    CHECK_THROWS_AS(tw::admit_twiml("wss://x/ws", {{"", "v"}}), std::invalid_argument);
    CHECK_NOTHROW(tw::admit_twiml("ws://127.0.0.1:5050/ws/media"));
}

TEST_CASE("reject: the seed's Hebrew message in he-IL with a Hebrew voice, then Hangup") {
    auto xml = tw::reject_twiml();
    CHECK(xml.find(R"(<Say language="he-IL" voice="Google.he-IL-Wavenet-A">)") != std::string::npos);
    CHECK(xml.find(std::string(tw::default_reject_message)) != std::string::npos);
    CHECK(xml.find("<Hangup/></Response>") != std::string::npos);
    CHECK(tw::default_reject_message ==
          "המערכת עמוסה כרגע. אנא נסו שוב בעוד מספר דקות או שלחו לנו הודעה בוואטסאפ.");
    parse(xml);
    tw::twiml_options busy;
    busy.reject_with_busy_signal = true;
    CHECK(tw::reject_twiml(busy) == std::string(declaration) + R"(<Response><Reject reason="busy"/></Response>)");
}

TEST_CASE("voicemail: Record with an absolute action and a maxLength") {
    auto xml = tw::voicemail_twiml("https://calls.example.com/webhook/voicemail?x=1&y=2");
    CHECK(xml.find(R"(<Record action="https://calls.example.com/webhook/voicemail?x=1&amp;y=2" method="POST" maxLength="120" playBeep="true"/>)") !=
          std::string::npos);
    parse(xml);
    CHECK_THROWS_AS(tw::voicemail_twiml("/webhook/voicemail"), std::invalid_argument);
    CHECK_THROWS_AS(tw::voicemail_twiml(""), std::invalid_argument);
}

TEST_CASE("whatsapp and queue answers") {
    auto wa = tw::whatsapp_twiml();
    CHECK(wa.find(std::string(tw::default_whatsapp_message)) != std::string::npos);
    CHECK(wa.find("<Hangup/>") != std::string::npos);
    parse(wa);
    tw::twiml_options o;
    o.queue_name = "support & sales";
    o.queue_wait_url = "https://x/wait";
    auto q = tw::queue_twiml(o);
    CHECK(q.find(R"(<Enqueue waitUrl="https://x/wait">support &amp; sales</Enqueue>)") != std::string::npos);
    parse(q);
}

TEST_CASE("voicemail: the recording status callback when given, absolute only") {
    auto xml = tw::voicemail_twiml("https://h/webhook/voicemail", {}, "https://h/webhook/recording_status?a=1&b=2");
    CHECK(xml.find(R"(<Record action="https://h/webhook/voicemail" method="POST" maxLength="120" playBeep="true" )"
                   R"(recordingStatusCallback="https://h/webhook/recording_status?a=1&amp;b=2" )"
                   R"(recordingStatusCallbackMethod="POST"/><Hangup/>)") != std::string::npos);
    auto t = parse(xml);
    CHECK(t.get<std::string>("Response.Record.<xmlattr>.recordingStatusCallback") ==
          "https://h/webhook/recording_status?a=1&b=2");
    CHECK_THROWS_AS(tw::voicemail_twiml("https://h/vm", {}, "/webhook/recording_status"), std::invalid_argument);
}

TEST_CASE("waiting room: Enqueue with the service's waitUrl and action, the position, Leave") {
    tw::twiml_options o;
    o.queue_name = "support & sales";
    auto q = tw::enqueue_twiml("https://h/webhook/queue_wait?tenant=biz1", "https://h/webhook/queue_result?tenant=biz1", o);
    CHECK(q == std::string(declaration) + R"(<Response><Say language="he-IL" voice="Google.he-IL-Wavenet-A">)" +
                   std::string(tw::default_queue_message) +
                   R"(</Say><Enqueue action="https://h/webhook/queue_result?tenant=biz1" method="POST" )"
                   R"(waitUrl="https://h/webhook/queue_wait?tenant=biz1" waitUrlMethod="POST">support &amp; sales</Enqueue></Response>)");
    auto t = parse(q);
    CHECK(t.get<std::string>("Response.Enqueue") == "support & sales");
    CHECK_THROWS_AS(tw::enqueue_twiml("/wait", "https://h/r"), std::invalid_argument);
    CHECK_THROWS_AS(tw::enqueue_twiml("https://h/w", "ftp://h/r"), std::invalid_argument);

    auto wait = tw::queue_wait_twiml(3, 7);
    CHECK(wait == std::string(declaration) +
                      R"(<Response><Say language="he-IL" voice="Google.he-IL-Wavenet-A">אתם במקום 3 בתור. תודה על הסבלנות.</Say>)"
                      R"(<Pause length="5"/></Response>)");
    parse(wait);
    o.queue_position_message = "<You> are {position} of {waiting} {other} {position}";
    o.queue_pause = std::chrono::seconds(2);
    auto custom = parse(tw::queue_wait_twiml(2, 9, o));
    CHECK(custom.get<std::string>("Response.Say") == "<You> are 2 of 9 {other} 2");
    CHECK(custom.get<std::string>("Response.Pause.<xmlattr>.length") == "2");
    // Position unknown (the backend is down): the plain queue message.
    CHECK(parse(tw::queue_wait_twiml(0, 0, o)).get<std::string>("Response.Say") == std::string(tw::default_queue_message));
    o.queue_message.clear();
    CHECK(tw::queue_wait_twiml(0, 0, o) == std::string(declaration) + R"(<Response><Pause length="2"/></Response>)");

    CHECK(tw::leave_queue_twiml() == std::string(declaration) + "<Response><Leave/></Response>");
    CHECK(tw::hangup_twiml() == std::string(declaration) + "<Response><Hangup/></Response>");
    CHECK(tw::empty_twiml() == std::string(declaration) + "<Response></Response>");
    CHECK(tw::queue_position_text("{position}{waiting}{posit", 1, 2) == "12{posit");
}

TEST_CASE("over_capacity_twiml picks by behaviour") {
    using b = callguard::over_capacity_behavior;
    CHECK(tw::over_capacity_twiml(b::reject) == tw::reject_twiml());
    CHECK(tw::over_capacity_twiml(b::whatsapp) == tw::whatsapp_twiml());
    CHECK(tw::over_capacity_twiml(b::queue) == tw::queue_twiml());
    CHECK(tw::over_capacity_twiml(b::voicemail, {}, "https://h/vm") == tw::voicemail_twiml("https://h/vm"));
}

TEST_CASE("hostile text is escaped and the document stays well-formed") {
    tw::twiml_options o;
    static constexpr char hostile[] = "</Say><Dial>+15550100</Dial>\"'&\x01\x1f\xff\xc3(\xed\xa0\x80 ok";
    o.reject_message = std::string(hostile, sizeof hostile - 1);
    o.voice = "\"><Play>http://evil</Play>";
    auto xml = tw::reject_twiml(o);
    CHECK(xml.find("<Dial>") == std::string::npos);
    CHECK(xml.find("<Play>") == std::string::npos);
    auto t = parse(xml);
    auto said = t.get<std::string>("Response.Say");
    CHECK(said.find("</Say><Dial>+15550100</Dial>\"'&") == 0);
    CHECK(said.find("\xef\xbf\xbd") != std::string::npos); // bad bytes became U+FFFD
    CHECK(said.find(" ok") != std::string::npos);
    // Tabs and newlines in attributes survive as character references.
    auto xml2 = tw::admit_twiml("wss://h/ws", {{"p", "a\tb\nc"}});
    CHECK(xml2.find(R"(value="a&#9;b&#10;c")") != std::string::npos);
}

TEST_CASE("twiml_options::from_env") {
    auto lookup = [](const char* name) -> std::optional<std::string> {
        std::string n = name;
        if (n == "CALLS_TTS_VOICE") return "Polly.Hila";
        if (n == "CALLS_REJECT_BUSY_SIGNAL") return "yes";
        if (n == "CALLS_VOICEMAIL_MAX_SECONDS") return "60";
        if (n == "CALLS_REJECT_MESSAGE") return "busy, sorry";
        if (n == "CALLS_QUEUE_POSITION_MESSAGE") return "number {position}";
        if (n == "CALLS_QUEUE_PAUSE_SECONDS") return "3";
        return std::nullopt;
    };
    auto o = tw::twiml_options::from_env(lookup);
    CHECK(o.queue_position_message == "number {position}");
    CHECK(o.queue_pause == std::chrono::seconds(3));
    CHECK(tw::twiml_options::from_env({}).queue_pause == std::chrono::seconds(5));
    auto long_pause = [](const char* name) -> std::optional<std::string> {
        if (std::string(name) == "CALLS_QUEUE_PAUSE_SECONDS") return "61";
        return std::nullopt;
    };
    CHECK_THROWS_WITH_AS(tw::twiml_options::from_env(long_pause), doctest::Contains("CALLS_QUEUE_PAUSE_SECONDS"),
                         callguard::config_error);
    CHECK(o.voice == "Polly.Hila");
    CHECK(o.reject_with_busy_signal);
    CHECK(o.voicemail_max_length == std::chrono::seconds(60));
    CHECK(o.reject_message == "busy, sorry");
    CHECK(o.language == "he-IL");
    auto bad = [](const char* name) -> std::optional<std::string> {
        if (std::string(name) == "CALLS_VOICEMAIL_MAX_SECONDS") return "forever";
        return std::nullopt;
    };
    CHECK_THROWS_AS(tw::twiml_options::from_env(bad), callguard::config_error);
}
