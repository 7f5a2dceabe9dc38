"""Lua over one user's keys (all tagged `{u:<id>}`, one cluster slot)."""

from __future__ import annotations

from healthcomp.core.lua import Lua

# The effective value of a day is the maximum of each metric across its sources; its
# version goes up whenever that value changes, so a competition applies a newer
# version and ignores an older one arriving late (concurrent syncs, repairs).
#
# KEYS: rec, eff, dirty
# ARGV: now_ms, n, n x (day, source, steps, distance, calories, active_minutes),
#       m, m x (competition, from_day, to_day)
# -> flat list of 8-tuples (competition, day, seq, ver, steps, distance, calories,
#    active_minutes): every day to push, each marked in `dirty` until pushed. Days
#    left in `dirty` by an earlier, interrupted sync are returned too.
SYNC = Lua(
    "activity.sync",
    """
local now = ARGV[1]
local n = tonumber(ARGV[2])
local touched, order = {}, {}
for i = 0, n - 1 do
  local b = 3 + i * 6
  local day, src = ARGV[b], ARGV[b + 1]
  redis.call('HSET', KEYS[1], day .. '|' .. src,
    ARGV[b + 2] .. ',' .. ARGV[b + 3] .. ',' .. ARGV[b + 4] .. ',' .. ARGV[b + 5] .. ',' .. now)
  if not touched[day] then touched[day] = {}; order[#order + 1] = day end
  touched[day][src] = true
end
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
      local k = 0
      for x in string.gmatch(r, '[^,]+') do
        k = k + 1
        if k <= 4 and tonumber(x) > v[k] then v[k] = tonumber(x) end
      end
    end
  end
  if v[1] ~= ef.v[1] or v[2] ~= ef.v[2] or v[3] ~= ef.v[3] or v[4] ~= ef.v[4] or ef.ver == 0 then
    ef.ver = ef.ver + 1
    ef.v = v
  end
  ef.t = tonumber(now)
  redis.call('HSET', KEYS[2], day, cjson.encode(ef))
end
local out, seen = {}, {}
local function push(cid, day, seq)
  local key = cid .. '|' .. day
  if seen[key] then return end
  seen[key] = true
  local raw = redis.call('HGET', KEYS[2], day)
  if not raw then
    redis.call('HDEL', KEYS[3], key)
    return
  end
  local ef = cjson.decode(raw)
  if seq == nil then seq = redis.call('HINCRBY', KEYS[3], key, 1) end
  out[#out + 1] = cid
  out[#out + 1] = day
  out[#out + 1] = seq
  out[#out + 1] = ef.ver
  for k = 1, 4 do out[#out + 1] = ef.v[k] end
end
local m = tonumber(ARGV[3 + n * 6])
local all_days = nil
for j = 0, m - 1 do
  local b = 4 + n * 6 + j * 3
  local cid, from, to = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  if from == to then
    push(cid, from, nil)
  else
    if all_days == nil then all_days = redis.call('HKEYS', KEYS[2]) end
    for _, day in ipairs(all_days) do
      if day >= from and day <= to then push(cid, day, nil) end
    end
  end
end
local pending = redis.call('HGETALL', KEYS[3])
for i = 1, #pending, 2 do
  local sep = string.find(pending[i], '|', 1, true)
  push(string.sub(pending[i], 1, sep - 1), string.sub(pending[i], sep + 1), tonumber(pending[i + 1]))
end
return out
""",
)

# KEYS: dirty; ARGV: pairs of (competition|day, seq): removed when still at that seq
CLEAR = Lua(
    "activity.clear",
    """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
""",
)
