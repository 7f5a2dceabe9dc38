"""Lua over one competition's keys (all tagged `{c:<id>}`, one cluster slot).

The sorted set `lb` holds a negated composite score per participant:

    key = -(score * 2^26 + (2^26 - 1 - t))

where `t` is the second (since the competition's epoch) at which the participant
reached their current score. Ascending order (ZRANGE, ZRANK) lists higher scores
first, within a tie whoever got there first, and within the same second the user ids
in ascending order. A score is at most 2^27 - 1 (more than 366 days of maximal
distance), so the key stays within 2^53 and is an exact double. The standard
competition rank of a score `s` is `1 + ZCOUNT lb -inf -(s+1)*2^26`: one O(log n) call.

An entry (`entry` hash, JSON) keeps: `t` the activity totals [steps, distance,
calories, active_minutes], `g` goal days met, `sc` the score, `r` when it was reached,
`ls` last sync, `u` last update, `j` joined (all epoch ms).
"""

from __future__ import annotations

from healthcomp.core.lua import Lua

M = 2**26
MAX_SCORE = 2**27 - 1

PRELUDE = """
local M = 67108864
local MAXS = 134217727
local function fmt(x) return string.format('%.0f', x) end
local function composite(score, reached, epoch)
  local t = math.floor((reached - epoch) / 1000)
  if t < 0 then t = 0 elseif t > M - 1 then t = M - 1 end
  return -(score * M + (M - 1 - t))
end
local function score_from(key) return math.floor(-tonumber(key) / M) end
local function rank_of(lb, score)
  return redis.call('ZCOUNT', lb, '-inf', fmt(-(score + 1) * M)) + 1
end
local function offsets(adj, user)
  local raw = redis.call('HGET', adj, user)
  if raw then return cjson.decode(raw) end
  return {0, 0, 0, 0}
end
local function score_of(e, off, mi, goal)
  local s
  if goal then s = e.g else s = e.t[mi] + off[mi] end
  if s < 0 then s = 0 elseif s > MAXS then s = MAXS end
  return s
end
local function store(keys_lb, keys_entry, user, e, prev_score, now, epoch)
  if e.sc ~= prev_score then
    e.r = now
    redis.call('ZADD', keys_lb, fmt(composite(e.sc, now, epoch)), user)
  end
  redis.call('HSET', keys_entry, user, cjson.encode(e))
end
"""

# KEYS: meta, lb, entry, pdays, adj
# ARGV: user, now_ms, n, then n x (day, ver, steps, distance, calories, active_minutes)
# -> {score, rank, previous_rank, changed} or {code}: -1 not a participant,
#    -2 no competition, -3 closed (cancelled/finalized), -4 past the sync deadline
APPLY_DAYS = Lua(
    "lb.apply_days",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'start_date', 'end_date', 'deadline_ms',
                     'metric_idx', 'format', 'daily_target', 'epoch_ms')
if not m[1] then return {-2} end
if m[1] ~= 'open' then return {-3} end
local user, now = ARGV[1], tonumber(ARGV[2])
if now > tonumber(m[4]) then return {-4} end
local raw = redis.call('HGET', KEYS[3], user)
if not raw then return {-1} end
local e = cjson.decode(raw)
local mi, goal, target = tonumber(m[5]) + 1, m[6] == 'goal', tonumber(m[7])
local prev_score = e.sc
local prev_rank = rank_of(KEYS[2], prev_score)
local changed = 0
for i = 0, tonumber(ARGV[3]) - 1 do
  local b = 4 + i * 6
  local day, ver = ARGV[b], tonumber(ARGV[b + 1])
  if day >= m[2] and day <= m[3] then
    local ov, o = 0, {0, 0, 0, 0}
    local old = redis.call('HGET', KEYS[4], day)
    if old then
      local parts = {}
      for x in string.gmatch(old, '[^,]+') do parts[#parts + 1] = tonumber(x) end
      ov, o = parts[1], {parts[2], parts[3], parts[4], parts[5]}
    end
    if ver > ov then
      local v = {tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
                 tonumber(ARGV[b + 5])}
      redis.call('HSET', KEYS[4], day, ver .. ',' .. v[1] .. ',' .. v[2] .. ',' .. v[3] .. ',' .. v[4])
      for k = 1, 4 do e.t[k] = e.t[k] + v[k] - o[k] end
      if goal then
        local met_new = (v[mi] >= target) and 1 or 0
        local met_old = (old and o[mi] >= target) and 1 or 0
        e.g = e.g + met_new - met_old
      end
      changed = 1
    end
  end
end
e.sc = score_of(e, offsets(KEYS[5], user), mi, goal)
e.ls = now
if changed == 1 then e.u = now end
store(KEYS[2], KEYS[3], user, e, prev_score, now, tonumber(m[8]))
if changed == 1 then redis.call('HSET', KEYS[1], 'lb_updated_ms', now) end
return {e.sc, rank_of(KEYS[2], e.sc), prev_rank, changed}
""",
)

# KEYS: lb, entry, names, adj, meta
# ARGV: mode ('offset' | 'around'), offset, limit, around_user, caller
# -> {total, start, lb_updated_ms, n, n x (user, score, rank, entry, name, adj),
#     caller_found, [user, score, rank, entry, name, adj]}, or {-1} (around: not ranked)
#     or {-2} (no such competition)
PAGE = Lua(
    "lb.page",
    PRELUDE
    + """
if redis.call('EXISTS', KEYS[5]) == 0 then return {-2} end
local total = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[3])
local start = tonumber(ARGV[2])
if ARGV[1] == 'around' then
  local pos = redis.call('ZRANK', KEYS[1], ARGV[4])
  if not pos then return {-1} end
  start = pos - math.floor(limit / 2)
  if start + limit > total then start = total - limit end
  if start < 0 then start = 0 end
