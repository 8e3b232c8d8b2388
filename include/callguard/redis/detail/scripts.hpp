#pragma once

// The Lua scripts behind every Redis operation: each one runs atomically on the server and takes
// one round trip. Time comes from the server's own TIME, never from a client clock.
//
// Data model, all under one hash tag so a script stays in one cluster slot:
//   {prefix}:active           sorted set, member = call id, score = expiry (ms, server time)
//   {prefix}:tenant:<name>    sorted set per tenant, same members and scores
//   {prefix}:owners           hash, call id -> tenant (to find the tenant set on release)
//   {prefix}:released:current  hash, call id -> 1: calls released lately, so a late
//   {prefix}:released:previous reinstatement does not bring them back. Two generations, each
//                             forgotten whole by Redis's expiry: a release goes into the current
//                             one while it has at least the release memory left to live (it is
//                             made with twice that); then it becomes the previous one, keeping its
//                             expiry, and a new one starts. So a release is remembered for the
//                             release memory to twice that, with no clock and no pruning.
// The waiting room (only while someone waits; each key expires on its own when idle):
//   {prefix}:waiting          sorted set, member = call id, score = ticket (last ticket + 1 at
//                             join, so arrival order is total across every instance)
//   {prefix}:waiting:deadlines sorted set, member = call id, score = when the waiter is dropped
//                             unless it polls again (ms, server time)
//   {prefix}:waiting:info     hash, call id -> "joined_ms|tenant_cap|tenant"
// Claims (claim.hpp), one string per claimed key, gone at its expiry (Redis's own, on the
// server's clock):
//   {prefix}:claim:<key>      "1", PX = the claim's TTL
// Call ids are plain data here: never used as patterns, never concatenated into keys.

#include <cstddef>
#include <string_view>

