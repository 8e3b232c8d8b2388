#pragma once

#include "detail/text.hpp"

#include <stdexcept>
#include <string>
#include <string_view>

namespace callguard {

/// Longest call id accepted. Real Twilio CallSids are 34 bytes; anything near this
/// limit is a bug or an attack, not a call.
inline constexpr std::size_t max_call_id_length = 256;
/// Longest tenant name accepted.
inline constexpr std::size_t max_tenant_length = 64;

/// Why `call_id` is not acceptable, or an empty view when it is.
/// Validated for safety (length, control bytes), not for Twilio's exact `CA...` shape,
/// because Twilio's own examples use short fake SIDs.
constexpr std::string_view call_id_problem(std::string_view call_id) noexcept {
    if (call_id.empty()) return "call_id is empty";
    if (call_id.size() > max_call_id_length) return "call_id is longer than 256 bytes";
    for (char ch : call_id) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) return "call_id contains a control character";
    }
    return {};
}

/// Why `tenant` is not acceptable, or an empty view when it is. An empty tenant means "none".
constexpr std::string_view tenant_problem(std::string_view tenant) noexcept {
    if (tenant.size() > max_tenant_length) return "tenant is longer than 64 bytes";
    if (detail::find_not_name_char(tenant, "_.:-") != std::string_view::npos)
        return "tenant may only contain [A-Za-z0-9_.:-]";
    return {};
}

/// Throws `std::invalid_argument` naming the problem and (printably) the value.
inline void validate_call_id(std::string_view call_id) {
    if (auto why = call_id_problem(call_id); !why.empty())
        throw std::invalid_argument(std::string(why) + ": \"" + detail::printable(call_id) + "\"");
}

/// Throws `std::invalid_argument` naming the problem and (printably) the value.
inline void validate_tenant(std::string_view tenant) {
    if (auto why = tenant_problem(tenant); !why.empty())
        throw std::invalid_argument(std::string(why) + ": \"" + detail::printable(tenant) + "\"");
}

} // namespace callguard
