"""The Redis server's clock (``TIME``): the I/O of ``policies/clock.RedisClock``."""

from __future__ import annotations

from typing import Any


class RedisTime:
    """:class:`~agent_runtime.transport.base.ServerTime` on a redis-py client."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def now(self) -> float:
        seconds, micros = await self._redis.time()
        return int(seconds) + int(micros) / 1e6