namespace callguard::detail::lua {

// What a call costs the server is what these scripts do, so the hot paths (acquire and release
// of a call without a tenant while nobody waits) make as few commands as the guarantees allow,
// define no functions and build no strings: each `redis.call` costs about as much as a plain
// command sent on its own. Replies are one integer where two numbers are enough (a table reply
// costs the server more than two commands): `10 * live + state`, readable in redis-cli (an
// array of such integers when several callers' calls travel as one script call).

// Effects replication (needed before Redis 5 to write after TIME) and the server's clock in ms.
#define CALLGUARD_LUA_NOW                                                                        \
    "if redis.replicate_commands then redis.replicate_commands() end\n"                          \
    "local t = redis.call('TIME')\n"                                                             \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

// Keeps `key` alive longer than any member written now with `ttl`: when less than one TTL is
// left it sets two, so the PEXPIRE runs about once per TTL rather than on every write, and a
// key's TTL is only ever lengthened.
#define CALLGUARD_LUA_KEEP(key, ttl)                                                             \
    "if redis.call('PTTL', " key ") < " ttl " then redis.call('PEXPIRE', " key ", 2 * " ttl ") end\n"

// Steps shared by several scripts, pasted into each. They use the scripts' common locals:
// active, owners, base, now, and id/held/expires/ttl where named.

// Forgets up to `limit` expired slots (and their tenant entries); leaves how many in `forgot`.
#define CALLGUARD_LUA_FORGET_EXPIRED(limit)                                                      \
    "local forgot = 0\n"                                                                         \
    "do\n"                                                                                       \
    "  local batch = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, " limit ")\n" \
    "  forgot = #batch\n"                                                                        \
    "  if forgot > 0 then\n"                                                                     \
    "    local of = redis.call('HMGET', owners, unpack(batch))\n"                                \
    "    for i, m in ipairs(batch) do\n"                                                         \
    "      if of[i] then\n"                                                                      \
    "        redis.call('ZREM', base .. ':tenant:' .. of[i], m)\n"                               \
    "        redis.call('HDEL', owners, m)\n"                                                    \
    "      end\n"                                                                                \
    "    end\n"                                                                                  \
    "    redis.call('ZREM', active, unpack(batch))\n"                                            \
    "  end\n"                                                                                    \
    "end\n"

// The live count in `live` (expired slots never count), forgetting up to 100 expired ones first.
// Nothing has expired in the usual case, and then ZCOUNT from -inf stops at the first member:
// the count is ZCARD, not a ZCOUNT across the set. Leaves the number of expired slots, purged
// or not, in `expired`.
#define CALLGUARD_LUA_LIVE_COUNT                                                                 \
    "local live = redis.call('ZCARD', active)\n"                                                 \
    "local expired = redis.call('ZCOUNT', active, '-inf', now)\n"                                \
    "if expired > 0 then\n"                                                                      \
    CALLGUARD_LUA_FORGET_EXPIRED("100")                                                          \
    "  live = live - expired\n"                                                                  \
    "end\n"

// Acquire's count: `live` is the set's size, which may include expired slots nobody purged yet
// (calls whose process died): below the cap such a count admits exactly the calls the live
// count would. The probe for expired slots (as above, purging up to 100; then `exact`: live
// counts only live slots) runs when the count decides something: the set is full, or callers
// are in line (the free slots are handed out); and on about one acquire in 8 otherwise (the
// clock's ms, so a crashed call soon leaves the reported count too). `line` (nil: not asked
// yet) says whether anyone is in line; `expired` how many slots the probe found expired.
#define CALLGUARD_LUA_ADMISSION_COUNT                                                            \
    "if line == nil and live < cap then line = redis.call('EXISTS', base .. ':waiting') == 1 end\n" \
    "local expired = 0\n"                                                                        \
    "if not exact and (live >= cap or line or now % 8 == 0) then\n"                              \
    "  exact, expired = true, redis.call('ZCOUNT', active, '-inf', now)\n"                       \
    "  if expired > 0 then\n"                                                                    \
    CALLGUARD_LUA_FORGET_EXPIRED("100")                                                          \
    "    live = live - expired\n"                                                                \
    "    if line == nil and live < cap then line = redis.call('EXISTS', base .. ':waiting') == 1 end\n" \
    "  end\n"                                                                                    \
    "end\n"

// Pushes the live slot `id` (score `held`) to `expires`, in the tenant's set too; never earlier.
#define CALLGUARD_LUA_PUSH_EXPIRY                                                                \
    "if expires > tonumber(held) then\n"                                                         \
    "  redis.call('ZADD', active, expires, id)\n"                                                \
    CALLGUARD_LUA_KEEP("active", "ttl")                                                          \
    "  local owner = redis.call('HGET', owners, id)\n"                                           \
    "  if owner then\n"                                                                          \
    "    local tk = base .. ':tenant:' .. owner\n"                                               \
    "    redis.call('ZADD', tk, expires, id)\n"                                                  \
    CALLGUARD_LUA_KEEP("tk", "ttl")                                                              \
    CALLGUARD_LUA_KEEP("owners", "ttl")                                                          \
    "  end\n"                                                                                    \
    "end\n"

// Forgets an earlier release of `m` in both generations (a new admission of the same id).
#define CALLGUARD_LUA_FORGET_RELEASE(m)                                                          \
    "redis.call('HDEL', released, " m ")\n"                                                      \
    "redis.call('HDEL', previous, " m ")\n"

// Drops the tenant entry of `id` (after its slot left the active set or expired in it).
#define CALLGUARD_LUA_DROP_OWNER                                                                 \
    "local owner = redis.call('HGET', owners, id)\n"                                             \
    "if owner then\n"                                                                            \
    "  redis.call('ZREM', base .. ':tenant:' .. owner, id)\n"                                    \
    "  redis.call('HDEL', owners, id)\n"                                                         \
    "end\n"

// The count of tenant set `tk` in `tenant_live`, for checking it against `tenant_cap`: the set's
// size, which below the cap decides like the live count (see the acquire's count); at the cap its
// expired entries are counted and purged, so only live ones turn a call away.
#define CALLGUARD_LUA_TENANT_COUNT                                                               \
    "local tenant_live = redis.call('ZCARD', tk)\n"                                              \
    "if tenant_live >= tenant_cap then\n"                                                        \
    "  local gone = redis.call('ZCOUNT', tk, '-inf', now)\n"                                     \
    "  if gone > 0 then\n"                                                                       \
    "    redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)\n"                                      \
    "    tenant_live = tenant_live - gone\n"                                                     \
    "  end\n"                                                                                    \
    "end\n"

// The waiting room's steps (see waiting_room.hpp). They use `base` and `now`.

// Its keys; drops up to 1000 waiters whose deadline passed; `record` reads a waiter's
// "joined_ms|tenant_cap|tenant" (a missing one reads as joined now, no tenant); `forget` drops one.
#define CALLGUARD_LUA_LINE                                                                       \
    "local waiting = base .. ':waiting'\n"                                                       \
    "local deadlines, waiters = waiting .. ':deadlines', waiting .. ':info'\n"                  \
    "local gone = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, 1000)\n"      \
    "if #gone > 0 then\n"                                                                        \
    "  redis.call('ZREM', waiting, unpack(gone))\n"                                              \
    "  redis.call('ZREM', deadlines, unpack(gone))\n"                                            \
    "  redis.call('HDEL', waiters, unpack(gone))\n"                                              \
    "end\n"                                                                                      \
    "local function record(v)\n"                                                                 \
    "  if not v then return now, 0, '' end\n"                                                    \
    "  local since, tcap, t = string.match(v, '^(%d+)|(%d+)|(.*)$')\n"                          \
    "  return tonumber(since), tonumber(tcap), t\n"                                              \
    "end\n"                                                                                      \
    "local function forget(m)\n"                                                                 \
    "  redis.call('ZREM', waiting, m)\n"                                                         \
    "  redis.call('ZREM', deadlines, m)\n"                                                       \
    "  redis.call('HDEL', waiters, m)\n"                                                         \
    "end\n"

// The admission walk: gives `free` slots to waiters in ticket order, one each to those whose
// tenant has room (counting what this walk already gave that tenant), skipping the others (at
// most 1000 of them, `max_skipped_waiters`). `who` is a waiter in line, or nil for a newcomer
// with tenant `nt` and cap `ncap` standing at the back. Answers 'admit', 'wait' or 'tenant'.
#define CALLGUARD_LUA_LINE_WALK                                                                  \
    "local function walk(free, who, nt, ncap)\n"                                                 \
    "  if free <= 0 then return 'wait' end\n"                                                    \
    "  local given, live, skipped, offset = {}, {}, 0, 0\n"                                      \
    "  local function room(t, tcap)\n"                                                           \
    "    if t == '' or tcap <= 0 then return true end\n"                                         \
    "    if not live[t] then\n"                                                                  \
    "      live[t] = redis.call('ZCOUNT', base .. ':tenant:' .. t, '(' .. now, '+inf')\n"       \
    "    end\n"                                                                                  \
    "    return live[t] + (given[t] or 0) < tcap\n"                                              \
    "  end\n"                                                                                    \
    "  while true do\n"                                                                          \
    "    local batch = redis.call('ZRANGE', waiting, offset, offset + 99)\n"                    \
    "    if #batch == 0 then break end\n"                                                        \
    "    local recs = redis.call('HMGET', waiters, unpack(batch))\n"                            \
    "    for i, m in ipairs(batch) do\n"                                                         \
    "      local _, tcap, t = record(recs[i])\n"                                                 \
    "      local ok = room(t, tcap)\n"                                                           \
    "      if m == who then return ok and 'admit' or 'tenant' end\n"                             \
    "      if ok then\n"                                                                         \
    "        given[t] = (given[t] or 0) + 1\n"                                                   \
    "        free = free - 1\n"                                                                  \
    "        if free == 0 then return 'wait' end\n"                                              \
    "      else\n"                                                                               \
    "        skipped = skipped + 1\n"                                                            \
    "        if skipped >= 1000 then return 'wait' end\n"                                        \
    "      end\n"                                                                                \
    "    end\n"                                                                                  \
    "    offset = offset + #batch\n"                                                             \
    "  end\n"                                                                                    \
    "  if who then return 'wait' end\n"                                                          \
    "  return room(nt, ncap) and 'admit' or 'tenant'\n"                                          \
    "end\n"

/// KEYS: active, owners, released, released:previous. ARGV: key base ("{prefix}"), then one call
/// or more, 5 arguments each: call id, cap, ttl ms, tenant ('' = none), tenant cap (0 = none).
/// Decides the calls in order, as that many scripts one after another would (callers' acquires
/// that travel together share the clock, the count and the key's upkeep). Per call 10 * live +
/// state, one integer for one call, an array for more; state: 0 acquired, 1 already held,
/// 2 rejected, 3 rejected by the tenant cap, 4 rejected because the free slots go to callers in
/// line. While nobody waits, the waiting room costs one EXISTS. A new admission forgets an
/// earlier release of the same id.
inline constexpr std::string_view acquire = CALLGUARD_LUA_NOW R"lua(
local active, owners, released, previous = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base = ARGV[1]
local replies, keep = {}, 0
-- The count (see CALLGUARD_LUA_ADMISSION_COUNT); `exact` once expired slots are counted out.
local live, exact, line = redis.call('ZCARD', active), false, nil
for at = 2, #ARGV, 5 do
  local id, cap, ttl = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local tenant, tenant_cap = ARGV[at + 3], tonumber(ARGV[at + 4])
  local expires = now + ttl
  local reply
  repeat -- once; `break` ends this call's turn with `reply`
)lua" CALLGUARD_LUA_ADMISSION_COUNT R"lua(
    -- Does the call hold a slot already? Asked here when the answer can change the decision
    -- (full, callers in line) or a slot of it may have expired unpurged; otherwise the ZADD NX
    -- below finds out, before any tenant cap is checked.
    local asked, held = false, false
    if live >= cap or line or expired > 0 then
      asked, held = true, redis.call('ZSCORE', active, id)
      if held and tonumber(held) > now then
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
        reply = 10 * live + 1
        break
      end
      if live >= cap then reply = 10 * live + 2 break end
      if line then
)lua" CALLGUARD_LUA_LINE CALLGUARD_LUA_LINE_WALK R"lua(
        local mine = redis.call('ZSCORE', waiting, id)
        local verdict = walk(cap - live, mine and id or nil, tenant, tenant_cap)
        if verdict == 'wait' then reply = 10 * live + 4 break end
        if verdict == 'tenant' then reply = 10 * live + 3 break end
        if mine then forget(id) end
      end
      if held then -- expired but not purged yet: taken afresh below, without its old tenant entry
)lua" CALLGUARD_LUA_DROP_OWNER R"lua(
      end
    end
    if not asked and redis.call('ZADD', active, 'NX', expires, id) == 0 then
      held = redis.call('ZSCORE', active, id)
      if tonumber(held) > now then
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
        reply = 10 * live + 1
        break
      end
      -- Its slot expired unpurged: taken afresh (as if the ZADD NX had added it, so a tenant cap
      -- that turns the call away takes it out), without its old tenant entry.
)lua" CALLGUARD_LUA_DROP_OWNER R"lua(
      redis.call('ZADD', active, expires, id)
      if not exact then live = live - 1 end -- the count had it
    end
    local tk = tenant ~= '' and base .. ':tenant:' .. tenant
    if tk and tenant_cap > 0 then
)lua" CALLGUARD_LUA_TENANT_COUNT R"lua(
      if tenant_live >= tenant_cap then
        if not asked then redis.call('ZREM', active, id) end -- takes back the ZADD NX above
        reply = 10 * live + 3
        break
      end
    end
    if asked then redis.call('ZADD', active, expires, id) end
    if ttl > keep then keep = ttl end
    if tk then
      redis.call('ZADD', tk, expires, id)
)lua" CALLGUARD_LUA_KEEP("tk", "ttl") R"lua(
      redis.call('HSET', owners, id, tenant)
)lua" CALLGUARD_LUA_KEEP("owners", "ttl") R"lua(
    end
)lua" CALLGUARD_LUA_FORGET_RELEASE("id") R"lua(
    live = live + 1
    reply = 10 * live
  until true
  replies[#replies + 1] = reply
end
if keep > 0 then
)lua" CALLGUARD_LUA_KEEP("active", "keep") R"lua(
end
if #replies == 1 then return replies[1] end
return replies
)lua";

/// KEYS: active, owners, released, released:previous. ARGV: key base, how long to remember a
/// release (ms, 0 = not at all), then one call id or more (callers' releases that travel
/// together). Per call 10 * live + freed (1 when the call's slot was there and is gone now), one
/// integer for one call, an array for more, live counted after them all. No clock: a slot past
/// its TTL that no acquire has purged yet is removed like a live one, and the count is the set's
/// size, which may include such slots. (Effects replication still: before Redis 5, PTTL counts
/// as non-deterministic.)
inline constexpr std::string_view release = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local active, owners, released, previous = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, remember = ARGV[1], tonumber(ARGV[2])
-- Releases are remembered in the current generation while it has `remember` ms left (PTTL is -2
-- once it is gone); otherwise it becomes the previous one and a new one starts. A previous one
-- still alive (limiters on this prefix that remember for different times) is never replaced:
-- the current one is lengthened instead, so no release is forgotten early. Expiries only grow.
local left = 0
if remember > 0 then
  left = redis.call('PTTL', released)
  if left > 0 and left < remember and redis.call('EXISTS', previous) == 0 then
    redis.call('RENAME', released, previous)
  end
end
local freed = {}
for at = 3, #ARGV do
  local id = ARGV[at]
  freed[#freed + 1] = redis.call('ZREM', active, id)
)lua" CALLGUARD_LUA_DROP_OWNER R"lua(
  if remember > 0 then redis.call('HSET', released, id, 1) end
end
if remember > 0 and left < remember then redis.call('PEXPIRE', released, 2 * remember) end
local live = 10 * redis.call('ZCARD', active)
if #freed == 1 then return live + freed[1] end
for i, f in ipairs(freed) do freed[i] = live + f end
return freed
)lua";

/// KEYS: active, owners. ARGV: call id, ttl ms, key base. Returns 1 if a live slot was extended.
inline constexpr std::string_view refresh = CALLGUARD_LUA_NOW R"lua(
local active, owners = KEYS[1], KEYS[2]
local id, ttl, base = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local held = redis.call('ZSCORE', active, id)
if not held or tonumber(held) <= now then return 0 end
local expires = now + ttl
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
return 1
)lua";

