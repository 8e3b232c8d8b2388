// TwiML builders: whatever text goes in, the document that comes out is well-formed XML that
// starts with the declaration, and the spoken text survives escaping (invalid bytes -> U+FFFD).
#include "xml_check.hpp"

#include <callguard/twilio/twiml.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    // Split the input into fields on NUL bytes: message, voice, language, queue, url.
    std::string parts[5];
    std::size_t k = 0;
    for (char c : in) {
        if (c == '\0' && k < 4) ++k;
        else parts[k] += c;
    }
    namespace tw = callguard::twilio;
    tw::twiml_options o;
    o.reject_message = parts[0];
    o.voice = parts[1];
    o.language = parts[2];
    o.queue_name = parts[3];
    o.whatsapp_message = parts[0];
    o.voicemail_prompt = parts[0];

    o.queue_message = parts[0];
    o.queue_position_message = parts[3] + "{position}" + parts[0] + "{waiting}";
    const auto number = static_cast<std::int64_t>(size) - 3; // negative, zero and positive
    const std::string docs[] = {tw::reject_twiml(o),
                                tw::whatsapp_twiml(o),
                                tw::queue_twiml(o),
                                tw::queue_wait_twiml(number, number * 7, o),
                                tw::leave_queue_twiml(),
                                tw::hangup_twiml(),
                                tw::empty_twiml()};
    for (const auto& d : docs) fuzz::require_well_formed(d);
    // The position text says the numbers where the placeholders were, the rest as given.
    if (number > 0 && fuzz::say_text(docs[3]) !=
                          fuzz::sanitized(tw::queue_position_text(o.queue_position_message, number, number * 7)))
        std::abort();

    // The <Say> text, unescaped, is the input with every invalid sequence replaced.
    auto said = fuzz::say_text(docs[0]);
    if (said != fuzz::sanitized(parts[0])) std::abort();

    for (const auto& url : {parts[4], "wss://h/ws/" + parts[4], "https://h/" + parts[4]}) {
        try {
            fuzz::require_well_formed(tw::admit_twiml(url, {{"callSid", parts[0]}, {"tenant", parts[3]}}));
        } catch (const std::invalid_argument&) {
        }
        try {
            fuzz::require_well_formed(tw::voicemail_twiml(url, o));
        } catch (const std::invalid_argument&) {
        }
        try {
            fuzz::require_well_formed(tw::voicemail_twiml("https://h/vm", o, url));
        } catch (const std::invalid_argument&) {
        }
        try {
            fuzz::require_well_formed(tw::enqueue_twiml(url, "https://h/r?" + parts[0], o));
        } catch (const std::invalid_argument&) {
        }
    }
    return 0;
}
