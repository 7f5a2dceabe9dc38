"""A one-node Redis Cluster from the embedded binary, for the cluster test run.

Cluster mode refuses any command whose keys span slots (CROSSSLOT), so a suite that
passes here proves every multi-key operation stays inside one hash tag.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from healthcomp.core.embedded import redis_server_binary


def _command(port: int, *parts: str) -> bytes:
    payload = f"*{len(parts)}\r\n".encode()
    for part in parts:
        raw = part.encode()
        payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(payload)
        time.sleep(0.05)
        return conn.recv(65536)


def _cluster_port() -> int:
    # The cluster bus listens on port + 10000, so the port must stay below 55536.
    for _ in range(200):
        port = random.randint(20000, 45000)
        free = True
        for candidate in (port, port + 10000):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    free = False
        if free:
            return port
    raise RuntimeError("no free port pair for the cluster node")


def system_redis7() -> str | None:
    """The machine's own `redis-server` when it is Redis 7 or newer (sharded pub/sub)."""
    found = shutil.which("redis-server")
    if found is None:
        return None
    out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    return found if match and int(match.group(1)) >= 7 else None


def start_cluster(
    directory: Path, binary: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A one-node cluster of the embedded binary (Redis 6.2), or of `binary`."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _cluster_port()
    proc = subprocess.Popen(
        [
            binary or str(redis_server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--appendonly",
            "no",
            "--save",
            "",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if _command(port, "PING").startswith(b"+PONG"):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("cluster node did not start")
    # Redis 6.2 has no ADDSLOTSRANGE: name all 16384 slots.
    _command(port, "CLUSTER", "ADDSLOTS", *[str(s) for s in range(16384)])
    while time.monotonic() < deadline:
        if b"cluster_state:ok" in _command(port, "CLUSTER", "INFO"):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("cluster did not reach state ok")