/// KEYS: active, owners, released, released:previous. ARGV: call id, ttl ms, tenant ('' = none),
/// key base.
/// Puts back the slot of a call already in progress, with no cap check: the counts may exceed
/// the caps (acquire then rejects until they are below). Returns 10 * live + state; state:
/// 0 reinstated, 1 already held (expiry pushed), 2 released lately (left out).
inline constexpr std::string_view reinstate = CALLGUARD_LUA_NOW R"lua(
local active, owners, released, previous = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, ttl, tenant, base = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local expires = now + ttl
)lua" CALLGUARD_LUA_LIVE_COUNT R"lua(
local held = redis.call('ZSCORE', active, id)
if held and tonumber(held) > now then
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
  return 10 * live + 1
end
if redis.call('HEXISTS', released, id) == 1 or redis.call('HEXISTS', previous, id) == 1 then
  return 10 * live + 2
end
if held then -- expired but not purged yet: put back afresh, without its old tenant entry
)lua" CALLGUARD_LUA_DROP_OWNER R"lua(
end
if tenant ~= '' then
  local tk = base .. ':tenant:' .. tenant
  redis.call('ZADD', tk, expires, id)
)lua" CALLGUARD_LUA_KEEP("tk", "ttl") R"lua(
  redis.call('HSET', owners, id, tenant)
)lua" CALLGUARD_LUA_KEEP("owners", "ttl") R"lua(
end
redis.call('ZADD', active, expires, id)
)lua" CALLGUARD_LUA_KEEP("active", "ttl") R"lua(
return 10 * (live + 1)
)lua";

