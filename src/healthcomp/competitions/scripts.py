"""Lua over one competition's keys (all tagged `{c:<id>}`)."""

from __future__ import annotations

from healthcomp.core.lua import Lua
from healthcomp.leaderboard.scripts import PRELUDE

# KEYS: meta; ARGV: field/value pairs -> 1, or 0 when the id is taken
CREATE = Lua(
    "comp.create",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'open', unpack(ARGV))
return 1
""",
)

# KEYS: meta; ARGV: expected doc (optimistic check), then field/value pairs
# -> 1, 0 when the doc changed meanwhile, -2 when gone, -3 when not open
UPDATE = Lua(
    "comp.update",
    """
local m = redis.call('HMGET', KEYS[1], 'state', 'doc')
if not m[1] then return -2 end
if m[1] ~= 'open' then return -3 end
if m[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
""",
)

# KEYS: meta, lb, entry, names
# ARGV: user, now_ms, display name
# -> participant count, or -2 no competition, -3 closed, -4 ended, -5 already in, -6 full
JOIN = Lua(
    "comp.join",
    PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'ends_ms', 'max_participants', 'epoch_ms')
if not m[1] then return -2 end
if m[1] ~= 'open' then return -3 end
local user, now = ARGV[1], tonumber(ARGV[2])
if now >= tonumber(m[2]) then return -4 end
if redis.call('HEXISTS', KEYS[3], user) == 1 then return -5 end
local maxp = tonumber(m[3])
if maxp > 0 and redis.call('ZCARD', KEYS[2]) >= maxp then return -6 end
local e = {t = {0, 0, 0, 0}, g = 0, sc = 0, r = now, ls = 0, u = now, j = now}
redis.call('ZADD', KEYS[2], fmt(composite(0, now, tonumber(m[4]))), user)
redis.call('HSET', KEYS[3], user, cjson.encode(e))
redis.call('HSET', KEYS[4], user, ARGV[3])
return redis.call('ZCARD', KEYS[2])
""",
)

# KEYS: meta, lb, entry, names, pdays, adj
# ARGV: user, now_ms -> participant count, or -2, -3, -4 as JOIN, -1 not a participant
LEAVE = Lua(
    "comp.leave",
    """
local m = redis.call('HMGET', KEYS[1], 'state', 'ends_ms')
if not m[1] then return -2 end
if m[1] ~= 'open' then return -3 end
local user, now = ARGV[1], tonumber(ARGV[2])
if now >= tonumber(m[2]) then return -4 end
if redis.call('HEXISTS', KEYS[3], user) == 0 then return -1 end
redis.call('ZREM', KEYS[2], user)
redis.call('HDEL', KEYS[3], user)
redis.call('HDEL', KEYS[4], user)
redis.call('HDEL', KEYS[6], user)
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[1], 'lb_updated_ms', now)
return redis.call('ZCARD', KEYS[2])
""",
)

# KEYS: meta, audit; ARGV: now_ms, actor, reason -> 1, -2 gone, -3 not open
CANCEL = Lua(
    "comp.cancel",
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -2 end
if state ~= 'open' then return -3 end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancelled_at_ms', ARGV[1])
redis.call('RPUSH', KEYS[2], cjson.encode({at = tonumber(ARGV[1]), by = ARGV[2],
  action = 'cancel', reason = ARGV[3]}))
return 1
""",
)

# KEYS: entry, names; ARGV: user, name -> 1 when the user takes part
RENAME = Lua(
    "comp.rename",
    """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
""",
)
