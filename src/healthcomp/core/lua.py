"""Lua scripts, registered once per client and run by EVALSHA."""

from __future__ import annotations

from typing import Any

from healthcomp.core.context import AppContext

# Lua helpers shared by scripts of several domains.
# split('a|b|c') -> {'a', 'b', 'c'}: the `|`-separated records the scripts keep.
LUA_SPLIT = """
local function split(s)
  local p = {}
  for x in string.gmatch(s, '[^|]+') do p[#p + 1] = x end
  return p
end
"""


class Lua:
    """A script kept next to the domain that owns its keys.

    Every script takes only keys of one hash tag, so it runs atomically in a cluster.
    """

    __slots__ = ("name", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source

    async def __call__(self, ctx: AppContext, keys: list[str], args: list[Any]) -> Any:
        script = ctx.scripts.get(self.name)
        if script is None:
            script = ctx.scripts[self.name] = ctx.r.register_script(self.source)
        return await script(keys=keys, args=args)
