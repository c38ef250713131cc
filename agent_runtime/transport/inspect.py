"""Read-only Redis commands of the operator tools (``status``, ``health``, ``trace``, ``dlq``,
the metrics collector): key scans, stream and consumer-group info, heartbeats, breaker hashes.

:class:`RuntimeReader` issues them and returns plain Python values (text keys, ints, dicts);
``agent_runtime/observability/`` turns those into views and never talks to Redis itself.
Key discovery uses SCAN (never KEYS); ``XINFO`` of a missing stream or group reads as empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from agent_runtime.transport.connect import Connection
from agent_runtime.transport.keys import Keys

#: The async client a :class:`~agent_runtime.transport.connect.Connection` holds (bytes
#: replies): one server or a cluster, the same command surface for what the tools use.
RedisClient: TypeAlias = "Redis | RedisCluster"

#: Keys fetched per SCAN round trip.
SCAN_COUNT = 500


def text(value: object) -> str:
    """A reply value as text (bytes decoded, None as the empty string)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def raw(value: bytes | str) -> bytes:
    """A reply value as bytes (the tools' clients reply bytes; a str is encoded)."""
    return value if isinstance(value, bytes) else value.encode()


@dataclass(frozen=True)
class GroupInfo:
    """``XINFO GROUPS`` of one group, typed."""

    name: str
    pending: int
    lag: int | None
    last_delivered_id: str


@dataclass(frozen=True)
class ConsumerInfo:
    """``XINFO CONSUMERS`` of one consumer, times in milliseconds."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None


class RuntimeReader:
    """Read-only commands over one client. Share it between the views of one command."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    @classmethod
    def of(cls, connection: Connection) -> RuntimeReader:
        return cls(connection.redis)

    async def scan(self, pattern: str, type_: str | None = None) -> list[str]:
        """Every key matching ``pattern`` (of Redis type ``type_`` when given), sorted."""
        found: set[str] = set()
        async for key in self.redis.scan_iter(match=pattern, count=SCAN_COUNT, _type=type_):
            found.add(text(key))
        return sorted(found)

    async def exists(self, key: str) -> bool:
        return bool(await self.redis.exists(key))

    async def get(self, key: str) -> bytes | None:
        value = await self.redis.get(key)
        return None if value is None else raw(value)

    async def hash(self, key: str) -> dict[str, str] | None:
        """The fields of a hash as text, sorted by name; None when the key is not a hash."""
        try:
            fields = await self.redis.hgetall(key)
        except ResponseError:  # WRONGTYPE: someone else's key under the pattern
            return None
        return dict(sorted((text(k), text(v)) for k, v in fields.items()))

    async def stream_length(self, stream: str) -> int:
        return int(await self.redis.xlen(stream))

    async def groups(self, stream: str) -> list[GroupInfo]:
        """The consumer groups of ``stream``; none when the stream does not exist."""
        try:
            rows: list[dict[str, Any]] = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return []
        return [
            GroupInfo(
                name=text(row.get("name")),
                pending=int(row.get("pending") or 0),
                lag=None if row.get("lag") is None else int(row["lag"]),
                last_delivered_id=text(row.get("last-delivered-id")),
            )
            for row in rows
        ]

    async def oldest_pending(self, stream: str, group: str) -> str | None:
        """The id of the group's oldest pending entry (XPENDING summary), None when none."""
        summary: dict[str, Any] = await self.redis.xpending(stream, group)
        oldest = summary.get("min")
        return text(oldest) if oldest else None

    async def consumers(self, stream: str, group: str) -> list[ConsumerInfo]:
        try:
            rows: list[dict[str, Any]] = await self.redis.xinfo_consumers(stream, group)
        except ResponseError:
            return []
        return [
            ConsumerInfo(
                name=text(row.get("name")),
                pending=int(row.get("pending") or 0),
                idle_ms=int(row.get("idle") or 0),
                inactive_ms=None if row.get("inactive") is None else int(row["inactive"]),
            )
            for row in rows
        ]

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()


class SupportsExists(Protocol):
    """A synchronous Redis client, as far as :class:`HeartbeatProbe` needs one."""

    def exists(self, *names: str) -> Any: ...


class HeartbeatProbe:
    """Synchronous heartbeat check for test and benchmark code that runs no event loop
    (``agent_runtime.testing.WorkerProcess.wait_ready``)."""

    def __init__(self, redis: SupportsExists, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def live(self, agent: str, consumer: str) -> bool:
        """True while the worker's heartbeat key exists."""
        return bool(self.redis.exists(self.keys.heartbeat(agent, consumer)))
