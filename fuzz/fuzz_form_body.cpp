// The Twilio webhook form parser: it either throws form_error or returns fields whose re-encoding
// parses back to the same fields.
#include <callguard/twilio/form.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char*>(data), size);
    callguard::twilio::form f;
    try {
        f = callguard::twilio::form::parse(body);
    } catch (const callguard::twilio::form_error&) {
        return 0;
    }
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string again;
    for (const auto& [k, v] : f.fields()) {
        if (k.empty()) std::abort();
        if (!again.empty()) again += '&';
        for (const auto* s : {&k, &v}) {
            for (unsigned char c : *s) again += {'%', hex[c >> 4], hex[c & 15]};
            if (s == &k) again += '=';
        }
    }
    if (callguard::twilio::form::parse(again).fields() != f.fields()) std::abort();
    return 0;
}
