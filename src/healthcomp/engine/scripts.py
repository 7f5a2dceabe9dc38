"""Every Lua script that writes a board, a participation or the days that feed them.

Each script takes only keys of one hash tag: the competition's `{c:C}` or the user's
`{u:U}`, so it runs atomically in a cluster. The competition scripts share `PRELUDE`:

* **Board order.** `lb` holds one member per participant, `<reached ms>:<user>`, scored
  `-score`. Ascending order is rank order: higher score first; within a score the
  earlier tie time (the member's 15-digit prefix) first; then the user id. The tie time
  is the Redis server's clock (`TIME`), made strictly increasing per competition
  (`clock` in `meta`), so "who reached it first" is the order of the writes whichever
  process made them, to the millisecond. It moves only when the score does.
* **Standard competition rank** of a score `s`: `1 + ZCOUNT lb -inf (-s`, one O(log n)
  call: equal scores share a rank, the next rank skips.
* **Versions and events.** Every change to a board increments `meta.ver` and appends
  one event to the `ev` stream with id `<ver>-0`, in the same script: the event id is
  the board version, so a page that says `event_id: 41` reflects exactly events 1..41.
  The same script publishes the event on the channel named like the stream (a shard
  channel, SPUBLISH, on Redis 7 and newer), for the live fan-out (`healthcomp.live`),
  which fills any gap from the stream.
* **Who passed whom.** A score change's event names the participants whose rank it
  changed: those the mover passed (`passed`: their score was at or above its old one
  and is below its new one) or who passed it (`passed_by`: at or above its new score,
  below its old one), at most `PASSED_MAX` each, with each one's rank after and before
  (`passed_ranks`, `passed_by_ranks`: `[rank, previous]`), from which the WebSocket
  sends personal `rank_change` frames. A tie broken by the move is a pass.
* Times written into entries and events (`at`, `u`, `ls`, `j`) are the service's clock
  (`now` from the caller), like every other time the API shows; only the tie order
  uses the server's clock.
"""

from __future__ import annotations

from healthcomp.core.lua import LUA_SPLIT, Lua
from healthcomp.engine import flags
from healthcomp.engine.codes import lua_constants

# Calendar days as numbers (days since 1970-01-01, proleptic Gregorian) and back, for
# the scripts that look at neighbouring days or order the field's values by day.
LUA_DAYS = """
local function day_number(day)
  local y, m, d = tonumber(string.sub(day, 1, 4)), tonumber(string.sub(day, 6, 7)),
                  tonumber(string.sub(day, 9, 10))
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local function day_name(n)
  n = n + 719468
  local era = math.floor(n / 146097)
  local doe = n - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02d', y, m, d)
end
"""

EVENT_BACKLOG = 1000  # events kept per competition (approximate trim, at least this)
PASSED_MAX = 50  # users named in one event's passed / passed_by
MAX_SCORE = 10**12

# The field and the movers (healthcomp.analytics reads both; see docs/ANALYTICS.md).
LUA_FIELD = """
local FIELD, DAY_MS = 1000000, 86400000
-- The field of a day: every counted participant's value of the competition's metric
-- that day, as `dv` member `<day>|<user>` scored day_number * FIELD + value (values
-- above zero only), and the day's total in `agg`. Sets one participant's value from
-- what `dv` holds, so it is right whatever was counted before.
local function field_set(dv, agg, user, day, value)
  local mem = day .. '|' .. user
  local base = day_number(day) * FIELD
  local cur = redis.call('ZSCORE', dv, mem)
  local old = 0
  if cur then old = tonumber(cur) - base end
  if value == old then return end
  redis.call('HINCRBY', agg, day, value - old)
  if value > 0 then redis.call('ZADD', dv, string.format('%d', base + value), mem)
  else redis.call('ZREM', dv, mem) end
end
-- A day's field in `dv`: its size, the index of its first value, the day's base score.
local function field_of(dv, day)
  local base = day_number(day) * FIELD
  local lo = string.format('%d', base + 1)
  return redis.call('ZCOUNT', dv, lo, string.format('%d', base + FIELD - 1)),
         redis.call('ZCOUNT', dv, '-inf', '(' .. lo), base
end
-- The value at quantile q of a day's n values (linear between the two nearest).
local function field_quantile(dv, n, first, base, q)
  local pos = q * (n - 1)
  local i = math.floor(pos)
  local r = redis.call('ZRANGE', dv, first + i, first + i + 1, 'WITHSCORES')
  local a = tonumber(r[2]) - base
  if pos == i then return a end
  return a + (tonumber(r[4]) - base - a) * (pos - i)
end
"""

