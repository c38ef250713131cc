"""Redis commands of the HTTP gateway (agent_runtime/gateway/): idempotency keys, per-token
rate limits, non-blocking reads of reply streams, pipelined trace reads for the shared trace
follower, and the fleet feed's blocking read. Every command touches one key, or pipelines
single-key commands (Redis Cluster safe)."""

from __future__ import annotations

from typing import Any

from agent_runtime.transport.connect import Connection
from agent_runtime.transport.inspect import RedisClient, raw, text
from agent_runtime.transport.keys import Keys

Entry = tuple[str, dict[bytes, bytes]]


def _entry(entry_id: Any, fields: Any) -> Entry:
    return text(entry_id), {raw(k): raw(v) for k, v in (fields or {}).items()}


class GatewayStore:
    """The gateway's reads and writes under one key prefix, over the gateway's client."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    @classmethod
    def of(cls, connection: Connection, keys: Keys) -> GatewayStore:
        return cls(connection.redis, keys)

    async def ping(self) -> None:
        await self.redis.ping()

    async def claim(self, key: str, value: str, ttl: int) -> str | None:
        """``SET key value NX EX ttl``: None when this call set it, else the value already
        there (the correlation id a retried request was given the first time)."""
        if await self.redis.set(key, value, nx=True, ex=ttl):
            return None
        existing = await self.redis.get(key)
        return value if existing is None else text(existing)

    async def release(self, key: str) -> None:
        await self.redis.delete(key)

    async def count_call(self, key: str, ttl: int) -> int:
        """INCR a rate-limit window counter (EXPIRE in the same transaction); the count."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, ttl)
            count, _ = await pipe.execute()
        return int(count)

    async def first_entry(self, stream: str) -> Entry | None:
        """The first entry of ``stream`` (a reply stream's answer), None when there is none."""
        rows = await self.redis.xrange(stream, count=1) or []
        return _entry(*rows[0]) if rows else None

    async def first_entries(self, streams: list[str]) -> list[Entry | None]:
        """:meth:`first_entry` of many streams in one round trip."""
        if not streams:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrange(stream, count=1)
            results = await pipe.execute(raise_on_error=False)
        return [_entry(*rows[0]) if isinstance(rows, list) and rows else None for rows in results]

    async def newest(self, stream: str, count: int) -> list[Entry]:
        """The newest ``count`` entries of ``stream``, newest first."""
        rows = await self.redis.xrevrange(stream, count=count) or []
        return [_entry(entry_id, fields) for entry_id, fields in rows]

    async def trace_records(self, wanted: list[tuple[str, int]]) -> list[list[bytes]]:
        """For each (correlation id, start index): its trace records from ``start`` on, in one
        pipelined round trip (LRANGE)."""
        if not wanted:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, start in wanted:
                pipe.lrange(self.keys.trace(cid), start, -1)
            results = await pipe.execute(raise_on_error=False)
        return [[raw(r) for r in rows] if isinstance(rows, list) else [] for rows in results]

    async def read_new(
        self, positions: dict[str, str], block_ms: int, count: int
    ) -> list[tuple[str, list[Entry]]]:
        """``XREAD COUNT count BLOCK block_ms`` over ``positions`` (stream -> last id seen)."""
        streams: dict[Any, Any] = dict(positions)
        response = await self.redis.xread(streams, count=count, block=block_ms)
        out = []
        items = response.items() if isinstance(response, dict) else (response or [])
        for stream, entries in items:
            out.append((text(stream), [_entry(i, f) for i, f in entries or []]))
        return out

    async def last_id(self, stream: str) -> str:
        """The id of the newest entry of ``stream`` (``0-0`` when empty or missing)."""
        rows = await self.redis.xrevrange(stream, count=1) or []
        return text(rows[0][0]) if rows else "0-0"

    async def aclose(self) -> None:
        await self.redis.aclose()
