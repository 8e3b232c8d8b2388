#pragma once

// The Lua scripts behind every Redis operation: each one runs atomically on the server and takes
// one round trip. Time comes from the server's own TIME, never from a client clock.
//
// Data model, all under one hash tag so a script stays in one cluster slot:
//   {prefix}:active           sorted set, member = call id, score = expiry (ms, server time)
//   {prefix}:tenant:<name>    sorted set per tenant, same members and scores
//   {prefix}:owners           hash, call id -> tenant (to find the tenant set on release)
//   {prefix}:released         sorted set, member = call id released lately, score = when it is
//                             forgotten (ms): a late reinstatement does not bring the call back
// Call ids are plain data here: never used as patterns, never concatenated into keys.

#include <cstddef>
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

// Steps shared by several scripts, pasted into each (one text, no per-call closures). They use
// the scripts' common locals: active, owners, base, now, and id/held/expires/ttl where named.

// Forgets up to `limit` expired slots (and their tenant entries); leaves them in `expired`.
#define CALLGUARD_LUA_FORGET_EXPIRED(limit)                                                      \
    "local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, " limit ")\n" \
    "for _, m in ipairs(expired) do\n"                                                           \
    "  local owner = redis.call('HGET', owners, m)\n"                                            \
    "  if owner then\n"                                                                          \
    "    redis.call('ZREM', base .. ':tenant:' .. owner, m)\n"                                   \
    "    redis.call('HDEL', owners, m)\n"                                                        \
    "  end\n"                                                                                    \
    "  redis.call('ZREM', active, m)\n"                                                          \
    "end\n"

// Pushes the live slot `id` (score `held`) to `expires`, in the tenant's set too; never earlier.
#define CALLGUARD_LUA_PUSH_EXPIRY                                                                \
    "if expires > tonumber(held) then\n"                                                         \
    "  redis.call('ZADD', active, expires, id)\n"                                                \
    "  extend(active, ttl)\n"                                                                    \
    "  local owner = redis.call('HGET', owners, id)\n"                                           \
    "  if owner then\n"                                                                          \
    "    redis.call('ZADD', base .. ':tenant:' .. owner, expires, id)\n"                         \
    "    extend(base .. ':tenant:' .. owner, ttl)\n"                                             \
    "    extend(owners, ttl)\n"                                                                  \
    "  end\n"                                                                                    \
    "end\n"

/// KEYS: active, owners. ARGV: call id, cap, ttl ms, tenant ('' = none), tenant cap (0 = none),
/// key base ("{prefix}"). Returns {state, live}: 0 acquired, 1 already held, 2 rejected,
/// 3 rejected by the tenant cap. A new admission forgets an earlier release of the same id
/// (`{prefix}:released`, named from the base: the script runner takes at most 8 keys and
/// arguments).
inline constexpr std::string_view acquire = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners = KEYS[1], KEYS[2]
local id, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tenant, tenant_cap, base = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local expires = now + ttl
-- Forget a bounded batch of expired slots; the counts below never include expired ones anyway.
)lua" CALLGUARD_LUA_FORGET_EXPIRED("100") R"lua(
local live = redis.call('ZCOUNT', active, '(' .. now, '+inf')
local held = redis.call('ZSCORE', active, id)
if held and tonumber(held) > now then
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
  return {1, live}
end
if live >= cap then return {2, live} end
if tenant ~= '' then
  local tk = base .. ':tenant:' .. tenant
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
  if tenant_cap > 0 and redis.call('ZCARD', tk) >= tenant_cap then return {3, live} end
  redis.call('ZADD', tk, expires, id)
  extend(tk, ttl)
  redis.call('HSET', owners, id, tenant)
  extend(owners, ttl)
end
redis.call('ZADD', active, expires, id)
extend(active, ttl)
redis.call('ZREM', base .. ':released', id)
return {0, live + 1}
)lua";

/// KEYS: active, owners, released. ARGV: call id, key base, how long to remember the release
/// (ms, 0 = not at all). Returns {freed (0/1), live}.
inline constexpr std::string_view release = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners, released = KEYS[1], KEYS[2], KEYS[3]
local id, base, remember = ARGV[1], ARGV[2], tonumber(ARGV[3])
if remember > 0 then
  -- Each id is forgotten once, so this costs O(log n) per release over time.
  redis.call('ZREMRANGEBYSCORE', released, '-inf', now)
  redis.call('ZADD', released, now + remember, id)
  extend(released, remember)
end
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
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
return 1
)lua";

/// KEYS: active, owners, released. ARGV: call id, ttl ms, tenant ('' = none), key base.
/// Puts back the slot of a call already in progress, with no cap check: the counts may exceed
/// the caps (acquire then rejects until they are below). Returns {state, live}: 0 reinstated,
/// 1 already held (expiry pushed), 2 released lately (left out).
inline constexpr std::string_view reinstate = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners, released = KEYS[1], KEYS[2], KEYS[3]
local id, ttl, tenant, base = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local expires = now + ttl
)lua" CALLGUARD_LUA_FORGET_EXPIRED("100") R"lua(
local live = redis.call('ZCOUNT', active, '(' .. now, '+inf')
local held = redis.call('ZSCORE', active, id)
if held and tonumber(held) > now then
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
  return {1, live}
end
local gone = redis.call('ZSCORE', released, id)
if gone and tonumber(gone) > now then return {2, live} end
if tenant ~= '' then
  local tk = base .. ':tenant:' .. tenant
  redis.call('ZADD', tk, expires, id)
  extend(tk, ttl)
  redis.call('HSET', owners, id, tenant)
  extend(owners, ttl)
end
redis.call('ZADD', active, expires, id)
extend(active, ttl)
return {0, live + 1}
)lua";

/// KEYS: active. Returns the number of live slots.
inline constexpr std::string_view count = CALLGUARD_LUA_PROLOGUE R"lua(
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
)lua";

/// KEYS: active, owners. ARGV: key base. Removes every expired slot; returns how many.
inline constexpr std::string_view cleanup_expired = CALLGUARD_LUA_PROLOGUE R"lua(
local active, owners, base = KEYS[1], KEYS[2], ARGV[1]
local removed = 0
for _ = 1, 1000 do
)lua" CALLGUARD_LUA_FORGET_EXPIRED("500") R"lua(
  if #expired == 0 then break end
  removed = removed + #expired
end
return removed
)lua";

#undef CALLGUARD_LUA_PUSH_EXPIRY
#undef CALLGUARD_LUA_FORGET_EXPIRED
#undef CALLGUARD_LUA_PROLOGUE

} // namespace callguard::detail::lua

namespace callguard::detail {

/// The scripts by name, for the SHA cache and the dispatcher.
enum class script_id : std::size_t { acquire, release, refresh, count, cleanup_expired, reinstate };
inline constexpr std::size_t script_count = 6;

constexpr std::string_view script_source(script_id s) noexcept {
    switch (s) {
    case script_id::acquire: return lua::acquire;
    case script_id::release: return lua::release;
    case script_id::refresh: return lua::refresh;
    case script_id::count: return lua::count;
    case script_id::cleanup_expired: return lua::cleanup_expired;
    case script_id::reinstate: return lua::reinstate;
    }
    return {};
}

} // namespace callguard::detail
