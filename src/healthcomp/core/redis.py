"""Connecting to Redis: the embedded server, an external one, or a cluster.

Forms of `REDIS_URL`:

* `redis://[:password@]host:port/db`, `rediss://…` (TLS), `unix:///path/to.sock?db=N`
* `redis+cluster://[user:password@]host:port[,host:port…]` or `rediss+cluster://…`
  (TLS): a Redis Cluster. Any node is a seed: the client reads the cluster's nodes and
  slots from the first seed that answers, and uses every node it learnt from then on;
  several seeds let a process start while one of them is down. Cluster mode has only
  database 0.

Every client has short timeouts and a bounded pool: an outage surfaces quickly as 503
rather than a hang.

Retry policy. A command is retried only when it cannot have reached the server: when
opening the connection (TCP, TLS, the handshake) or the health-check PING sent ahead of
it failed, before the command was written. Such a failure is retried twice on a fresh
connection, after 0.1 s and 0.2 s, which absorbs a restart or a failover. Once a
command has been written, nothing is retried: a connection that breaks or times out
while the reply is awaited may have lost the reply of a command the server executed,
and re-sending a non-idempotent write (a join, a payout, a rate-limit step) would apply
it twice. That request answers 503 with `Retry-After`, and the client decides whether
to repeat it. A timeout is never retried, not even while connecting, so a hung server
costs one timeout, not three. A pooled connection that a server restart closed while
idle is replaced before anything is written on it, so the service recovers without
retrying a sent command. A cluster client retries on the same terms, plus CLUSTERDOWN
and a slot missing from its map, both of which mean the command was not run. Cluster
pipelines are replayed by redis-py on any connection error regardless, so they must
hold reads only (those in this code base do).

Cancellation. A task cancelled while it awaits a command stops: request deadlines
(`core.middleware.Deadline`) and shutdown depend on it. redis-py writes a command under
`asyncio.wait_for` when a socket timeout is set, as here, and on Python 3.11 that drops a
cancel which lands just as the write completes; the connection raises it again. A
cluster node takes its connection back however a command ends (redis-py 7.4 loses it when
the command is cancelled or fails before it is written).

Written against the internals of redis-py 7.4 (`connect_check_health`, `check_health`,
`send_packed_command`, `ClusterNode.execute_command`, `NodesManager.set_nodes`,
`RedisCluster.ERRORS_ALLOW_RETRY`); tests/core/test_unavailable.py and
tests/core/test_cancellation.py hold the behaviour to this description.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, NodesManager, PipelineCommand, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import PRIMARY
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MaxConnectionsError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from healthcomp.core import metrics
from healthcomp.core.settings import Settings

log = logging.getLogger("healthcomp.redis")

RedisClient: TypeAlias = "Redis | RedisCluster"


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


class NotSentError(RedisConnectionError):
    """The connection failed before the command was written: nothing reached the server.

    The only error the clients retry (see the module docstring)."""


@contextmanager
def _before_sending() -> Iterator[None]:
    try:
        yield
    except RedisConnectionError as exc:
        # Only a plain ConnectionError is a network failure. Its subclasses are answers
        # (a wrong password, LOADING) that a retry within a second would not change.
        if type(exc) is not RedisConnectionError:
            raise
        raise NotSentError(*exc.args) from exc


class _MarksNotSent(AbstractConnection):
    """Raises NotSentError for what fails before the command goes out: connecting (TCP,
    TLS, AUTH/SELECT/CLIENT SETINFO) and the health-check PING sent ahead of a command."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        fresh = not self.is_connected
        with _before_sending():
            await super().connect_check_health(
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
        if fresh:
            # A pool keeps its connection objects: one that connects a second time
            # lost its connection (a restart, a failover, a timeout) and made it again.
            if getattr(self, "_hc_was_open", False):
                metrics.REDIS_RECONNECTS.labels("commands").inc()
            self._hc_was_open = True

    async def check_health(self) -> None:
        with _before_sending():
            await super().check_health()  # type: ignore[no-untyped-call]

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        # A connection the server closed while it sat idle (a restart) would take the
        # write and then fail on the read, which is not retried. The standalone pool
        # catches this when it hands the connection out; the cluster's pool does not.
        if self._reader is not None and self._reader.at_eof():
            await self.disconnect()
            raise NotSentError(f"{self._host_error()} closed the connection while idle")
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        await super().send_packed_command(command, check_health=check_health)
        if task is not None and task.cancelling() > cancels:
            # With a socket timeout, redis-py writes under asyncio.wait_for, which on
            # Python 3.11 drops a cancel that lands as the write completes and returns
            # normally: the task would run on past its deadline, or past shutdown. The
            # command went out, so its reply must not be left for the next user.
            await self.disconnect(nowait=True)
            raise asyncio.CancelledError


class _TcpConnection(_MarksNotSent, Connection):
    pass


class _TlsConnection(_MarksNotSent, SSLConnection):
    pass


class _UnixConnection(_MarksNotSent, UnixDomainSocketConnection):
    pass


_C = TypeVar("_C", bound=AbstractConnection)

_MARKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _TcpConnection,
    SSLConnection: _TlsConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def _marked(connection_class: type[_C]) -> type[_C]:
    if issubclass(connection_class, _MarksNotSent):
        return connection_class
    try:
        return cast("type[_C]", _MARKED[connection_class])
    except KeyError:  # pragma: no cover - redis-py grew a transport we do not know
        raise RuntimeError(f"no retry-safe variant of {connection_class.__name__}") from None


def _retry() -> Retry:
    # Never a timeout either: a server that hangs would otherwise hold every request
    # for retries x timeout.
    return Retry(
        ExponentialBackoff(cap=0.4, base=0.05), retries=2, supported_errors=(NotSentError,)
    )


# Set while a cluster client runs one command on a node (see _Cluster.aclose).
_IN_COMMAND: ContextVar[bool] = ContextVar("_IN_COMMAND", default=False)
# The node an ASK redirection sends the task's next command to (see _Node).
_ASKING: ContextVar[ClusterNode | None] = ContextVar("_ASKING", default=None)


class _Node(ClusterNode):
    """A ClusterNode that takes its connection back however the command ends.

    redis-py 7.4 returns it to the node's free list only once the command was written:
    a command cancelled or failing before the write is done (a deadline, a refused
    connection) loses one of the node's `max_connections` for good, and the node ends up
    refusing every command with MaxConnectionsError. A connection comes back
    disconnected from any of those failures, and connects again on its next use.

    It also waits for a free connection when all `max_connections` are busy, as the
    standalone client's blocking pool does (up to the socket timeout); redis-py raises
    MaxConnectionsError at once, so a burst of concurrent requests answered 503.

    And it sends an ASK redirection's ASKING on the same connection as the command it
    is for, in one write. redis-py 7.4 sends each as a command of its own, each on
    whichever connection is free: under concurrency the command arrives without its
    ASKING, the importing node sends it back with MOVED, and the command bounces
    between the two nodes until redis-py gives up ("TTL exhausted") for as long as a
    slot is being migrated."""

    __slots__ = ()

    async def _acquire(self) -> Connection:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + float(self.connection_kwargs.get("socket_timeout") or 1.0)
        while True:
            try:
                return self.acquire_connection()
            except MaxConnectionsError:
                if loop.time() >= give_up:
                    raise
            await asyncio.sleep(0.001)  # nothing is held while waiting

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and str(args[0]).upper() == "ASKING":
            _ASKING.set(self)  # goes out with the task's next command to this node
            return True
        asking = _ASKING.get() is self
        if asking:
            _ASKING.set(None)
        connection = await self._acquire()
        try:
            await self.disconnect_if_needed(connection)
            if asking:
                packed = connection.pack_commands([("ASKING",), args])
                await connection.send_packed_command(packed, False)
                try:
                    await self.parse_response(connection, "ASKING")
                except ResponseError:
                    await connection.disconnect()  # the command's reply is unread
                    raise
            else:
                await connection.send_packed_command(connection.pack_command(*args), False)
            return await self.parse_response(connection, args[0], **kwargs)
        finally:
            await self.disconnect_if_needed(connection)
            self._free.append(connection)

    async def execute_pipeline(self, commands: list[PipelineCommand]) -> bool:
        connection = await self._acquire()
        try:
            await self.disconnect_if_needed(connection)
            await connection.send_packed_command(
                connection.pack_commands(cmd.args for cmd in commands), False
            )
            failed = False
            for cmd in commands:
                try:
                    cmd.result = await self.parse_response(connection, cmd.args[0], **cmd.kwargs)
                except Exception as exc:
                    cmd.result = exc
                    failed = True
            return failed
        finally:
            await self.disconnect_if_needed(connection)
            self._free.append(connection)


def _as_node(node: ClusterNode) -> None:
    # ClusterNode has __slots__ and _Node adds none, so the class can be swapped in place.
    if type(node) is ClusterNode:
        node.__class__ = _Node


class _NodesManager(NodesManager):
    """Makes every node it takes in (discovered, or learnt from a MOVED) a _Node: it
    builds them as ClusterNode and puts each in through set_nodes.

    A refresh of the topology keeps one node object per address. redis-py 7.4 keeps the
    known objects in its node cache but fills the slot map with the fresh ones it made
    for the refresh, with their own connections: every refresh left the slot map and the
    cache apart, the cache's roles stale after a failover, and each earlier set of
    objects dropped with its connections open."""

    __slots__ = ()

    async def initialize(self) -> None:
        await super().initialize()
        cache = self.nodes_cache
        done: set[int] = set()
        for nodes in self.slots_cache.values():
            if id(nodes) in done:  # one list is shared by every slot of a range
                continue
            done.add(id(nodes))
            for i, node in enumerate(nodes):
                kept = cache.get(node.name)
                if kept is not None and kept is not node:
                    kept.server_type = node.server_type
                    nodes[i] = kept
        primaries = self.get_nodes_by_server_type(PRIMARY)
        if primaries:
            self.default_node = primaries[0]

    def set_nodes(
        self,
        old: dict[str, ClusterNode],
        new: dict[str, ClusterNode],
        remove_old: bool = False,
    ) -> None:
        for node in new.values():
            _as_node(node)
        super().set_nodes(old, new, remove_old=remove_old)


class _Cluster(RedisCluster):
    """A RedisCluster that re-sends a command only when it cannot have been executed.

    redis-py's own list also holds ConnectionError and TimeoutError, which it re-sends
    after refreshing the topology whatever phase they came from. The list is matched by
    exact type."""

    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]  # a narrower tuple than the base's
        NotSentError,
        ClusterDownError,
        SlotNotCoveredError,
        # "TTL exhausted": every attempt was redirected (MOVED, ASK) or refused with
        # TRYAGAIN (keys of one script on both sides of a slot being migrated).
        ClusterError,
    )

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py 7.4 picks the node before it learns the topology: a client that has
        # not (or no longer) got a slot map sends keyed commands to any node, and
        # collects MOVED answers.
        if self._initialize:
            await self.initialize()
        try:
            return await super().execute_command(*args, **kwargs)
        except ClusterError as exc:
            if type(exc) is not ClusterError:  # CLUSTERDOWN and the like, as they are
                raise
            # Not run anywhere (see ERRORS_ALLOW_RETRY): Redis's own answer for this
            # is TRYAGAIN, a 503 (core.errors), where a bare ClusterError was a 500.
            raise TryAgainError(f"{exc} (a slot being migrated)") from exc

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        token = _IN_COMMAND.set(True)
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        finally:
            _IN_COMMAND.reset(token)

    async def aclose(self) -> None:
        if _IN_COMMAND.get():
            # redis-py closes every connection of every node when one command meets
            # CLUSTERDOWN, a slot it has no node for, or its fifth MOVED: the commands
            # other tasks have in flight on those connections fail, having been sent
            # (503s, during a failover or a resharding). The slot map is refreshed
            # instead, before the next command; connections to a node whose role
            # changed are replaced as they come back (NodesManager.set_nodes).
            self._initialize = True
            return
        await super().aclose()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # RedisCluster takes no connection class: it sets Connection or SSLConnection in
        # the kwargs dict it shares with its NodesManager, which makes every node from it.
        marked = _marked(self.connection_kwargs["connection_class"])
        self.connection_kwargs["connection_class"] = marked
        self.nodes_manager.__class__ = _NodesManager
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = marked
            _as_node(node)