PRELUDE = (
    lua_constants()
    + f"""
local BACKLOG, PASSED_MAX, MAXS = {EVENT_BACKLOG}, {PASSED_MAX}, {MAX_SCORE}
local function fmt(x) return string.format('%d', x) end
local function tick(meta)
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('HGET', meta, 'clock') or '0')
  if ms <= last then ms = last + 1 end
  redis.call('HSET', meta, 'clock', fmt(ms))
  return ms
end
local function member(r, user) return string.format('%015d', r) .. ':' .. user end
local function user_of(m) return string.sub(m, 17) end
local function rank_of(lb, score)
  return redis.call('ZCOUNT', lb, '-inf', '(' .. fmt(-score)) + 1
end
local function parse_day(raw)
  local p = {{}}
  for x in string.gmatch(raw, '[^,]+') do p[#p + 1] = tonumber(x) end
  return p[1], {{p[2], p[3], p[4], p[5]}}
end
local function day_value(ver, v)
  return ver .. ',' .. v[1] .. ',' .. v[2] .. ',' .. v[3] .. ',' .. v[4]
end
local function offsets(adj, user)
  local off = {{0, 0, 0, 0, 0}}
  local raw = redis.call('HGET', adj, user)
  if raw then
    local o = cjson.decode(raw)
    for k = 1, 5 do off[k] = o[k] or 0 end
  end
  return off
end
local function score_of(e, off, mi, goal)
  local s
  if goal then s = e.g + off[5] else s = e.t[mi] + off[mi] end
  if s < 0 then s = 0 elseif s > MAXS then s = MAXS end
  return s
end
-- The users at board indexes a..b (bounded) and their {{rank, previous rank}}: those
-- whose rank the move of a participant changed, each by one (`up`: the mover passed
-- them, they drop one; else they gain one). The indexes are contiguous, so one ZCOUNT
-- ranks the first; each next one shares the rank of an equal score or takes its
-- index + 1.
local function users_between(lb, a, b, up)
  local users, ranks = {{}}, {{}}
  if b < a then return users, ranks end
  if b - a >= PASSED_MAX then b = a + PASSED_MAX - 1 end
  local rows = redis.call('ZRANGE', lb, a, b, 'WITHSCORES')
  local rank, last = 0, nil
  for i = 1, #rows, 2 do
    local z = tonumber(rows[i + 1])
    if last == nil then rank = redis.call('ZCOUNT', lb, '-inf', '(' .. rows[i + 1]) + 1
    elseif z ~= last then rank = a + (i - 1) / 2 + 1 end
    last = z
    users[#users + 1] = user_of(rows[i])
    if up then ranks[#ranks + 1] = {{rank, rank - 1}} else ranks[#ranks + 1] = {{rank, rank + 1}} end
  end
  return users, ranks
end
-- Puts the entry on the board at its score. The tie time moves only with the score.
-- Returns, for the event, whom the move passed (their score was at or above the old
-- one and is below the new: each one's rank grows by one) or who passed the mover
-- (their score is at or above the new one and below the old: each gains one), at
-- most PASSED_MAX each, with their ranks after and before. A tie broken this way is
-- a pass; the order of equal scores alone is not.
local function place(meta, lb, user, e, prev_sc)
  local old = false
  if e.m then
    if e.sc == prev_sc then return {{}}, {{}}, {{}}, {{}} end
    old = true
    redis.call('ZREM', lb, e.m)
  end
  e.r = tick(meta)
  e.m = member(e.r, user)
  redis.call('ZADD', lb, fmt(-e.sc), e.m)
  if not old then return {{}}, {{}}, {{}}, {{}} end
  local idx = redis.call('ZRANK', lb, e.m)
  if e.sc > prev_sc then
    local last = redis.call('ZCOUNT', lb, '-inf', fmt(-prev_sc)) - 1
    local users, ranks = users_between(lb, idx + 1, last, true)
    return users, ranks, {{}}, {{}}
  end
  local first = redis.call('ZCOUNT', lb, '-inf', fmt(-prev_sc))
  local users, ranks = users_between(lb, first, idx - 1, false)
  return {{}}, {{}}, users, ranks
end
-- The competition's fields (`state` first, then those named), or nil and the reply
-- code saying why it takes no change (unknown, or cancelled/finalized).
local function open_meta(meta, ...)
  local m = redis.call('HMGET', meta, 'state', ...)
  if not m[1] then return nil, NO_COMPETITION end
  if m[1] ~= 'open' then return nil, CLOSED end
  return m
end
-- `fees` in meta: the entry fees the active participations owe, kept by join and leave
-- (a competition from before it has none until `PAYOUT_INPUTS` counts them once).
local function add_fee(meta, cents)
  if cents ~= 0 and redis.call('HEXISTS', meta, 'fees') == 1 then
    redis.call('HINCRBY', meta, 'fees', cents)
  end
end
local function emit(meta, ev, event)
  local ver = redis.call('HINCRBY', meta, 'ver', 1)
  event.event_id = ver
  redis.call('HSET', meta, 'updated_ms', fmt(event.at))
  local data = cjson.encode(event)
  redis.call('XADD', ev, 'MAXLEN', '~', BACKLOG, ver .. '-0', 'e', data)
  -- Live fan-out (healthcomp.live): the stream's own name is the channel; a shard
  -- channel on Redis 7 and newer (REDIS_VERSION_NUM is new in 7.0).
  if redis.REDIS_VERSION_NUM then redis.call('SPUBLISH', ev, data)
  else redis.call('PUBLISH', ev, data) end
  return ver
end
local HOUR = 3600000
-- Movers: `mv` keeps, per participant, the score at the start of each hour of the last
-- day in which it changed (`<hour>:<score>,…`, oldest first); the first change in an
-- hour records the score it changes from.
-- The entry keeps the hour of its last checkpoint (`h`), so later changes in the same
-- hour cost nothing.
local function checkpoint(mv, user, e, prev_sc, now)
  local h = math.floor(now / HOUR)
  if e.h == h then return end
  e.h = h
  local raw = redis.call('HGET', mv, user)
  local out = {{}}
  if raw then
    local last
    for hh, sc in string.gmatch(raw, '(%d+):(%d+)') do
      last = tonumber(hh)
      if last >= h - 24 then out[#out + 1] = hh .. ':' .. sc end
    end
    if last == h then return end
  end
  out[#out + 1] = string.format('%d:%d', h, prev_sc)
  redis.call('HSET', mv, user, table.concat(out, ','))
end
-- Stores a participant's changed entry, re-ranks it and emits the event; answers the
-- rank, the previous rank and the event id.
-- K: meta, lb, entry, names, ev (every participant script's first five keys); mv (the
-- movers' checkpoints) or nil. prev_sc is nil for a new entry.
-- A disqualified entry keeps counting, off the board and without events (rank false);
-- a changed score loses its tie time.
local function commit(K, cid, user, e, prev_sc, kind, now, mv)
  if e.dq then
    if e.sc ~= prev_sc then e.m = false end
    redis.call('HSET', K[3], user, cjson.encode(e))
    redis.call('HINCRBY', K[1], 'quiet', 1)
    return false, false, tonumber(redis.call('HGET', K[1], 'ver') or '0')
  end
  if mv and prev_sc ~= nil and e.sc ~= prev_sc then checkpoint(mv, user, e, prev_sc, now) end
  local prev_rank = cjson.null
  if prev_sc ~= nil and e.m and redis.call('ZSCORE', K[2], e.m) then
    prev_rank = rank_of(K[2], prev_sc)
  end
  local passed, passed_ranks, passed_by, passed_by_ranks = place(K[1], K[2], user, e, prev_sc)
  redis.call('HSET', K[3], user, cjson.encode(e))
  local rank = rank_of(K[2], e.sc)
  local ver = emit(K[1], K[5], {{type = kind, competition_id = cid, user_id = user,
    user_name = redis.call('HGET', K[4], user) or user, score = e.sc,
    previous_score = prev_sc or cjson.null, rank = rank, previous_rank = prev_rank,
    passed = passed, passed_by = passed_by, passed_ranks = passed_ranks,
    passed_by_ranks = passed_by_ranks, at = now}})
  return rank, prev_rank, ver
end
"""
)

# The scripts that keep the field, the flags and the reviews (not the reads and the
# other writes: every helper defined is work done on every call).
FAIR_PRELUDE = (
    PRELUDE
    + LUA_DAYS
    + flags.lua()
    + LUA_FIELD
    + """
-- Counts a stored day of the participant into (sign 1) or out of (sign -1) the entry's
-- totals, goal days and sum of squares (`q`, for projections) and the field.
local function count_day(pdays, dv, agg, user, e, day, sign, mi, goal, target)
  local raw = redis.call('HGET', pdays, day)
  if not raw then return end
  local _, v = parse_day(raw)
  for k = 1, 4 do e.t[k] = e.t[k] + sign * v[k] end
  e.q = (e.q or 0) + sign * v[mi] * v[mi]
  if goal and v[mi] >= target then e.g = e.g + sign end
  if not e.dq then field_set(dv, agg, user, day, sign > 0 and v[mi] or 0) end
end
-- The flags a changed day raises in this competition (a table kind -> detail, or nil):
-- the user side's (bits, typical) that concern its metric, and those that need the
-- competition: far above the day's field, raised after the end, or a day before the
-- join first counted after it near the cap. o, v: the day's values before and now.
local function day_flags(dv, user, day, o, v, mi, bits, typical, e, synced, now, ends)
  local kinds, any = {}, false
  local x, before, metric = v[mi], o[mi], METRICS[mi]
  if bit.band(bits, 2 ^ (mi - 1)) ~= 0 then
    kinds.own_history = {metric = metric, value = x, typical = typical}
    any = true
  end
  if mi <= 2 and bit.band(bits, STRIDE_BIT) ~= 0 then
    kinds.stride = {steps = v[1], distance = v[2]}
    any = true
  end
  if mi <= 2 and bit.band(bits, MINUTES_BIT) ~= 0 then
    kinds.no_active_minutes = {steps = v[1], distance = v[2], active_minutes = v[4]}
    any = true
  end
  -- Far above the field, unless it is this user's usual (a heavy walker every day).
  if x > before and x >= FLOORS[mi] and not (typical > 0 and x < OWN_RATIO * typical) then
    local n, first, base = field_of(dv, day)
    if n >= FIELD_MIN then
      local q1 = field_quantile(dv, n, first, base, 0.25)
      local med = field_quantile(dv, n, first, base, 0.5)
      local q3 = field_quantile(dv, n, first, base, 0.75)
      if x > med + FIELD_Z * (q3 - q1) / 1.349 and x >= FIELD_RATIO * med then
        kinds.field_outlier = {metric = metric, value = x, field_median = med,
                               field_size = n}
        any = true
      end
    end
  end
  -- Stored after the end (a day stored before it may arrive here later, through the
  -- sweep), raised to at least the floor: a last day's ordinary total synced the next
  -- morning is not a late raise.
  if synced > ends and x >= FLOORS[mi]
      and x - before >= math.max(LATE_MIN[mi], LATE_RATIO * before) then
    kinds.late_raise = {metric = metric, value = x, before = before}
    any = true
  end
  local joined = e.j or 0
  if synced > joined and x >= NEAR_CAP * CAPS[mi] and before < NEAR_CAP * CAPS[mi]
      and day < day_name(math.floor((joined - 12 * HOUR) / DAY_MS)) then
    kinds.late_backfill = {metric = metric, value = x, joined_ms = joined}
    any = true
  end
  if any then return kinds end
  return nil
end
-- Flags (`fl`: id -> JSON; `fk`: `<user>|<day>` -> id): one per participant and day,
-- gathering every kind found for it. A dismissed flag opens again when the day rises
-- above the value it was dismissed at; an excluded one stays excluded.
local function flag_day(meta, fl, fk, user, day, kinds, value, now)
  local key = user .. '|' .. day
  local id = redis.call('HGET', fk, key)
  local f
  if id then
    f = cjson.decode(redis.call('HGET', fl, id))
  else
    id = tostring(redis.call('HINCRBY', meta, 'flag_seq', 1))
    redis.call('HSET', fk, key, id)
    f = {id = id, user_id = user, day = day, state = 'open', kinds = {}, created_ms = now,
         reviews = 0}
  end
  for name, detail in pairs(kinds) do f.kinds[name] = detail end
  if f.state == 'dismissed' and value > (f.reviewed_value or 0) then f.state = 'open' end
  f.value, f.updated_ms = value, now
  redis.call('HSET', fl, id, cjson.encode(f))
  redis.call('HINCRBY', meta, 'quiet', 1)
end
"""
)