/// KEYS: active. Returns the number of live slots.
inline constexpr std::string_view count = CALLGUARD_LUA_NOW R"lua(
return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[1], '-inf', now)
)lua";

/// KEYS: active, owners. ARGV: key base. Removes every expired slot; returns how many.
inline constexpr std::string_view cleanup_expired = CALLGUARD_LUA_NOW R"lua(
local active, owners, base = KEYS[1], KEYS[2], ARGV[1]
local removed = 0
for _ = 1, 1000 do
)lua" CALLGUARD_LUA_FORGET_EXPIRED("500") R"lua(
  if forgot == 0 then break end
  removed = removed + forgot
end
return removed
)lua";

// --- the waiting room -------------------------------------------------------------------------
// Each script takes KEYS[1] = {prefix}:active and finds the other keys from its hash tag.
#define CALLGUARD_LUA_LINE_BASE                                                                  \
    "local active = KEYS[1]\n"                                                                   \
    "local base = string.sub(active, 1, -8)\n" /* '{prefix}' of '{prefix}:active' */             \
    "local owners = base .. ':owners'\n"                                                         \
    "local function extend(key, ttl)\n"                                                          \
    CALLGUARD_LUA_KEEP("key", "ttl")                                                             \
    "end\n"

/// KEYS: active. ARGV: call id, cap, slot ttl ms, tenant, tenant cap, waiter ttl ms, max length
/// (-1: only poll, never join; 0: no bound). Returns {state, position, waiting, live,
/// waited ms, tenant limited (0/1)}; state: 0 acquired, 1 admitted, 2 already held, 3 queued,
/// 4 waiting, 5 full, 6 not waiting (the order of `wait_state`).
inline constexpr std::string_view wait_turn = CALLGUARD_LUA_NOW CALLGUARD_LUA_LINE_BASE R"lua(
local id, cap, slot_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tenant, tenant_cap = ARGV[4], tonumber(ARGV[5])
local waiter_ttl, max_length = tonumber(ARGV[6]), tonumber(ARGV[7])
)lua" CALLGUARD_LUA_LIVE_COUNT CALLGUARD_LUA_LINE CALLGUARD_LUA_LINE_WALK R"lua(
local held = redis.call('ZSCORE', active, id)
if held and tonumber(held) > now then
  local ttl, expires = slot_ttl, now + slot_ttl
)lua" CALLGUARD_LUA_PUSH_EXPIRY R"lua(
  forget(id)
  return {2, 0, redis.call('ZCARD', waiting), live, 0, 0}
end
-- Takes a slot for `m` of tenant `t`, as acquire does (an expired slot of `m` is taken afresh,
-- without its old tenant entry; an earlier release of `m` is forgotten).
local function take(m, t)
  local expires = now + slot_ttl
  if held then
    local owner = redis.call('HGET', owners, m)
    if owner then
      redis.call('ZREM', base .. ':tenant:' .. owner, m)
      redis.call('HDEL', owners, m)
    end
  end
  if t ~= '' then
    local tk = base .. ':tenant:' .. t
    redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
    redis.call('ZADD', tk, expires, m)
    extend(tk, slot_ttl)
    redis.call('HSET', owners, m, t)
    extend(owners, slot_ttl)
  end
  redis.call('ZADD', active, expires, m)
  extend(active, slot_ttl)
  local released, previous = base .. ':released:current', base .. ':released:previous'
)lua" CALLGUARD_LUA_FORGET_RELEASE("m") R"lua(
end
local function keep_line()
  extend(waiting, waiter_ttl)
  extend(deadlines, waiter_ttl)
  extend(waiters, waiter_ttl)
end
if redis.call('ZSCORE', waiting, id) then
  local since, _, t = record(redis.call('HGET', waiters, id))
  local verdict = walk(cap - live, id)
  if verdict == 'admit' then
    take(id, t)
    forget(id)
    return {1, 0, redis.call('ZCARD', waiting), live + 1, now - since, 0}
  end
  redis.call('ZADD', deadlines, now + waiter_ttl, id)
  keep_line()
  return {4, redis.call('ZRANK', waiting, id) + 1, redis.call('ZCARD', waiting), live,
          now - since, verdict == 'tenant' and 1 or 0}
end
local n = redis.call('ZCARD', waiting)
if max_length < 0 then return {6, 0, n, live, 0, 0} end
local verdict = walk(cap - live, nil, tenant, tenant_cap)
if verdict == 'admit' then
  take(id, tenant)
  return {0, 0, n, live + 1, 0, 0}
end
if max_length > 0 and n >= max_length then return {5, 0, n, live, 0, 0} end
local last = redis.call('ZRANGE', waiting, -1, -1, 'WITHSCORES')
redis.call('ZADD', waiting, (tonumber(last[2]) or 0) + 1, id)
redis.call('ZADD', deadlines, now + waiter_ttl, id)
redis.call('HSET', waiters, id, string.format('%d|%d|%s', now, tenant_cap, tenant))
keep_line()
return {3, n + 1, n + 1, live, 0, verdict == 'tenant' and 1 or 0}
)lua";

