#pragma once

#include "detail/json.hpp"

#include <cstdint>
#include <string>

namespace callguard {

/// A snapshot for `/health/details` and dashboards.
struct capacity_status {
    std::int64_t active_calls = 0;
    std::int64_t max_calls = 0;
    std::int64_t capacity_available = 0; ///< max(0, max_calls - active_calls)
    // active_calls can be above max_calls: calls in progress whose slots were put back after an
    // outage count even over the cap (new calls are rejected until the count is below it).
    bool at_capacity = false;
    bool backend_healthy = true;
    std::string backend; ///< "memory", "redis", ...
    /// Times the backend found its stored slots gone since start (see `reports_data_resets`).
    std::uint64_t backend_resets = 0;
    /// Calls in progress the limiter will put back once the backend answers (metrics only).
    std::int64_t reinstate_pending = 0;
};

/// `{"status":"ok","active_calls":8,"max_calls":15,"capacity_available":7,"at_capacity":false,
/// "backend":"memory","backend_healthy":true,"backend_resets":0}`; `"status":"degraded"` while the backend is down.
inline std::string to_json(const capacity_status& s) {
    std::string out;
    out.reserve(160);
    out += "{\"status\":";
    out += s.backend_healthy ? "\"ok\"" : "\"degraded\"";
    out += ",\"active_calls\":" + std::to_string(s.active_calls);
    out += ",\"max_calls\":" + std::to_string(s.max_calls);
    out += ",\"capacity_available\":" + std::to_string(s.capacity_available);
    out += ",\"at_capacity\":";
    out += s.at_capacity ? "true" : "false";
    out += ",\"backend\":";
    detail::append_json_string(out, s.backend);
    out += ",\"backend_healthy\":";
    out += s.backend_healthy ? "true" : "false";
    out += ",\"backend_resets\":" + std::to_string(s.backend_resets);
    out += '}';
    return out;
}

} // namespace callguard