# --- competition slot ----------------------------------------------------------------

# KEYS: meta; ARGV: field/value pairs -> {OK} or {EXISTS}
CREATE = Lua(
    "engine.create",
    PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {EXISTS} end
redis.call('HSET', KEYS[1], 'state', 'open', 'ver', '0', 'rules', '1', 'fees', '0',
           unpack(ARGV))
return {OK}
""",
)

# KEYS: meta, entry, rc, rcl, rcd, ev, dv, agg
# ARGV: cid, expected doc, recount ('1'|'0'), max_participants (0 = none), now, pairs...
# -> {OK, rules, participants to recount} | {NO_COMPETITION} | {CLOSED} | {STALE}
#    | {TOO_MANY, participants}
# The participant count and the new maximum are compared here, atomically with the
# write, so a maximum holds under concurrent joins. A rule change snapshots the
# participants into `rcl` and (re)starts the recount job from zero, and empties the
# days' field (`dv` and the day totals in `agg`), which each recount step fills again.
UPDATE = Lua(
    "engine.update",
    PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'doc')
if not m then return {err} end
if m[2] ~= ARGV[2] then return {STALE} end
local count = redis.call('HLEN', KEYS[2])
local maxp = tonumber(ARGV[4])
if maxp > 0 and count > maxp then return {TOO_MANY, count} end
local now = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
if ARGV[3] ~= '1' then return {OK, 0, 0} end
local rules = redis.call('HINCRBY', KEYS[1], 'rules', 1)
redis.call('DEL', KEYS[4], KEYS[5], KEYS[7])
for _, f in ipairs(redis.call('HKEYS', KEYS[8])) do
  local c = string.sub(f, 1, 1)
  if c ~= '+' and c ~= '-' then redis.call('HDEL', KEYS[8], f) end
end
local users = redis.call('HKEYS', KEYS[2])
for i = 1, #users, 1000 do
  redis.call('RPUSH', KEYS[4], unpack(users, i, math.min(i + 999, #users)))
end
redis.call('HSET', KEYS[3], 'state', 'running', 'rules', rules, 'done', 0, 'total', #users,
           'cursor', 0, 'started_ms', fmt(now), 'lease', '')
if #users == 0 then redis.call('HSET', KEYS[3], 'state', 'done', 'finished_ms', fmt(now)) end
emit(KEYS[1], KEYS[6], {type = 'rules', competition_id = ARGV[1], at = now, recount = #users})
return {OK, rules, #users}
""",
)

# KEYS: meta, lb, entry, names, ev, parts, adj, agg
# ARGV: cid, user, now, display name
# -> {OK, count, start, end, deadline, rules, event_id} | {ALREADY_JOINED, count, start,
#    end, deadline, rules} | {NO_COMPETITION} | {CLOSED} | {ENDED} | {FULL}
# The window comes back with the answer so the back-fill uses the rules in force at
# the join, whatever edit raced it. A join counts in `agg` (`+<UTC day>`); a
# participant disqualified before leaving comes back disqualified.
JOIN = Lua(
    "engine.join",
    FAIR_PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'ends_ms', 'max_participants', 'metric_idx',
                           'format', 'start_date', 'end_date', 'deadline_ms', 'fee', 'rules')
if not m then return {err} end
local cid, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[3], user) == 1 then
  return {ALREADY_JOINED, redis.call('HLEN', KEYS[3]), m[6], m[7], m[8], m[10]}
end
if now >= tonumber(m[2]) then return {ENDED} end
local maxp = tonumber(m[3])
if maxp > 0 and redis.call('HLEN', KEYS[3]) >= maxp then return {FULL} end
local e = {t = {0, 0, 0, 0}, g = 0, q = 0, sc = 0, ls = 0, u = now, j = now}
e.sc = score_of(e, offsets(KEYS[7], user), tonumber(m[4]) + 1, m[5] == 'goal')
redis.call('HSET', KEYS[4], user, ARGV[4])
local p = {}
local praw = redis.call('HGET', KEYS[6], user)
if praw then p = cjson.decode(praw) end
if p.disqualified then e.dq = true end
redis.call('HINCRBY', KEYS[8], '+' .. day_name(math.floor(now / DAY_MS)), 1)
p.state, p.joined_at, p.left_at = 'active', now, cjson.null
p.joins = (p.joins or 0) + 1
p.fee_cents = tonumber(m[9] or '0')
redis.call('HSET', KEYS[6], user, cjson.encode(p))
add_fee(KEYS[1], p.fee_cents)
local _, _, ver = commit(KEYS, cid, user, e, nil,
                         'join', now)
return {OK, redis.call('HLEN', KEYS[3]), m[6], m[7], m[8], m[10], ver}
""",
)

# KEYS: meta, lb, entry, names, ev, pdays, parts, dv, agg, mv
# ARGV: cid, user, now -> {OK, count, event_id} | {NO_COMPETITION} | {CLOSED} | {ENDED}
#    | {NOT_PARTICIPANT}
# The board entry and the counted days go (out of the field too); the participation
# record (with its fee and any disqualification), the adjustments of trusted writes and
# the excluded days stay. A leave counts in `agg` (`-<UTC day>`).
LEAVE = Lua(
    "engine.leave",
    FAIR_PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'ends_ms')
if not m then return {err} end
local cid, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if now >= tonumber(m[2]) then return {ENDED} end
local raw = redis.call('HGET', KEYS[3], user)
if not raw then return {NOT_PARTICIPANT} end
local e = cjson.decode(raw)
local prev_rank = cjson.null
if e.m and redis.call('ZSCORE', KEYS[2], e.m) then
  prev_rank = rank_of(KEYS[2], e.sc)
  redis.call('ZREM', KEYS[2], e.m)
end
local name = redis.call('HGET', KEYS[4], user) or user
if not e.dq then
  for _, day in ipairs(redis.call('HKEYS', KEYS[6])) do
    field_set(KEYS[8], KEYS[9], user, day, 0)
  end
end
redis.call('HINCRBY', KEYS[9], '-' .. day_name(math.floor(now / DAY_MS)), 1)
redis.call('HDEL', KEYS[3], user)
redis.call('HDEL', KEYS[4], user)
redis.call('HDEL', KEYS[10], user)
redis.call('DEL', KEYS[6])
local p = {}
local praw = redis.call('HGET', KEYS[7], user)
if praw then p = cjson.decode(praw) end
if p.state == 'active' then add_fee(KEYS[1], -(p.fee_cents or 0)) end
p.state, p.left_at = 'left', now
redis.call('HSET', KEYS[7], user, cjson.encode(p))
local ver = emit(KEYS[1], KEYS[5], {type = 'leave', competition_id = cid, user_id = user,
  user_name = name, score = cjson.null, previous_score = e.sc, rank = cjson.null,
  previous_rank = prev_rank, passed = {}, passed_by = {}, at = now})
return {OK, redis.call('HLEN', KEYS[3]), ver}
""",
)

# KEYS: meta, lb, entry, names, ev, pdays, adj, dv, agg, mv, x, fl, fk
# ARGV: cid, user, now, n, then n x (day, ver, steps, distance, calories, active_minutes,
#       synced_ms, flag bits, typical steps, distance, calories, active_minutes)
# -> {OK, score, rank, previous_rank, event_id, changed} | {NO_COMPETITION} | {CLOSED}
#    | {NOT_PARTICIPANT}  (rank and previous_rank are nil for a disqualified entry)
# Re-checks everything the user's side chose from a possibly stale record: open state,
# membership, window, and that the day was stored (synced_ms) before the deadline. A
# day applies only when its version is newer than the one counted, so replays and late
# arrivals of older versions change nothing. Each day applied is checked for flags
# (`day_flags`); an excluded day (in `x`) is kept but not counted.
APPLY = Lua(
    "engine.apply",
    FAIR_PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'start_date', 'end_date', 'deadline_ms',
                           'metric_idx', 'format', 'daily_target', 'ends_ms', 'excluded')
