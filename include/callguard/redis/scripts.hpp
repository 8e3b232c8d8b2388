#pragma once

// The Lua scripts behind every Redis operation: each one runs atomically on the server and takes
// one round trip. Time comes from the server's own TIME, never from a client clock.
//
// Data model, all under one hash tag so a script stays in one cluster slot:
//   {prefix}:active           sorted set, member = call id, score = expiry (ms, server time)
//   {prefix}:tenant:<name>    sorted set per tenant, same members and scores
//   {prefix}:owners           hash, call id -> tenant (to find the tenant set on release)
// Call ids are plain data here: never used as patterns, never concatenated into keys.

#include <string_view>

namespace callguard::detail::lua {

// Shared prologue: effects replication (needed before Redis 5 to write after TIME), the
// server's clock in ms, and a helper that keeps a key alive longer than any member written now:
// when less than one slot TTL is left it sets two, so the PEXPIRE runs about once per TTL rather
// than on every write, and a TTL is only ever lengthened.
#define CALLGUARD_LUA_PROLOGUE                                                                   \
    "if redis.replicate_commands then redis.replicate_commands() end\n"                          \
    "local t = redis.call('TIME')\n"                                                             \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                    \
    "local function extend(key, ttl)\n"                                                          \
    "  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, 2 * ttl) end\n"          \
    "end\n"

/// KEYS: active, owners. ARGV: call id, cap, ttl ms, tenant ('' = none), tenant cap (0 = none),
/// key base ("{prefix}"). Returns {state, live}: 0 acquired, 1 already held, 2 rejected,
/// 3 rejected by the tenant cap.
inline constexpr std::string_view acquire = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners = KEYS[1], KEYS[2]
local id, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tenant, tenant_cap, base = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local expires = now + ttl
local function tenant_key(name) return base .. ':tenant:' .. name end
-- Forget a bounded batch of expired slots; the counts below never include expired ones anyway.
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, 100)
for _, m in ipairs(expired) do
  local owner = redis.call('HGET', owners, m)
  if owner then
    redis.call('ZREM', tenant_key(owner), m)
    redis.call('HDEL', owners, m)
  end
  redis.call('ZREM', active, m)
end
local live = redis.call('ZCOUNT', active, '(' .. now, '+inf')
local held = redis.call('ZSCORE', active, id)
if held and tonumber(held) > now then
  if expires > tonumber(held) then
    redis.call('ZADD', active, expires, id)
    extend(active, ttl)
    local owner = redis.call('HGET', owners, id)
    if owner then
      redis.call('ZADD', tenant_key(owner), expires, id)
      extend(tenant_key(owner), ttl)
      extend(owners, ttl)
    end
  end
  return {1, live}
end
if live >= cap then return {2, live} end
if tenant ~= '' then
  local tk = tenant_key(tenant)
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
  if tenant_cap > 0 and redis.call('ZCARD', tk) >= tenant_cap then return {3, live} end
  redis.call('ZADD', tk, expires, id)
  extend(tk, ttl)
  redis.call('HSET', owners, id, tenant)
  extend(owners, ttl)
end
redis.call('ZADD', active, expires, id)
extend(active, ttl)
return {0, live + 1}
)lua";

/// KEYS: active, owners. ARGV: call id, key base. Returns {freed (0/1), live}.
inline constexpr std::string_view release = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners = KEYS[1], KEYS[2]
local id, base = ARGV[1], ARGV[2]
local freed = 0
local held = redis.call('ZSCORE', active, id)
if held then
  redis.call('ZREM', active, id)
  if tonumber(held) > now then freed = 1 end
end
local owner = redis.call('HGET', owners, id)
if owner then
  redis.call('ZREM', base .. ':tenant:' .. owner, id)
  redis.call('HDEL', owners, id)
end
return {freed, redis.call('ZCOUNT', active, '(' .. now, '+inf')}
)lua";

/// KEYS: active, owners. ARGV: call id, ttl ms, key base. Returns 1 if a live slot was extended.
inline constexpr std::string_view refresh = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners = KEYS[1], KEYS[2]
local id, ttl, base = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local held = redis.call('ZSCORE', active, id)
if not held or tonumber(held) <= now then return 0 end
local expires = now + ttl
if expires > tonumber(held) then
  redis.call('ZADD', active, expires, id)
  extend(active, ttl)
  local owner = redis.call('HGET', owners, id)
  if owner then
    redis.call('ZADD', base .. ':tenant:' .. owner, expires, id)
    extend(base .. ':tenant:' .. owner, ttl)
    extend(owners, ttl)
  end
end
return 1
)lua";

/// KEYS: active. Returns the number of live slots.
inline constexpr std::string_view count = CALLGUARD_LUA_PROLOGUE R"lua(
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
)lua";

/// KEYS: active, owners. ARGV: key base. Removes every expired slot; returns how many.
inline constexpr std::string_view cleanup = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners, base = KEYS[1], KEYS[2], ARGV[1]
local removed = 0
for _ = 1, 1000 do
  local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, 500)
  if #expired == 0 then break end
  for _, m in ipairs(expired) do
    local owner = redis.call('HGET', owners, m)
    if owner then
      redis.call('ZREM', base .. ':tenant:' .. owner, m)
      redis.call('HDEL', owners, m)
    end
    redis.call('ZREM', active, m)
  end
  removed = removed + #expired
end
return removed
)lua";

#undef CALLGUARD_LUA_PROLOGUE

} // namespace callguard::detail::lua
