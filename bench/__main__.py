"""A first HTTP benchmark: leaderboard reads and syncs against /health, in one run.

Starts `healthcomp serve --demo` on a scratch data directory and a free loopback port,
drives it with wrk (Debian package `wrk`; it shares the machine's cores with the server,
so compare the ratios, not only the absolute numbers),
prints a table and stops the server. Loopback only.

    python -m bench [--seconds 5] [--concurrency 32]

Rate limits are off during the run (one load generator on one address would hit the
per-IP limit at once); BENCH_RATE_LIMIT=<per minute> turns them on to measure their cost.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SYNC_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"date": "%s", "steps": %d, "source": "bench"}', DAY, counter % 90000)
  return wrk.format(nil, nil, nil, body)
end
"""


def _wrk(
    url: str, token: str, seconds: float, connections: int, script: Path | None
) -> tuple[float, float, float, int]:
    cmd = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds:.0f}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
    ]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, _ms(lat["50"]), _ms(lat["99"]), int(non2xx.group(1)) if non2xx else 0


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _run(base: str, token: str, seconds: float, connections: int, tmp: Path) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    sync_script = tmp / "sync.lua"
    sync_script.write_text(f'DAY = "{today}"\n' + _SYNC_LUA)
    board = f"{base}/api/v1/leaderboard/demo-steps"
    cases = [
        ("GET /health", f"{base}/health", None),
        ("leaderboard limit=10", f"{board}?limit=10", None),
        ("leaderboard limit=100", f"{board}?limit=100", None),
        ("leaderboard around=me", f"{board}?around=me&limit=10", None),
        ("POST /fitness/sync (1 record)", f"{base}/api/v1/fitness/sync", sync_script),
    ]
    _wrk(cases[0][1], token, 1, connections, None)  # warm-up
    rows = [(name, *_wrk(url, token, seconds, connections, script)) for name, url, script in cases]
    health = rows[0][1]
    print(f"\nwrk -t2 -c{connections}, {seconds:.0f} s per row, 1 server worker, embedded Redis\n")
    print(
        f"| {'request':<30} | {'req/s':>8} | {'vs /health':>10} | {'p50 ms':>7} | {'p99 ms':>7} | errors |"
    )
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 12}|{'-' * 9}|{'-' * 9}|--------|")
    for name, rps, p50, p99, errors in rows:
        print(
            f"| {name:<30} | {rps:>8.0f} | {rps / health:>9.0%} | {p50:>7.1f} | {p99:>7.1f} | {errors:>6} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("the benchmark drives the server with wrk: apt-get install wrk", file=sys.stderr)
        return 2
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="hc-bench-") as tmp:
        data = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env["LOG_LEVEL"] = "warning"
        # One load generator on one address would hit the per-IP limit at once.
        env["HC_RATE_LIMIT_IP"] = env["HC_RATE_LIMIT_USER"] = os.environ.get(
            "BENCH_RATE_LIMIT", "0"
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "healthcomp",
                "serve",
                "--demo",
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/health", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            token = subprocess.check_output(
                [
                    sys.executable,
                    "-m",
                    "healthcomp",
                    "token",
                    "--user",
                    "demo-alex",
                    "--data-dir",
                    str(data),
                ],
                env=env,
                text=True,
            ).strip()
            _run(base, token, args.seconds, args.concurrency, Path(tmp))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