if not m then return {err} end
local cid, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('HGET', KEYS[3], user)
if not raw then return {NOT_PARTICIPANT} end
local e = cjson.decode(raw)
local deadline, mi = tonumber(m[4]), tonumber(m[5]) + 1
local goal, target, ends = m[6] == 'goal', tonumber(m[7]), tonumber(m[8])
local any_excluded = tonumber(m[9] or '0') > 0
local changed, moved = false, false
for i = 0, tonumber(ARGV[4]) - 1 do
  local b = 5 + i * 12
  local day, ver, synced = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 6])
  if day >= m[2] and day <= m[3] and synced <= deadline then
    local old = redis.call('HGET', KEYS[6], day)
    local ov, o = 0, {0, 0, 0, 0}
    if old then ov, o = parse_day(old) end
    if ver > ov then
      local v = {tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
                 tonumber(ARGV[b + 5])}
      redis.call('HSET', KEYS[6], day, day_value(ver, v))
      local kinds = day_flags(KEYS[8], user, day, o, v, mi, tonumber(ARGV[b + 7]),
                              tonumber(ARGV[b + 7 + mi]), e, synced, now, ends)
      if kinds then flag_day(KEYS[1], KEYS[12], KEYS[13], user, day, kinds, v[mi], now) end
      if not (any_excluded and redis.call('SISMEMBER', KEYS[11], user .. '|' .. day) == 1) then
        for k = 1, 4 do e.t[k] = e.t[k] + v[k] - o[k] end
        e.q = (e.q or 0) + v[mi] * v[mi] - o[mi] * o[mi]
        if goal then
          local met_new = (v[mi] >= target) and 1 or 0
          local met_old = (old and o[mi] >= target) and 1 or 0
          e.g = e.g + met_new - met_old
        end
        if not e.dq then field_set(KEYS[8], KEYS[9], user, day, v[mi]) end
        moved = true
      end
      changed = true
    end
  end
end
if not moved then
  local rank = false
  if not e.dq then rank = rank_of(KEYS[2], e.sc) end
  return {OK, e.sc, rank, rank, tonumber(redis.call('HGET', KEYS[1], 'ver') or '0'),
          changed and 1 or 0}
end
local prev_sc = e.sc
e.sc = score_of(e, offsets(KEYS[7], user), mi, goal)
e.ls, e.u = now, now
local rank, prev_rank, ver = commit(KEYS, cid, user, e, prev_sc, 'sync', now, KEYS[10])
return {OK, e.sc, rank, prev_rank, ver, 1}
""",
)

# KEYS: meta, lb, entry, names, ev, adj, audit, mv
# ARGV: cid, user, now, actor, is_service ('1'|'0'), reason,
#       then 5 x (given '1'|'0', value) for steps, distance, calories, active_minutes,
#       goal_days
# -> {OK, score, rank, previous_rank, before_json, after_json, event_id}
#    | {NO_COMPETITION} | {CLOSED} | {NOT_PARTICIPANT} | {SERVICE_ONLY} | {PAST_DEADLINE}
#    | {DISQUALIFIED}
# An adjustment is an offset over the activity totals (and goal days), so later syncs
# count on top of it; it belongs to the participation and survives leave and rejoin.
SET_TOTALS = Lua(
    "engine.set_totals",
    PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'metric_idx', 'format', 'deadline_ms', 'money')
if not m then return {err} end
local cid, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('HGET', KEYS[3], user)
if not raw then return {NOT_PARTICIPANT} end
if ARGV[5] ~= '1' then
  if m[5] == '1' then return {SERVICE_ONLY} end
  if now > tonumber(m[4]) then return {PAST_DEADLINE} end
end
local e = cjson.decode(raw)
if e.dq then return {DISQUALIFIED} end
local mi, goal = tonumber(m[2]) + 1, m[3] == 'goal'
local off = offsets(KEYS[6], user)
local base = {e.t[1], e.t[2], e.t[3], e.t[4], e.g}
local before, after = {}, {}
for k = 1, 5 do
  before[k] = math.max(0, base[k] + off[k])
  if ARGV[5 + 2 * k] == '1' then off[k] = tonumber(ARGV[6 + 2 * k]) - base[k] end
  after[k] = math.max(0, base[k] + off[k])
end
redis.call('HSET', KEYS[6], user, cjson.encode(off))
local prev_sc = e.sc
e.sc = score_of(e, off, mi, goal)
e.u = now
local rank, prev_rank, ver = commit(KEYS, cid, user, e, prev_sc, 'write', now, KEYS[8])
redis.call('RPUSH', KEYS[7], cjson.encode({at = now, by = ARGV[4], action = 'set_totals',
  user_id = user, reason = ARGV[6], before = before, after = after, score_before = prev_sc,
  score_after = e.sc, event_id = ver}))
return {OK, e.sc, rank, prev_rank, cjson.encode(before), cjson.encode(after), ver}
""",
)

# KEYS: meta, audit, ev, parts, ledger, outbox
# ARGV: cid, actor, is_service, now, reason, now as RFC 3339
# -> {OK, event_id, refunds, refunded cents, currency} | {NO_COMPETITION} | {CLOSED} | {ENDED}
# An organizer cancels before the end; the service role until finalization. With the
# cancel, all at once: every entry fee an active participation owes goes back, as a
# ledger of refunds and their outbox entries (as a distribution's; engine.finalize).
CANCEL = Lua(
    "engine.cancel",
    PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'ends_ms', 'doc')
if not m then return {err} end
local cid, now = ARGV[1], tonumber(ARGV[4])
if ARGV[3] ~= '1' and now >= tonumber(m[2]) then return {ENDED} end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancelled_ms', fmt(now))
local ver = emit(KEYS[1], KEYS[3], {type = 'cancelled', competition_id = cid, at = now})
redis.call('RPUSH', KEYS[2], cjson.encode({at = now, by = ARGV[2], action = 'cancel',
  reason = ARGV[5], event_id = ver}))
local doc = cjson.decode(m[3])
local currency = doc.currency or 'USD'
local total, refunds, active, all = 0, 0, 0, redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  local p = cjson.decode(all[i + 1])
  if p.state == 'active' then
    active = active + 1
    local fee = p.fee_cents or 0
    if fee > 0 then
      total = total + fee
      refunds = refunds + 1
      -- The id as model.payout_id makes it.
      local line = cjson.encode({id = cid .. ':refund:' .. all[i], kind = 'refund',
        user_id = all[i], user_name = cjson.null, rank = cjson.null, places = cjson.null,
        amount_cents = fee, currency = currency, reason = 'cancelled', status = 'pending'})
      redis.call('HSET', KEYS[5], cid .. ':refund:' .. all[i], line)
      redis.call('XADD', KEYS[6], '*', 'p', line)
    end
  end
end
local payout = doc.payout or {}
redis.call('HSET', KEYS[5], 'summary', cjson.encode({competition_id = cid,
  currency = currency, pool_cents = 0, prize_pool_cents = doc.prize_pool_cents or 0,
  entry_fees_cents = total, rake_cents = 0, scheme = payout.scheme or 'top_n',
  percentages = payout.percentages or cjson.null, participants = active,
  outcome = 'refunds', refund_reason = 'cancelled', event_id = ver,
  finalized_at = ARGV[6]}))
return {OK, ver, refunds, total, currency}
""",
)

# KEYS: meta, lb, entry, names, ev; ARGV: cid, user, name, now
# -> {OK, changed} | {NOT_PARTICIPANT}
RENAME = Lua(
    "engine.rename",
    PRELUDE
    + """
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then return {NOT_PARTICIPANT} end
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[3] then return {OK, 0} end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
emit(KEYS[1], KEYS[5], {type = 'rename', competition_id = ARGV[1], user_id = ARGV[2],
  user_name = ARGV[3], at = tonumber(ARGV[4])})
return {OK, 1}
""",
)

# KEYS: meta, lb, entry, names, ev, pdays, adj, rc, rcd, dv, agg, mv, x
# ARGV: cid, user, now, rules, n, then n x (day, ver, steps, distance, calories, minutes)
# -> {OK, changed} | {STALE} (the job was superseded by a newer rule change)
# One participant of a recount, atomically: the counted days are those of the new
# window, each at the newest version known (a sync that landed meanwhile is kept), and
# every total is summed again from them (excluded days kept, not counted); the
# participant's days go into the field the rule change emptied. Counting the same participant twice (a resumed
# job) changes nothing.
RECOUNT_STEP = Lua(
    "engine.recount_step",
    FAIR_PRELUDE
    + """
