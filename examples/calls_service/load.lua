-- wrk script: a stream of call lifecycles, each an incoming-call webhook followed by its
-- completed status callback (on whichever connection comes next).
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
local n = 0
local pending = {}
local thread_tag = tostring(math.random(100000, 999999))

request = function()
  n = n + 1
  if n % 2 == 1 then
    local sid = string.format("CA%s%026d", thread_tag, n)
    table.insert(pending, sid)
    return wrk.format("POST", "/webhook/incoming_call", headers,
                      "CallSid=" .. sid .. "&From=%2B972500000001&To=%2B97231234567")
  end
  local sid = table.remove(pending, 1)
  return wrk.format("POST", "/webhook/call_status", headers, "CallSid=" .. sid .. "&CallStatus=completed")
end

done = function(summary, latency, requests)
  io.write(string.format("LOAD requests=%d duration_s=%.1f rate=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
