"""The processes under test: the service in production configuration, the bare hello,
and their resident memory. Loopback only; each runs in its own process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
# Requests per minute: rate limits stay on (their cost is measured) but one load
# generator on one address never reaches them.
RATE_LIMIT = "100000000"
# Variables the service reads (core/settings.py): the bench sets what it needs and
# keeps the caller's shell from changing the configuration under test.
_SERVICE_VARS = {"PORT", "HOST", "REDIS_URL", "ENVIRONMENT", "LOG_LEVEL"}
_SERVER_VARS = ("UVICORN_", "GRANIAN_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until `GET /health` answers 200; fails with the log's tail if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /health in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to whatever is left of its process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> Server:
    port = int(cmd[cmd.index("--port") + 1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, proc, port, log)


def _serve_options() -> str:
    return subprocess.run(
        [sys.executable, "-m", "healthcomp", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def service_has_server_option() -> bool:
    """Whether `healthcomp serve` takes `--server` (uvicorn or granian) in this checkout."""
    return "--server" in _serve_options()


def start_service(
    data_dir: Path, secret: str, workers: int, server: str | None, log: Path
) -> Server:
    """`healthcomp serve` as in production: no REDIS_URL (the embedded Redis), a real
    secret, rate limits on; `server` is passed on only when `serve` has the option.
    It runs in the data directory's parent, so no `.env` of the caller's is read."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in _SERVICE_VARS and not k.upper().startswith(("HC_", "SUPABASE_"))
    }
    env |= {
        "ENVIRONMENT": "production",
        "SUPABASE_JWT_SECRET": secret,
        "LOG_LEVEL": "warning",
        "HC_RATE_LIMIT_USER": RATE_LIMIT,
        "HC_RATE_LIMIT_USER_BURST": RATE_LIMIT,
        "HC_RATE_LIMIT_IP": RATE_LIMIT,
    }
    cmd = [sys.executable, "-m", "healthcomp", "serve", "--host", HOST, "--port", str(free_port())]
    cmd += ["--data-dir", str(data_dir), "--workers", str(workers)]
    if server is not None:
        cmd += ["--server", server]
    return _start("the service", cmd, env, data_dir.parent, log)


def hello_command(server: str, port: int, workers: int) -> list[str]:
    """The bare hello on the same server and worker count as the service."""
    if server == "uvicorn":
        # The options `healthcomp serve` gives uvicorn.run (src/healthcomp/cli.py).
        return [
            sys.executable, "-m", "uvicorn", "bench.hello:app",
            "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--log-level", "warning", "--proxy-headers", "--no-server-header",
            "--no-access-log",
        ]  # fmt: skip
    if server == "granian":
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        granian = shutil.which("granian", path=path)
        if granian is None:
            raise RuntimeError("--server granian: no `granian` executable (pip install granian)")
        # The options `healthcomp serve --server granian` gives Granian (src/healthcomp/cli.py):
        # uvloop, HTTP/1.1 only with its header timeout and buffer, WebSockets on (a hello
        # has no WebSocket route), no access log.
        return [
            granian, "--interface", "asgi", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--log-level", "warning",
            "--http", "1", "--http1-header-read-timeout", "15000",
            "--http1-buffer-size", str(32 * 1024), "bench.hello:app",
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


def start_hello(server: str, workers: int, log: Path) -> Server:
    cmd = hello_command(server, free_port(), workers)
    # The servers' own variables would configure the hello but not the service.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_SERVER_VARS)}
    return _start(f"the bare hello ({server})", cmd, env, ROOT, log)


# --- resident memory -------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name, in parentheses, may hold spaces: split after it.
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _is_python(pid: int) -> bool:
    try:
        exe = Path(os.readlink(f"/proc/{pid}/exe")).name
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # multiprocessing's resource tracker is a helper, not a worker.
    return exe.startswith("python") and b"resource_tracker" not in cmdline


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def python_processes(root: int) -> dict[int, str]:
    """The service's Python processes by pid, each named: with one worker the `serve`
    process is the worker; with more it supervises worker children. The embedded
    `redis-server` is not among them."""
    tree = _children()
    workers: list[int] = []
    todo = list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        if _is_python(pid):
            workers.append(pid)
        todo.extend(tree.get(pid, []))
    if not workers:
        return {root: "worker (the serve process)"}
    named = {root: "supervisor (the serve process)"}
    named |= {pid: f"worker {i}" for i, pid in enumerate(sorted(workers), 1)}
    return named