local job = redis.call('HMGET', KEYS[8], 'state', 'rules')
if job[1] ~= 'running' or job[2] ~= ARGV[4] then return {STALE} end
local cid, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function done_one()
  if redis.call('SADD', KEYS[9], user) == 1 then
    local done = redis.call('HINCRBY', KEYS[8], 'done', 1)
    if done >= tonumber(redis.call('HGET', KEYS[8], 'total')) then
      redis.call('HSET', KEYS[8], 'state', 'done', 'finished_ms', fmt(now))
      redis.call('DEL', KEYS[9])
      emit(KEYS[1], KEYS[5], {type = 'recounted', competition_id = cid, at = now})
    end
  end
end
local m = redis.call('HMGET', KEYS[1], 'state', 'start_date', 'end_date', 'metric_idx',
                     'format', 'daily_target')
local raw = redis.call('HGET', KEYS[3], user)
if not raw or m[1] ~= 'open' then
  done_one()
  return {OK, 0}
end
local days = {}
local flat = redis.call('HGETALL', KEYS[6])
for i = 1, #flat, 2 do
  if flat[i] >= m[2] and flat[i] <= m[3] then
    local ov, o = parse_day(flat[i + 1])
    days[flat[i]] = {ov, o}
  end
end
for i = 0, tonumber(ARGV[5]) - 1 do
  local b = 6 + i * 6
  local day, ver = ARGV[b], tonumber(ARGV[b + 1])
  if day >= m[2] and day <= m[3] and (not days[day] or ver > days[day][1]) then
    days[day] = {ver, {tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
                       tonumber(ARGV[b + 5])}}
  end
end
redis.call('DEL', KEYS[6])
local mi, goal, target = tonumber(m[4]) + 1, m[5] == 'goal', tonumber(m[6])
local e = cjson.decode(raw)
local t, g, q = {0, 0, 0, 0}, 0, 0
for day, d in pairs(days) do
  redis.call('HSET', KEYS[6], day, day_value(d[1], d[2]))
  if redis.call('SISMEMBER', KEYS[13], user .. '|' .. day) == 0 then
    for k = 1, 4 do t[k] = t[k] + d[2][k] end
    q = q + d[2][mi] * d[2][mi]
    if goal and d[2][mi] >= target then g = g + 1 end
    if not e.dq then field_set(KEYS[10], KEYS[11], user, day, d[2][mi]) end
  end
end
local prev_sc = e.sc
local same = g == e.g and q == e.q
for k = 1, 4 do same = same and t[k] == e.t[k] end
e.t, e.g, e.q = t, g, q
e.sc = score_of(e, offsets(KEYS[7], user), mi, goal)
local changed = 0
if not same or e.sc ~= prev_sc then
  e.u = now
  commit(KEYS, cid, user, e, prev_sc, 'recount', now, KEYS[12])
  changed = 1
end
done_one()
return {OK, changed}
""",
)

# KEYS: rc, meta; ARGV: owner, lease_ms
# -> {OK, rules, cursor, total, start, end, deadline_ms} | {STALE} (no running job, or
#    another process holds its lease)
# Takes (or renews) the lease of a running recount job, so one process runs it, and
# answers the window of the rules it recounts to.
RECOUNT_LEASE = Lua(
    "engine.recount_lease",
    PRELUDE
    + """
local job = redis.call('HMGET', KEYS[1], 'state', 'rules', 'cursor', 'total', 'lease')
if job[1] ~= 'running' then return {STALE} end
local m = redis.call('HMGET', KEYS[2], 'rules', 'start_date', 'end_date', 'deadline_ms')
if m[1] ~= job[2] then return {STALE} end
-- the server's clock: leases must expire even where the service's clock stands still
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner, until_ms = string.match(job[5] or '', '^(.*)@(%d+)$')
if owner and owner ~= ARGV[1] and tonumber(until_ms) > now then return {STALE} end
redis.call('HSET', KEYS[1], 'lease', ARGV[1] .. '@' .. fmt(now + tonumber(ARGV[2])))
return {OK, tonumber(job[2]), tonumber(job[3]), tonumber(job[4]), m[2], m[3], m[4]}
""",
)

# KEYS: rc; ARGV: rules, cursor -> {OK} when the job is still that one
RECOUNT_CURSOR = Lua(
    "engine.recount_cursor",
    PRELUDE
    + """
if redis.call('HGET', KEYS[1], 'rules') ~= ARGV[1] then return {STALE} end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2])
return {OK}
""",
)

# KEYS: meta, lb, entry, names, adj, rc
# ARGV: mode ('offset' | 'around'), offset, limit, around user, caller ('' for the
#       service role), is_service, members_only
# -> {OK, total, start, event_id, updated_ms, recount_state, recount_done, recount_total,
#     n, caller is a participant (1|0), n x (user, score, rank, entry, name, adj),
#     caller_found, [the caller's row]}
#    | {NO_COMPETITION} | {NOT_VISIBLE} (private, caller not in it) | {NOT_PARTICIPANT}
#    (public, but this view is for participants) | {NOT_RANKED} (around: not on board)
PAGE = Lua(
    "engine.page",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'visibility', 'organizer', 'ver', 'updated_ms')
if not m[1] then return {NO_COMPETITION} end
local caller, service, members_only = ARGV[5], ARGV[6] == '1', ARGV[7] == '1'
local caller_entry = false
if caller ~= '' then caller_entry = redis.call('HGET', KEYS[3], caller) end
if not (service or caller_entry or (caller ~= '' and caller == m[3])) then
  if m[2] == 'public' then
    if members_only then return {NOT_PARTICIPANT} end
  else
    return {NOT_VISIBLE}
  end
end
local total = redis.call('ZCARD', KEYS[2])
local limit, start = tonumber(ARGV[3]), tonumber(ARGV[2])
if ARGV[1] == 'around' then
  local raw = redis.call('HGET', KEYS[3], ARGV[4])
  local pos = false
  -- A disqualified entry whose score moved has no place (m = false): not ranked.
  local placed = raw and cjson.decode(raw).m
  if type(placed) == 'string' then pos = redis.call('ZRANK', KEYS[2], placed) end
  if not pos then return {NOT_RANKED} end
  start = pos - math.floor(limit / 2)
  if start + limit > total then start = total - limit end
  if start < 0 then start = 0 end
end
local rc = redis.call('HMGET', KEYS[6], 'state', 'done', 'total')
local out = {OK, total, start, tonumber(m[4] or '0'), m[5] or false, rc[1] or false,
             tonumber(rc[2] or '0'), tonumber(rc[3] or '0'), 0, caller_entry and 1 or 0}
local ids = redis.call('ZRANGE', KEYS[2], start, start + limit - 1, 'WITHSCORES')
local users, scores, ranks = {}, {}, {}
local rank, prev = 0, nil
for i = 1, #ids, 2 do
  local n = #users
  local score = -tonumber(ids[i + 1])
  if prev == nil then rank = rank_of(KEYS[2], score)
  elseif score ~= prev then rank = start + n + 1 end
  prev = score
  users[n + 1], scores[n + 1], ranks[n + 1] = user_of(ids[i]), score, rank
end
out[9] = #users
if #users > 0 then
  local es = redis.call('HMGET', KEYS[3], unpack(users))
  local ns = redis.call('HMGET', KEYS[4], unpack(users))
  local as = redis.call('HMGET', KEYS[5], unpack(users))
  for i = 1, #users do
    out[#out + 1] = users[i]
    out[#out + 1] = scores[i]
    out[#out + 1] = ranks[i]
    out[#out + 1] = es[i] or false
    out[#out + 1] = ns[i] or false
    out[#out + 1] = as[i] or false
  end
end
local found = false
if caller_entry then
  local e = cjson.decode(caller_entry)
  if e.m and redis.call('ZSCORE', KEYS[2], e.m) then found = e end
end
if found then
  out[#out + 1] = 1
  out[#out + 1] = caller
  out[#out + 1] = found.sc
  out[#out + 1] = rank_of(KEYS[2], found.sc)
  out[#out + 1] = caller_entry
  out[#out + 1] = redis.call('HGET', KEYS[4], caller) or false
  out[#out + 1] = redis.call('HGET', KEYS[5], caller) or false
else
  out[#out + 1] = 0
end
return out
""",
)

# KEYS: meta, rc -> {OK, ver, visibility, organizer, updated_ms, recount state}
#    | {NO_COMPETITION}
# What a cached page is validated against: the board version (every change to an entry,
# a name or the membership bumps it) and the access fields an edit may change without
# bumping it. One small read, shared by the concurrent requests for a board.
BOARD_STATE = Lua(
    "engine.board_state",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'ver', 'visibility', 'organizer', 'updated_ms')