/// KEYS: active. ARGV: call id. Returns {left (0/1), position, waited ms, waiting}.
inline constexpr std::string_view leave_line = CALLGUARD_LUA_NOW CALLGUARD_LUA_LINE_BASE R"lua(
local id = ARGV[1]
)lua" CALLGUARD_LUA_LINE R"lua(
local rank = redis.call('ZRANK', waiting, id)
if not rank then return {0, 0, 0, redis.call('ZCARD', waiting)} end
local since = record(redis.call('HGET', waiters, id))
forget(id)
return {1, rank + 1, now - since, redis.call('ZCARD', waiting)}
)lua";

/// KEYS: active. Returns {waiting, ms the first in line has waited}.
inline constexpr std::string_view line_status = CALLGUARD_LUA_NOW CALLGUARD_LUA_LINE_BASE
    CALLGUARD_LUA_LINE R"lua(
local n = redis.call('ZCARD', waiting)
if n == 0 then return {0, 0} end
local head = redis.call('ZRANGE', waiting, 0, 0)
local since = record(redis.call('HGET', waiters, head[1]))
return {n, now - since}
)lua";

// --- claims ----------------------------------------------------------------------------------

/// KEYS: {prefix}:claim:<key>. ARGV: ttl ms. Takes the key unless it is held; returns
/// {claimed (0/1), ms until the key is free again}. SET PX expires on the server's clock.
inline constexpr std::string_view claim = R"lua(
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return {1, tonumber(ARGV[1])} end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then left = 0 end
return {0, left}
)lua";

