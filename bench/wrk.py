"""Driving wrk: making sure it is installed, its Lua request scripts, parsing its report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_INSTALL_HINT = (
    "the benchmark drives the server with wrk; install it with "
    "`sudo apt-get install wrk` (Debian, Ubuntu), `brew install wrk` (macOS), "
    "or build it from https://github.com/wg/wrk"
)


def ensure_wrk() -> str:
    """The path of `wrk`, installed with apt-get when missing and running as root;
    otherwise says how to install it and exits 2."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False)
            subprocess.run(install, env=env, check=False)
        found = shutil.which("wrk")
    if found is None:
        print(_INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    return found


def version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"wrk\s+(\S+)", out)
    return match.group(1) if match else "unknown"


@dataclass(frozen=True)
class Load:
    seconds: float
    connections: int
    threads: int

    def flags(self) -> list[str]:
        return [f"-t{self.threads}", f"-c{self.connections}", f"-d{self.seconds:g}s"]

    def describe(self) -> str:
        return f"wrk {' '.join(self.flags())} --latency"


@dataclass(frozen=True)
class Request:
    """One request of a rotation: path (with query), bearer token, JSON body template.

    In a body, `$N` becomes a number that changes with every request (see `lua_script`)."""

    path: str
    token: str | None = None
    body: str | None = None


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


# Requests without a body are formatted once per thread; with a body, per request.
_LUA = """
local entries = {%(entries)s}
local method, template = %(method)s, %(template)s
local first, span = %(first)d, %(span)d
local ready = {}
local n = 0
init = function(args)
  for i, e in ipairs(entries) do
    local headers = {}
    if e[2] ~= "" then headers["Authorization"] = "Bearer " .. e[2] end
    if template then headers["Content-Type"] = "application/json" end
    e[3] = headers
    if not template then ready[i] = wrk.format(method, e[1], headers) end
  end
end
request = function()
  n = n + 1
  local i = n %% #entries + 1
  if not template then return ready[i] end
  local e = entries[i]
  local value = tostring(first + n %% span)
  return wrk.format(method, e[1], e[3], (string.gsub(template, "%%$N", value)))
end
"""


def _lua_string(value: str) -> str:
    # ASCII only (paths, JWTs, JSON), where JSON's escapes are Lua's.
    assert value.isascii(), value
    return json.dumps(value)


def lua_script(requests: Sequence[Request], counter: tuple[int, int] = (0, 1)) -> str:
    """A script rotating over `requests` (all GET, or all POST with one body template).

    `$N` in the body is `first + n % span` for the n-th request, `counter` being
    (first, span)."""
    templates = {r.body for r in requests}
    assert len(templates) == 1, "one body template per script"
    template = templates.pop()
    entries = ", ".join(
        f"{{{_lua_string(r.path)}, {_lua_string(r.token or '')}}}" for r in requests
    )
    return _LUA % {
        "entries": entries,
        "method": _lua_string("GET" if template is None else "POST"),
        "template": "nil" if template is None else _lua_string(template),
        "first": counter[0],
        "span": counter[1],
    }


def run(
    wrk: str,
    base: str,
    requests: Sequence[Request],
    load: Load,
    workdir: Path,
    counter: tuple[int, int] = (0, 1),
) -> Result:
    script = workdir / "wrk.lua"
    script.write_text(lua_script(requests, counter))
    cmd = [wrk, *load.flags(), "--latency", "-s", str(script), base + requests[0].path]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=load.seconds + 60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse(proc.stdout)


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match.group(2)]
    return float(match.group(1)) * scale


def _int(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def parse(out: str) -> Result:
    """wrk's `--latency` report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    if rps is None or set(latency) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{out}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return Result(
        rps=float(rps.group(1)),
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        requests=_int(r"(\d+) requests in", out),
        non_2xx=_int(r"Non-2xx or 3xx responses: (\d+)", out),
        socket_errors=sum(int(x) for x in sockets.groups()) if sockets else 0,
    )