if not m[1] then return {NO_COMPETITION} end
return {OK, tonumber(m[2] or '0'), m[3] or 'private', m[4] or '', m[5] or false,
        redis.call('HGET', KEYS[2], 'state') or false}
""",
)

# KEYS: meta, ev, ledger, outbox
# ARGV: cid, expected version, now, summary JSON, outcome, pool, n, n x (id, line JSON,
#       '1' to put it in the outbox | '0')
# -> {OK, event_id} | {NO_COMPETITION} | {CLOSED, state} | {STALE}
# The finalization, all or nothing in the competition's slot: the ledger, the outbox
# of the payouts to make, the state `finalized` (no script changes the board after it),
# and the board's last event. Only from the version the ledger was computed at; a
# change since (a trusted write) is STALE and the caller computes again.
FINALIZE = Lua(
    "engine.finalize",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'ver')
if not m[1] then return {NO_COMPETITION} end
if m[1] ~= 'open' then return {CLOSED, m[1]} end
if (m[2] or '0') ~= ARGV[2] then return {STALE} end
local now = tonumber(ARGV[3])
redis.call('HSET', KEYS[3], 'summary', ARGV[4])
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  local b = 8 + i * 3
  redis.call('HSET', KEYS[3], ARGV[b], ARGV[b + 1])
  if ARGV[b + 2] == '1' then redis.call('XADD', KEYS[4], '*', 'p', ARGV[b + 1]) end
end
redis.call('HSET', KEYS[1], 'state', 'finalized', 'finalized_ms', fmt(now))
local ver = emit(KEYS[1], KEYS[2], {type = 'finalized', competition_id = ARGV[1], at = now,
  outcome = ARGV[5], pool_cents = tonumber(ARGV[6])})
return {OK, ver}
""",
)

# KEYS: ledger; ARGV: line id, status (paid | failed), reference, settled at (RFC 3339)
# -> {OK, status before} | {NOT_FOUND}
# A payment's result on its ledger line, once: a line no longer `pending` keeps what it
# says (a worker run again, or a result that came twice).
SETTLE_PAYOUT = Lua(
    "engine.settle_payout",
    PRELUDE
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {NOT_FOUND} end
local line = cjson.decode(raw)
if line.status ~= 'pending' then return {OK, line.status} end
line.status, line.payment_ref, line.settled_at = ARGV[2], ARGV[3], ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(line))
return {OK, 'pending'}
""",
)

# KEYS: meta, lb, parts, names; ARGV: 'places', k | 'qualifiers', min score
# -> {OK, state, version, fees owed, participants, n, n x (user, score, reached ms, name)}
#    | {NO_COMPETITION}
# What a payout needs, in one atomic read: the fees the active participations owe, and
# the top of the board: the first k and everyone tied with the k-th, or everyone at or
# above the qualifying score.
PAYOUT_INPUTS = Lua(
    "engine.payout_inputs",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'ver', 'fees')
if not m[1] then return {NO_COMPETITION} end
local fees = m[3]
if not fees then
  local sum, all = 0, redis.call('HGETALL', KEYS[3])
  for i = 2, #all, 2 do
    local p = cjson.decode(all[i])
    if p.state == 'active' then sum = sum + (p.fee_cents or 0) end
  end
  fees = fmt(sum)
  redis.call('HSET', KEYS[1], 'fees', fees)
end
local rows
if ARGV[1] == 'places' then
  local k = tonumber(ARGV[2])
  rows = redis.call('ZRANGE', KEYS[2], 0, k - 1, 'WITHSCORES')
  if #rows == 2 * k then
    -- Those tied with the k-th share its place: they come too (in board order).
    local z, seen = rows[#rows], {}
    for i = 1, #rows, 2 do seen[rows[i]] = true end
    local tied = redis.call('ZRANGEBYSCORE', KEYS[2], z, z, 'WITHSCORES')
    for i = 1, #tied, 2 do
      if not seen[tied[i]] then rows[#rows + 1] = tied[i]; rows[#rows + 1] = tied[i + 1] end
    end
  end
else
  rows = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', fmt(-tonumber(ARGV[2])), 'WITHSCORES')
end
local out = {OK, m[1], m[2] or '0', fees, redis.call('ZCARD', KEYS[2]), #rows / 2}
for i = 1, #rows, 2 do
  out[#out + 1] = user_of(rows[i])
  out[#out + 1] = fmt(-tonumber(rows[i + 1]))
  out[#out + 1] = string.sub(rows[i], 1, 15)
  out[#out + 1] = redis.call('HGET', KEYS[4], user_of(rows[i])) or user_of(rows[i])
end
return out
""",
)

# KEYS: meta, lb, entry, names, ev, pdays (of the flag's user), adj, dv, agg, mv, x, fl,
#       audit
# ARGV: cid, flag id, user (the flag's), action (dismiss | exclude | restore), actor,
#       reason, now
# -> {OK, changed (1|0), flag JSON, event_id} | {NO_COMPETITION} | {CLOSED} | {NOT_FOUND}
# A reviewer's decision on a flag: `exclude` takes the day out of the participant's
# score (and the field), `dismiss` and `restore` count it again; the flag's state
# becomes dismissed, excluded or open. A change of the score is a score event with the
# cause `review`; any other decision is a `reviewed` event (which names nobody). Each
# decision is audited; the same decision twice changes nothing.
REVIEW = Lua(
    "engine.review",
    FAIR_PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'metric_idx', 'format', 'daily_target')
if not m then return {err} end
local cid, id, user, action, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[7])
local raw = redis.call('HGET', KEYS[12], id)
if not raw then return {NOT_FOUND} end
local f = cjson.decode(raw)
if f.user_id ~= user then return {NOT_FOUND} end
local state = ({dismiss = 'dismissed', exclude = 'excluded', restore = 'open'})[action]
if f.state == state then
  return {OK, 0, raw, tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')}
end
local out, was_out = state == 'excluded', f.state == 'excluded'
local xkey = user .. '|' .. f.day
-- `excluded` in meta counts the excluded days, so APPLY looks them up only when any is.
if out then
  redis.call('SADD', KEYS[11], xkey)
  redis.call('HINCRBY', KEYS[1], 'excluded', 1)
elseif was_out then
  redis.call('SREM', KEYS[11], xkey)
  redis.call('HINCRBY', KEYS[1], 'excluded', -1)
end
local mi, goal, target = tonumber(m[2]) + 1, m[3] == 'goal', tonumber(m[4])
local eraw = redis.call('HGET', KEYS[3], user)
local ver, before, after = nil, cjson.null, cjson.null
if out ~= was_out and eraw then
  local e = cjson.decode(eraw)
  local prev_sc = e.sc
  count_day(KEYS[6], KEYS[8], KEYS[9], user, e, f.day, out and -1 or 1, mi, goal, target)
  e.sc = score_of(e, offsets(KEYS[7], user), mi, goal)
  e.u = now
  before, after = prev_sc, e.sc
  if not e.dq then
    local _, _, v = commit(KEYS, cid, user, e, prev_sc, 'review', now, KEYS[10])
    ver = v
  else
    commit(KEYS, cid, user, e, prev_sc, 'review', now, KEYS[10])
  end
end
if not ver then
  ver = emit(KEYS[1], KEYS[5], {type = 'reviewed', competition_id = cid, action = action,
                                at = now})
end
local counted = redis.call('HGET', KEYS[6], f.day)
if counted then
  local _, v = parse_day(counted)
  f.reviewed_value = v[mi]
else
  f.reviewed_value = f.value
end
f.state, f.reviewed_by, f.reviewed_ms, f.reason = state, ARGV[5], now, ARGV[6]
f.reviews = (f.reviews or 0) + 1
local encoded = cjson.encode(f)
redis.call('HSET', KEYS[12], id, encoded)
redis.call('RPUSH', KEYS[13], cjson.encode({at = now, by = ARGV[5], action = action,
  user_id = user, day = f.day, flag_id = id, reason = ARGV[6], score_before = before,
  score_after = after, event_id = ver}))
return {OK, 1, encoded, ver}
""",
)

# KEYS: meta, lb, entry, names, ev, pdays, dv, agg, x, parts, audit
# ARGV: cid, user, action (disqualify | reinstate), actor, reason, now
# -> {OK, changed (1|0), event_id, score, rank (nil while disqualified)}
#    | {NO_COMPETITION} | {CLOSED} | {NOT_PARTICIPANT}
# A disqualified participant leaves the board (so no payout can name them) and the
# field, keeps their entry (the organizer still sees it) and stays disqualified across
# leave and rejoin (`disqualified` in the participation record). Reinstated, they come
# back at their score, with their tie time when the score has not changed since.
DISQUALIFY = Lua(
    "engine.disqualify",
    FAIR_PRELUDE
    + """
local m, err = open_meta(KEYS[1], 'metric_idx', 'ver')
if not m then return {err} end
local cid, user, action, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[6])
local raw = redis.call('HGET', KEYS[3], user)
if not raw then return {NOT_PARTICIPANT} end
local e = cjson.decode(raw)
local dq = action == 'disqualify'
if (e.dq == true) == dq then
  local rank = false
  if not e.dq then rank = rank_of(KEYS[2], e.sc) end
  return {OK, 0, tonumber(m[3] or '0'), e.sc, rank}
