"""A local Redis Cluster for tests and demos: N masters (optionally with replicas) started from
the embedded server binary on loopback TCP ports picked here, joined with ``CLUSTER MEET`` and
``CLUSTER ADDSLOTSRANGE`` (no ``redis-cli`` needed). Every node dies with its parent, like
:class:`agent_runtime.transport.embedded.EmbeddedServer` (each node *is* one, plus a TCP port).

    with LocalCluster(Path("/tmp/c"), masters=3) as cluster:
        print(cluster.url)   # redis+cluster://127.0.0.1:PORT

Cluster ports must stay <= 55535: a node's cluster bus listens on ``port + 10000``.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from agent_runtime.errors import EmbeddedServerError
from agent_runtime.transport.embedded import EmbeddedServer

SLOTS = 16384
MAX_PORT = 55535
MIN_PORT = 20000
HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if ``port`` can be bound on ``host`` right now (SO_REUSEADDR off: strict)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_cluster_ports(
    count: int, *, rng: random.Random | None = None, attempts: int = 2_000
) -> list[int]:
    """``count`` distinct ports <= 55535 whose cluster-bus port (+10000) is free as well."""
    rng = rng or random.Random()  # noqa: S311 - port picking, not security
    picked: list[int] = []
    for _ in range(attempts):
        port = rng.randint(MIN_PORT, MAX_PORT - 10_000)
        taken = {p for q in picked for p in (q, q + 10_000)}
        if port in taken or port + 10_000 in taken:
            continue
        if port_is_free(port) and port_is_free(port + 10_000):
            picked.append(port)
            if len(picked) == count:
                return picked
    raise EmbeddedServerError(f"could not find {count} free port pairs below {MAX_PORT}")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Split the 16384 slots into ``masters`` contiguous, inclusive ranges."""
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    bounds = [SLOTS * i // masters for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on loopback. ``start()``/``stop()``
    or a context manager. ``persistent=True`` turns on AOF (everysec) on every node."""

    data_dir: Path
    masters: int = 3
    replicas: int = 0
    persistent: bool = False
    node_timeout_ms: int = 5_000
    nodes: list[EmbeddedServer] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming the first node (any node would do)."""
        return f"redis+cluster://{HOST}:{self.ports[0]}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.ports]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        deadline = time.monotonic() + timeout
        total = self.masters * (1 + self.replicas)
        self.ports = free_cluster_ports(total)
        try:
            for index, port in enumerate(self.ports):
                self.nodes.append(self._node(index, port).start())
            self._create(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _node(self, index: int, port: int) -> EmbeddedServer:
        args = (
            "--port",
            str(port),
            "--bind",
            HOST,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-require-full-coverage",
            "yes",
        )
        return EmbeddedServer(
            self.data_dir / f"node-{index}-{port}", persistent=self.persistent, extra_args=args
        )

    def _create(self, deadline: float) -> None:
        clients = [_client(node) for node in self.nodes]
        try:
            masters = clients[: self.masters]
            for epoch, (client, (first, last)) in enumerate(
                zip(masters, slot_ranges(self.masters), strict=True), start=1
            ):
                _cluster(client, "SET-CONFIG-EPOCH", epoch)
                _cluster(client, "ADDSLOTSRANGE", first, last)
            for port in self.ports[1:]:
                _cluster(clients[0], "MEET", HOST, port)
            _wait(
                deadline,
                "every node knows every other",
                lambda: all(_known_nodes(c) == len(clients) for c in clients),
            )
            self._attach_replicas(clients, deadline)
            _wait(
                deadline,
                "cluster_state:ok on every node",
                lambda: all(_state_ok(c) for c in clients),
            )
        finally:
            for client in clients:
                client.close()

    def _attach_replicas(self, clients: list[redis.Redis], deadline: float) -> None:
        ids = [_cluster(c, "MYID") for c in clients[: self.masters]]
        for index, client in enumerate(clients[self.masters :]):
            master_id = ids[index % self.masters]
            _cluster(client, "REPLICATE", master_id)
        if self.replicas:
            _wait(
                deadline,
                "replicas in sync",
                lambda: all(_replica_linked(c) for c in clients[self.masters :]),
            )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _client(node: EmbeddedServer) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(node.socket_path), socket_timeout=5, decode_responses=True
    )


def _cluster(client: redis.Redis, *args: str | int) -> Any:
    """One ``CLUSTER ...`` command (redis-py leaves execute_command untyped)."""
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def _known_nodes(client: redis.Redis) -> int:
    text = str(_cluster(client, "NODES"))
    return sum(
        1
        for line in text.splitlines()
        if line.strip() and "handshake" not in line and "noaddr" not in line
    )


def _state_ok(client: redis.Redis) -> bool:
    info = _cluster(client, "INFO")
    text = info if isinstance(info, str) else str(info)
    return "cluster_state:ok" in text


def _replica_linked(client: redis.Redis) -> bool:
    info = client.info("replication")
    return info.get("role") in ("slave", "replica") and info.get("master_link_status") == "up"


def _wait(deadline: float, what: str, check: Callable[[], bool]) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"local cluster not ready: timed out waiting for {what}")