#undef CALLGUARD_LUA_LINE_BASE
#undef CALLGUARD_LUA_LINE_WALK
#undef CALLGUARD_LUA_LINE

#undef CALLGUARD_LUA_TENANT_COUNT
#undef CALLGUARD_LUA_DROP_OWNER
#undef CALLGUARD_LUA_FORGET_RELEASE
#undef CALLGUARD_LUA_PUSH_EXPIRY
#undef CALLGUARD_LUA_LIVE_COUNT
#undef CALLGUARD_LUA_ADMISSION_COUNT
#undef CALLGUARD_LUA_FORGET_EXPIRED
#undef CALLGUARD_LUA_KEEP
#undef CALLGUARD_LUA_NOW

} // namespace callguard::detail::lua

namespace callguard::detail {

/// The scripts by name, for the SHA cache and the dispatcher.
enum class script_id : std::size_t {
    acquire, release, refresh, count, cleanup_expired, reinstate,
    wait_turn, leave_line, line_status, // the waiting room
    claim, // the last: script_count follows it
};
inline constexpr std::size_t script_count = static_cast<std::size_t>(script_id::claim) + 1;

constexpr std::string_view script_source(script_id s) noexcept {
    switch (s) {
    case script_id::acquire: return lua::acquire;
    case script_id::release: return lua::release;
    case script_id::refresh: return lua::refresh;
    case script_id::count: return lua::count;
    case script_id::cleanup_expired: return lua::cleanup_expired;
    case script_id::reinstate: return lua::reinstate;
    case script_id::wait_turn: return lua::wait_turn;
    case script_id::leave_line: return lua::leave_line;
    case script_id::line_status: return lua::line_status;
    case script_id::claim: return lua::claim;
    }
    return {};
}

/// Calls of acquire or release that wait to be written at the same moment travel as one script
/// call (channel.hpp): they share its keys and its first `shared_args` arguments and append
/// their own. 0: the script takes one call at a time.
constexpr std::size_t shared_args(script_id s) noexcept {
    switch (s) {
    case script_id::acquire: return 1;  // the key base; then 5 per call
    case script_id::release: return 2;  // the key base, the release memory; then the call id
    default: return 0;
    }
}

} // namespace callguard::detail