end
local mi = tonumber(m[2]) + 1
local days = redis.call('HGETALL', KEYS[6])
for i = 1, #days, 2 do
  if redis.call('SISMEMBER', KEYS[9], user .. '|' .. days[i]) == 0 then
    local _, v = parse_day(days[i + 1])
    field_set(KEYS[7], KEYS[8], user, days[i], dq and 0 or v[mi])
  end
end
local p = {}
local praw = redis.call('HGET', KEYS[10], user)
if praw then p = cjson.decode(praw) end
local name = redis.call('HGET', KEYS[4], user) or user
local ver, rank
if dq then
  local prev_rank = cjson.null
  if e.m and redis.call('ZSCORE', KEYS[2], e.m) then
    prev_rank = rank_of(KEYS[2], e.sc)
    redis.call('ZREM', KEYS[2], e.m)
  end
  e.dq = true
  p.disqualified = {at = now, by = ARGV[4], reason = ARGV[5]}
  rank = false
  redis.call('HSET', KEYS[3], user, cjson.encode(e))
  ver = emit(KEYS[1], KEYS[5], {type = 'disqualify', competition_id = cid, user_id = user,
    user_name = name, score = cjson.null, previous_score = e.sc, rank = cjson.null,
    previous_rank = prev_rank, passed = {}, passed_by = {}, at = now})
else
  e.dq = nil
  p.disqualified = nil
  if not e.m then
    e.r = tick(KEYS[1])
    e.m = member(e.r, user)
  end
  redis.call('ZADD', KEYS[2], fmt(-e.sc), e.m)
  redis.call('HSET', KEYS[3], user, cjson.encode(e))
  rank = rank_of(KEYS[2], e.sc)
  ver = emit(KEYS[1], KEYS[5], {type = 'reinstate', competition_id = cid, user_id = user,
    user_name = name, score = e.sc, previous_score = cjson.null, rank = rank,
    previous_rank = cjson.null, passed = {}, passed_by = {}, at = now})
end
redis.call('HSET', KEYS[10], user, cjson.encode(p))
redis.call('RPUSH', KEYS[11], cjson.encode({at = now, by = ARGV[4], action = action,
  user_id = user, reason = ARGV[5], score = e.sc, event_id = ver}))
return {OK, 1, ver, e.sc, rank}
""",
)

# KEYS: meta, lb, entry, names, dv, agg, mv; ARGV: first day, last day
# -> {OK, version, quiet, state, days, board, entries, names, movers, counters}
#    | {NO_COMPETITION}
# What the analytics are computed from, read at once: per day from first to last
# {day, total, active, median} (the median as text: it may be a half), the board
# (member, -score pairs in rank order), every entry, name and movers' checkpoint, and
# the joins and leaves per UTC day (`+<day>`, `-<day>` in `agg`). `quiet` counts the
# changes that make no event (a disqualified entry's, a flag's): with the version, it
# says whether a computed view is still current.
ANALYTICS = Lua(
    "engine.analytics",
    FAIR_PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'ver', 'quiet')
if not m[1] then return {NO_COMPETITION} end
local days = {}
for d = day_number(ARGV[1]), day_number(ARGV[2]) do
  local day = day_name(d)
  local n, first, base = field_of(KEYS[5], day)
  local median = 0
  if n > 0 then median = field_quantile(KEYS[5], n, first, base, 0.5) end
  days[#days + 1] = {day, tonumber(redis.call('HGET', KEYS[6], day) or '0'), n,
                     tostring(median)}
end
local counters = {}
local all = redis.call('HGETALL', KEYS[6])
for i = 1, #all, 2 do
  local c = string.sub(all[i], 1, 1)
  if c == '+' or c == '-' then
    counters[#counters + 1] = all[i]
    counters[#counters + 1] = all[i + 1]
  end
end
return {OK, tonumber(m[2] or '0'), tonumber(m[3] or '0'), m[1], days,
        redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'),
        redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
        redis.call('HGETALL', KEYS[7]), counters}
""",
)

# KEYS: lb, entry; ARGV: user -> {OK, score, rank, entry, gap_to_next} | {NOT_PARTICIPANT}
# A disqualified participant has a score and no rank (nor gap).
STANDING = Lua(
    "engine.standing",
    PRELUDE
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {NOT_PARTICIPANT} end
local e = cjson.decode(raw)
if e.dq then return {OK, e.sc, false, raw, false} end
if not (e.m and redis.call('ZSCORE', KEYS[1], e.m)) then return {NOT_PARTICIPANT} end
local above = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. fmt(-e.sc), '-inf',
                         'WITHSCORES', 'LIMIT', 0, 1)
local gap = false
if above[1] then gap = -tonumber(above[2]) - e.sc end
return {OK, e.sc, rank_of(KEYS[1], e.sc), raw, gap}
""",
)

# --- user slot -----------------------------------------------------------------------

USER_PRELUDE = (
    lua_constants()
    + LUA_SPLIT
    + """
