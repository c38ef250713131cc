"""Worker heartbeats: one JSON record per worker process, with a TTL (``health``, the
supervisor's readiness wait and probes read them)."""

from __future__ import annotations

from typing import Any


class RedisHeartbeats:
    """:class:`~agent_runtime.transport.base.Heartbeats` on a redis-py client."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def beat(self, key: str, record: str, ttl: int) -> None:
        await self._redis.set(key, record, ex=ttl)

    async def forget(self, key: str) -> None:
        await self._redis.delete(key)

    async def read(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)  # one round trip, also on a cluster
        for key in keys:
            pipe.get(key)
        beats: list[bytes | None] = await pipe.execute()
        return beats
