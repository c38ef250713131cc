"""The agents' state API on Redis (:class:`agent_runtime.transport.base.State`).

``transact`` is Redis's optimistic transaction: WATCH the key, read it, compute, and
MULTI/EXEC the write; EXEC fails (``WatchError``) if another client wrote the key after the
WATCH, and the whole read-compute-write runs again on the fresh value. Works on a single
server and on Redis Cluster (one key: one slot).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.exceptions import WatchError

from agent_runtime.transport.base import TRANSACT_ATTEMPTS, R, StateConflict, Transition, Value


class RedisState:
    """:class:`~agent_runtime.transport.base.State` on a redis-py client (bytes replies)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._redis.get(key)
        return value

    async def put(self, key: str, value: Value, ttl: int) -> None:
        await self._redis.set(key, value, ex=ttl)

    async def delete(self, *keys: str) -> None:
        for key in keys:  # one key per command: keys of a cluster may live in other slots
            await self._redis.delete(key)

    async def transact(
        self, key: str, fn: Transition[R], *, ttl: int, attempts: int = TRANSACT_ATTEMPTS
    ) -> R:
        for _ in range(attempts):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    new, result = fn(await pipe.get(key))
                    if new is None:
                        return result
                    pipe.multi()
                    pipe.set(key, new, ex=ttl)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue
        raise StateConflict(f"{key}: {attempts} attempts lost to concurrent writers")

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await self._redis.hgetall(key)
        return {k.decode(): v for k, v in raw.items()}

    async def hash_put(self, key: str, fields: Mapping[str, Value], ttl: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(fields))
            pipe.expire(key, ttl)
            await pipe.execute()

    async def hash_delete(self, key: str, *fields: str) -> None:
        if fields:
            await self._redis.hdel(key, *fields)