end
local out = {total, start, redis.call('HGET', KEYS[5], 'lb_updated_ms') or false, 0}
local ids = redis.call('ZRANGE', KEYS[1], start, start + limit - 1, 'WITHSCORES')
local n, rank, prev, caller_in_page = 0, 0, nil, false
for i = 1, #ids, 2 do
  local user = ids[i]
  local score = score_from(ids[i + 1])
  if prev == nil then rank = rank_of(KEYS[1], score)
  elseif score ~= prev then rank = start + n + 1 end
  prev = score
  n = n + 1
  if user == ARGV[5] then caller_in_page = true end
  out[#out + 1] = user
  out[#out + 1] = score
  out[#out + 1] = rank
  out[#out + 1] = redis.call('HGET', KEYS[2], user) or false
  out[#out + 1] = redis.call('HGET', KEYS[3], user) or false
  out[#out + 1] = redis.call('HGET', KEYS[4], user) or false
end
out[4] = n
if ARGV[5] ~= '' then
  local c = redis.call('ZSCORE', KEYS[1], ARGV[5])
  if c then
    local score = score_from(c)
    out[#out + 1] = 1
    out[#out + 1] = ARGV[5]
    out[#out + 1] = score
    out[#out + 1] = rank_of(KEYS[1], score)
    out[#out + 1] = redis.call('HGET', KEYS[2], ARGV[5]) or false
    out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[5]) or false
    out[#out + 1] = redis.call('HGET', KEYS[4], ARGV[5]) or false
  else
    out[#out + 1] = 0
  end
else
  out[#out + 1] = 0
end
return out
""",
)

# KEYS: meta, lb, entry, adj, audit
# ARGV: user, now_ms, actor, reason, then 4 x (has, value) for the metrics
# -> {score, rank, previous_rank, before_json, after_json} or {code} as APPLY_DAYS
SET_TOTALS = Lua(
    "lb.set_totals",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'metric_idx', 'format', 'epoch_ms')
if not m[1] then return {-2} end
if m[1] ~= 'open' then return {-3} end
local user, now = ARGV[1], tonumber(ARGV[2])
local raw = redis.call('HGET', KEYS[3], user)
if not raw then return {-1} end
local e = cjson.decode(raw)
local mi, goal = tonumber(m[2]) + 1, m[3] == 'goal'
local off = offsets(KEYS[4], user)
local before, after = {}, {}
for k = 1, 4 do
  before[k] = math.max(0, e.t[k] + off[k])
  if ARGV[3 + 2 * k] == '1' then off[k] = tonumber(ARGV[4 + 2 * k]) - e.t[k] end
  after[k] = math.max(0, e.t[k] + off[k])
end
local prev_score = e.sc
local prev_rank = rank_of(KEYS[2], prev_score)
redis.call('HSET', KEYS[4], user, cjson.encode(off))
e.sc = score_of(e, off, mi, goal)
e.u = now
store(KEYS[2], KEYS[3], user, e, prev_score, now, tonumber(m[4]))
redis.call('HSET', KEYS[1], 'lb_updated_ms', now)
local audit = cjson.encode({at = now, by = ARGV[3], action = 'set_totals', user_id = user,
  reason = ARGV[4], before = before, after = after, score_before = prev_score,
  score_after = e.sc})
redis.call('RPUSH', KEYS[5], audit)
return {e.sc, rank_of(KEYS[2], e.sc), prev_rank, cjson.encode(before), cjson.encode(after)}
""",
)

# KEYS: lb, entry
# ARGV: user -> {score, rank} or {} when not a participant
RANK_OF = Lua(
    "lb.rank_of",
    PRELUDE
    + """
local c = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not c then return {} end
local score = score_from(c)
local rank = rank_of(KEYS[1], score)
local above = redis.call('ZREVRANGEBYSCORE', KEYS[1], fmt(-(score + 1) * M), '-inf',
                         'WITHSCORES', 'LIMIT', 0, 1)
local gap = false
if above[1] then gap = score_from(above[2]) - score end
return {score, rank, redis.call('HGET', KEYS[2], ARGV[1]) or false, gap}
""",
)

# KEYS: meta, lb, entry, pdays, adj; ARGV: user, now_ms
# Forget every day pushed for the participant (their days are pushed again after):
# used when the window, metric or goal of a competition changes before its start.
RESET = Lua(
    "lb.reset",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'metric_idx', 'format', 'epoch_ms')
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return 0 end
local e = cjson.decode(raw)
local prev_score = e.sc
e.t = {0, 0, 0, 0}
e.g = 0
e.sc = score_of(e, offsets(KEYS[5], ARGV[1]), tonumber(m[1]) + 1, m[2] == 'goal')
redis.call('DEL', KEYS[4])
store(KEYS[2], KEYS[3], ARGV[1], e, prev_score, tonumber(ARGV[2]), tonumber(m[3]))
return 1
""",
)