-- Marks (competition, day) as owed to a competition, with a snapshot of what to push
-- (values, when it was stored, its flags and the user's typical values); a newer mark
-- replaces an older one (seq + 1).
local function mark(eff, owed, out, cid, day, t)
  local raw = redis.call('HGET', eff, day)
  if not raw then return end
  local ef = cjson.decode(raw)
  local field = cid .. '|' .. day
  local seq = 1
  local old = redis.call('HGET', owed, field)
  if old then seq = tonumber(string.match(old, '^(%d+),')) + 1 end
  local fm = ef.fm or {0, 0, 0, 0}
  local value = seq .. ',' .. ef.ver .. ',' .. ef.v[1] .. ',' .. ef.v[2] .. ',' .. ef.v[3]
    .. ',' .. ef.v[4] .. ',' .. string.format('%d', t) .. ',' .. (ef.f or 0) .. ',' .. fm[1]
    .. ',' .. fm[2] .. ',' .. fm[3] .. ',' .. fm[4]
  redis.call('HSET', owed, field, value)
  out[#out + 1] = field
  out[#out + 1] = value
end
-- Records a competition's window (`start|end|deadline_ms|rules`) unless a newer rules
-- version is recorded already (a recount step that ran first); answers the window kept.
local function record_window(cw, cid, first, last, deadline, rules)
  local cur = redis.call('HGET', cw, cid)
  if cur then
    local w = split(cur)
    if tonumber(w[4] or '0') > tonumber(rules) then return w[1], w[2], w[3] end
  end
  redis.call('HSET', cw, cid, first .. '|' .. last .. '|' .. deadline .. '|' .. rules)
  return first, last, deadline
end
"""
)

# The sync's own checks of a day (engine/flags.py), for SYNC_USER alone.
USER_FLAGS = (
    LUA_DAYS
    + flags.lua()
    + """
local function median_of(xs)
  table.sort(xs)
  local n = #xs
  if n % 2 == 1 then return xs[(n + 1) / 2] end
  return (xs[n / 2] + xs[n / 2 + 1]) / 2
end
-- The user's typical day before `day`, per metric: the median and MAD of their previous
-- HISTORY_DAYS days with a value (0, 0 with fewer than MIN_HISTORY of them).
local function history_of(eff, day)
  local n0, fields = day_number(day), {}
  for i = 1, HISTORY_DAYS do fields[i] = day_name(n0 - i) end
  local rows = redis.call('HMGET', eff, unpack(fields))
  local hist = {{}, {}, {}, {}}
  for i = 1, HISTORY_DAYS do
    if rows[i] then
      local past = cjson.decode(rows[i]).v
      for k = 1, 4 do
        if past[k] > 0 then hist[k][#hist[k] + 1] = past[k] end
      end
    end
  end
  local med, mad = {0, 0, 0, 0}, {0, 0, 0, 0}
  for k = 1, 4 do
    if #hist[k] >= MIN_HISTORY then
      med[k] = median_of(hist[k])
      local dev = {}
      for j, x in ipairs(hist[k]) do dev[j] = math.abs(x - med[k]) end
      mad[k] = median_of(dev)
    end
  end
  return med, mad
end
-- The user-side flags of a day whose effective value changed (engine/flags.py): the
-- record alone (stride, active minutes), and for a value at or above its floor the
-- user's own history (robust z-score on median and MAD). The history is read once per
-- day, the first time a value reaches a floor, and kept in the day (`fm` medians, `fd`
-- MADs): later syncs of the day compare with it. Answers the bits.
local function record_flags(eff, day, ef)
  local v, bits = ef.v, 0
  if v[1] >= STRIDE_FROM and v[2] >= STRIDE_FROM then
    local stride = v[2] / v[1]
    if stride < STRIDE_MIN or stride > STRIDE_MAX then bits = bits + STRIDE_BIT end
  end
  if (v[1] >= MINUTES_STEPS and v[1] > CADENCE_MAX * v[4])
      or (v[2] >= MINUTES_DISTANCE and v[2] > SPEED_MAX * v[4]) then
    bits = bits + MINUTES_BIT
  end
  local high = false
  for k = 1, 4 do if v[k] >= FLOORS[k] then high = true end end
  if not high then return bits end
  if not ef.fm then
    local med, mad = history_of(eff, day)
    for k = 1, 4 do med[k] = math.floor(med[k] + 0.5) end
    ef.fm, ef.fd = med, mad
  end
  for k = 1, 4 do
    local med = ef.fm[k]
    local mad = math.max(ef.fd[k], med / 10)
    if med > 0 and v[k] >= FLOORS[k] and 0.6745 * (v[k] - med) / mad >= OWN_Z
        and v[k] >= OWN_RATIO * med then
      bits = bits + 2 ^ (k - 1)
    end
  end
  return bits
end
"""
)

# KEYS: rec, eff, cw, owed
# ARGV: now, n, n x (day, source, steps, distance, calories, active_minutes),
#       k, k x (competition named by the body)
# -> {OK, field, value, field, value, ...}: every (competition|day) owed, this sync's
#    and those an interrupted one left; or {NOT_MINE, competition} with nothing stored.
# The effective value of a day is the maximum of each metric across its sources; its
# version goes up whenever that value changes, and then its flags are worked out again
# (`record_flags`, kept in the day as `f` and `fm`). The competitions come from `cw`,
# the user's record of their competitions' windows; each competition re-checks.
SYNC_USER = Lua(
    "engine.sync_user",
    USER_PRELUDE
    + USER_FLAGS
    + """
local now, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local k = tonumber(ARGV[3 + n * 6])
for j = 1, k do
  local cid = ARGV[3 + n * 6 + j]
  if redis.call('HEXISTS', KEYS[3], cid) == 0 then return {NOT_MINE, cid} end
end
local touched, order = {}, {}
for i = 0, n - 1 do
  local b = 3 + i * 6
  local day, src = ARGV[b], ARGV[b + 1]
  redis.call('HSET', KEYS[1], day .. '|' .. src,
    ARGV[b + 2] .. ',' .. ARGV[b + 3] .. ',' .. ARGV[b + 4] .. ',' .. ARGV[b + 5] .. ',' .. ARGV[1])
  if not touched[day] then touched[day] = {}; order[#order + 1] = day end
  touched[day][src] = true
end
table.sort(order)  -- a day's history is stored before the day is checked against it
for _, day in ipairs(order) do
  local raw = redis.call('HGET', KEYS[2], day)
  local ef
  if raw then ef = cjson.decode(raw) else ef = {v = {0, 0, 0, 0}, src = {}, ver = 0} end
  local known = {}
  for _, s in ipairs(ef.src) do known[s] = true end
  for s, _ in pairs(touched[day]) do
    if not known[s] then ef.src[#ef.src + 1] = s end
  end
  table.sort(ef.src)
  local v = {0, 0, 0, 0}
  for _, s in ipairs(ef.src) do
    local r = redis.call('HGET', KEYS[1], day .. '|' .. s)
    if r then
      local x = 0
      for part in string.gmatch(r, '[^,]+') do
        x = x + 1
        if x <= 4 and tonumber(part) > v[x] then v[x] = tonumber(part) end
      end
    end
  end
  if v[1] ~= ef.v[1] or v[2] ~= ef.v[2] or v[3] ~= ef.v[3] or v[4] ~= ef.v[4] or ef.ver == 0 then
    ef.ver = ef.ver + 1
    ef.v = v
    local bits = record_flags(KEYS[2], day, ef)
    if bits > 0 then ef.f = bits else ef.f = nil end
  end
  ef.t = now
  redis.call('HSET', KEYS[2], day, cjson.encode(ef))
end
local out = {OK}
local windows = redis.call('HGETALL', KEYS[3])
for _, day in ipairs(order) do
  for i = 1, #windows, 2 do
    local w = split(windows[i + 1])
    if day >= w[1] and day <= w[2] and now <= tonumber(w[3]) then
      mark(KEYS[2], KEYS[4], out, windows[i], day, now)
    end
  end
end
local fresh = {}
for i = 2, #out, 2 do fresh[out[i]] = true end
local pending = redis.call('HGETALL', KEYS[4])
for i = 1, #pending, 2 do
  local f = pending[i]
  if not fresh[f] and string.sub(f, -2) ~= '|*' then
    out[#out + 1] = f
    out[#out + 1] = pending[i + 1]
  end
end
return out
""",
)

# KEYS: owed; ARGV: cid, now -> {OK}
# Recorded before a join: the back-fill it owes, found by the sweep if the join's
# request dies before the back-fill is marked.
OWE_BACKFILL = Lua(
    "engine.owe_backfill",
    USER_PRELUDE
    + """
redis.call('HSETNX', KEYS[1], ARGV[1] .. '|*', ARGV[2])
return {OK}
""",
)

# KEYS: eff, cw, owed; ARGV: cid, start, end, deadline_ms, now, rules
# -> {OK, field, value, ...}: every effective day in the window marked as owed to the
#    competition (stored at the time the back-fill was owed), the owed back-fill cleared.
BACKFILL_USER = Lua(
    "engine.backfill_user",
    USER_PRELUDE
    + """
local cid = ARGV[1]
local first, last = record_window(KEYS[2], cid, ARGV[2], ARGV[3], ARGV[4], ARGV[6])
local marker = cid .. '|*'
local t = tonumber(redis.call('HGET', KEYS[3], marker) or ARGV[5])
local out = {OK}
for _, day in ipairs(redis.call('HKEYS', KEYS[1])) do
  if day >= first and day <= last then mark(KEYS[1], KEYS[3], out, cid, day, t) end
end
redis.call('HDEL', KEYS[3], marker)
return out
""",
)

# KEYS: owed, cw; ARGV: n, n x (field, seq), then competitions to forget
# -> {OK, marks removed}. A mark is removed only if no newer sync re-marked it meanwhile.
CLEAR = Lua(
    "engine.clear",
    USER_PRELUDE
    + """
local n, removed = tonumber(ARGV[1]), 0
for i = 0, n - 1 do
  local f, seq = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local cur = redis.call('HGET', KEYS[1], f)
  if cur and string.match(cur, '^(%d+),') == seq then
    redis.call('HDEL', KEYS[1], f)
    removed = removed + 1
  end
end
for j = 2 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[j])
  redis.call('HDEL', KEYS[1], ARGV[j] .. '|*')
end
return {OK, removed}
""",
)

# KEYS: eff, cw, owed; ARGV: cid, start, end, deadline_ms, rules
# -> {OK, n, n x (day, ver, steps, distance, calories, active_minutes)}
# The user's side of one recount step: the record of the window is brought up to date
# and the effective days inside it are read. A user with neither a record nor an owed
# back-fill has left: the record is not written back (their syncs and listings would
# take the competition for theirs again).
RECOUNT_READ = Lua(
    "engine.recount_read",
    USER_PRELUDE
    + """
local known = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
  or redis.call('HEXISTS', KEYS[3], ARGV[1] .. '|*') == 1
if known then record_window(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) end
local out = {OK, 0}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if flat[i] >= ARGV[2] and flat[i] <= ARGV[3] then
    local ef = cjson.decode(flat[i + 1])
    out[2] = out[2] + 1
    out[#out + 1] = flat[i]
    out[#out + 1] = ef.ver
    for k = 1, 4 do out[#out + 1] = ef.v[k] end
  end
end
return out
""",
)