def create_client(url: str, settings: Settings) -> RedisClient:
    timeout = settings.redis_timeout_seconds
    if is_cluster_url(url):
        plain, seeds = _seeds(url.replace("+cluster", "", 1))
        return _Cluster.from_url(
            plain,
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=settings.redis_max_connections,
            retry=_retry(),
        )
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        retry=_retry(),
        health_check_interval=30,
    )
    # Connections are made lazily from this class, which from_url picked from the scheme.
    pool.connection_class = _marked(pool.connection_class)
    return Redis.from_pool(pool)


def _seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """`scheme://[auth@]h1:p1,h2:p2/…` -> the URL with the first seed alone (for
    from_url, which reads the rest of it), and every seed in order."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    auth, at, hosts = netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = part.strip(), "6379"
        seeds.append((host.strip("[]"), int(port)))
    first = hosts.split(",")[0].strip()
    return f"{scheme}{sep}{auth}{at}{first}{tail}", seeds


async def exchange(client: Redis, packed: bytes, replies: int) -> list[Any]:
    """Send commands already packed (RESP) on one pooled connection and read their
    `replies`: a pipeline without redis-py's per-command bookkeeping, which costs more
    than the round trip it saves once a pipeline holds a few dozen script calls. Each
    reply is the answer or the ResponseError the server gave. Retried, like everything,
    only when nothing was sent; a connection left with unread replies (an error or a
    cancel part-way) is closed, not returned dirty to the pool."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]

    async def attempt() -> list[Any]:
        await conn.send_packed_command(packed)
        out: list[Any] = []
        for _ in range(replies):
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:
                out.append(exc)
        return out

    async def forget(_: Exception) -> None:
        await conn.disconnect()

    try:
        result: list[Any] = await conn.retry.call_with_retry(attempt, forget)
        return result
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


async def warn_if_not_persistent(client: RedisClient) -> bool:
    """Log a warning when the server keeps nothing on disk. True when it persists."""
    try:
        info: Any = await client.config_get("appendonly")
        save: Any = await client.config_get("save")
    except (RedisError, RedisClusterException):  # CONFIG disabled, or not reachable yet
        log.info("could not read the server's persistence settings (CONFIG disabled?)")
        return True
    # A cluster client answers per node; merge whatever we got.
    values = {**_flatten(info), **_flatten(save)}
    aof = values.get("appendonly") == "yes"
    rdb = bool(values.get("save"))
    if not (aof or rdb):
        log.warning(
            'the external Redis has persistence off (appendonly no, save ""): '
            "a restart of it loses every competition, score and payout"
        )
        return False
    return True


def _flatten(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    flat: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item))
        else:
            flat[str(key)] = str(item)
    return flat


@dataclass
class RedisHandle:
    client: RedisClient
    mode: str  # "embedded" | "external" | "cluster"
    url: str

    async def close(self) -> None:
        await self.client.aclose()
